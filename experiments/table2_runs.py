"""Table 2's inputs, profiles and one run of one method (no flags, no files written).

A profile fixes the inputs and the budgets:

* ``cpu_small``: the inputs of BENCHMARKS.md's cpu-small profile
  (:func:`dncf_jax.io.benchmark_input`), DNCF as in
  ``experiments/configs/<task>_cpu_small.flags``, DIP and DeepRED with
  their notebook budgets but 32 channels (128 cost 1.5 s/iteration on a
  2-core CPU).
* ``paper``: the full-size images and DNCF settings of
  ``experiments/configs/<task>_paper.flags``, DIP and DeepRED with the
  notebooks' 128 channels (a GPU).
* ``tiny``: 32x32 crops of the cpu-small inputs, a few iterations of
  tiny nets; for tests only (its numbers mean nothing).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Optional

import numpy as np
from PIL import Image

from dncf_jax import io as dio
from dncf_jax import metrics, physics

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
TASKS = ("denoise", "sr", "inpaint1", "inpaint2", "flash", "vase")
SCORED_TASKS = ("denoise", "sr", "inpaint1", "inpaint2", "flash")
FIGURE_ONLY = ("vase",)
METHODS = ("tv", "dip", "deepred", "dncf", "bicubic")
METHOD_NAMES = {"tv": "TV", "dip": "DIP", "deepred": "DeepRED+TV",
                "dncf": "DNCF", "bicubic": "bicubic"}
ITERATIVE = ("dip", "deepred", "dncf")
DETERMINISTIC = ("tv", "bicubic")
DIP_PRESET = {"denoise": "denoise", "sr": "sr", "inpaint1": "inpaint",
              "inpaint2": "inpaint", "vase": "vase", "flash": "flash"}
DEEPRED_PRESET = {"denoise": "denoise", "sr": "sr", "inpaint1": "inpaint",
                  "inpaint2": "inpaint", "vase": "inpaint", "flash": "flash"}
# TV weight grids (the lam of tv_restore: sum-of-squares scale; with
# Denoise it is skimage's weight). x4 SR: ||A^T A|| = 0.066, so ~1e-3.
TV_GRID = {"denoise": (0.04, 0.05, 0.06, 0.07, 0.08, 0.1, 0.12, 0.15),
           "sr": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
           "inpaint": (1e-3, 3e-3, 1e-2, 3e-2, 0.1),
           "flash": (1e-3, 3e-3, 1e-2, 3e-2, 0.1)}


@dataclasses.dataclass(frozen=True)
class Profile:
  """Inputs and budgets of a table (see the module docstring)."""

  name: str
  flagfiles: str                  # which <task>_<flagfiles>.flags set DNCF
  net_channels: Optional[int]     # DIP / DeepRED width (None: preset's 128)
  tv_iterations: int = 100        # FISTA iterations per weight
  tv_grid_points: int = 0         # > 0: only this many grid weights
  crop: int = 0                   # > 0: center crop of this size (tiny)
  snapshot_every: int = 200       # flash transition figure
  feature_iterations: Optional[int] = None  # DNCF feature phase, if the flagfile has one
  dncf_overrides: tuple = ()      # (field, value) pairs on the flagfile's DNCF
  net_overrides: tuple = ()       # (field, value) pairs on DIP / DeepRED


_TINY_NET = (("scales", 2), ("channels", 4), ("skip_channels", 2),
             ("checkpoint_every", 2))
PROFILES = {
    "cpu_small": Profile("cpu_small", "cpu_small", 32),
    "paper": Profile("paper", "paper", None),
    "tiny": Profile("tiny", "cpu_small", 4, tv_iterations=5, tv_grid_points=2,
                    crop=32, snapshot_every=2, feature_iterations=2,
                    dncf_overrides=_TINY_NET + (("iterations", 4),),
                    net_overrides=_TINY_NET + (("iterations", 4),
                                               ("input_depth", 4),
                                               ("update_every", 2),
                                               ("denoiser_iters", 5))),
}


def profile(name: str) -> Profile:
  if name not in PROFILES:
    raise ValueError(f"unknown profile {name!r}; choose one of {tuple(PROFILES)}")
  return PROFILES[name]


def check_choice(kind: str, given, allowed) -> list[str]:
  """``given`` (a list) minus empties; a ValueError names any unknown entry."""
  given = [g for g in given if g]
  bad = [g for g in given if g not in allowed]
  if bad:
    raise ValueError(f"unknown {kind}(s) {bad}; choose from {list(allowed)}")
  if not given:
    raise ValueError(f"no {kind} given; choose from {list(allowed)}")
  return given


def applies(method: str, task: str) -> bool:
  """Bicubic is for super-resolution only; every other method fits every task."""
  return method != "bicubic" or task == "sr"


# ---------------------------------------------------------------------------
# Flagfiles and inputs
# ---------------------------------------------------------------------------


def read_flagfile(path: str) -> dict[str, str]:
  """``--name=value`` lines of an absl flagfile (``--flag`` alone: "true")."""
  out = {}
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line.startswith("--"):
        continue
      name, _, value = line[2:].partition("=")
      out[name] = value if _ else "true"
  return out


def task_flags(task: str, prof: Profile) -> dict[str, str]:
  return read_flagfile(os.path.join(CONFIG_DIR, f"{task}_{prof.flagfiles}.flags"))


def _center(a: np.ndarray, size: int) -> np.ndarray:
  h, w = a.shape[:2]
  if h < size or w < size:
    raise ValueError(f"cannot crop {size}x{size} from {h}x{w}")
  r, c = (h - size) // 2, (w - size) // 2
  return a[r:r + size, c:c + size]


def _lanczos_down(hr: np.ndarray, factor: int) -> np.ndarray:
  """The benchmark's LR image: PIL Lanczos resize of the 8-bit HR."""
  h, w = hr.shape[0] // factor, hr.shape[1] // factor
  im = Image.fromarray((np.clip(hr, 0, 1) * 255 + 0.5).astype(np.uint8))
  return dio.to_float(im.resize((w, h), Image.LANCZOS))


