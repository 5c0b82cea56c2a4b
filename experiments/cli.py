"""What every entry point shares: error reporting, the run record, refusing
to overwrite results, progress lines, config-derived flags.

Importing this module quiets JAX's report of the accelerator platforms it
could not load (a line on every run of a CPU-only machine); real errors
still print.
"""

from __future__ import annotations

import datetime
import logging
import os
import platform
import subprocess
import sys
from typing import Any, Callable, Iterable, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_VERSION = 1
# The classical denoisers of SelectConfig.fuse_with, as the summary names them.
PARTNERS = dict(nlm="non-local means",
                nlm_wavelet="non-local means and wavelet shrinkage")

# Messages of jax._src.xla_bridge about platforms that are absent (libtpu,
# a CUDA jaxlib), logged on every start of a CPU-only machine. The device a
# run uses is printed by the commands and stored in their JSON; a backend
# that is there but fails ("CUDA backend failed to initialize") still shows.
_PLATFORM_NOISE = ("Unable to initialize backend", "An NVIDIA GPU may be present",
                   "A Google TPU may be present", "Platform 'tpu'")


class _PlatformNoise(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno >= logging.ERROR:
      return True
    msg = record.getMessage()
    return not any(m in msg for m in _PLATFORM_NOISE)


logging.getLogger("jax._src.xla_bridge").addFilter(_PlatformNoise())


def run_main(main: Callable) -> None:
  """``app.run(main)`` with bad input reported as one clear line, exit code 2."""
  from absl import app

  def wrapped(argv):
    try:
      return main(argv)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)

  app.run(wrapped)


def use_compilation_cache(path: str) -> None:
  """JAX's persistent compilation cache in ``path`` (empty: leave it off).

  Programs that took at least 0.5 s to compile are kept, so a second run
  of the same shapes loads them instead of compiling again.
  """
  if not path:
    return
  import jax
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def default_cache_dir() -> str:
  """Where the commands keep JAX's persistent compilation cache."""
  return os.path.join(os.path.expanduser("~"), ".cache", "dncf_jax")


# ---------------------------------------------------------------------------
# The run record: what every result JSON carries
# ---------------------------------------------------------------------------


def _version(dist: str) -> Optional[str]:
  from importlib import metadata
  try:
    return metadata.version(dist)
  except metadata.PackageNotFoundError:
    return None


def git_commit(path: str = ROOT) -> Optional[str]:
  """``git rev-parse HEAD`` of the checkout holding ``path``; None outside git."""
  try:
    p = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, timeout=10,
                       capture_output=True, text=True)
  except (OSError, subprocess.SubprocessError):
    return None
  out = p.stdout.strip()
  return out if p.returncode == 0 and out else None


def device_info() -> dict[str, Any]:
  """The device a run uses: kind, backend and how many there are."""
  import jax
  d = jax.devices()[0]
  return dict(kind=d.device_kind, backend=jax.default_backend(),
              count=jax.device_count())


def run_record() -> dict[str, Any]:
  """``schema_version``, ``time`` (ISO 8601, UTC), ``device``, ``versions``
  and ``commit``: the fields every result JSON of the commands starts with."""
  import dncf_jax
  now = datetime.datetime.now(datetime.timezone.utc)
  versions = {"dncf_jax": dncf_jax.__version__}
  for dist in ("jax", "jaxlib", "flax", "optax", "numpy"):
    versions[dist] = _version(dist)
  versions["python"] = platform.python_version()
  return dict(schema_version=SCHEMA_VERSION,
              time=now.isoformat(timespec="seconds"), device=device_info(),
              versions=versions, commit=git_commit())


# ---------------------------------------------------------------------------
# Existing results
# ---------------------------------------------------------------------------


def refuse_overwrite(paths: Iterable[str], overwrite: bool,
                     alternatives: str = "another --output_dir") -> None:
  """Raises ``FileExistsError`` naming the first of ``paths`` that exists,
  unless ``overwrite``; call it before any work is done."""
  if overwrite:
    return
  for p in paths:
    if os.path.exists(p):
      raise FileExistsError(f"{p} exists; pass --overwrite or {alternatives}")


# ---------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------


def duration(seconds: float) -> str:
  """``42 s``, ``3:07`` (minutes), ``1:02:09`` (hours)."""
  s = int(round(max(seconds, 0.0)))
  if s < 60:
    return f"{s} s"
  m, s = divmod(s, 60)
  if m < 60:
    return f"{m}:{s:02d}"
  h, m = divmod(m, 60)
  return f"{h}:{m:02d}:{s:02d}"


