"""Pure Flax (linen) networks: DIP's ``skip`` encoder-decoder and a small
3-conv-layer net (the defense net of section 4, and a convexity test bed).

Convolutions are named ``conv_XX`` with ``XX`` their order in the forward
pass, so "layers above a depth" (Eq. 7) is a statement about names; see
:func:`dncf_jax.penalty.from_depth`.

Normalisation is batch normalisation with the statistics of the current
batch (DIP runs its nets in train mode throughout; with one image the
statistics are over its pixels). It has a learned scale and bias and no
running averages, so parameters are the only state.

Differentiation: the defaults (``conv="auto"``, which is ``taps`` on CPU,
and :func:`batch_norm`) are reverse mode only, for speed. A net built with
``conv="xla"`` or ``conv="im2col"`` and ``norm_autodiff=True`` is
differentiable in forward mode too (``jax.jvp``, ``jax.jacfwd``,
``jax.hessian``).
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array


def _batch_stats(x: Array, eps: float) -> tuple[Array, Array]:
  """Per-channel mean and ``1/sqrt(var + eps)`` over all but the last axis,
  in one pass (sums of ``d`` and ``d^2``, ``d = x - x[0, ..., 0, :]``: the
  shift keeps ``E[d^2] - E[d]^2`` accurate when the mean is large)."""
  axes = tuple(range(x.ndim - 1))
  n = x.size // x.shape[-1]
  shift = jax.lax.stop_gradient(x[(0,) * (x.ndim - 1)])
  d = x - shift
  m = jnp.sum(d, axes) / n
  var = jnp.maximum(jnp.sum(d * d, axes) / n - m * m, 0.0)
  return shift + m, jax.lax.rsqrt(var + eps)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm(x: Array, scale: Array, bias: Array, eps: float) -> Array:
  """``(x - mean) / sqrt(var + eps) * scale + bias`` with the batch's
  statistics over all but the last (channel) axis.

  Its gradient is written out (one pass of two sums over the pixels, one
  elementwise pass) instead of differentiated through the statistics:
  on XLA:CPU that takes 15-30 % off batch norm's kernels in a DIP step
  (``benchmarks/dip_breakdown.py``). Reverse mode only: ``jax.jvp``,
  ``jax.jacfwd`` and ``jax.hessian`` raise; for them use
  ``BatchStatNorm(autodiff=True)`` (the same function, differentiated by
  JAX; a ``custom_jvp`` version kept half the speed-up but moved a
  borderline test's PSNR below its bar, see ``benchmarks/RESULTS.md``).
  """
  return _batch_norm_fwd(x, scale, bias, eps)[0]


def _normalise(x, scale, bias, eps):
  mean, inv = _batch_stats(x, eps)
  return (x - mean) * (scale * inv) + bias, mean, inv


def _batch_norm_fwd(x, scale, bias, eps):
  y, mean, inv = _normalise(x, scale, bias, eps)
  return y, (x, mean, inv, scale)


def _batch_norm_bwd(eps, res, g):
  del eps
  x, mean, inv, scale = res
  axes = tuple(range(x.ndim - 1))
  n = x.size // x.shape[-1]
  xc = x - mean     # centred before any product: no cancellation at a large mean
  sum_g = jnp.sum(g, axes)
  sum_g_xhat = jnp.sum(g * xc, axes) * inv
  a = scale * inv
  k = a * inv * sum_g_xhat / n
  return g * a - k * xc - a * sum_g / n, sum_g_xhat, sum_g


batch_norm.defvjp(_batch_norm_fwd, _batch_norm_bwd)


class BatchStatNorm(nn.Module):
  """BatchNorm in train mode: normalise over (N, H, W), learned affine.

  ``autodiff=True``: let JAX differentiate it (forward mode works, e.g.
  ``jax.hessian`` of a net; slower on CPU) instead of :func:`batch_norm`'s
  written-out reverse pass.
  """

  eps: float = 1e-5
  autodiff: bool = False

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    if self.autodiff:
      return _normalise(x, scale, bias, self.eps)[0]
    return batch_norm(x, scale, bias, self.eps)


def conv_im2col(x: Array, kernel: Array, stride: int) -> Array:
  """``VALID`` convolution as patches @ kernel (NHWC, HWIO).

  XLA:CPU runs convolution gradients several times slower inside a loop
  body than outside (jax-ml/jax#12868); as slices and one matmul the
  compiled ``lax.scan`` of the solver is as fast as a single step.
  """
  kh, kw, cin, cout = kernel.shape
  _, h, w, _ = x.shape
  ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
  if kh == kw == 1 and stride == 1:
    return jnp.einsum("nhwc,co->nhwo", x, kernel[0, 0])
  cols = [x[:, i:i + stride * (ho - 1) + 1:stride,
            j:j + stride * (wo - 1) + 1:stride, :]
          for i in range(kh) for j in range(kw)]
  patches = jnp.concatenate(cols, axis=-1)
  return jnp.einsum("nhwk,ko->nhwo", patches,
                    kernel.reshape(kh * kw * cin, cout))


def _tap_sum(x: Array, kernel: Array) -> Array:
  """``VALID`` stride-1 convolution as a sum over the kernel's taps of
  ``x @ kernel[tap]`` shifted by the tap's offset: per kernel row, one
  matmul of all rows of the flattened ``x`` with that row's taps side by
  side (per tap when they would be wider than ``_ROW_MAX_COLUMNS``); the
  products' rows from each tap's flat offset on are summed on the input
  grid (one loop kernel), then cropped.

  Shifting the products rather than the inputs matters: XLA:CPU copies a
  row slice before a matmul reads it, and those nine copies per
  convolution cost 5-15 % of a DIP step (``benchmarks/RESULTS.md``)."""
  kh, kw, cin, cout = kernel.shape
  n, h, w, _ = x.shape
  ho, wo = h - kh + 1, w - kw + 1
  top = (kh - 1) * w + kw - 1      # the last tap's flat offset
  rows = n * h * w - top
  xf = x.reshape(n * h * w, cin)
  group = kw if kw * cout <= _ROW_MAX_COLUMNS else 1
  out = 0
  for i in range(kh):
    for j0 in range(0, kw, group):
      taps = kernel[i, j0:j0 + group]                   # (group, cin, cout)
      y = xf @ taps.transpose(1, 0, 2).reshape(cin, -1)
      for j in range(j0, j0 + group):
        off = i * w + j
        out = out + y[off:off + rows, (j - j0) * cout:(j - j0 + 1) * cout]
  out = jnp.pad(out, ((0, top), (0, 0))).reshape(n, h, w, cout)
  return out[:, :ho, :wo]


# A kernel row's taps share one matmul up to this many output columns
# (on XLA:CPU a 16900 x 132 x 384 matmul runs at the speed of 128 columns,
# 1152 at 40 % of it).
_ROW_MAX_COLUMNS = 384
_SPLIT_MIN_ROWS = 4096       # kernel gradient: split the contraction from here
_SPLIT_MIN_BLOCK = 64 * 64   # ... when cin * cout is at least this


@jax.custom_vjp
def conv_taps(x: Array, kernel: Array) -> Array:
  """``VALID`` stride-1 convolution (NHWC, HWIO) without im2col patches.

  Forward: matmuls of ``x`` with the kernel's taps (a kernel row's taps
  side by side), and the sum of the products shifted by the taps' offsets
  (:func:`_tap_sum`). Input gradient: the same on the zero-padded output
  gradient with the flipped kernel.
  Kernel gradient: per tap, the flattened input, transposed (XLA folds
  the transpose into the matmul), times the output gradient laid on the
  input's grid and shifted by the tap's flat offset (a row slice), the
  contraction split in two halves for large blocks. On XLA:CPU this
  avoids im2col's nine-way channel concatenation, whose copy kernel was
  the largest single cost of a DIP step (``benchmarks/dip_breakdown.py``);
  for 1x1 kernels the written-out kernel gradient keeps XLA from writing
  an operand transposed inside the fusion that computes it (13.6 ms of a
  238 ms DIP step at 128 channels).
  The same function as :func:`conv_im2col` up to float rounding; reverse
  mode only (``PadConv(impl="im2col")`` or ``"xla"`` for ``jax.jvp``).
  """
  return _tap_sum(x, kernel)


def _conv_taps_fwd(x, kernel):
  return _tap_sum(x, kernel), (x, kernel)


def _conv_taps_bwd(res, g):
  x, kernel = res
  kh, kw, cin, cout = kernel.shape
  n, h, w, _ = x.shape
  gp = jnp.pad(g, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
  dx = _tap_sum(gp, kernel[::-1, ::-1].transpose(0, 1, 3, 2))
  # dK[i, j] = sum_q x[q + i*w + j] g[q] over flat positions q of the input
  # grid, with g zero outside its (ho, wo) corner: the rows of g that tap
  # (i, j) pairs with x[r] are those of gq shifted down by the tap's offset.
  p = n * h * w
  gq = jnp.pad(g, ((0, 0), (0, kh - 1), (0, kw - 1), (0, 0)))
  top = (kh - 1) * w + kw - 1
  gq = jnp.pad(gq.reshape(p, cout), ((top, 0), (0, 0)))
  # A long contraction into a small (cin, cout) block: split it in two
  # halves summed after (3-6 % of a 128-channel DIP step on XLA:CPU; no
  # change at 32 channels, where the blocks are too small to pay).
  big = p >= _SPLIT_MIN_ROWS and cin * cout >= _SPLIT_MIN_BLOCK
  k = 2 if big and p % 2 == 0 else 1
  xs = x.reshape(k, p // k, cin)
  shifted = lambda o: gq[top - o:top - o + p].reshape(k, p // k, cout)
  # "kpc,kpo->kco" then a sum: "->co" in one contraction is slower
  dk = jnp.stack([jnp.einsum("kpc,kpo->kco", xs, shifted(i * w + j)).sum(0)
                  for i in range(kh) for j in range(kw)])
  return dx, dk.reshape(kernel.shape)


conv_taps.defvjp(_conv_taps_fwd, _conv_taps_bwd)


CONV_IMPLS = ("auto", "taps", "im2col", "xla")


def check_conv(impl: str) -> str:
  """Returns ``impl`` if it names a convolution implementation, else raises."""
  if impl not in CONV_IMPLS:
    raise ValueError(f"unknown convolution impl {impl!r}; use auto, taps, "
                     "im2col or xla")
  return impl


def resolve_conv(impl: str) -> str:
  """The implementation ``impl`` stands for on the default backend
  (``auto``: ``taps`` on CPU, ``xla`` elsewhere)."""
  if check_conv(impl) == "auto":
    return "taps" if jax.default_backend() == "cpu" else "xla"
  return impl


class PadConv(nn.Module):
  """A convolution with explicit reflection (or zero) padding, as DIP's ``conv``.

  ``impl``: ``taps`` (:func:`conv_taps` for stride 1, :func:`conv_im2col`
  for stride 2; fastest on CPU, reverse mode only: ``jax.jvp`` raises a
  ``TypeError`` about a ``custom_vjp`` function), ``im2col`` (all
  :func:`conv_im2col`), ``xla`` (``lax.conv``, best on GPU) or ``auto``
  (taps on CPU, xla elsewhere). ``im2col`` and ``xla`` have forward mode.
  """

  features: int
  kernel: int = 3
  stride: int = 1
  pad: str = "reflection"
  use_bias: bool = True
  impl: str = "auto"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    p = (self.kernel - 1) // 2
    if p:
      mode = "reflect" if self.pad == "reflection" else "constant"
      x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode=mode)
    k = self.param("kernel", nn.initializers.lecun_normal(),
                   (self.kernel, self.kernel, x.shape[-1], self.features))
    impl = resolve_conv(self.impl)
    if impl == "taps" and self.stride == 1:
      out = conv_taps(x, k)
    elif impl in ("taps", "im2col"):
      out = conv_im2col(x, k, self.stride)
    else:
      out = jax.lax.conv_general_dilated(
          x, k, (self.stride, self.stride), "VALID",
          dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if self.use_bias:
      out = out + self.param("bias", nn.initializers.zeros, (self.features,))
    return out


def _bilinear2x_axis(x: Array, axis: int) -> Array:
  """x2 linear interpolation along ``axis`` with half-pixel centres and
  clamped edges: output ``2i`` is ``3/4 x[i] + 1/4 x[i-1]``, ``2i+1`` is
  ``3/4 x[i] + 1/4 x[i+1]``."""
  n = x.shape[axis]
  pad = [(0, 0)] * x.ndim
  pad[axis] = (1, 1)
  xp = jnp.pad(x, pad, mode="edge")
  lo = lax.slice_in_dim(xp, 0, n, axis=axis)
  hi = lax.slice_in_dim(xp, 2, n + 2, axis=axis)
  out = jnp.stack([0.75 * x + 0.25 * lo, 0.75 * x + 0.25 * hi], axis + 1)
  return out.reshape(x.shape[:axis] + (2 * n,) + x.shape[axis + 1:])


def upsample2x(x: Array, mode: str) -> Array:
  """x2 upsampling (``nearest`` or ``bilinear``, half-pixel centres).

  ``bilinear`` is ``jax.image.resize(..., "bilinear", antialias=False)``
  written as a two-tap stencil per axis: the same numbers (to 1e-16 in
  float64), without the interpolation matmuls and transposes that cost
  4 % of a DIP step on XLA:CPU (``benchmarks/RESULTS.md``).
  """
  with jax.named_scope("upsample2x"):    # profiles' name for these kernels
    if mode == "nearest":
      return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    if mode == "bilinear":
      return _bilinear2x_axis(_bilinear2x_axis(x, 1), 2)
  raise ValueError(f"unknown upsample mode {mode!r}; use nearest or bilinear")


@dataclasses.dataclass(frozen=True)
class SkipSpec:
  """Channels per scale of DIP's ``skip`` (``len`` = number of scales)."""

  channels_down: tuple[int, ...] = (32, 32, 32, 32, 32)
  channels_up: tuple[int, ...] = (32, 32, 32, 32, 32)
  channels_skip: tuple[int, ...] = (4, 4, 4, 4, 4)

  @classmethod
  def uniform(cls, channels: int, scales: int, skip: int) -> "SkipSpec":
    return cls((channels,) * scales, (channels,) * scales, (skip,) * scales)

  def __post_init__(self):
    n = len(self.channels_down)
    if n == 0 or len(self.channels_up) != n or len(self.channels_skip) != n:
      raise ValueError("channels_down, channels_up and channels_skip must "
                       "have the same non-zero length (the number of scales)")

  @property
  def scales(self) -> int:
    return len(self.channels_down)


class Skip(nn.Module):
  """DIP's ``skip`` encoder-decoder (Ulyanov et al., ``models/skip.py``).

  Scale ``i``: a skip branch (1x1 conv, BN, act) beside a deeper branch
  (3x3 conv of stride 2, BN, act, 3x3 conv, BN, act, the next scale, x2
  upsampling); their concatenation goes through BN, 3x3 conv, BN, act and
  optionally 1x1 conv, BN, act. A final 1x1 conv maps to ``out_channels``,
  then an optional sigmoid.

  ``features(x)`` returns the tensor entering the last block (the
  concatenation at the finest scale, Eq. 13) and ``head(f)`` the rest, so
  that ``head(features(x)) == __call__(x)``.

  ``conv``: every convolution's ``PadConv.impl``; ``norm_autodiff``:
  ``BatchStatNorm.autodiff``. The defaults are reverse mode only;
  ``conv="xla"`` (or ``"im2col"``) with ``norm_autodiff=True`` gives a
  net that ``jax.jvp`` and ``jax.hessian`` go through (slower on CPU).
  """

  spec: SkipSpec = SkipSpec()
  out_channels: int = 3
  upsample: str = "bilinear"
  pad: str = "reflection"
  need_sigmoid: bool = True
  need1x1_up: bool = True
  negative_slope: float = 0.2
  conv: str = "auto"
  norm_autodiff: bool = False

  def _act(self, x):
    return nn.leaky_relu(x, self.negative_slope)

  def _block(self, x, counter, name, features, kernel, stride=1):
    idx = counter[0]
    counter[0] += 1
    x = PadConv(features, kernel, stride, self.pad, impl=self.conv,
                name=f"conv_{idx:02d}")(x)
    x = BatchStatNorm(autodiff=self.norm_autodiff, name=f"bn_{idx:02d}")(x)
    return self._act(x)

  def _level(self, x, i, counter):
    s = self.spec
    last = s.scales - 1
    skip = None
    if s.channels_skip[i]:
      skip = self._block(x, counter, "skip", s.channels_skip[i], 1)
    d = self._block(x, counter, "down", s.channels_down[i], 3, 2)
    d = self._block(d, counter, "down", s.channels_down[i], 3)
    if i < last:
      d = self._level(d, i + 1, counter)
    d = upsample2x(d, self.upsample)
    h = d if skip is None else jnp.concatenate([skip, d], axis=-1)
    if i == 0:
      return h
    return self._up(h, i, counter)

  def _up(self, h, i, counter):
    s = self.spec
    h = BatchStatNorm(autodiff=self.norm_autodiff, name=f"bn_cat_{i}")(h)
    h = self._block(h, counter, "up", s.channels_up[i], 3)
    if self.need1x1_up:
      h = self._block(h, counter, "up", s.channels_up[i], 1)
    return h

  @nn.compact
  def __call__(self, x: Array, *, method_features: bool = False,
               from_features: bool = False) -> Array:
    squeeze = x.ndim == 3
    if squeeze:
      x = x[None]
    counter = [0]
    if from_features:
      counter[0] = self.num_body_convs()
      h = x
    else:
      h = self._level(x, 0, counter)
      if method_features:
        return h[0] if squeeze else h
    h = self._up(h, 0, counter)
    idx = counter[0]
    out = PadConv(self.out_channels, 1, 1, self.pad, impl=self.conv,
                  name=f"conv_{idx:02d}")(h)
    if self.need_sigmoid:
      out = nn.sigmoid(out)
    return out[0] if squeeze else out

  def num_body_convs(self) -> int:
    """Number of convolutions before the last block (the level-0 up path)."""
    s = self.spec
    n = 0
    for i in range(s.scales):
      n += (1 if s.channels_skip[i] else 0) + 2
      if i > 0:
        n += 2 if self.need1x1_up else 1
    return n

  def features(self, x: Array) -> Array:
    """The feature map entering the last block (for ``y`` in feature space)."""
    return self(x, method_features=True)

  def head(self, h: Array) -> Array:
    """The last block applied to features from :meth:`features`."""
    return self(h, from_features=True)

  def required_multiple(self) -> int:
    """Input height and width must be multiples of this."""
    return 2 ** self.spec.scales


class SmallConvNet(nn.Module):
  """The paper's 3-conv-layer DNCF net for defense (section 4).

  ``conv_00`` (3x3, ``channels``), act, ``conv_01`` (3x3, ``channels``),
  act, ``conv_02`` (3x3, ``out_channels``); optional normalisation after the
  hidden convolutions and an optional sigmoid. Without normalisation and
  sigmoid, non-negative weights in ``conv_01`` and ``conv_02`` make it
  convex in its input (LeakyReLU is convex and non-decreasing).

  ``conv`` and ``norm_autodiff`` as in :class:`Skip`: forward mode needs
  ``conv="xla"`` or ``"im2col"`` and, with ``norm``, ``norm_autodiff=True``.
  """

  channels: int = 32
  out_channels: int = 3
  norm: bool = True
  need_sigmoid: bool = True
  pad: str = "reflection"
  negative_slope: float = 0.2
  conv: str = "auto"
  norm_autodiff: bool = False

  @nn.compact
  def __call__(self, x: Array) -> Array:
    squeeze = x.ndim == 3
    if squeeze:
      x = x[None]
    for i in range(2):
      x = PadConv(self.channels, 3, 1, self.pad, impl=self.conv,
                  name=f"conv_{i:02d}")(x)
      if self.norm:
        x = BatchStatNorm(autodiff=self.norm_autodiff, name=f"bn_{i:02d}")(x)
      x = nn.leaky_relu(x, self.negative_slope)
    x = PadConv(self.out_channels, 3, 1, self.pad, impl=self.conv,
                name="conv_02")(x)
    if self.need_sigmoid:
      x = nn.sigmoid(x)
    return x[0] if squeeze else x

  def required_multiple(self) -> int:
    return 1


def conv_layer_names(params) -> list[str]:
  """Names of the ``conv_XX`` layers of a parameter tree, in forward order."""
  p = params.get("params", params)
  return sorted(k for k in p if k.startswith("conv_"))


def skip_for(channels: int = 32, scales: int = 5, skip_channels: int = 4,
             upsample: str = "bilinear", need_sigmoid: bool = True,
             out_channels: int = 3, *, conv: str = "auto",
             norm_autodiff: bool = False) -> Skip:
  """A uniform-width skip net (DNCF: 32 channels; DIP: 128); ``conv`` and
  ``norm_autodiff`` as in :class:`Skip`."""
  return Skip(SkipSpec.uniform(channels, scales, skip_channels),
              out_channels=out_channels, upsample=upsample,
              need_sigmoid=need_sigmoid, conv=check_conv(conv),
              norm_autodiff=norm_autodiff)
