"""What every photography experiment shares: flags, inputs, outputs.

Flags for every :class:`dncf_jax.DNCFConfig` field are generated from the
dataclass (help text from the field's metadata), so a new config field is
a new flag with no further code. A command lists all of them in ``--help``
after ``flags.adopt_module_key_flags(common)``.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
from typing import Optional

from absl import flags
import numpy as np
from PIL import Image

from experiments import cli
from experiments.cli import run_main  # noqa: F401  (re-exported for the commands)
import dncf_jax as dn
from dncf_jax import io as dio
from dncf_jax import metrics, physics, tiles

FLAGS = flags.FLAGS

flags.DEFINE_string("input", None, "Input image (PNG/JPEG). Relative paths are "
                    "looked up in the working directory, then in --data_dir.")
flags.DEFINE_string("ground_truth", None, "Clean image, for scoring only (the "
                    "result is chosen without it).")
flags.DEFINE_string("output_dir", "outputs", "Folder of the results: "
                    "<name>_result.png, <name>_panel.png, <name>.json.")
flags.DEFINE_string("data_dir", dio.default_data_dir(),
                    "Data folder: relative --input, --mask, ... paths are "
                    "looked up there (default: $DNCF_DATA, ../shared/data, "
                    "~/.cache/dncf_jax/data).")
flags.DEFINE_string("name", None, "Name of the outputs (default: the task).")
flags.DEFINE_boolean("overwrite", False, "Replace the results of an earlier "
                     "run of the same --name in --output_dir (without it the "
                     "command stops before any work).")
flags.DEFINE_string("resize", None, "Resize inputs to WxH (Lanczos; masks "
                    "nearest) before cropping, e.g. 128x128.")
flags.DEFINE_string("crop", None, "Crop rows and columns r0:r1,c0:c1 after "
                    "resizing, e.g. 192:320,192:320.")
flags.DEFINE_float("synthetic_sigma", None, "Add Gaussian noise of this std "
                   "(0-255 scale) to the clean --input, which then serves as "
                   "ground truth.")
flags.DEFINE_integer("noise_seed", 0, "Seed of np.random.default_rng for "
                     "--synthetic_sigma.")
flags.DEFINE_integer("log_every", 50, "Print a progress line every N "
                     "iterations (rounded to checkpoint_every); the first "
                     "and the last checkpoint always print.")
flags.DEFINE_boolean("gray", False, "Load images as one-channel gray.")
flags.DEFINE_string("compilation_cache", cli.default_cache_dir(),
                    "JAX's persistent compilation cache: a second run of the "
                    "same shapes does not compile again. Empty: off.")
flags.DEFINE_boolean("dry_run", False, "Load and check the inputs, write them "
                     "to <output_dir>/<name>_inputs.npz, and stop.")

_CONFIG_FLAGS: dict[str, str] = {}


# The denoising commands' first guess: total variation at half the noise
# std, above the paper's Gaussian G on the mean of the bsd20 photos
# (docs/results.md); the benchmark flagfiles set 0, the paper's G.
TV_GUESS = 0.5


def define_guess_flags() -> None:
  """The denoising commands' first guess: ``--rho`` (``physics.Denoise``),
  ``--tv_guess`` (``Denoise.tv``) and ``--nlm_guess`` (``Denoise.guess``)."""
  flags.DEFINE_float("rho", 1.0, "Width of the Gaussian smoothing G_rho.")
  flags.DEFINE_float(
      "tv_guess", TV_GUESS, "G by total variation, weight tv_guess times the "
      "noise std, instead of Gaussian smoothing (--rho); 0: the paper's G.")
  flags.DEFINE_float(
      "nlm_guess", 0.0, "G by non-local means with h = nlm_guess times the "
      "noise std (e.g. 0.6), in place of --tv_guess; 0: off.")


def denoise_physics(obs, sigma: Optional[float] = None):
  """``physics.Denoise`` of the first-guess flags (``sigma``: the known
  noise std in [0, 1] units, or ``None`` to estimate it)."""
  if not (np.isfinite(FLAGS.nlm_guess) and FLAGS.nlm_guess >= 0):
    raise ValueError(f"--nlm_guess must be >= 0, got {FLAGS.nlm_guess}")
  guess = None
  if FLAGS.nlm_guess > 0:
    from dncf_jax.baselines import nlm
    guess = nlm.nlm_denoise(obs, sigma, FLAGS.nlm_guess)
  return physics.Denoise(rho=FLAGS.rho, noise_sigma=sigma, tv=FLAGS.tv_guess,
                         guess=guess)


# The super-resolution commands' defaults. With the answer projected onto
# the measurements, whole bsd20 photos are within 0.05 dB of their 100-
# and 300-iteration answers by iteration 50, and the net's projected
# outputs are above the projected y from iteration 20 on: y must fit e^3
# times better to be chosen (docs/results.md). The benchmark flagfiles
# set the paper's 600 iterations and y_handicap 1.
SR_DEFAULTS = dict(iterations=50, y_handicap=3.0)

# The denoising commands' defaults: a quarter DNCF's answer, three quarters
# the mean of non-local means and wavelet shrinkage (+1.7 dB over DNCF
# alone on the bsd20 photos at sigma 25, +0.06 over the classical pair
# alone; docs/results.md). The benchmark flagfiles set fuse 0.
DENOISE_DEFAULTS = dict(fuse=0.75, fuse_with="nlm_wavelet")


# The inpainting commands' defaults: G the biharmonic fill of the holes,
# y chosen on an equal footing with the net's outputs, 50 iterations. On
# 96-pixel crops of six photos under nine kinds of mask (pixels missing at
# random, text, blocks, wide holes) this is above the paper's setting (the
# harmonic fill, y_handicap 1, 600 iterations) on 20 of 28, by 1.6 dB on
# the mean, in a twelfth of the iterations; where the paper's setting
# wins (some wide holes, which its y fills after 600 iterations), it is by
# up to 4.5 dB (docs/results.md, benchmarks/inpaint_masks.py). The
# benchmark flagfiles set the paper's.
INPAINT_DEFAULTS = dict(y_handicap=0.0, iterations=50)


def define_fill_flag() -> None:
  """``--fill`` of the inpainting commands (``physics.Inpaint.fill``)."""
  flags.DEFINE_enum("fill", "biharmonic", list(physics.FILLS),
                    "G of inpainting: the biharmonic fill of the holes (as "
                    "skimage's inpaint_biharmonic) or the harmonic one.")


# Whole photos up to WHOLE_PIXELS scene pixels; larger ones are restored as
# tiles of TILE pixels, TILE_PIXELS scene pixels of tiles at a time, so that
# memory is bounded by the tiles in flight, not by the photo (peak memory
# measured on CPU: docs/performance.md).
WHOLE_PIXELS = 2 ** 20
TILE = 256
TILE_PIXELS = 2 ** 19


def define_tile_flags() -> None:
  """``--tile``, ``--tile_overlap``, ``--tiles_in_flight`` of the image
  commands (:func:`dncf_jax.tiles.restore_tiled`)."""
  flags.DEFINE_integer(
      "tile", None, "Restore the image as overlapping tiles of this side "
      "(scene pixels), blended without seams; 0: the whole image. Default: "
      f"the whole image up to {WHOLE_PIXELS} scene pixels, tiles of {TILE} "
      "above.")
  flags.DEFINE_integer("tile_overlap", 32, "Pixels shared by neighbouring "
                       "tiles.")
  flags.DEFINE_integer("tiles_in_flight", None, "Tiles restored at once "
                       f"(default: as many as hold {TILE_PIXELS} scene "
                       "pixels); bounds the memory.")


def tiling(task, obs_shape) -> Optional[tuple[tiles.TileConfig, int]]:
  """``(TileConfig, tiles in flight)`` of the tile flags for an observation
  of ``obs_shape``, or ``None`` for the whole image."""
  h, w = task.scene_shape(tuple(obs_shape))[:2]
  side = FLAGS.tile
  if side is None:
    side = TILE if h * w > WHOLE_PIXELS else 0
  if side < 0 or (FLAGS.tiles_in_flight or 1) < 1:
    raise ValueError(f"--tile must be >= 0 and --tiles_in_flight >= 1, got "
                     f"{FLAGS.tile} and {FLAGS.tiles_in_flight}")
  if side == 0 or (h <= side and w <= side):
    return None
  cfg = tiles.TileConfig(side, FLAGS.tile_overlap)
  cfg.check(tiles.scale_factor(task))
  return cfg, FLAGS.tiles_in_flight or max(1, TILE_PIXELS // side ** 2)


def define_config_flags(**defaults) -> None:
  """One flag per :class:`dncf_jax.DNCFConfig` field (its flag name and help
  text from the field's metadata), with per-task default overrides; all of
  them key flags of this module."""
  _CONFIG_FLAGS.update(cli.define_config_flags(
      dn.DNCFConfig(), notes={"epsilon": "On the images' 0-1 scale."},
      **defaults))
  for name in _CONFIG_FLAGS:
    flags.declare_key_flag(name)


def config_from_flags() -> dn.DNCFConfig:
  """The :class:`dncf_jax.DNCFConfig` the flags describe, validated."""
  cfg = dn.DNCFConfig.from_flat(**cli.config_values(_CONFIG_FLAGS))
  cfg.validate()
  return cfg


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


def resolve(path: Optional[str]) -> Optional[str]:
  """A path as given, or relative to --data_dir; errors name both tries."""
  if path is None:
    return None
  if os.path.isfile(path):
    return path
  alt = os.path.join(FLAGS.data_dir, path)
  if os.path.isfile(alt):
    return alt
  raise FileNotFoundError(f"file not found: {path} (also tried {alt})")


def _parse_size(text: str) -> tuple[int, int]:
  try:
    w, h = (int(v) for v in text.lower().split("x"))
  except ValueError:
    raise ValueError(f"--resize must look like 128x96 (W x H), got {text!r}")
  if w < 1 or h < 1:
    raise ValueError(f"--resize must be positive, got {text!r}")
  return w, h


def _parse_crop(text: str) -> tuple[slice, slice]:
  try:
    rows, cols = text.split(",")
    r0, r1 = (int(v) for v in rows.split(":"))
    c0, c1 = (int(v) for v in cols.split(":"))
  except ValueError:
    raise ValueError(f"--crop must look like r0:r1,c0:c1, got {text!r}")
  return slice(r0, r1), slice(c0, c1)


def load(path: str, mask: bool = False) -> np.ndarray:
  """Loads an image (or mask) with --resize then --crop applied."""
  path = resolve(path)
  size = _parse_size(FLAGS.resize) if FLAGS.resize else None
  if mask:
    a = dio.load_mask(path, size)
  else:
    a = dio.load_image(path, size, keep_gray=FLAGS.gray)
    if not FLAGS.gray and a.shape[2] == 1:
      a = np.repeat(a, 3, axis=2)
  if FLAGS.crop:
    rs, cs = _parse_crop(FLAGS.crop)
    h, w = a.shape[:2]
    if not (0 <= rs.start < rs.stop <= h and 0 <= cs.start < cs.stop <= w):
      raise ValueError(f"--crop {FLAGS.crop} does not fit an image of {h}x{w}")
    a = a[rs, cs]
  return a


def add_noise(clean: np.ndarray, sigma255: float, seed: int) -> np.ndarray:
  """``clip(clean + sigma/255 * N(0, 1), 0, 1)`` with ``default_rng(seed)``."""
  if sigma255 < 0:
    raise ValueError(f"--synthetic_sigma must be >= 0, got {sigma255}")
  return dio.add_noise(clean, sigma255, seed)


# ---------------------------------------------------------------------------
# Running and writing
# ---------------------------------------------------------------------------


def progress_printer(log_every: int):
  """A ``progress=`` callback printing the first and last checkpoints and
  one every ``log_every`` iterations: elapsed time, ETA, losses and (with
  a ground truth) the ORACLE PSNR of each candidate. A tiled run's lines
  name the tiles running (``part``, :func:`dncf_jax.restore_batch`) and,
  from the second part on, the time left for all of them at the pace of
  the parts done."""
  state = {"printed": False, "part": None, "start": time.perf_counter()}

  def show(info: dict) -> None:
    it = info["iteration"]
    if info.get("part") != state["part"]:     # the next tiles started
      state.update(printed=False, part=info.get("part"),
                   since=time.perf_counter())
    last = it >= info["total"] or info.get("active", 1) == 0
    if state["printed"] and it % max(log_every, 1) and not last:
      return
    state["printed"] = True
    where = info["phase"]
    if "part" in info:
      first, end, n = info["part"]
      where += f", tiles {first + 1}-{end} of {n}"
      if first:
        per_tile = (state["since"] - state["start"]) / first
        left = per_tile * (n - first) - (time.perf_counter() - state["since"])
        where += f", about {cli.duration(left)} left"
    line = (f"[{where}] {cli.progress_line(info)}, "
            f"data {info['data']:.3e}, R {info['penalty']:.2e}, "
            f"gamma {info['gamma']:.1e}, y-evals {info['y_evals']:.1f}")
    if "psnr" in info:
      line += ", oracle PSNR " + " ".join(
          f"{k}={v:.2f}" for k, v in info["psnr"].items())
    print(line, flush=True)
  return show


def _to_uint8(x: np.ndarray) -> np.ndarray:
  x = np.clip(np.asarray(x), 0, 1)
  if x.ndim == 3 and x.shape[2] == 1:
    x = x[:, :, 0]
  return (x * 255 + 0.5).astype(np.uint8)


def save_png(path: str, x: np.ndarray) -> None:
  Image.fromarray(_to_uint8(x)).save(path)


def panel(images: list[np.ndarray], gap: int = 4) -> np.ndarray:
  """Images side by side (resized by pixel repetition to the tallest)."""
  h = max(im.shape[0] for im in images)
  cols = []
  for im in images:
    im = np.asarray(im, np.float32)
    if im.shape[2] == 1:
      im = np.repeat(im, 3, axis=2)
    if im.shape[0] != h:
      f = h // im.shape[0]
      im = np.repeat(np.repeat(im, f, axis=0), f, axis=1)
      im = np.pad(im, ((0, h - im.shape[0]), (0, 0), (0, 0)), constant_values=1)
    cols.append(im)
    cols.append(np.ones((h, gap, 3), np.float32))
  return np.concatenate(cols[:-1], axis=1)


def output_paths(name: str) -> dict[str, str]:
  """The files a run named ``name`` writes in --output_dir."""
  d = FLAGS.output_dir
  return dict(json=os.path.join(d, f"{name}.json"),
              result=os.path.join(d, f"{name}_result.png"),
              panel=os.path.join(d, f"{name}_panel.png"))


def _write_json(path: str, payload: dict) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(payload, f, indent=2, default=float)
  os.replace(tmp, path)


def run_and_write(name: str, observation: np.ndarray, task,
                  ground_truth: Optional[np.ndarray],
                  extra_panels: tuple = (), extra_json: Optional[dict] = None
                  ) -> dict:
  """Restores, prints progress, writes ``name``_result.png, _panel.png, .json.

  Results of an earlier run of ``name`` stop the command before any work,
  unless --overwrite.
  """
  cfg = config_from_flags()
  task.validate(observation)
  plan = tiling(task, observation.shape)
  paths = output_paths(name)
  if plan:
    cut = tiles.grid(observation.shape, plan[0], tiles.scale_factor(task))
    parts = dn.solver.chunks(len(cut), plan[1])
    print(f"{name}: as {parts[-1].stop} tiles of {plan[0].tile} pixels, "
          f"overlap {plan[0].overlap}, {parts[0].stop} at a time", flush=True)
  if FLAGS.dry_run:
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    arrays = dict(observation=observation)
    if ground_truth is not None:
      arrays["ground_truth"] = ground_truth
    path = os.path.join(FLAGS.output_dir, f"{name}_inputs.npz")
    np.savez(path, **arrays)
    print(f"{name}: inputs checked, written to {path}")
    return {}
  cli.refuse_overwrite(paths.values(), FLAGS.overwrite,
                       "another --name/--output_dir")
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  cli.use_compilation_cache(FLAGS.compilation_cache)
  record = cli.run_record()
  dev = record["device"]
  h, w, c = observation.shape
  budget = cfg.iterations + cfg.feature_iterations
  print(f"{name}: {type(task).__name__}, observation {w}x{h}x{c}, device "
        f"{dev['kind']} ({dev['backend']}), at most {budget} iterations",
        flush=True)
  print("compiling (first run of this shape; cached afterwards) ...", flush=True)
  image, run = (_tiled(observation, task, cfg, plan) if plan else
                _whole(observation, task, cfg, ground_truth))
  print(run["stop_reason"], flush=True)
  out = dict(record, name=name, task=type(task).__name__, **run,
             projected=cfg.select.project and dn.solver.projects(task),
             fused=dn.solver.fuse_weight(cfg, task),
             fused_with=cfg.select.fuse_with, iteration_budget=budget,
             config=cfg.flat(), argv=sys.argv[1:])
  panels = [observation, *extra_panels, image]
  if ground_truth is not None:
    out.update(metrics.scores(image, ground_truth))
    panels.append(ground_truth)
  out["mse_to_observation"] = float(np.mean(
      (np.asarray(task.forward(image)) - observation) ** 2))
  if extra_json:
    out.update(extra_json)
  save_png(paths["result"], image)
  save_png(paths["panel"], panel(panels))
  _write_json(paths["json"], out)
  print(cli.summary(name, out, paths["json"]), flush=True)
  return out


def _stops(results: list, cfg: dn.DNCFConfig) -> dict:
  """What the record says of the runs' stopping (one run, or one per tile)."""
  budget = cfg.iterations + cfg.feature_iterations
  sigma255 = 255.0 * results[0].noise_sigma
  ran = [int(len(r.history["data"])) for r in results]
  stops = [cli.stop_reason(n, budget, sigma255, cfg.select.tau,
                           cfg.select.early_stop) for n in ran]
  early = [n for n, (e, _) in zip(ran, stops) if e]
  if len(results) == 1:
    reason = stops[0][1]
  elif not early:
    reason = "every tile " + stops[0][1]
  else:
    reason = (f"{len(early)} of {len(ran)} tiles stopped early, at iterations "
              f"{min(early)}-{max(early)} of {budget}: the discrepancy "
              f"principle was met (sigma {sigma255:.1f}/255)")
  return dict(stopped_early=len(early) == len(ran), stop_reason=reason,
              noise_sigma_255=sigma255, iterations=max(ran),
              mean_y_evals_per_step=float(np.mean(np.concatenate(
                  [r.history["y_evals"] for r in results]))))


def _whole(observation, task, cfg: dn.DNCFConfig, ground_truth
           ) -> tuple[np.ndarray, dict]:
  """``dn.restore`` of the whole image: its answer and its record."""
  import jax
  result = dn.restore(observation, task, cfg, jax.random.key(cfg.seed),
                      reference=ground_truth,
                      progress=progress_printer(FLAGS.log_every))
  out = dict(chosen=result.chosen, chosen_iteration=result.chosen_iteration,
             seconds=result.seconds, compile_seconds=result.compile_seconds,
             **_stops([result], cfg))
  if ground_truth is not None:
    psnr = result.history["checkpoint_psnr"]
    best = np.unravel_index(np.argmax(psnr), psnr.shape)
    out["oracle_best_psnr"] = float(psnr[best])
    out["oracle_best"] = dict(
        candidate=dn.select.CANDIDATES[best[1]],
        iteration=int(result.history["checkpoint_iteration"][best[0]]),
        note="best PSNR met along the run; needs the ground truth, "
             "so it is not what the method returns")
  return result.image, out


def _tiled(observation, task, cfg: dn.DNCFConfig, plan
           ) -> tuple[np.ndarray, dict]:
  """:func:`dncf_jax.tiles.restore_tiled` with ``plan`` = ``(TileConfig,
  tiles in flight)``: the blended answer and its record (each tile chose
  its own candidate and stop)."""
  import jax
  cut, in_flight = plan
  r = tiles.restore_tiled(
      observation, task, cfg, jax.random.key(cfg.seed), cut,
      batch_size=in_flight, progress=progress_printer(FLAGS.log_every))
  chosen = collections.Counter(t.chosen for t in r.tiles)
  its = sorted(int(t.chosen_iteration) for t in r.tiles)
  return r.image, dict(
      chosen=", ".join(f"{c} ({k} tiles)" for c, k in chosen.most_common()),
      chosen_iteration=str(its[0]) if its[0] == its[-1] else
      f"{its[0]}-{its[-1]}",
      seconds=r.seconds, compile_seconds=r.compile_seconds,
      tiles=len(r.starts), tile=cut.tile, tile_overlap=cut.overlap,
      tiles_in_flight=in_flight,
      **_stops(r.tiles, cfg))
