"""Whole photos against classical restorers: ``python -m experiments.photos``.

    python -m experiments.photos --tasks=denoise,sr,inpaint [--limit=20]
        [--methods=dncf,dncf_tiles,G,tv,tv_oracle,nlm,wavelet,nlm_wavelet,
                   cbm3d,bicubic,backprojection,biharmonic,dip]
        [--dip_channels=128]
        [--resume]

The ``photos`` profile of the benchmark protocol: the ``bsd20`` photos at
full size (denoising at sigma 25 and 50, x4 super-resolution, inpainting
with half the pixels missing; exact noise seeds, crops and masks in
:func:`dncf_jax.io.photo_input`). Every method is blind but those marked
ORACLE (TV's best weight, DNCF's best checkpoint), which need the ground
truth and stand beside the blind numbers. ``backprojection`` is bicubic
projected onto the measurements (``SuperResolution.project``): the share
of DNCF's super-resolution gain that the projection alone brings.
``dncf`` is what ``python -m experiments.denoise --input=photo.png`` (and
``sr``, ``inpaint``) runs: the default configuration on the whole image; ``dncf_tiles`` the same
configuration on overlapping tiles restored as one batch
(:func:`dncf_jax.tiles.restore_tiled`). CBM3D needs the ``bm3d`` package
(the ``bench`` extra) and is given the true sigma; ``nlm`` (scikit-image's
non-local means, :mod:`dncf_jax.baselines.nlm`), ``wavelet`` (cycle-spun
wavelet shrinkage) and ``nlm_wavelet`` (its mean with pixelwise NLM,
:mod:`dncf_jax.baselines.wavelet`) estimate it. ``dip`` is
Deep Image Prior at its notebook's setting for the task, ``--dip_channels``
wide (the table names widths other than the notebooks' 128): its blind
answer, and its best checkpoint as ORACLE beside it, as for ``dncf``.

DNCF's settings are the photo commands' flags (default: the default
configuration; super-resolution with ``python -m experiments.sr``'s
defaults and denoising with ``python -m experiments.denoise``'s, its
answer averaged with classical denoisers', and inpainting with
``python -m experiments.inpaint``'s, where the flags are not given;
inpainting's ``G`` by ``--fill``). Each (task, photo, method) is one line of
``<output_dir>/photos/records.jsonl`` (``--resume`` skips what is there,
and refuses records made with other settings, kept in ``settings.json``;
without it an existing file needs ``--overwrite``); the table, per photo
and mean (PSNR, SSIM, seconds), goes to ``photos.md`` and ``photos.json``,
and one panel per task (first photo: the observation, every method, the
ground truth) to ``<task>_panel.png``. A fused ``dncf`` record also holds
the ORACLE error terms of :func:`photos_report.fusion_terms`, computed
after its timing; the table prints the score they give at other fusion
weights.
"""

from __future__ import annotations

import json
import os
import time

from absl import flags
import numpy as np
from PIL import Image

from experiments import cli, common
from experiments.photos_report import METHODS, fusion_terms, table

FLAGS = flags.FLAGS
TASKS = {"denoise": ("denoise25", "denoise50"), "denoise25": ("denoise25",),
         "denoise50": ("denoise50",), "sr": ("sr",), "inpaint": ("inpaint",)}
APPLIES = {"cbm3d": TASKS["denoise"], "nlm": TASKS["denoise"],
           "wavelet": TASKS["denoise"], "nlm_wavelet": TASKS["denoise"],
           "bicubic": ("sr",), "backprojection": ("sr",),
           "biharmonic": ("inpaint",)}
TV_GRID = (0.01, 0.02, 0.04, 0.08, 0.16)

flags.DEFINE_list("tasks", ["denoise"], f"Among {tuple(TASKS)}.")
flags.DEFINE_list("methods", list(METHODS), f"Among {METHODS}.")
flags.DEFINE_integer("limit", 20, "The first N photos of bsd20.")
flags.DEFINE_integer("tile", 128, "Tile side of dncf_tiles (scene pixels).")
flags.DEFINE_integer("tile_overlap", 32, "Overlap of neighbouring tiles.")
flags.DEFINE_integer("dip_channels", 128, "Width of DIP's skip net (the "
                     "notebooks': 128); the table names other widths.")
flags.DEFINE_integer("dip_iterations", None, "DIP's Adam steps (default: "
                     "its notebook's for the task).")
common.define_guess_flags()
common.define_fill_flag()
flags.DEFINE_boolean("resume", False, "Keep the records already written.")
common.define_config_flags()
flags.adopt_module_key_flags(common)


def physics_of(task: str, inp: dict):
  from dncf_jax import physics
  if task.startswith("denoise"):
    return common.denoise_physics(inp["observation"])
  if task == "sr":
    return physics.SuperResolution(4)
  return physics.Inpaint(mask=inp["mask"], fill=FLAGS.fill)