def eta(info: dict) -> Optional[float]:
  """Seconds left at the current speed (an upper bound when the run may
  stop early); None before the speed is known."""
  rate = info.get("its_per_second") or 0.0
  if rate <= 0:
    return None
  return max(info["total"] - info["iteration"], 0) / rate


def progress_line(info: dict) -> str:
  """``it 50/600, 12 s elapsed, ETA 1:07, 8.1 it/s`` of a progress dict."""
  left = eta(info)
  return (f"it {info['iteration']:4d}/{info['total']}, "
          f"{duration(info['seconds'])} elapsed, "
          f"ETA {'?' if left is None else duration(left)}, "
          f"{info['its_per_second']:.2f} it/s")


def stop_reason(ran: int, budget: int, sigma255: float, tau: float,
                early_stop: bool) -> tuple[bool, str]:
  """(stopped early, why) of a DNCF run that ran ``ran`` of ``budget``
  iterations with noise level ``sigma255`` (0-255 scale)."""
  if ran < budget:
    return True, (f"stopped early at iteration {ran} of {budget}: the "
                  f"discrepancy principle was met (residual <= tau sigma^2, "
                  f"tau {tau:g}, sigma {sigma255:.1f}/255)")
  if not early_stop:
    why = "early stopping off"
  elif sigma255 == 0:
    why = "noiseless task: no stopping rule, the best fit is returned"
  else:
    why = f"the discrepancy principle was not met, sigma {sigma255:.1f}/255"
  return False, f"ran the full budget of {budget} iterations ({why})"


def summary(name: str, out: dict, path: str) -> str:
  """The one-line summary of a photo command's result ``out``, rounded:
  ``denoise: PSNR 28.41 dB, SSIM 0.812, chose ema f(y) @ 240, 31.2 s
  (compile 20.1 s) -> outputs/denoise.json``."""
  parts = []
  if out.get("psnr") is not None:
    parts.append(f"PSNR {out['psnr']:.2f} dB")
  if out.get("ssim") is not None:
    parts.append(f"SSIM {out['ssim']:.3f}")
  if out.get("psnr") is None and out.get("mse_to_observation") is not None:
    parts.append(f"MSE to the observation {out['mse_to_observation']:.2e}")
  parts.append(f"chose {out['chosen']} @ {out['chosen_iteration']}"
               + (" (projected onto the measurements)" if out.get("projected")
                  else "")
               + (f" (averaged with {PARTNERS[out.get('fused_with', 'nlm')]}, "
                  f"weight {out['fused']:g})" if out.get("fused") else ""))
  parts.append(f"{out['seconds']:.1f} s (compile {out['compile_seconds']:.1f} s)")
  return f"{name}: " + ", ".join(parts) + f" -> {path}"


# ---------------------------------------------------------------------------
# Flags from a config dataclass
# ---------------------------------------------------------------------------


def define_config_flags(config, rename: Optional[dict[str, str]] = None,
                        skip: Iterable[str] = (),
                        notes: Optional[dict[str, str]] = None,
                        **defaults) -> dict[str, str]:
  """One absl flag per leaf field of ``config`` (see
  :func:`dncf_jax.config.flat_fields`): the field's flag name (or
  ``rename[name]``), its help text and choices from the field's metadata,
  its value (or ``defaults[flag]``) as default; ``notes[flag]`` is
  appended to the help text. Returns ``{flag: config
  name}``; declare the flags key flags of the caller to list them in
  ``--help``."""
  from absl import flags
  from dncf_jax.config import flat_fields
  rename, notes = rename or {}, notes or {}
  names = {}
  for name, f, value in flat_fields(config):
    if name in skip:
      continue
    flag = rename.get(name, name)
    default = defaults.get(flag, value)
    text = " ".join(t for t in (f.metadata.get("help", name),
                                notes.get(flag)) if t)
    if f.metadata.get("choices"):
      flags.DEFINE_enum(flag, default, list(f.metadata["choices"]), text)
    elif f.type in ("bool", bool):
      flags.DEFINE_boolean(flag, default, text)
    elif f.type in ("int", int):
      flags.DEFINE_integer(flag, default, text)
    elif f.type in ("float", float):
      flags.DEFINE_float(flag, default, text)
    else:
      flags.DEFINE_string(flag, default, text)
    names[flag] = name
  return names


def config_values(names: dict[str, str]) -> dict[str, Any]:
  """``{config name: flag value}`` of flags made by :func:`define_config_flags`."""
  from absl import flags
  return {name: getattr(flags.FLAGS, flag) for flag, name in names.items()}
