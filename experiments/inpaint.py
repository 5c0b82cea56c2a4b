"""Inpainting: ``python -m experiments.inpaint --input=... --mask=...``.

The observation is ``input * mask`` (1 = known pixel). When the input is
the full image it also serves as ground truth (``--score_input``). ``G``
is the biharmonic fill of the holes (``--fill=harmonic``: the harmonic
one); the answer keeps the known pixels (``--project``). The defaults
(``common.INPAINT_DEFAULTS``: 50 iterations, ``y`` chosen on an equal
footing with the net's outputs) beat the paper's run on most masks; the
benchmark flagfiles set the paper's (docs/results.md).
"""

from absl import app, flags
import numpy as np

from dncf_jax import physics
from experiments import common

flags.DEFINE_string("mask", None, "Mask image: white (> 0.5) = known pixel.")
flags.DEFINE_boolean("score_input", True, "Score against --input (the "
                     "benchmark's inputs are whole images, masked here).")
common.define_fill_flag()
common.define_config_flags(**common.INPAINT_DEFAULTS)
common.define_tile_flags()
flags.adopt_module_key_flags(common)
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.input is None or FLAGS.mask is None:
    raise app.UsageError("--input and --mask are required "
                         "(see experiments/configs/inpaint*_*.flags)")
  img = common.load(FLAGS.input)
  mask = common.load(FLAGS.mask, mask=True)
  if mask.shape[:2] != img.shape[:2]:
    raise ValueError(f"the mask is {mask.shape[1]}x{mask.shape[0]} but the "
                     f"image is {img.shape[1]}x{img.shape[0]}")
  obs = img * mask[:, :, None]
  gt = common.load(FLAGS.ground_truth) if FLAGS.ground_truth else (
      img if FLAGS.score_input else None)
  task = physics.Inpaint(mask=mask, fill=FLAGS.fill)
  fill = np.asarray(task.anchor(obs))
  extra = {"known_fraction": float(mask.mean())}
  if gt is not None:
    from dncf_jax import metrics
    extra[f"{FLAGS.fill}_fill_psnr"] = metrics.psnr(fill, gt)
  common.run_and_write(FLAGS.name or "inpaint", obs, task, gt,
                       extra_panels=(fill,), extra_json=extra)


if __name__ == "__main__":
  common.run_main(main)