def _load(fl: dict, key: str, data_dir: str, mask: bool = False) -> np.ndarray:
  """An image (or mask) named in a flagfile, with its --resize and --crop."""
  path = os.path.join(data_dir, fl[key])
  size = None
  if "resize" in fl:
    w, h = (int(v) for v in fl["resize"].lower().split("x"))
    size = (w, h)
  a = dio.load_mask(path, size) if mask else dio.load_image(path, size,
                                                            keep_gray=False)
  if "crop" in fl:
    rows, cols = fl["crop"].split(",")
    (r0, r1), (c0, c1) = ((int(v) for v in s.split(":")) for s in (rows, cols))
    a = a[r0:r1, c0:c1]
  return a


def paper_input(task: str, fl: dict, data_dir: str) -> dict:
  """The full-size input a ``<task>_paper.flags`` describes (as the task CLIs build it)."""
  if task == "denoise":
    gt = _load(fl, "input", data_dir)
    noise = np.random.default_rng(int(fl.get("noise_seed", 0))).standard_normal(
        gt.shape)
    sigma = float(fl["synthetic_sigma"]) / 255.0
    return dict(observation=np.clip(gt + sigma * noise, 0, 1).astype(np.float32),
                ground_truth=gt)
  if task == "sr":
    gt = _load(fl, "input", data_dir)
    return dict(observation=_lanczos_down(gt, int(fl.get("factor", 4))),
                ground_truth=gt)
  if task in ("inpaint1", "inpaint2", "vase"):
    img, mask = _load(fl, "input", data_dir), _load(fl, "mask", data_dir, True)
    out = dict(observation=img * mask[:, :, None], mask=mask)
    if task != "vase":
      out["ground_truth"] = img
    return out
  if task == "flash":
    return dict(observation=_load(fl, "input", data_dir),
                flash=_load(fl, "flash", data_dir))
  raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")


