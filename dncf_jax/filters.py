"""Linear filters the physics operators are built from.

Gaussian smoothing (the paper's ``G_rho``), resampling that reproduces
``PIL.Image.resize`` exactly (so that the super-resolution operator ``A`` is
the very map the benchmark used to make its low-resolution input), and
harmonic and biharmonic fills of masked holes (inpainting initial guesses).

Images are ``(H, W, C)`` float arrays; every function is jit-friendly.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


# --------------------------------------------------------------------------
# Gaussian smoothing
# --------------------------------------------------------------------------


def gaussian_kernel1d(sigma: float, truncate: float = 3.0) -> np.ndarray:
  """Normalised 1-D Gaussian taps of standard deviation ``sigma``."""
  if sigma <= 0:
    return np.ones((1,), np.float32)
  radius = max(1, int(truncate * sigma + 0.5))
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  k = np.exp(-0.5 * (x / sigma) ** 2)
  return (k / k.sum()).astype(np.float32)


def _reflect_pad(x: Array, ph: int, pw: int) -> Array:
  return jnp.pad(x, ((ph, ph), (pw, pw), (0, 0)), mode="reflect")


WIDE_TAPS = 25   # separable filters with more taps run as matrix products


def separable_filter(x: Array, kh: np.ndarray, kw: np.ndarray) -> Array:
  """Filters ``x`` (H, W, C) with ``kh`` along rows and ``kw`` along columns.

  Borders are reflected (no darkening at the edges, unlike zero padding).
  """
  rh, rw = len(kh) // 2, len(kw) // 2
  h, w = x.shape[0], x.shape[1]
  if rh >= h or rw >= w:
    raise ValueError(
        f"filter of radius ({rh}, {rw}) is too wide for an image of {h}x{w}")
  if max(len(kh), len(kw)) > WIDE_TAPS:
    # Wide kernels as two products with (n, n) filter matrices: a sum of
    # hundreds of shifted copies would make a program XLA compiles slowly.
    hi = jax.lax.Precision.HIGHEST
    rows = jnp.einsum("ij,jwc->iwc", _filter_matrix(h, kh, x.dtype), x,
                      precision=hi)
    return jnp.einsum("wj,ijc->iwc", _filter_matrix(w, kw, x.dtype), rows,
                      precision=hi)
  xp = _reflect_pad(x, rh, rw)
  kh = jnp.asarray(kh, x.dtype)
  kw = jnp.asarray(kw, x.dtype)
  # Row pass then column pass, as a sum of shifted copies (tiny kernels).
  rows = sum(kh[i] * xp[i:i + h] for i in range(len(kh)))
  return sum(kw[j] * rows[:, j:j + w] for j in range(len(kw)))


def _filter_matrix(n: int, k: np.ndarray, dtype) -> Array:
  """``M`` (n, n) with ``M @ v`` = ``v`` filtered by the taps ``k`` with
  reflected borders (``_reflect_pad``'s)."""
  return jnp.asarray(_filter_matrix_np(n, tuple(np.asarray(k, np.float64))),
                     dtype)


@functools.lru_cache(maxsize=16)
def _filter_matrix_np(n: int, k: tuple) -> np.ndarray:
  r = len(k) // 2
  # the source pixel of every tap, by the same reflection as _reflect_pad
  src = np.lib.stride_tricks.sliding_window_view(
      np.pad(np.arange(n), r, mode="reflect"), 2 * r + 1)
  flat = (np.arange(n)[:, None] * n + src).ravel()
  m = np.bincount(flat, np.tile(k, n), minlength=n * n).reshape(n, n)
  return m.astype(np.float32)


def gaussian_blur(x: Array, sigma: float) -> Array:
  """``G_rho``: Gaussian smoothing of standard deviation ``sigma`` pixels."""
  if sigma <= 0:
    return x
  k = gaussian_kernel1d(sigma)
  return separable_filter(x, k, k)


# --------------------------------------------------------------------------
# Resampling, identical to PIL.Image.resize
# --------------------------------------------------------------------------


def _lanczos(x: np.ndarray) -> np.ndarray:
  a = 3.0
  out = np.sinc(x) * np.sinc(x / a)
  return np.where(np.abs(x) < a, out, 0.0)


def _bicubic(x: np.ndarray) -> np.ndarray:
  a = -0.5
  x = np.abs(x)
  out = np.where(
      x < 1.0, ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0,
      np.where(x < 2.0, (((x - 5.0) * x + 8.0) * x - 4.0) * a, 0.0))
  return out


def _bilinear(x: np.ndarray) -> np.ndarray:
  x = np.abs(x)
  return np.where(x < 1.0, 1.0 - x, 0.0)


_KERNELS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float]] = {
    "lanczos": (_lanczos, 3.0),
    "bicubic": (_bicubic, 2.0),
    "bilinear": (_bilinear, 1.0),
}


