"""Input-purification baselines for the adversarial table.

Each takes a batch of NHWC images in [0, 1] and returns one of the same
shape and range: Gaussian blur, median (3x3 or any odd size), JPEG (Pillow round trip),
bit-depth reduction and TV denoising (Chambolle, scikit-image). Blur,
median and bit depth are JAX; JPEG and TV run on the host in NumPy.
"""

from __future__ import annotations

import functools
import io as _io
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from dncf_jax import filters
from dncf_jax.baselines import tv

Array = jax.Array


def _check(x) -> None:
  if np.ndim(x) != 4:
    raise ValueError(f"images must be a batch (N, H, W, C), got shape {np.shape(x)}")
  if not isinstance(x, jax.core.Tracer):
    lo, hi = float(np.min(x)), float(np.max(x))
    if not (lo >= 0.0 and hi <= 1.0):
      raise ValueError(f"image values must lie in [0, 1], got [{lo}, {hi}]")


def gaussian_blur(x: Array, sigma: float = 1.0) -> Array:
  """Gaussian smoothing of std ``sigma`` pixels, reflected borders."""
  _check(x)
  return jax.vmap(lambda im: filters.gaussian_blur(im, sigma))(jnp.asarray(x))


@functools.partial(jax.jit, static_argnums=1)
def _median(x: Array, size: int) -> Array:
  h, w, r = x.shape[1], x.shape[2], size // 2
  xp = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect")
  taps = jnp.stack([xp[:, i:i + h, j:j + w] for i in range(size)
                    for j in range(size)])
  return jnp.median(taps, axis=0)


def median(x: Array, size: int = 3) -> Array:
  """``size`` x ``size`` median filter per channel, reflected borders."""
  _check(x)
  if size < 1 or size % 2 == 0:
    raise ValueError(f"median size must be odd and >= 1, got {size}")
  return _median(jnp.asarray(x), size)


def median3x3(x: Array) -> Array:
  """3x3 median filter per channel, reflected borders."""
  return median(x, 3)


def bit_depth(x: Array, bits: int = 4) -> Array:
  """Rounds every value to ``2**bits`` levels (Xu et al. feature squeezing)."""
  _check(x)
  if not 1 <= bits <= 16:
    raise ValueError(f"bits must be in 1..16, got {bits}")
  levels = 2 ** bits - 1
  return jnp.round(jnp.asarray(x) * levels) / levels


def jpeg(x: Array, quality: int = 75) -> Array:
  """JPEG compression and decoding with Pillow at ``quality`` (1-95)."""
  _check(x)
  if not 1 <= quality <= 100:
    raise ValueError(f"quality must be in 1..100, got {quality}")
  a = np.asarray(x, np.float32)
  out = np.empty_like(a)
  for i, im in enumerate(np.round(a * 255).astype(np.uint8)):
    gray = im.shape[-1] == 1
    buf = _io.BytesIO()
    Image.fromarray(im[..., 0] if gray else im).save(buf, "JPEG",
                                                     quality=quality)
    dec = np.asarray(Image.open(buf), np.float32) / 255.0
    out[i] = dec[..., None] if gray else dec
  return jnp.asarray(out)


def tv_denoise(x: Array, weight: float = 0.1) -> Array:
  """Total-variation denoising of each image (Chambolle's projection,
  :func:`dncf_jax.baselines.tv.tv_denoise`, which matches scikit-image)."""
  _check(x)
  x = jnp.asarray(x)
  return jnp.clip(jnp.stack([tv.tv_denoise(im, weight) for im in x]), 0.0, 1.0)


DEFENSES: dict[str, Callable[..., Array]] = {
    "gaussian_blur": gaussian_blur, "median3x3": median3x3, "median": median,
    "jpeg": jpeg,
    "bit_depth": bit_depth, "tv": tv_denoise}


def defend(name: str, x: Array, **kwargs) -> Array:
  """Runs ``DEFENSES[name]`` with its defaults, overridden by ``kwargs``."""
  if name not in DEFENSES:
    raise ValueError(f"unknown defense {name!r}; choose one of {sorted(DEFENSES)}")
  return DEFENSES[name](x, **kwargs)
