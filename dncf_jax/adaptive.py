"""Differentiable approximations of the purifiers, for adaptive attacks.

BPDA (Athalye et al. 2018): the forward pass is the real defense, the
backward pass the gradient of a differentiable approximation of it (the
identity when there is none). EOT averages that gradient over draws of
the defense's randomness. Approximations:

* :func:`smooth_jpeg`: JPEG in JAX (YCbCr, 4:2:0 chroma, 8x8 DCT, the
  libjpeg quantisation tables at ``quality``) with the cubic rounding of
  Shin and Song (2017), ``r + (x - r)^3``, ``r`` rounded as libjpeg's
  integer encoder rounds;
* :func:`unrolled_tv`: Chambolle's projection algorithm for TV denoising,
  a fixed number of steps, differentiable through every step.

:data:`APPROXIMATIONS` maps each defense of the adversarial table to its
approximation; :func:`baseline` gives a baseline's traceable forward and
its approximation together. Images are NHWC batches in [0, 1].
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dncf_jax import defense_baselines
from dncf_jax.baselines import tv

Array = jax.Array

# ---------------------------------------------------------------------------
# BPDA and EOT
# ---------------------------------------------------------------------------


def bpda(defense: Callable[..., Array],
         approx: Optional[Callable[..., Array]] = None) -> Callable[..., Array]:
  """``f(x, *args)``: ``defense(x, *args)`` forward, the gradient of
  ``approx(x, *args)`` backward (identity when ``approx`` is None).

  ``args`` (keys, settings) get no gradient; pass traced values through
  them rather than closing over them. The forward may be host code run by
  :func:`host`.
  """

  @jax.custom_vjp
  def f(x, *args):
    return defense(x, *args)

  def fwd(x, *args):
    return defense(x, *args), (x, args)

  def bwd(res, g):
    x, args = res
    none = tuple(None for _ in args)
    if approx is None:
      return (g,) + none
    _, vjp = jax.vjp(lambda z: approx(z, *args), x)
    return vjp(g) + none

  f.defvjp(fwd, bwd)
  return f


def host(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Array], Array]:
  """Runs the NumPy defense ``fn`` (same shape out) from traced code."""

  def run(x: Array) -> Array:
    out = jax.ShapeDtypeStruct(x.shape, x.dtype)
    call = lambda a: np.asarray(fn(np.asarray(a)), x.dtype)
    return jax.pure_callback(call, out, x, vmap_method="sequential")

  return run


def eot_pgd(logits_fn: Callable[[Array], Array],
            purifier: Callable[[Array, Array], Array], x: Array,
            labels: Array, key: Array, *, eps: float = 8 / 255,
            alpha: float = 2 / 255, steps: int = 7, samples: int = 4,
            approx: Optional[Callable[[Array, Array], Array]] = None) -> Array:
  """L-inf PGD through ``purifier(x, key)`` with BPDA and EOT.

  Each step averages the cross-entropy gradient over ``samples`` draws of
  the purifier's key (fresh every step), each taken through
  :func:`bpda` with ``approx(x, key)`` backward (identity when None);
  uniform random start in the eps-ball. Traceable: jit it with
  ``logits_fn``, ``purifier`` and ``approx`` closed over.
  """
  k0, kloop = jax.random.split(key)
  start = jnp.clip(x + jax.random.uniform(k0, x.shape, x.dtype, -eps, eps),
                   0.0, 1.0)
  through = bpda(purifier, approx)

  def grad_one(adv, k):
    def loss(z):
      logits = logits_fn(through(z, k))
      return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(
          logits, labels))
    return jax.grad(loss)(adv)

  def body(i, adv):
    ks = jax.random.split(jax.random.fold_in(kloop, i), samples)
    g = jnp.mean(jax.lax.map(lambda k: grad_one(adv, k), ks), axis=0)
    adv = adv + alpha * jnp.sign(g)
    return jnp.clip(jnp.clip(adv, x - eps, x + eps), 0.0, 1.0)

  return jax.lax.fori_loop(0, steps, body, start)


# ---------------------------------------------------------------------------
# Smooth JPEG
# ---------------------------------------------------------------------------

# libjpeg's base tables (ITU T.81 Annex K), natural (row-major) order.
LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
    np.int64).reshape(8, 8)
CHROMA = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99],
    np.int64).reshape(8, 8)


def quant_tables(quality: int) -> tuple[np.ndarray, np.ndarray]:
  """Luma and chroma tables at ``quality`` (1-100), as libjpeg and Pillow
  scale them (``jpeg_quality_scaling``, baseline: entries in 1..255)."""
  if not 1 <= quality <= 100:
    raise ValueError(f"quality must be in 1..100, got {quality}")
  scale = 5000 // quality if quality < 50 else 200 - 2 * quality
  q = lambda t: np.clip((t * scale + 50) // 100, 1, 255).astype(np.float32)
  return q(LUMA), q(CHROMA)


def _dct_matrix() -> np.ndarray:
  k = np.arange(8)
  c = np.cos((2 * k[None, :] + 1) * k[:, None] * np.pi / 16) * 0.5
  c[0] /= np.sqrt(2)
  return c.astype(np.float32)  # orthonormal: c @ c.T = I


_DCT = _dct_matrix()


def _cubic(v: Array, r: Array, straight_through: bool) -> Array:
  """``r + (v - r)^3`` for the integers ``r`` (no gradient of their own)."""
  r = jax.lax.stop_gradient(r)
  if straight_through:
    r = v + jax.lax.stop_gradient(r - v)
  return r + (v - r) ** 3


def smooth_round(x: Array, straight_through: bool = True) -> Array:
  """``r + (x - r)^3``, ``r = round(x)`` half away from zero as libjpeg
  rounds (Shin and Song 2017).

  ``straight_through``: ``r`` passes the gradient unchanged (slope 1);
  otherwise ``r`` is constant (slope ``3 (x - r)^2``).
  """
  return _cubic(x, jnp.sign(x) * jnp.floor(jnp.abs(x) + 0.5),
                straight_through)


def _blocks(p: Array) -> Array:
  h, w = p.shape
  return p.reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3)


def _unblocks(b: Array) -> Array:
  return b.transpose(0, 2, 1, 3).reshape(b.shape[0] * 8, b.shape[1] * 8)


# libjpeg's integer encoder (jccolor.c, jcsample.c, jfdctint.c, jcdctmgr.c),
# bit for bit: it decides which way each coefficient rounds, since images
# that were JPEG-coded before put many coefficients on a tie at other
# qualities.

def _fix(v: float, bits: int) -> int:
  return int(v * (1 << bits) + 0.5)


def _rgb_ycc_int(im: Array) -> tuple[Array, Array, Array]:
  """(H, W, 3) int32 in 0..255 -> Y, Cb, Cr as libjpeg rounds them."""
  r, g, b = im[..., 0], im[..., 1], im[..., 2]
  f = lambda v: _fix(v, 16)
  half, off = 1 << 15, 128 << 16
  y = (f(0.299) * r + f(0.587) * g + f(0.114) * b + half) >> 16
  cb = (-f(0.16874) * r - f(0.33126) * g + f(0.5) * b + off + half - 1) >> 16
  cr = (f(0.5) * r - f(0.41869) * g - f(0.08131) * b + off + half - 1) >> 16
  return y, cb, cr


def _down_int(c: Array) -> Array:
  """2x2 sum plus the alternating bias 1, 2, then >> 2 (h2v2_downsample)."""
  s = c.reshape(c.shape[0] // 2, 2, c.shape[1] // 2, 2).sum((1, 3))
  bias = 1 + (jnp.arange(s.shape[1]) % 2)
  return (s + bias) >> 2


def _fdct_int_1d(d: Array, shift_even: int, shift_odd: int,
                 left: bool) -> Array:
  """One pass of jfdctint.c's LL&M FDCT along the last axis (int32)."""
  f = lambda v: _fix(v, 13)
  desc = lambda v, n: (v + (1 << (n - 1))) >> n
  x = [d[..., i] for i in range(8)]
  t0, t7 = x[0] + x[7], x[0] - x[7]
  t1, t6 = x[1] + x[6], x[1] - x[6]
  t2, t5 = x[2] + x[5], x[2] - x[5]
  t3, t4 = x[3] + x[4], x[3] - x[4]
  t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
  out = [None] * 8
  if left:
    out[0], out[4] = (t10 + t11) << shift_even, (t10 - t11) << shift_even
  else:
    out[0], out[4] = desc(t10 + t11, shift_even), desc(t10 - t11, shift_even)
  z1 = (t12 + t13) * f(0.541196100)
  out[2] = desc(z1 + t13 * f(0.765366865), shift_odd)
  out[6] = desc(z1 - t12 * f(1.847759065), shift_odd)
  z1, z2, z3, z4 = t4 + t7, t5 + t6, t4 + t6, t5 + t7
  z5 = (z3 + z4) * f(1.175875602)
  t4, t5 = t4 * f(0.298631336), t5 * f(2.053119869)
  t6, t7 = t6 * f(3.072711026), t7 * f(1.501321110)
  z1, z2 = z1 * -f(0.899976223), z2 * -f(2.562915447)
  z3, z4 = z3 * -f(1.961570560) + z5, z4 * -f(0.390180644) + z5
  out[7] = desc(t4 + z1 + z3, shift_odd)
  out[5] = desc(t5 + z2 + z4, shift_odd)
  out[3] = desc(t6 + z2 + z3, shift_odd)
  out[1] = desc(t7 + z1 + z4, shift_odd)
  return jnp.stack(out, -1)


