"""Denoising: ``python -m experiments.denoise [--flagfile=...]``.

With no flags it restores a photo bundled with scikit-image (the
astronaut, 128x128 around the face) with sigma = 25 Gaussian noise added,
so that nothing needs downloading. The answer is a quarter DNCF's blind
answer and three quarters the mean of non-local means and wavelet
shrinkage of the input (``--fuse=0.75 --fuse_with=nlm_wavelet``,
``common.DENOISE_DEFAULTS``); ``--fuse=0`` returns DNCF's alone, as the
benchmark flagfiles do.
"""

from absl import app, flags

from dncf_jax import io as dio
from experiments import common

common.define_guess_flags()
flags.DEFINE_float("noise_sigma", None, "Known noise std (0-255 scale) for "
                   "the blind selection; estimated from the image if unset.")
common.define_config_flags(**common.DENOISE_DEFAULTS)
common.define_tile_flags()
flags.adopt_module_key_flags(common)
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  gt = common.load(FLAGS.ground_truth) if FLAGS.ground_truth else None
  if FLAGS.input is None:
    clean = dio.sample_image()
    sigma = 25.0 if FLAGS.synthetic_sigma is None else FLAGS.synthetic_sigma
    obs, gt = common.add_noise(clean, sigma, FLAGS.noise_seed), clean
    name = FLAGS.name or "denoise_astronaut"
  elif FLAGS.synthetic_sigma is not None:
    gt = common.load(FLAGS.input)
    obs = common.add_noise(gt, FLAGS.synthetic_sigma, FLAGS.noise_seed)
    name = FLAGS.name or "denoise"
  else:
    obs = common.load(FLAGS.input)
    name = FLAGS.name or "denoise"
  sigma = None if FLAGS.noise_sigma is None else FLAGS.noise_sigma / 255.0
  task = common.denoise_physics(obs, sigma)
  common.run_and_write(name, obs, task, gt)


if __name__ == "__main__":
  common.run_main(main)
