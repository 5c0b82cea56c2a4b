"""The nets' building blocks against their textbook formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dncf_jax import nets


def _batch_norm_float64(x, scale, bias, w, eps=1e-5):
  """Batch norm and the gradient of ``sum(w * batch_norm(x))`` in float64."""
  x, scale, bias, w = (np.asarray(a, np.float64) for a in (x, scale, bias, w))
  n = x.size // x.shape[-1]
  inv = 1 / np.sqrt(x.var((0, 1, 2)) + eps)
  xhat = (x - x.mean((0, 1, 2))) * inv
  gx = w * scale            # d/d xhat
  dx = inv / n * (n * gx - gx.sum((0, 1, 2)) - xhat * (gx * xhat).sum((0, 1, 2)))
  return xhat * scale + bias, (dx, (w * xhat).sum((0, 1, 2)), w.sum((0, 1, 2)))


def test_batch_norm_matches_float64_and_its_gradient():
  """``nets.batch_norm`` (one-pass statistics, written-out VJP) against
  the two-pass formula and its gradient in float64, at a mean of 0 and of
  100 (where a float32 two-pass mean is off by 5e-5; the shift and the
  centring keep ours within 2e-5)."""
  k = jax.random.split(jax.random.PRNGKey(0), 4)
  for mu in (0.0, 100.0):
    x = mu + 0.5 * jax.random.normal(k[0], (2, 9, 7, 5))
    scale = 1 + 0.3 * jax.random.normal(k[1], (5,))
    bias = 0.3 * jax.random.normal(k[2], (5,))
    w = jax.random.normal(k[3], x.shape)
    want_y, want_g = _batch_norm_float64(x, scale, bias, w)
    np.testing.assert_allclose(nets.batch_norm(x, scale, bias, 1e-5), want_y,
                               atol=2e-5)
    loss = lambda *a: jnp.sum(w * nets.batch_norm(*a, 1e-5))
    got = jax.grad(loss, (0, 1, 2))(x, scale, bias)
    for g, h in zip(got, want_g):
      np.testing.assert_allclose(g, h, atol=1e-4 * np.max(np.abs(h)))


def test_batch_stat_norm_autodiff_variant_has_forward_mode():
  """``batch_norm`` is reverse mode only (a clear JAX error under jvp);
  ``BatchStatNorm(autodiff=True)`` is the same function with forward mode."""
  x = 3.0 + jax.random.normal(jax.random.PRNGKey(0), (1, 6, 5, 3))
  fast, plain = nets.BatchStatNorm(), nets.BatchStatNorm(autodiff=True)
  p = fast.init(jax.random.PRNGKey(1), x)
  np.testing.assert_allclose(fast.apply(p, x), plain.apply(p, x), atol=1e-6)
  f = lambda m: lambda x: jnp.sum(jnp.sin(m.apply(p, x)))
  v = jax.random.normal(jax.random.PRNGKey(2), x.shape)
  _, d = jax.jvp(f(plain), (x,), (v,))
  np.testing.assert_allclose(d, jnp.sum(jax.grad(f(fast))(x) * v), rtol=1e-4)
  with pytest.raises(TypeError, match="forward-mode"):
    jax.jvp(f(fast), (x,), (v,))


def _lax_conv(x, k):
  return jax.lax.conv_general_dilated(x, k, (1, 1), "VALID",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("xs,ks", [((2, 10, 12, 5), (3, 3, 5, 7)),
                                   ((1, 9, 7, 3), (5, 3, 3, 4)),
                                   ((3, 6, 6, 4), (2, 2, 4, 2)),
                                   ((1, 8, 9, 70), (3, 3, 70, 66)),
                                   ((2, 5, 4, 6), (1, 1, 6, 3))])
@pytest.mark.parametrize("split", [False, True])
def test_conv_taps_and_its_gradient_match_lax_conv(xs, ks, split, monkeypatch):
  """Forward, input gradient and kernel gradient (written out) against
  ``lax.conv`` in float64: a batch, non-square kernels and images, many
  channels, 1x1; ``split``: the kernel gradient's halved contraction
  (large images only in use) on every case with an even pixel count, and
  one matmul per tap instead of per kernel row (wide kernels only)."""
  if split:   # and the forward's taps one matmul each
    monkeypatch.setattr(nets, "_SPLIT_MIN_ROWS", 0)
    monkeypatch.setattr(nets, "_SPLIT_MIN_BLOCK", 0)
    monkeypatch.setattr(nets, "_ROW_MAX_COLUMNS", 0)
  x = jax.random.normal(jax.random.key(0), xs)
  k = jax.random.normal(jax.random.key(1), ks)
  g = jax.random.normal(jax.random.key(2), _lax_conv(x, k).shape)
  with jax.enable_x64():
    x64, k64, g64 = (jnp.asarray(a, jnp.float64) for a in (x, k, g))
    want = np.asarray(_lax_conv(x64, k64))
    dwant = [np.asarray(d) for d in jax.grad(
        lambda a, b: jnp.vdot(_lax_conv(a, b), g64), (0, 1))(x64, k64)]
  got = nets.conv_taps(x, k)
  dgot = jax.grad(lambda a, b: jnp.vdot(nets.conv_taps(a, b), g), (0, 1))(x, k)
  np.testing.assert_allclose(got, want, atol=2e-5)
  for a, b in zip(dgot, dwant):
    np.testing.assert_allclose(a, b, atol=5e-5 * np.abs(b).max())


@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (1, 1, 4, 2), (1, 16, 16, 8)])
def test_bilinear_upsample_matches_jax_image_resize(shape):
  """The stencil against ``jax.image.resize`` (float64), value and
  gradient, including a one-pixel-high image; bad modes are named."""
  with jax.enable_x64():
    x = jax.random.normal(jax.random.key(0), shape, jnp.float64)
    n, h, w, c = shape
    ref = lambda a: jax.image.resize(a, (n, 2 * h, 2 * w, c), "bilinear",
                                     antialias=False)
    up = lambda a: nets.upsample2x(a, "bilinear")
    np.testing.assert_allclose(up(x), ref(x), atol=1e-14)
    g = jax.random.normal(jax.random.key(1), ref(x).shape, jnp.float64)
    np.testing.assert_allclose(jax.vjp(up, x)[1](g)[0],
                               jax.vjp(ref, x)[1](g)[0], atol=1e-13)
  with pytest.raises(ValueError, match="unknown upsample mode 'cubic'"):
    nets.upsample2x(x, "cubic")


def test_pad_conv_impls_agree_and_bad_impl_is_named():
  x = jax.random.normal(jax.random.key(0), (1, 16, 16, 6))
  outs = []
  for impl in ("taps", "im2col", "xla"):
    for stride in (1, 2):
      conv = nets.PadConv(5, 3, stride, impl=impl)
      p = conv.init(jax.random.key(1), x)
      outs.append(conv.apply(p, x))
  for a, b in zip(outs[2:], outs[:-2]):
    np.testing.assert_allclose(a, b, atol=1e-5)
  with pytest.raises(ValueError, match="unknown convolution impl 'fft'"):
    nets.PadConv(5, impl="fft").init(jax.random.key(1), x)


def _tiny_skip(conv, norm_autodiff=False):
  return nets.skip_for(8, 2, 2, conv=conv, norm_autodiff=norm_autodiff)


def test_skip_conv_impls_agree_in_output_and_parameter_gradients():
  """One set of parameters through ``skip_for(..., conv=c)`` for every
  implementation: the same outputs and parameter gradients (float32)."""
  x = jax.random.uniform(jax.random.key(0), (16, 16, 3))
  w = jax.random.normal(jax.random.key(1), (16, 16, 3))
  p = _tiny_skip("xla").init(jax.random.key(2), x)
  outs, grads = {}, {}
  for conv in ("taps", "im2col", "xla"):
    net = _tiny_skip(conv)
    assert net.conv == conv
    loss = lambda q: jnp.vdot(w, net.apply(q, x))
    outs[conv] = net.apply(p, x)
    grads[conv] = jax.grad(loss)(p)
  for conv in ("im2col", "xla"):
    np.testing.assert_allclose(outs[conv], outs["taps"], atol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(grads[conv]),
                    jax.tree_util.tree_leaves(grads["taps"])):
      np.testing.assert_allclose(a, b, atol=1e-4 * max(np.abs(b).max(), 1.0))


def test_small_conv_net_passes_conv_and_norm_autodiff_on():
  x = jax.random.uniform(jax.random.key(0), (9, 7, 3))
  net = nets.SmallConvNet(channels=4, conv="im2col", norm_autodiff=True)
  p = net.init(jax.random.key(1), x)
  np.testing.assert_allclose(net.apply(p, x),
                             nets.SmallConvNet(channels=4).apply(p, x),
                             atol=1e-5)
  v = jax.random.normal(jax.random.key(2), x.shape)
  f = lambda a: jnp.sum(net.apply(p, a) ** 2)
  _, d = jax.jvp(f, (x,), (v,))
  np.testing.assert_allclose(d, jnp.vdot(jax.grad(f)(x), v), rtol=1e-4)


@pytest.mark.parametrize("conv", ["xla", "im2col"])
def test_skip_forward_mode_with_xla_or_im2col_and_autodiff_norm(conv):
  """``jax.jvp`` through the whole net (input and parameters) against the
  reverse-mode gradient of the default net, and against a central finite
  difference in float64."""
  x = jax.random.uniform(jax.random.key(0), (16, 16, 3))
  v = jax.random.normal(jax.random.key(1), x.shape)
  net = _tiny_skip(conv, norm_autodiff=True)
  p = net.init(jax.random.key(2), x)
  vp = jax.tree_util.tree_map(
      lambda a: jax.random.normal(jax.random.key(3), a.shape), p)
  f = lambda m: lambda q, a: jnp.sum(jnp.sin(3 * m.apply(q, a)))
  _, d = jax.jvp(f(net), (p, x), (vp, v))
  gp, gx = jax.grad(f(_tiny_skip("taps")), (0, 1))(p, x)
  want = jnp.vdot(gx, v) + sum(
      jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(gp),
                                     jax.tree_util.tree_leaves(vp)))
  np.testing.assert_allclose(d, want, rtol=1e-3)
  with jax.enable_x64():
    to64 = lambda t: jax.tree_util.tree_map(
        lambda a: jnp.asarray(a, jnp.float64), t)
    p64, x64, v64 = to64(p), to64(x), to64(v)
    g = lambda a: f(net)(p64, a)
    _, d64 = jax.jvp(g, (x64,), (v64,))
    eps = 1e-5
    fd = (g(x64 + eps * v64) - g(x64 - eps * v64)) / (2 * eps)
    np.testing.assert_allclose(d64, fd, rtol=1e-6)


@pytest.mark.parametrize("conv,norm_autodiff", [("taps", True),
                                                ("xla", False)])
def test_forward_mode_through_reverse_only_parts_raises(conv, norm_autodiff):
  """``conv="taps"`` and the default batch norm are ``custom_vjp``
  functions: JAX refuses ``jax.jvp`` through them, naming both."""
  x = jax.random.uniform(jax.random.key(0), (16, 16, 3))
  net = _tiny_skip(conv, norm_autodiff)
  p = net.init(jax.random.key(1), x)
  with pytest.raises(TypeError, match="forward-mode.*custom_vjp"):
    jax.jvp(lambda a: net.apply(p, a), (x,), (x,))


def test_bad_conv_name_is_named():
  x = jnp.zeros((16, 16, 3))
  with pytest.raises(ValueError, match="unknown convolution impl 'fft'"):
    nets.skip_for(8, 2, 2, conv="fft")
  with pytest.raises(ValueError, match="unknown convolution impl 'fft'"):
    nets.SmallConvNet(4, conv="fft").init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="unknown convolution impl 'fft'"):
    nets.check_conv("fft")