def task_config(task: str, cfg):
  """The config of ``task``: ``python -m experiments.sr``'s (``denoise``'s,
  ``inpaint``'s) own defaults where the flags are not given."""
  defaults = {"sr": common.SR_DEFAULTS, "inpaint": common.INPAINT_DEFAULTS
              }.get(task, common.DENOISE_DEFAULTS)
  return cfg.replace(**{k: v for k, v in defaults.items()
                        if not FLAGS[k].present})


def dip_config(task: str):
  """DIP at its notebook's setting for ``task``, at ``--dip_channels``
  (and ``--dip_iterations`` where given)."""
  from dncf_jax.baselines import dip
  its = {} if FLAGS.dip_iterations is None else dict(iterations=FLAGS.dip_iterations)
  return dip.dip_config("denoise" if task.startswith("denoise") else task,
                        channels=FLAGS.dip_channels, **its)


def run_method(method: str, task: str, inp: dict, cfg) -> dict:
  """One method on one input: its image and what the record adds."""
  import jax
  import dncf_jax as dn
  from dncf_jax import tiles
  from dncf_jax.baselines import tv
  obs, gt, phys = inp["observation"], inp["ground_truth"], physics_of(task, inp)
  if method == "dncf":
    r = dn.restore(obs, phys, cfg, jax.random.key(cfg.seed), reference=gt)
    return dict(image=r.image, chosen=f"{r.chosen} @{r.chosen_iteration}",
                fused=dn.solver.fuse_weight(cfg, phys),
                fused_with=cfg.select.fuse_with,
                iterations=len(r.history["data"]),
                oracle_psnr=float(np.max(r.history["checkpoint_psnr"])),
                compile_seconds=r.compile_seconds)
  if method == "dip":
    from dncf_jax.baselines import dip
    r = dip.dip_restore(obs, phys, dip_config(task), jax.random.key(cfg.seed),
                        reference=gt)
    return dict(image=r.image, channels=FLAGS.dip_channels,
                iterations=len(r.history["loss"]),
                oracle_psnr=float(np.max(r.history["checkpoint_psnr"])),
                compile_seconds=r.compile_seconds)
  if method == "dncf_tiles":
    r = tiles.restore_tiled(obs, phys, cfg, jax.random.key(cfg.seed),
                            tiles.TileConfig(FLAGS.tile, FLAGS.tile_overlap))
    return dict(image=r.image, tiles=len(r.starts),
                compile_seconds=r.compile_seconds)
  if method == "G":
    return dict(image=np.clip(np.asarray(phys.anchor(obs)), 0, 1))
  if method == "tv":
    w, _ = tv.tv_weight_discrepancy(obs, phys, TV_GRID)
    return dict(image=np.clip(tv.tv_restore(obs, phys, w), 0, 1), weight=w)
  if method == "tv_oracle":
    w, _ = tv.tv_weight_oracle(obs, phys, gt, TV_GRID)
    return dict(image=np.clip(tv.tv_restore(obs, phys, w), 0, 1), weight=w,
                oracle=True)
  if method == "nlm":
    from dncf_jax.baselines import nlm
    return dict(image=nlm.nlm_denoise(obs))
  if method in ("wavelet", "nlm_wavelet"):
    from dncf_jax.baselines import wavelet
    return dict(image=(wavelet.wavelet_denoise if method == "wavelet" else
                       wavelet.nlm_wavelet_denoise)(obs))
  if method == "cbm3d":
    import bm3d
    return dict(image=np.clip(bm3d.bm3d_rgb(obs, sigma_psd=inp["sigma255"] / 255),
                              0, 1))
  if method == "bicubic":
    from dncf_jax.baselines import bicubic_upsample
    return dict(image=bicubic_upsample(obs, 4))
  if method == "backprojection":   # bicubic made to reproduce the input
    return dict(image=np.clip(np.asarray(phys.project(phys.anchor(obs), obs)),
                              0, 1))
  from skimage.restoration import inpaint_biharmonic
  return dict(image=np.clip(inpaint_biharmonic(obs, inp["mask"] < 0.5,
                                               channel_axis=-1), 0, 1))


def read_records(path: str) -> list[dict]:
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip().endswith("}")]


def check_flags() -> tuple[list[str], list[str]]:
  tasks = [t for name in FLAGS.tasks for t in TASKS.get(name, (None,))]
  if not tasks or None in tasks:
    raise ValueError(f"--tasks must be among {tuple(TASKS)}, got {FLAGS.tasks}")
  bad = [m for m in FLAGS.methods if m not in METHODS]
  if bad or not FLAGS.methods:
    raise ValueError(f"--methods must be among {METHODS}, got {FLAGS.methods}")
  if FLAGS.dip_channels < 1 or (FLAGS.dip_iterations or 1) < 1:
    raise ValueError("--dip_channels and --dip_iterations must be >= 1")
  if FLAGS.limit < 1:
    raise ValueError(f"--limit must be >= 1, got {FLAGS.limit}")
  if FLAGS.tile_overlap % 4 or FLAGS.tile % 4:
    raise ValueError("--tile and --tile_overlap must be multiples of 4 (the "
                     "super-resolution factor)")
  return tasks, list(FLAGS.methods)