def _quantize_int(coef: Array, table: np.ndarray) -> Array:
  """libjpeg-turbo's quantisation of FDCT output (scaled by 8) by
  ``8 * table``: multiplication by a reciprocal, rounding half up."""
  fq, corr, shift = [], [], []
  for d in (table.astype(np.int64).ravel() * 8):
    b = int(d).bit_length() - 1
    r = 16 + b
    q, rem, c = (1 << r) // d, (1 << r) % d, d // 2
    if rem == 0:
      q, r = q >> 1, r - 1
    elif rem <= d // 2:
      c += 1
    else:
      q += 1
    fq.append(q), corr.append(c), shift.append(r)
  arr = lambda v: jnp.asarray(np.reshape(v, (8, 8)), jnp.uint32)
  mag = jnp.abs(coef).astype(jnp.uint32)
  q = ((mag + arr(corr)) * arr(fq)) >> arr(shift)
  return jnp.sign(coef) * q.astype(jnp.int32)


def _decide(p: Array, table: np.ndarray) -> Array:
  """Quantised coefficients of an int32 plane (H, W) as libjpeg codes them."""
  b = _blocks(p - 128)
  b = _fdct_int_1d(b, 2, 11, True)
  b = jnp.swapaxes(_fdct_int_1d(jnp.swapaxes(b, -1, -2), 2, 15, False), -1, -2)
  return _quantize_int(b, table)