def crop_input(task: str, full: dict, size: int) -> dict:
  """A ``size`` center crop of a task's inputs (SR: of the HR image, then
  its x4 Lanczos LR)."""
  if task == "sr":
    gt = _center(full["ground_truth"], size)
    return dict(observation=_lanczos_down(gt, 4), ground_truth=gt)
  return {k: _center(v, size) for k, v in full.items()}


def tiny_input(task: str, data_dir: str, size: int) -> dict:
  """A center crop of the cpu-small input (:func:`crop_input`)."""
  return crop_input(task, dio.benchmark_input(task, data_dir), size)


def task_input(task: str, prof: Profile, data_dir: str) -> dict:
  """Observation and, where they exist, ground truth, mask, flash image."""
  if task not in TASKS:
    raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
  if prof.crop:
    return tiny_input(task, data_dir, prof.crop)
  if prof.name == "paper":
    return paper_input(task, task_flags(task, prof), data_dir)
  return dio.benchmark_input(task, data_dir)


def make_physics(task: str, inputs: dict, fl: dict):
  """The task's physics, with the rho / tv_guess / factor / kernel / fill
  of its flagfile."""
  if task == "denoise":
    return physics.Denoise(rho=float(fl.get("rho", 1.0)),
                           tv=float(fl.get("tv_guess", 0.0)))
  if task == "sr":
    return physics.SuperResolution(int(fl.get("factor", 4)),
                                   fl.get("kernel", "lanczos"),
                                   float(fl.get("rho", 0.0)))
  if task in ("inpaint1", "inpaint2", "vase"):
    return physics.Inpaint(mask=inputs["mask"],
                           fill=fl.get("fill", "harmonic"))
  if task == "flash":
    return physics.FlashNoFlash(flash=inputs["flash"],
                                rho=float(fl.get("rho", 1.0)))
  raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")


# ---------------------------------------------------------------------------
# Configs per method
# ---------------------------------------------------------------------------


def _cast(cfg, name: str, value):
  """A flagfile string as the type of config ``cfg``'s field of flag ``name``."""
  from dncf_jax.config import flat_fields
  ftype = {n: f.type for n, f, _ in flat_fields(cfg)}[name]
  if ftype in ("bool", bool) and isinstance(value, str):
    return value.lower() in ("1", "true")
  for t in (int, float):
    if ftype in (t.__name__, t):
      return t(value)
  return value


def dncf_config(task: str, prof: Profile, seed: int,
                overrides: Optional[dict] = None):
  """DNCFConfig from the task's flagfile, then the profile's and ``overrides``."""
  import dncf_jax as dn
  base = dn.DNCFConfig()
  fields = set(base.flat())
  kw = {k: _cast(base, k, v) for k, v in task_flags(task, prof).items()
        if k in fields}
  kw.update(dict(prof.dncf_overrides))
  if kw.get("feature_iterations") and prof.feature_iterations is not None:
    kw["feature_iterations"] = prof.feature_iterations
  kw.update({k: v for k, v in (overrides or {}).items() if v is not None})
  cfg = dn.DNCFConfig.from_flat(**{**kw, "seed": seed})
  cfg.validate()
  return cfg


def net_config(method: str, task: str, prof: Profile, seed: int,
               overrides: Optional[dict] = None):
  """The DIP or DeepRED preset of ``task`` at the profile's width and budget."""
  from dncf_jax import baselines as bl
  make, preset = ((bl.dip_config, DIP_PRESET) if method == "dip"
                  else (bl.deepred_config, DEEPRED_PRESET))
  base = make(preset[task])
  names = set(base.flat())
  kw = {k: v for k, v in prof.net_overrides if k in names}
  if base.net.skip_channels == 0:
    kw.pop("skip_channels", None)    # a net without skips stays without
  if prof.net_channels is not None:
    kw["channels"] = prof.net_channels
  kw.update({k: v for k, v in (overrides or {}).items() if v is not None})
  cfg = base.replace(seed=seed, **kw)
  cfg.validate()
  return cfg


