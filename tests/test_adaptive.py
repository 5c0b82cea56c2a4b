"""Differentiable approximations of the purifiers: BPDA gradients, smooth
JPEG against Pillow, unrolled TV against scikit-image, adaptive PGD."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from dncf_jax import adaptive, defense, defense_baselines as db

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _photos(n=6, size=32, seed=0):
  """Photo-like 32x32 images on the 8-bit grid: smooth shading, edges, a
  texture, mild noise."""
  rng = np.random.default_rng(seed)
  r = np.linspace(0, 1, size)
  yy, xx = np.meshgrid(r, r, indexing="ij")
  out = []
  for i in range(n):
    a, b = rng.uniform(1, 5, 2)
    im = np.stack([0.5 + 0.35 * np.sin(a * xx + i),
                   0.5 + 0.3 * np.cos(b * yy * xx + i),
                   np.where(xx + 0.3 * yy > 0.4 + 0.05 * i, 0.75, 0.25)], -1)
    im = im + 0.04 * np.sin(20 * xx + 13 * yy)[..., None]
    out.append(im + 0.02 * rng.standard_normal(im.shape))
  return np.round(np.clip(out, 0, 1) * 255).astype(np.float32) / 255


def test_bpda_gradient_is_the_identity_or_the_approximation():
  x = jnp.asarray(_photos(2))
  w = jnp.asarray(np.random.default_rng(1).standard_normal(x.shape), jnp.float32)
  # Identity backward, also through a non-differentiable forward.
  f = adaptive.bpda(lambda z: db.bit_depth(z, 3))
  val, g = jax.value_and_grad(lambda z: jnp.sum(w * f(z)))(x)
  np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-6)
  np.testing.assert_allclose(float(val), float(jnp.sum(w * db.bit_depth(x, 3))),
                             rtol=1e-5)
  # With an approximation: its gradient, the forward unchanged.
  blur = lambda z: db.gaussian_blur(z, 1.0)
  f = adaptive.bpda(lambda z: db.bit_depth(z, 3), blur)
  g = jax.grad(lambda z: jnp.sum(w * f(z)))(x)
  want = jax.grad(lambda z: jnp.sum(w * blur(z)))(x)
  np.testing.assert_allclose(np.asarray(g), np.asarray(want), atol=1e-6)
  # Extra arguments (a key) get no gradient; host code runs in the forward.
  jpeg = adaptive.host(lambda a: db.jpeg(a, 50))
  f = adaptive.bpda(lambda z, k: jpeg(z), lambda z, k: adaptive.smooth_jpeg(z, 50))
  g = jax.jit(jax.grad(lambda z, k: jnp.sum(w * f(z, k))))(x, jax.random.key(0))
  want = jax.grad(lambda z: jnp.sum(w * adaptive.smooth_jpeg(z, 50)))(x)
  np.testing.assert_allclose(np.asarray(g), np.asarray(want), atol=1e-5)
  assert float(jnp.abs(want - w).max()) > 1e-2   # not the identity
  # The table's DNCF purifier: identity BPDA (defense.bpda is this one).
  assert defense.bpda is adaptive.bpda and defense.eot_pgd is adaptive.eot_pgd


@pytest.mark.parametrize("quality", [100, 75, 50])
def test_quant_tables_match_pillow(quality):
  import io
  buf = io.BytesIO()
  Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, "JPEG",
                                                        quality=quality)
  q = Image.open(buf).quantization
  luma, chroma = adaptive.quant_tables(quality)
  np.testing.assert_array_equal(luma.ravel(), q[0])
  np.testing.assert_array_equal(chroma.ravel(), q[1])


def _jpeg_gap(x, quality):
  real = np.asarray(db.jpeg(x, quality))
  ours = np.asarray(adaptive.smooth_jpeg(x, quality))
  d = np.abs(ours - real) * 255
  return float(d.mean()), float(d.max()), float(np.abs(real - x).mean() * 255)


@pytest.mark.parametrize("quality", [75, 50])
def test_smooth_jpeg_within_2_of_255_of_pillow(quality):
  mean, worst, change = _jpeg_gap(_photos(), quality)
  print(f"q{quality}: mean {mean:.2f}/255, max {worst:.1f}/255 "
        f"(JPEG itself changes the image by {change:.2f}/255)")
  assert mean < 2.0 and change > 3 * mean
  gray = _photos(2)[..., :1]
  assert _jpeg_gap(gray, quality)[0] < 2.0


@pytest.mark.parametrize("quality", [75, 50])
def test_smooth_jpeg_on_cifar(cifar, quality):
  images, _ = cifar
  mean, worst, _ = _jpeg_gap(images[::100], quality)
  print(f"cifar q{quality}: mean {mean:.2f}/255, max {worst:.1f}/255")
  assert mean < 2.0


def test_smooth_round_and_its_gradient():
  v = jnp.asarray([-1.5, -0.4, 0.0, 0.3, 0.5, 2.49])
  np.testing.assert_allclose(adaptive.smooth_round(v),
                             [-1.875, -0.064, 0.0, 0.027, 0.875, 2 + 0.49 ** 3],
                             atol=1e-6)
  g = jax.grad(lambda z: jnp.sum(adaptive.smooth_round(z)))(v)
  np.testing.assert_allclose(g, np.ones(6), atol=1e-6)
  g = jax.grad(lambda z: jnp.sum(adaptive.smooth_round(z, False)))(v)
  np.testing.assert_allclose(g, 3 * np.asarray([0.5, 0.4, 0, 0.3, 0.5, 0.49]) ** 2,
                             atol=1e-5)


@pytest.mark.parametrize("weight,iterations", [(0.1, 200), (0.05, 20)])
def test_unrolled_tv_matches_skimage(weight, iterations):
  from skimage.restoration import denoise_tv_chambolle
  x = _photos(2)
  ours = np.asarray(adaptive.unrolled_tv(x, weight, iterations))
  ref = np.clip([denoise_tv_chambolle(im, weight=weight, eps=0.0,
                                      max_num_iter=iterations, channel_axis=-1)
                 for im in x], 0, 1)
  np.testing.assert_allclose(ours, ref, atol=2e-4)   # float32 over the steps
  if iterations == 200:  # the defense stops early (energy change 2e-4)
    gap = np.abs(ours - np.asarray(db.tv_denoise(x, weight))).mean()
    assert gap < 2 / 255, gap
  g = jax.grad(lambda z: jnp.sum(adaptive.unrolled_tv(z, weight, 10) ** 2))(
      jnp.asarray(x))
  assert np.all(np.isfinite(g)) and float(jnp.abs(g).mean()) > 0


def test_approximations_cover_the_table():
  # read in a subprocess: experiments.defense defines absl flags that other
  # test files' modules define too (one process may import only one)
  names = subprocess.run(
      [sys.executable, "-c", "from experiments import defense as t; "
       "print(','.join(t.DNCF + t.BASELINES))"], cwd=ROOT,
      capture_output=True, text=True, check=True).stdout.strip().split(",")
  assert set(names) <= set(adaptive.APPROXIMATIONS)
  assert set(adaptive.APPROXIMATIONS) <= set(names) | set(db.DEFENSES)
  x = jnp.asarray(_photos(1))
  assert adaptive.approximation("bit_depth", bits=3)(x) is x
  np.testing.assert_allclose(adaptive.approximation("tv", weight=0.1)(x),
                             adaptive.unrolled_tv(x, 0.1), atol=1e-6)
  with pytest.raises(ValueError, match="unknown defense"):
    adaptive.approximation("nope")
  with pytest.raises(ValueError, match="unknown defense"):
    adaptive.baseline("dncf_per_image")


def _toy_classifier(x):
  """A fixed random linear classifier on 32x32x3 images and its labels."""
  rng = np.random.default_rng(0)
  w = jnp.asarray(rng.standard_normal((32 * 32 * 3, 10)) / 50, jnp.float32)
  logits_fn = lambda z: (z - 0.5).reshape(z.shape[0], -1) @ w
  return logits_fn, jnp.argmax(logits_fn(x), -1)


@pytest.mark.parametrize("name,settings", [
    ("jpeg", dict(quality=75)), ("tv", dict(weight=0.1)),
    ("median3x3", {}), ("gaussian_blur", dict(sigma=1.0)),
    ("bit_depth", dict(bits=4))])
def test_adaptive_pgd_through_each_baseline_raises_the_loss(name, settings):
  x = jnp.asarray(_photos(4))
  logits_fn, labels = _toy_classifier(x)
  real = lambda z: db.defend(name, z, **settings)
  fwd, approx = adaptive.baseline(name, **settings)
  adv = jax.jit(lambda z, y, k: adaptive.eot_pgd(
      logits_fn, fwd, z, y, k, samples=1, steps=5,
      approx=approx))(x, labels, jax.random.key(0))
  assert float(jnp.abs(adv - x).max()) <= 8 / 255 + 1e-6
  loss = lambda z: float(jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
      logits_fn(real(z)), labels)))
  assert loss(adv) > loss(x) + 0.1, (loss(adv), loss(x))