def _code_plane(p: Array, table: np.ndarray, decided: Array,
                straight_through: bool) -> Array:
  """Level shift, DCT, quantise (rounding as ``decided``), dequantise,
  inverse DCT, clamp: (H, W)."""
  c = jnp.asarray(_DCT)
  b = _blocks(p - 128.0)
  coef = jnp.einsum("ui,abij,vj->abuv", c, b, c) / table
  coef = _cubic(coef, decided.astype(coef.dtype), straight_through) * table
  b = jnp.einsum("ui,abuv,vj->abij", c, coef, c)
  return jnp.clip(_unblocks(b) + 128.0, 0.0, 255.0)


def _fancy_up(p: Array, axis: int) -> Array:
  """libjpeg's triangle upsampling by 2 along ``axis`` (weights 3/4, 1/4)."""
  n = p.shape[axis]
  prev = jnp.concatenate([jax.lax.slice_in_dim(p, 0, 1, axis=axis),
                          jax.lax.slice_in_dim(p, 0, n - 1, axis=axis)], axis)
  nxt = jnp.concatenate([jax.lax.slice_in_dim(p, 1, n, axis=axis),
                         jax.lax.slice_in_dim(p, n - 1, n, axis=axis)], axis)
  even, odd = 0.75 * p + 0.25 * prev, 0.75 * p + 0.25 * nxt
  out = jnp.stack([even, odd], axis + 1)
  shape = list(p.shape)
  shape[axis] = 2 * n
  return out.reshape(shape)