def tv_grid(task: str, prof: Profile) -> tuple[float, ...]:
  grid = TV_GRID["inpaint" if task in ("inpaint1", "inpaint2", "vase") else task]
  if prof.tv_grid_points:
    idx = np.linspace(0, len(grid) - 1, prof.tv_grid_points).round().astype(int)
    grid = tuple(grid[i] for i in idx)
  return grid


# ---------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
  """One (task, method, seed): the record for the table and arrays for the figures."""

  record: dict
  image: np.ndarray
  curve: np.ndarray = dataclasses.field(       # (n, 2): wall seconds, oracle PSNR
      default_factory=lambda: np.zeros((0, 2), np.float32))
  snapshot_iteration: np.ndarray = dataclasses.field(
      default_factory=lambda: np.zeros((0,), np.int32))
  snapshot_images: np.ndarray = dataclasses.field(
      default_factory=lambda: np.zeros((0,), np.float32))


def score(image: np.ndarray, inputs: dict, task_obj) -> dict:
  """PSNR / MSE / SSIM vs the ground truth; flash: MSE vs the no-flash image."""
  gt = inputs.get("ground_truth")
  if gt is not None:
    return metrics.scores(image, gt)
  out = dict(psnr=None, ssim=None, mse=None)
  if "flash" in inputs:
    out["mse"] = metrics.mse(image, inputs["observation"])
  else:  # vase: only the fit to the known pixels
    obs = inputs["observation"]
    fit = np.asarray(task_obj.forward(np.asarray(image, np.float32)))
    w = np.asarray(task_obj.weights(obs))
    out["mse_to_observation"] = float(np.sum(w * (fit - obs) ** 2) / np.sum(w))
  return out


def curve_recorder(t0: float):
  """A progress callback keeping (iteration, seconds since t0, best
  candidate PSNR) at every checkpoint that has a PSNR (a reference)."""
  rows: list[tuple[int, float, float]] = []

  def record(info: dict) -> None:
    if "psnr" in info:
      rows.append((int(info["iteration"]), time.perf_counter() - t0,
                   max(info["psnr"].values())))

  return rows, record


def _seconds_psnr(rows: list) -> np.ndarray:
  """The (n, 2) curve of a :class:`Run`: wall seconds, oracle PSNR."""
  return np.asarray(rows, np.float32).reshape(-1, 3)[:, 1:]


def _oracle(history: dict) -> Optional[float]:
  p = history.get("checkpoint_psnr")
  return None if p is None or not np.size(p) else float(np.max(p))


def run_dncf(task: str, inputs: dict, task_obj, cfg, snapshot_every: int) -> Run:
  import jax
  import dncf_jax as dn
  snap = snapshot_every if task == "flash" else 0
  t0 = time.perf_counter()
  rows, rec = curve_recorder(t0)
  r = dn.restore(inputs["observation"], task_obj, cfg, jax.random.key(cfg.seed),
                 reference=inputs.get("ground_truth"), progress=rec,
                 snapshot_every=snap)
  record = dict(seconds=r.seconds, compile_seconds=r.compile_seconds,
                iterations=int(len(r.history["data"])),
                iteration_budget=cfg.iterations + cfg.feature_iterations,
                chosen=r.chosen, chosen_iteration=r.chosen_iteration,
                oracle_psnr=_oracle(r.history),
                config=cfg.flat())
  out = Run(record, r.image, _seconds_psnr(rows))
  if snap:
    out.snapshot_iteration = r.history["snapshot_iteration"]
    i = dn.select.CANDIDATES.index("f(y)")
    out.snapshot_images = r.history["snapshot_images"][:, i]
  return out