def check_settings(path: str, settings: dict, resume: bool) -> None:
  """Writes ``settings`` to ``path``; with ``resume``, first refuses (one
  ``ValueError`` line) records made with other settings."""
  if resume and os.path.isfile(path):
    with open(path) as f:
      old = json.load(f)
    diff = sorted(k for k in set(old) | set(settings)
                  if old.get(k) != settings.get(k))
    if diff:
      raise ValueError(f"the records beside {path} were made with other "
                       f"settings ({', '.join(diff)}); pass --overwrite or "
                       "another --output_dir")
  with open(path, "w") as f:
    json.dump(settings, f, indent=1)


def save_panel(path: str, images: list[np.ndarray]) -> None:
  h = max(im.shape[0] for im in images)
  cols = [np.pad(np.clip(im, 0, 1), ((0, h - im.shape[0]), (0, 4), (0, 0)),
                 constant_values=1) for im in images]
  Image.fromarray((np.concatenate(cols, 1) * 255 + 0.5).astype(np.uint8)).save(path)


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  from dncf_jax import io as dio, metrics, solver
  tasks, methods = check_flags()
  cfg = common.config_from_flags()
  files = dio.photo_files(FLAGS.data_dir)[:FLAGS.limit]
  if not files:
    raise ValueError(f"no photos (.png, .jpg) in {FLAGS.data_dir}/bsd20")
  out_dir = os.path.join(FLAGS.output_dir, "photos")
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "records.jsonl")
  cli.use_compilation_cache(FLAGS.compilation_cache)
  if not FLAGS.resume:
    cli.refuse_overwrite([path], FLAGS.overwrite, "--resume")
    open(path, "w").close()
  configs = {t: task_config(t, cfg) for t in tasks}
  # each command's own defaults, whether or not its task runs here
  own = {f"{name}_config": task_config(t, cfg).flat() for name, t in
         (("sr", "sr"), ("denoise", "denoise25"), ("inpaint", "inpaint"))}
  check_settings(os.path.join(out_dir, "settings.json"),
                 dict(config=cfg.flat(), tv_guess=FLAGS.tv_guess,
                      nlm_guess=FLAGS.nlm_guess, rho=FLAGS.rho,
                      fill=FLAGS.fill, **own, tile=FLAGS.tile,
                      tile_overlap=FLAGS.tile_overlap,
                      dip_channels=FLAGS.dip_channels,
                      dip_iterations=FLAGS.dip_iterations),
                 FLAGS.resume)
  done = {(r["task"], r["photo"], r["method"]) for r in read_records(path)}
  record = cli.run_record()
  for task in tasks:
    shown = {}
    for i, f in enumerate(files):
      photo = f"{i}:{os.path.basename(f)}"
      inp = dio.photo_input(task, f, i)
      for m in methods:
        if task not in APPLIES.get(m, (task,)) or (task, photo, m) in done:
          continue
        t0 = time.perf_counter()
        out = run_method(m, task, inp, configs[task])
        image = out.pop("image")
        rec = dict(task=task, photo=photo, method=m, seconds=time.perf_counter() - t0,
                   **metrics.scores(image, inp["ground_truth"]), **out)
        if 0 < out.get("fused", 0) < 1:   # ORACLE terms, after the timing
          partner = solver.fuse_partner(configs[task], inp["observation"])
          rec.update(fusion_terms(image, out["fused"], partner,
                                  inp["ground_truth"]))
        with open(path, "a") as fh:
          fh.write(json.dumps(rec, default=float) + "\n")
        print(f"{task} {photo} {m}: {rec['psnr']:.2f} dB, {rec['seconds']:.0f} s",
              flush=True)
        if i == 0:
          shown[m] = image
      if i == 0 and shown:
        save_panel(os.path.join(out_dir, f"{task}_panel.png"),
                   [inp["observation"] if task != "sr" else
                    np.repeat(np.repeat(inp["observation"], 4, 0), 4, 1)]
                   + list(shown.values()) + [inp["ground_truth"]])
  records = read_records(path)
  md = table(records, tasks, methods)
  with open(os.path.join(out_dir, "photos.md"), "w") as fh:
    fh.write(md + "\n")
  with open(os.path.join(out_dir, "photos.json"), "w") as fh:
    json.dump(dict(record, profile="photos", config=cfg.flat(),
                   tv_guess=FLAGS.tv_guess, nlm_guess=FLAGS.nlm_guess,
                   fill=FLAGS.fill, **own, records=records),
              fh, indent=1, default=float)
  print(md)


if __name__ == "__main__":
  cli.run_main(main)
