"""What the benchmarks share (no flags: each script defines its own)."""

from __future__ import annotations

import json
import os
import re
import resource
import sys
import time
from typing import Optional

import numpy as np


def cpu_model(cpuinfo: Optional[str] = None) -> str:
  """The CPU's name and its vector extensions that change XLA:CPU's code
  (from ``/proc/cpuinfo`` unless given; timings on two VMs of the same size
  can differ two-fold), e.g. ``Intel(R) Xeon(R) Processor [avx2 avx512f]``."""
  if cpuinfo is None:
    try:
      with open("/proc/cpuinfo") as f:
        cpuinfo = f.read()
    except OSError:
      import platform
      return platform.processor() or "unknown"
  name = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
  flags = re.search(r"^flags\s*:\s*(.*)$", cpuinfo, re.M)
  have = set(flags.group(1).split()) if flags else set()
  isa = [f for f in ("avx2", "avx512f", "amx_tile") if f in have]
  return f"{name.group(1).strip() if name else 'unknown'} [{' '.join(isa)}]"


def machine() -> dict:
  """Where a benchmark ran: what its JSON records beside the numbers."""
  import platform
  import jax
  return dict(platform=platform.platform(), cpus=os.cpu_count(),
              cpu=cpu_model(), device=str(jax.devices()[0].device_kind),
              backend=jax.default_backend(), jax=jax.__version__)


def describe(m: dict) -> str:
  """One line of :func:`machine`'s record, for a benchmark's printout."""
  return f"{m['device']} ({m['backend']}), {m['cpus']} CPUs, {m['cpu']}"


def peak_rss_mb() -> float:
  """The process's peak resident set (MiB), as ``getrusage`` reports it."""
  kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return kb / 1024.0 if sys.platform != "darwin" else kb / 2 ** 20


def device_peak_bytes() -> Optional[int]:
  """Peak bytes held on the first device by this process (an accelerator's
  allocator reports it; ``None`` where the backend does not)."""
  import jax
  try:
    stats = jax.devices()[0].memory_stats() or {}
  except Exception:  # backends without allocator statistics
    return None
  return stats.get("peak_bytes_in_use")


def seconds_to(curve: np.ndarray, target: float) -> Optional[float]:
  """First time (column 1) at which the PSNR (column 2) reaches ``target``."""
  hit = np.nonzero(curve[:, 2] >= target - 1e-6)[0]
  return float(curve[hit[0], 1]) if hit.size else None


def iteration_to(curve: np.ndarray, target: float) -> Optional[int]:
  hit = np.nonzero(curve[:, 2] >= target - 1e-6)[0]
  return int(curve[hit[0], 0]) if hit.size else None


def purify_throughput(images: np.ndarray, cfg, batch: int, repeats: int) -> dict:
  """DNCF purification (``defense.purify`` with ``cfg``) of consecutive
  batches: seconds of the compiling call, images/s of the next ``repeats``."""
  from dncf_jax import defense
  need = batch * (repeats + 1)
  if need > len(images):
    raise ValueError(f"batch {batch} x {repeats + 1} calls needs {need} "
                     f"images, the set has {len(images)}")
  t0 = time.perf_counter()
  defense.purify(images[:batch], cfg, indices=np.arange(batch))
  first = time.perf_counter() - t0
  rates = []
  for r in range(1, repeats + 1):
    sl = slice(r * batch, (r + 1) * batch)
    t0 = time.perf_counter()
    defense.purify(images[sl], cfg, indices=np.arange(sl.start, sl.stop))
    rates.append(batch / (time.perf_counter() - t0))
  return dict(mode=cfg.mode, batch_size=batch, first_call_seconds=first,
              images_per_second=dict(median=float(np.median(rates)),
                                     min=float(min(rates)),
                                     max=float(max(rates)), n=len(rates)))


def changed(cfg, item: str):
  """``cfg`` with one ``flag=value`` setting changed (cast to its type)."""
  name, _, value = item.partition("=")
  current = cfg.flat()
  if name not in current or not value:
    raise ValueError(f"--breakdown: {item!r} is not flag=value of a "
                     f"DefenseConfig setting ({', '.join(current)})")
  kind = type(current[name])
  cast = (lambda v: v.lower() in ("1", "true")) if kind is bool else kind
  return cfg.replace(**{name: cast(value)})


def stop_and_peak(iterations, ratio, psnr) -> dict:
  """The first checkpoint with ``ratio <= 1`` (None if never) and the best."""
  below = np.flatnonzero(np.asarray(ratio) <= 1.0)
  stop = int(below[0]) if below.size else None
  peak = int(np.argmax(psnr))
  return dict(
      stop_iteration=None if stop is None else int(iterations[stop]),
      stop_psnr=None if stop is None else float(psnr[stop]),
      peak_iteration=int(iterations[peak]), peak_psnr=float(psnr[peak]))


def write_json(path: str, obj: dict, note: str = "") -> None:
  """Writes ``obj`` to ``path`` (folders made) and says so."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as f:
    json.dump(obj, f, indent=1)
  print(f"wrote {path}{note}")


def shared_data_dir(flag_value, need: str = "") -> str:
  """``--data_dir`` or ``../shared/data``; one clear error if ``need`` (a
  sub-folder, or the folder itself) is not there."""
  from dncf_jax import io as dio
  data_dir = flag_value or dio.default_data_dir()
  if not os.path.isdir(os.path.join(data_dir, need)):
    raise FileNotFoundError(f"shared data not found at {data_dir} (--data_dir)")
  return data_dir
