"""Flash / no-flash: ``python -m experiments.flash --input=NOFLASH --flash=FLASH``.

The net fits the no-flash image while ``y`` stays near the smoothed flash
image. There is no ground truth: the JSON reports the MSE to the no-flash
image (the paper's metric) beside that of the initial guess.
"""

from absl import app, flags
import numpy as np

from dncf_jax import physics
from experiments import common

flags.DEFINE_string("flash", None, "The flash image (same size as --input).")
flags.DEFINE_float("rho", 1.0, "Width of the Gaussian smoothing of the flash image.")
common.define_config_flags()
common.define_tile_flags()
flags.adopt_module_key_flags(common)
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.input is None or FLAGS.flash is None:
    raise app.UsageError("--input (no-flash) and --flash are required "
                         "(see experiments/configs/flash_*.flags)")
  noflash = common.load(FLAGS.input)
  flash = common.load(FLAGS.flash)
  task = physics.FlashNoFlash(flash=flash, rho=FLAGS.rho)
  task.validate(noflash)
  guess = np.asarray(task.anchor(noflash))
  extra = {"initial_guess_mse": float(np.mean((guess - noflash) ** 2))}
  common.run_and_write(FLAGS.name or "flash", noflash, task, None,
                       extra_panels=(flash,), extra_json=extra)


if __name__ == "__main__":
  common.run_main(main)
