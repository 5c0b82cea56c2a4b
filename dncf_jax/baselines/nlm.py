"""Non-local means denoising (Buades, Coll, Morel, CVPR 2005), blind.

Each pixel becomes a weighted mean of the pixels whose surrounding patch
looks like its own, ``w = exp(-max(d^2 - 2 sigma^2, 0) / h^2)``, with
``d^2`` the mean squared difference of the two colour patches. This is
scikit-image's ``denoise_nl_means`` (fast mode; 5x5 patches searched
13x13 around the pixel), a well-kept NumPy implementation: a classical
bar for DNCF on whole photos, and a first guess ``G`` it can start from
(``physics.Denoise(guess=...)``).
"""

from __future__ import annotations

from typing import Optional

import jax.numpy as jnp
import numpy as np

from dncf_jax import physics, select

H_FACTOR = 0.6   # h = 0.6 sigma: the best of 0.5-0.8 on the bsd20 photos


def sigma_or_estimate(obs: np.ndarray, sigma: Optional[float]) -> float:
  """``sigma``, or DNCF's blind estimate of ``obs``'s noise std if ``None``."""
  if sigma is None:
    return float(select.estimate_noise_sigma(jnp.asarray(obs)))
  return float(sigma)


def nlm_denoise(obs, sigma: Optional[float] = None, h: float = H_FACTOR,
                patch_size: int = 5, patch_distance: int = 6,
                fast: bool = True) -> np.ndarray:
  """Non-local means of ``obs`` (H, W, C) in [0, 1], filter width ``h``
  times the noise std ``sigma`` (estimated from ``obs`` when ``None``:
  :func:`dncf_jax.select.estimate_noise_sigma`). ``fast=False``: the
  pixelwise mode (Gaussian-weighted patch distances, about 10x slower).
  Returns float32 in [0, 1].
  """
  from skimage.restoration import denoise_nl_means
  physics.check_image(obs)
  if not (np.isfinite(h) and h > 0):
    raise ValueError(f"h must be a finite number > 0, got {h}")
  obs = np.asarray(obs, np.float32)
  sigma = sigma_or_estimate(obs, sigma)
  x = denoise_nl_means(obs, h=h * sigma, sigma=sigma, fast_mode=fast,
                       patch_size=patch_size, patch_distance=patch_distance,
                       channel_axis=-1)
  return np.clip(x, 0, 1).astype(np.float32)
