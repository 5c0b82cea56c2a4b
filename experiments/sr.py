"""Super-resolution: ``python -m experiments.sr --flagfile=...``.

``--input`` is the low-resolution image, or with ``--downsample_input``
the high-resolution ground truth, downsampled here by ``--factor`` with
PIL's Lanczos (as the benchmark protocol makes its input). Without a
flagfile: 50 iterations, ``y`` chosen only if it fits ``e^3`` times
better, the answer projected onto the measurements
(``common.SR_DEFAULTS``); the benchmark flagfiles set the paper's run.
"""

from absl import app, flags
import numpy as np
from PIL import Image

from dncf_jax import io as dio
from dncf_jax import physics
from experiments import common

flags.DEFINE_integer("factor", 4, "Upscaling factor.")
flags.DEFINE_enum("kernel", "lanczos", ["lanczos", "bicubic", "bilinear"],
                  "Downsampling kernel of the degradation A.")
flags.DEFINE_float("rho", 0.0, "Extra Gaussian smoothing of the bicubic guess.")
flags.DEFINE_boolean("downsample_input", False, "Treat --input as the HR "
                     "ground truth and make the LR input from it.")
common.define_config_flags(**common.SR_DEFAULTS)
common.define_tile_flags()
flags.adopt_module_key_flags(common)
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.input is None:
    raise app.UsageError("--input is required (see experiments/configs/sr_*.flags)")
  task = physics.SuperResolution(FLAGS.factor, FLAGS.kernel, FLAGS.rho)
  gt = common.load(FLAGS.ground_truth) if FLAGS.ground_truth else None
  if FLAGS.downsample_input:
    gt = common.load(FLAGS.input)
    task.check_scene(gt.shape)
    h, w = gt.shape[0] // FLAGS.factor, gt.shape[1] // FLAGS.factor
    hr = Image.fromarray((gt * 255 + 0.5).astype(np.uint8).squeeze())
    obs = dio.to_float(hr.resize((w, h), Image.LANCZOS), gray=FLAGS.gray)
  else:
    obs = common.load(FLAGS.input)
  bicubic = np.asarray(task.anchor(obs))
  extra = {}
  if gt is not None:
    from dncf_jax import metrics
    extra["bicubic_psnr"] = metrics.psnr(np.clip(bicubic, 0, 1), gt)
  common.run_and_write(FLAGS.name or f"sr_x{FLAGS.factor}", obs, task, gt,
                       extra_panels=(np.clip(bicubic, 0, 1),), extra_json=extra)


if __name__ == "__main__":
  common.run_main(main)