@functools.lru_cache(maxsize=64)
def resample_matrix(n_in: int, n_out: int, kernel: str = "lanczos") -> np.ndarray:
  """The ``(n_out, n_in)`` matrix PIL applies along one axis when resizing.

  Reproduces ``ImagingResample``'s ``precompute_coeffs``: the kernel is
  stretched by the scale when downsampling (antialiasing), truncated to
  the image and renormalised at the borders.
  """
  if kernel not in _KERNELS:
    raise ValueError(f"unknown resampling kernel {kernel!r}; "
                     f"choose one of {sorted(_KERNELS)}")
  fn, support = _KERNELS[kernel]
  scale = n_in / n_out
  filterscale = max(scale, 1.0)
  support = support * filterscale
  m = np.zeros((n_out, n_in), np.float64)
  for xx in range(n_out):
    center = (xx + 0.5) * scale
    xmin = max(int(center - support + 0.5), 0)
    xmax = min(int(center + support + 0.5), n_in)
    taps = np.arange(xmin, xmax)
    w = fn((taps - center + 0.5) / filterscale)
    total = w.sum()
    if total != 0:
      w = w / total
    m[xx, xmin:xmax] = w
  return m.astype(np.float32)


@functools.lru_cache(maxsize=64)
def resample_pinv(n_in: int, n_out: int, kernel: str = "lanczos") -> np.ndarray:
  """The ``(n_in, n_out)`` pseudo-inverse of :func:`resample_matrix`."""
  m = resample_matrix(n_in, n_out, kernel).astype(np.float64)
  return np.linalg.pinv(m).astype(np.float32)


def resize(x: Array, height: int, width: int, kernel: str = "lanczos") -> Array:
  """Resizes ``x`` (H, W, C) to ``(height, width)`` like ``PIL.Image.resize``."""
  mh = jnp.asarray(resample_matrix(x.shape[0], height, kernel), x.dtype)
  mw = jnp.asarray(resample_matrix(x.shape[1], width, kernel), x.dtype)
  return jnp.einsum("ih,hwc,jw->ijc", mh, x, mw)


# --------------------------------------------------------------------------
# Smooth fill of holes
# --------------------------------------------------------------------------


def smooth_fill(x: Array, mask: Array, iterations: int = 400) -> Array:
  """Fills the pixels where ``mask == 0`` smoothly from the known ones.

  Starts from a normalised-convolution fill at a coarse scale, then relaxes
  the holes towards a harmonic (Laplace) interpolant with Jacobi sweeps.
  Known pixels are returned unchanged.
  """
  mask = jnp.broadcast_to(mask, x.shape).astype(x.dtype)
  known = x * mask
  # Normalised convolution at growing widths: each pixel takes the finest
  # estimate that has enough known support around it.
  fill = jnp.full_like(x, jnp.sum(known) / jnp.maximum(jnp.sum(mask), 1.0))
  max_sigma = max(x.shape[0], x.shape[1]) / 8.0
  sigma = max_sigma
  both = jnp.concatenate([known, mask], axis=-1)   # one blur per scale
  c = x.shape[-1]
  while sigma >= 1.0:
    blurred = gaussian_blur(both, sigma)
    num, den = blurred[..., :c], blurred[..., c:]
    fill = jnp.where(den > 1e-3, num / jnp.maximum(den, 1e-3), fill)
    sigma /= 2.0
  z = mask * x + (1 - mask) * fill

  def sweep(_, z):
    zp = jnp.pad(z, ((1, 1), (1, 1), (0, 0)), mode="edge")
    avg = 0.25 * (zp[:-2, 1:-1] + zp[2:, 1:-1] + zp[1:-1, :-2] + zp[1:-1, 2:])
    return mask * x + (1 - mask) * avg

  return jax.lax.fori_loop(0, iterations, sweep, z)


def _laplacian(z: Array) -> Array:
  """The 5-point Laplacian with reflecting (Neumann) borders; symmetric."""
  zp = jnp.pad(z, ((1, 1), (1, 1), (0, 0)), mode="edge")
  return zp[:-2, 1:-1] + zp[2:, 1:-1] + zp[1:-1, :-2] + zp[1:-1, 2:] - 4 * z


def biharmonic_fill(x: Array, mask: Array, iterations: int = 100,
                    start: Array | None = None) -> Array:
  """Fills the pixels where ``mask == 0`` with the biharmonic interpolant.

  Minimises ``||Laplacian(z)||^2`` over the holes with the known pixels
  fixed (``Laplacian^2 z = 0`` in every hole, as
  ``skimage.restoration.inpaint_biharmonic`` solves) by ``iterations``
  conjugate-gradient steps from ``start`` (default: :func:`smooth_fill`).
  Known pixels are returned unchanged.
  """
  mask = jnp.broadcast_to(mask, x.shape).astype(x.dtype)
  hole = 1 - mask
  if start is None:
    start = smooth_fill(x, mask)
  op = lambda v: hole * _laplacian(_laplacian(hole * v))
  rhs = -hole * _laplacian(_laplacian(mask * x))
  z, _ = jax.scipy.sparse.linalg.cg(op, rhs, x0=hole * start,
                                    maxiter=iterations)
  return mask * x + hole * z