def _jpeg_one(im: Array, luma: np.ndarray, chroma: np.ndarray,
              straight_through: bool) -> Array:
  """One (H, W, C) image on the 0-255 scale, C = 1 or 3."""
  h, w = im.shape[0], im.shape[1]
  q = jax.lax.stop_gradient(jnp.round(im)).astype(jnp.int32)  # Pillow's uint8
  if im.shape[-1] == 1:
    pad = ((0, -h % 8), (0, -w % 8))
    p, pq = (jnp.pad(a[..., 0], pad, mode="edge") for a in (im, q))
    return _code_plane(p, luma, _decide(pq, luma),
                       straight_through)[:h, :w, None]
  pad = ((0, -h % 16), (0, -w % 16), (0, 0))
  im, q = (jnp.pad(a, pad, mode="edge") for a in (im, q))
  r, g, b = im[..., 0], im[..., 1], im[..., 2]
  y = 0.299 * r + 0.587 * g + 0.114 * b
  cb = -0.168735892 * r - 0.331264108 * g + 0.5 * b + 128.0
  cr = 0.5 * r - 0.418687589 * g - 0.081312411 * b + 128.0
  yq, cbq, crq = _rgb_ycc_int(q)
  half = lambda c: c.reshape(c.shape[0] // 2, 2, c.shape[1] // 2, 2).mean((1, 3))
  y = _code_plane(y, luma, _decide(yq, luma), straight_through)
  cb, cr = (_fancy_up(_fancy_up(_code_plane(
      half(c), chroma, _decide(_down_int(cq), chroma), straight_through), 0), 1)
            for c, cq in ((cb, cbq), (cr, crq)))
  cb, cr = cb - 128.0, cr - 128.0
  out = jnp.stack([y + 1.402 * cr, y - 0.344136286 * cb - 0.714136286 * cr,
                   y + 1.772 * cb], -1)
  return jnp.clip(out, 0.0, 255.0)[:h, :w]


def smooth_jpeg(x: Array, quality: int = 75,
                straight_through: bool = True) -> Array:
  """Differentiable JPEG of a batch (N, H, W, C) in [0, 1], C = 1 or 3.

  The encoder and decoder Pillow runs by default: YCbCr, chroma averaged
  over 2x2 (4:2:0) and upsampled by libjpeg's triangle filter, 8x8 DCT,
  the standard tables scaled to ``quality``. Each coefficient ``v`` (in
  units of its quantiser step) becomes ``r + (v - r)^3`` (Shin and Song
  2017) where ``r`` is the integer libjpeg's encoder codes for the image
  rounded to 8 bits; ``straight_through``: slope 1 through ``r``, else
  ``3 (v - r)^2``. The rest is float where libjpeg is fixed-point.
  """
  luma, chroma = quant_tables(int(quality))
  one = lambda im: _jpeg_one(im * 255.0, luma, chroma, straight_through)
  return jax.vmap(one)(jnp.asarray(x)) / 255.0


# ---------------------------------------------------------------------------
# Unrolled TV
# ---------------------------------------------------------------------------


def _tv_step(f: Array, p: Array, weight: Array) -> tuple[Array, Array]:
  """skimage's projection step on one channel (H, W): (new ``p``, ``f + d(p)``),
  with a gradient at zero image gradients (where ``sqrt`` has none)."""
  out = f + tv._d(p)
  g = tv._grad(out)
  sq = jnp.sum(g * g, axis=0)
  norm = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
  return (p - 0.25 * g) / (1.0 + norm * (0.25 / weight)), out


def unrolled_tv(x: Array, weight: float = 0.1, iterations: int = 200) -> Array:
  """TV denoising of a batch (N, H, W, C) by ``iterations`` steps of
  Chambolle's projection, clipped to [0, 1].

  ``weight`` as ``skimage.restoration.denoise_tv_chambolle`` (and
  :func:`defense_baselines.tv_denoise`); equal to skimage with
  ``max_num_iter=iterations`` and no early stop. Every step is
  differentiable (``fori_loop`` with a fixed count).
  """
  if int(iterations) < 1:
    raise ValueError(f"iterations must be >= 1, got {iterations}")
  x = jnp.asarray(x)
  w = jnp.asarray(weight, x.dtype)

  def channel(f):
    body = lambda _, c: _tv_step(f, c[0], w)
    p0 = jnp.zeros((2,) + f.shape, f.dtype)
    return jax.lax.fori_loop(0, int(iterations), body, (p0, f))[1]

  per_image = jax.vmap(channel, in_axes=2, out_axes=2)
  return jnp.clip(jax.vmap(per_image)(x), 0.0, 1.0)


# ---------------------------------------------------------------------------
# The table's defenses
# ---------------------------------------------------------------------------


def _identity(x: Array, **_) -> Array:
  return x


# Defense name (as ``experiments.defense``) -> ``approx(x, **settings)`` taking
# the defense's own settings; None: identity BPDA (DNCF: with EOT over its key).
APPROXIMATIONS: dict[str, Optional[Callable[..., Array]]] = {
    "jpeg": smooth_jpeg,
    "tv": lambda x, weight=0.1: unrolled_tv(x, weight),
    "median3x3": None,
    "median": None,
    "gaussian_blur": defense_baselines.gaussian_blur,
    "bit_depth": None,
    "dncf_per_image": None,
    "dncf_shared": None,
}


# What BPDA's backward pass is for each defense with an approximation, in
# words for tables (the identity for the others).
BACKWARD = {"jpeg": "smooth JPEG", "tv": "unrolled TV, 200 steps",
            "gaussian_blur": "the blur"}


def approximation(name: str, **settings) -> Callable[[Array], Array]:
  """``x -> approx(x)`` of defense ``name`` at ``settings`` (identity: BPDA)."""
  if name not in APPROXIMATIONS:
    raise ValueError(f"unknown defense {name!r}; choose one of "
                     f"{sorted(APPROXIMATIONS)}")
  fn = APPROXIMATIONS[name]
  return _identity if fn is None else (lambda x: fn(x, **settings))


HOST = ("jpeg", "tv")   # baselines that run on the host (NumPy, Pillow)

Purifier = Callable[[Array, Array], Array]


def baseline(name: str, **settings) -> tuple[Purifier, Optional[Purifier]]:
  """Baseline ``name`` of :mod:`defense_baselines` at ``settings``, ready
  for an adaptive attack: ``(forward, approx)``, each ``(x, key) -> x``.

  ``forward`` is the real defense, traceable (JPEG and TV through
  :func:`host`); ``approx`` its approximation from :data:`APPROXIMATIONS`
  (None: identity). Pass both to :func:`eot_pgd` or :func:`bpda`.
  """
  if name not in defense_baselines.DEFENSES:
    raise ValueError(f"unknown defense {name!r}; choose one of "
                     f"{sorted(defense_baselines.DEFENSES)}")
  real = lambda x: defense_baselines.defend(name, x, **settings)
  run = host(lambda a: np.asarray(real(a))) if name in HOST else real
  fn = APPROXIMATIONS[name]
  approx = None if fn is None else (lambda x, key: fn(x, **settings))
  return (lambda x, key: run(x)), approx
