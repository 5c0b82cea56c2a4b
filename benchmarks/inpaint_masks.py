"""The inpainting default against the paper's setting, mask by mask.

    python -m benchmarks.inpaint_masks --photos=0,1 --masks=rand50,rand80,rand90,text,blocks8,library
    python -m benchmarks.inpaint_masks --photos=2,3,4,5 --masks=blocks16,library_b,library,vase

Centre crops (``--size``) of bsd20 photos under masks of every kind:
pixels missing at random (``rand50``: half of them), text (``text``: the
DIP paper's kate mask), 8- and 16-pixel blocks covering about a quarter
(``blocks8``, ``blocks16``), the library mask (two regions) and the
vase's object (full-size masks, cropped, not resized). The random masks
draw, in the order listed, from ``default_rng(7 + photo index)``. Each
crop is restored by the inpaint command's defaults (``G`` the biharmonic
fill, ``y_handicap`` 0, 50 iterations) and by the paper's setting (the
harmonic fill, ``y_handicap`` 1, 600 iterations), both projected, each a
batch of one compiled program; beside them skimage's biharmonic fill and
``G`` (our biharmonic fill: conjugate gradients from the harmonic one)
and how deep the holes reach (the 90th percentile of a missing pixel's
distance to a known one). Prints PSNR per crop and the candidate each
run returned, writes JSON.
"""

from __future__ import annotations

import time

from absl import flags
import numpy as np
from PIL import Image

from benchmarks.common import machine, shared_data_dir, write_json
from experiments import cli

FLAGS = flags.FLAGS
MASKS = ("rand50", "rand80", "rand90", "text", "blocks8", "blocks16",
         "library", "library_b", "vase")
# (fill, config fields): the inpaint command's defaults (INPAINT_DEFAULTS
# of experiments/common.py, which defines flags, so not imported here) and
# the benchmark flagfiles' paper setting, both projected.
SETTINGS = {"default": ("biharmonic", dict(y_handicap=0.0, iterations=50)),
            "paper": ("harmonic", dict(y_handicap=1.0, iterations=600))}

flags.DEFINE_list("photos", ["0", "1"], "Indices of bsd20 photos (sorted).")
flags.DEFINE_list("masks", list(MASKS), f"Among {MASKS}.")
flags.DEFINE_integer("size", 96, "Side of the centre crops.")
flags.DEFINE_string("data_dir", None, "Shared data (default ../shared/data).")
flags.DEFINE_string("output", "benchmarks/results/inpaint_masks.json",
                    "JSON path.")


def _known(path: str) -> np.ndarray:
  return np.asarray(Image.open(path).convert("L")) > 127


def make_masks(names, size: int, index: int, dip_dir: str) -> dict:
  """``{name: (size, size) bool}`` (True = known pixel) for photo ``index``."""
  rng = np.random.default_rng(7 + index)
  out = {}
  for name in names:
    if name.startswith("rand"):
      out[name] = rng.random((size, size)) >= int(name[4:]) / 100
    elif name.startswith("blocks"):
      b, m = int(name[6:]), np.ones((size, size), bool)
      for _ in range(int(0.25 * size * size / b ** 2 * 1.3)):
        r, c = rng.integers(0, size - b, 2)
        m[r:r + b, c:c + b] = False
      out[name] = m
    elif name == "text":
      k = _known(f"{dip_dir}/kate_mask.png")
      out[name] = k[200:200 + size, 200:200 + size]
    elif name.startswith("library"):
      r, c = (150, 250) if name == "library" else (0, 0)
      k = _known(f"{dip_dir}/library_mask.png")
      out[name] = k[r:r + size, c:c + size]
    else:    # the vase's object, centred
      v = _known(f"{dip_dir}/vase_mask.png")
      ys, xs = np.nonzero(~v)
      r = max(0, (ys.min() + ys.max()) // 2 - size // 2)
      c = max(0, (xs.min() + xs.max()) // 2 - size // 2)
      out[name] = v[r:r + size, c:c + size]
  return out


def main(argv):
  del argv
  import jax
  from scipy import ndimage
  from skimage.restoration import inpaint_biharmonic
  import dncf_jax as dn
  from dncf_jax import io as dio, metrics, physics
  bad = sorted(set(FLAGS.masks) - set(MASKS))
  if bad or not FLAGS.masks:
    raise ValueError(f"--masks must be among {MASKS}, got {FLAGS.masks}")
  data_dir = shared_data_dir(FLAGS.data_dir, "bsd20")
  files = dio.photo_files(data_dir)
  s = FLAGS.size
  problems = []
  for i in (int(p) for p in FLAGS.photos):
    if not 0 <= i < len(files):
      raise ValueError(f"--photos: no photo {i} (bsd20 holds {len(files)})")
    gt = dio.to_float(Image.open(files[i]).convert("RGB"))
    h, w = gt.shape[:2]
    gt = gt[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    masks = make_masks(FLAGS.masks, s, i, f"{data_dir}/dip")
    for name, known in masks.items():
      hole = ~known
      mask = known.astype(np.float32)
      obs = gt * mask[..., None]
      g = physics.Inpaint(mask=mask, fill="biharmonic").anchor(obs)
      depth = ndimage.distance_transform_edt(hole)[hole]
      problems.append(dict(
          key=f"{i}:{name}", gt=gt, mask=mask,
          G=metrics.psnr(np.clip(np.asarray(g), 0, 1), gt),
          known=float(known.mean()), depth90=float(np.percentile(depth, 90)),
          fill=metrics.psnr(np.clip(inpaint_biharmonic(
              obs, hole, channel_axis=-1), 0, 1), gt)))
  out = dict(machine=machine(), size=s, photos=FLAGS.photos, masks=FLAGS.masks,
             seconds={}, rows={})
  for setting, (fill, kw) in SETTINGS.items():
    cfg = dn.DNCFConfig().replace(**kw)
    t0 = time.perf_counter()
    res = dn.restore_batch([p["gt"] * p["mask"][..., None] for p in problems],
                           [physics.Inpaint(mask=p["mask"], fill=fill)
                            for p in problems], cfg,
                           [jax.random.key(0)] * len(problems))
    out["seconds"][setting] = time.perf_counter() - t0
    for p, r in zip(problems, res):
      p[setting] = metrics.psnr(np.asarray(r.image), p["gt"])
      p[f"{setting}_chose"] = f"{r.chosen} @{r.chosen_iteration}"
  print("| crop | known | hole depth (px) | biharmonic fill (skimage) | "
        "G (ours) | default | paper |")
  print("|---|---|---|---|---|---|---|")
  for p in problems:
    out["rows"][p["key"]] = {k: v for k, v in p.items()
                             if k not in ("key", "gt", "mask")}
    print(f"| {p['key']} | {p['known']:.2f} | {p['depth90']:.1f} | "
          f"{p['fill']:.2f} | {p['G']:.2f} | {p['default']:.2f} "
          f"({p['default_chose']}) | {p['paper']:.2f} ({p['paper_chose']}) |")
  d = [p["default"] - p["paper"] for p in problems]
  print(f"default - paper: {np.mean(d):+.2f} dB on the mean, above on "
        f"{sum(x > 0 for x in d)} of {len(d)}; seconds {out['seconds']}")
  write_json(FLAGS.output, out)


if __name__ == "__main__":
  cli.run_main(main)
