"""Wavelet shrinkage denoising, cycle-spun (Coifman and Donoho 1995), blind.

Soft thresholding of the photo's wavelet coefficients in YCbCr with
BayesShrink's per-subband threshold (Chang, Yu, Vetterli 2000), averaged
over the 16 circular shifts of 0-3 pixels in each direction, which
removes the blocking of a single decimated transform. This is
scikit-image's ``denoise_wavelet`` inside its ``cycle_spin``: a classical
bar for DNCF on whole photos, and half of :func:`nlm_wavelet_denoise`.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from dncf_jax import physics
from dncf_jax.baselines import nlm

SHIFTS = 3       # cycle spinning over shifts 0..3 along each image axis
PAIR_H = 0.8     # NLM's h / sigma in the pair (pixelwise, not fast, mode)


def wavelet_denoise(obs, sigma: Optional[float] = None,
                    shifts: int = SHIFTS) -> np.ndarray:
  """Cycle-spun BayesShrink of ``obs`` (H, W, C) in [0, 1] with noise std
  ``sigma`` (estimated when ``None``). Returns float32 in [0, 1]."""
  from skimage.restoration import cycle_spin, denoise_wavelet
  physics.check_image(obs)
  if shifts < 0:
    raise ValueError(f"shifts must be >= 0, got {shifts}")
  obs = np.asarray(obs, np.float32)
  colour = obs.shape[-1] == 3
  kw = dict(sigma=nlm.sigma_or_estimate(obs, sigma), method="BayesShrink",
            mode="soft", rescale_sigma=True, convert2ycbcr=colour,
            channel_axis=-1)
  x = cycle_spin(obs, denoise_wavelet, max_shifts=shifts,
                 func_kw=kw, channel_axis=-1, workers=1)
  return np.clip(x, 0, 1).astype(np.float32)


def nlm_wavelet_denoise(obs, sigma: Optional[float] = None) -> np.ndarray:
  """The mean of non-local means (pixelwise mode, ``h`` = 0.8 sigma) and
  :func:`wavelet_denoise`: two classical denoisers whose errors differ."""
  physics.check_image(obs)
  s = nlm.sigma_or_estimate(np.asarray(obs, np.float32), sigma)
  return 0.5 * (nlm.nlm_denoise(obs, s, PAIR_H, fast=False)
                + wavelet_denoise(obs, s))