def run_net_baseline(method: str, inputs: dict, task_obj, cfg) -> Run:
  """DIP or DeepRED+TV; the image is the blind ``config.output``."""
  import jax
  from dncf_jax import baselines as bl
  fn = bl.dip_restore if method == "dip" else bl.deepred_restore
  t0 = time.perf_counter()
  rows, rec = curve_recorder(t0)
  r = fn(inputs["observation"], task_obj, cfg, jax.random.key(cfg.seed),
         reference=inputs.get("ground_truth"), progress=rec)
  record = dict(seconds=r.seconds, compile_seconds=r.compile_seconds,
                iterations=r.chosen_iteration, iteration_budget=cfg.iterations,
                chosen=r.chosen, oracle_psnr=_oracle(r.history),
                config=cfg.flat())
  return Run(record, r.image, _seconds_psnr(rows))


def run_tv(task: str, inputs: dict, task_obj, grid, iters: int) -> Run:
  """TV by FISTA; blind weight by the discrepancy principle, oracle by the GT."""
  from dncf_jax import baselines as bl
  obs = inputs["observation"]
  t0 = time.perf_counter()
  weight, _ = bl.tv_weight_discrepancy(obs, task_obj, grid, iters=iters)
  image = bl.tv_restore(obs, task_obj, weight, iters=iters)
  seconds = time.perf_counter() - t0
  record = dict(seconds=seconds, iterations=iters, weight=weight,
                grid=list(grid), oracle_psnr=None, oracle_weight=None,
                config=dict(grid=list(grid), iters=iters))
  gt = inputs.get("ground_truth")
  if gt is not None:
    w_oracle, psnrs = bl.tv_weight_oracle(obs, task_obj, gt, grid, iters=iters)
    record.update(oracle_weight=w_oracle, oracle_psnr=float(max(psnrs)))
  return Run(record, np.asarray(image))


def run_bicubic(inputs: dict, task_obj) -> Run:
  from dncf_jax import baselines as bl
  t0 = time.perf_counter()
  image = bl.bicubic_upsample(inputs["observation"], task_obj.factor)
  return Run(dict(seconds=time.perf_counter() - t0, iterations=None,
                  oracle_psnr=None, config=dict(factor=task_obj.factor)), image)


def run_one(task: str, method: str, seed: int, prof: Profile, inputs: dict,
            overrides: dict[str, dict]) -> Run:
  """Runs ``method`` on ``task`` and scores it (``overrides``: per method)."""
  if not applies(method, task):
    raise ValueError(f"{method} does not apply to {task}")
  fl = task_flags(task, prof)
  task_obj = make_physics(task, inputs, fl)
  if method == "dncf":
    cfg = dncf_config(task, prof, seed, overrides.get("dncf"))
    run = run_dncf(task, inputs, task_obj, cfg, prof.snapshot_every)
  elif method in ("dip", "deepred"):
    cfg = net_config(method, task, prof, seed, overrides.get(method))
    run = run_net_baseline(method, inputs, task_obj, cfg)
  elif method == "tv":
    iters = (overrides.get("tv") or {}).get("iterations") or prof.tv_iterations
    run = run_tv(task, inputs, task_obj, tv_grid(task, prof), iters)
  else:
    run = run_bicubic(inputs, task_obj)
  run.record.update(score(run.image, inputs, task_obj))
  run.record.update(task=task, method=method, seed=seed)
  return run


def cell_config(task: str, method: str, seed: int, prof: Profile,
                overrides: dict[str, dict]) -> dict[str, Any]:
  """The settings a run is made with (a resumed run is reused only if equal)."""
  if method == "dncf":
    return dncf_config(task, prof, seed, overrides.get("dncf")).flat()
  if method in ("dip", "deepred"):
    return net_config(method, task, prof, seed, overrides.get(method)).flat()
  if method == "tv":
    iters = (overrides.get("tv") or {}).get("iterations") or prof.tv_iterations
    return dict(grid=list(tv_grid(task, prof)), iters=iters)
  return dict(factor=int(task_flags(task, prof).get("factor", 4)))

