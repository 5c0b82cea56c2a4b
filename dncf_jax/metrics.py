"""Image quality metrics (PSNR, MSE from the definition; SSIM from dm-pix)."""

from __future__ import annotations

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

# One compiled program instead of dm-pix's ~20 eager operations, each of
# which would be compiled on its first call in a process.
_ssim = jax.jit(dm_pix.ssim)


def _pair(x, ref):
  x = np.asarray(x, np.float32)
  ref = np.asarray(ref, np.float32)
  if x.shape != ref.shape:
    raise ValueError(f"image shape {x.shape} differs from reference {ref.shape}")
  return x, ref


def mse(x, ref) -> float:
  """Mean squared error over all pixels and channels."""
  x, ref = _pair(x, ref)
  return float(np.mean((x - ref) ** 2))


def psnr(x, ref, peak: float = 1.0) -> float:
  """Peak signal-to-noise ratio in dB for images in [0, peak]."""
  m = mse(x, ref)
  return float("inf") if m == 0 else float(10 * np.log10(peak * peak / m))


def ssim(x, ref) -> float:
  """Structural similarity (dm-pix, Gaussian window 11, sigma 1.5)."""
  x, ref = _pair(x, ref)
  return float(_ssim(jnp.asarray(x), jnp.asarray(ref)))


def scores(x, ref) -> dict:
  return {"psnr": psnr(x, ref), "mse": mse(x, ref), "ssim": ssim(x, ref)}
