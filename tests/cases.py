"""Small cases of every task shared by the end-to-end tests."""

import numpy as np

import dncf_jax as dn
from dncf_jax import filters, physics
from dncf_jax import io as dio

CFG = dn.DNCFConfig.from_flat(iterations=60, channels=16, scales=3,
                              skip_channels=4, checkpoint_every=10,
                              learning_rate=0.01)


def scene(seed=0):
  """A 48x48 crop of the bundled astronaut photo (no download needed)."""
  r, c = 32 + 8 * (seed % 3), 40 + 8 * (seed // 3)
  return dio.sample_image()[r:r + 48, c:c + 48]


def case(name, seed=0):
  gt = scene(seed=seed)
  rng = np.random.default_rng(seed)
  if name == "denoise":
    obs = np.clip(gt + 0.1 * rng.standard_normal(gt.shape), 0, 1).astype(np.float32)
    return obs, physics.Denoise(rho=1.0), gt
  if name == "sr":
    task = physics.SuperResolution(4)
    return np.asarray(task.forward(gt)), task, gt
  if name == "inpaint":  # one mask for all seeds: programs are shared
    mask = (np.random.default_rng(0).uniform(size=gt.shape[:2]) > 0.3).astype(np.float32)
    return gt * mask[:, :, None], physics.Inpaint(mask=mask), gt
  if name == "flash":
    flash = np.clip(gt * 1.3 + 0.05, 0, 1).astype(np.float32)
    noflash = np.asarray(filters.gaussian_blur(gt * 0.6, 1.0))
    return noflash, physics.FlashNoFlash(flash=flash, rho=1.0), None
  if name == "deblur":
    psf = physics.gaussian_psf(5, 1.0)
    task = physics.Deblur(psf=psf, noise_sigma=0.0)
    return np.asarray(task.forward(gt)), task, gt
  raise KeyError(name)
