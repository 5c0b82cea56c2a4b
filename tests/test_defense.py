"""DNCF purification (section 4): range and shape, both modes, sharding, BPDA."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dncf_jax import defense

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(iterations=20, channels=8, lr=0.03, epsilon=0.01)


def _smooth_batch(n=4, size=16):
  """Smooth synthetic images (gradients and a blob) in [0.1, 0.9]."""
  r = np.linspace(0, 1, size)
  yy, xx = np.meshgrid(r, r, indexing="ij")
  out = []
  for i in range(n):
    blob = np.exp(-((yy - 0.3 - 0.1 * i) ** 2 + (xx - 0.6) ** 2) / 0.05)
    im = np.stack([0.5 + 0.4 * (xx - 0.5), 0.3 + 0.6 * blob * 0.9,
                   0.5 + 0.4 * (yy - 0.5) * (-1) ** i], -1)
    out.append(np.clip(im, 0.1, 0.9))
  return np.asarray(out, np.float32)


@pytest.mark.parametrize("mode", defense.MODES)
def test_purify_keeps_shape_and_range_and_removes_sign_noise(mode):
  clean = _smooth_batch()
  noise = np.random.default_rng(0).choice([-1.0, 1.0], clean.shape)
  adv = np.clip(clean + 16 / 255 * noise, 0, 1).astype(np.float32)
  cfg = defense.DefenseConfig(mode=mode, **TINY)
  out = defense.purify(adv, cfg)
  assert out.shape == adv.shape and out.dtype == np.float32
  assert np.all(np.isfinite(out)) and out.min() >= 0 and out.max() <= 1
  d_adv = np.sqrt(np.mean((adv - clean) ** 2, axis=(1, 2, 3)))
  d_out = np.sqrt(np.mean((out - clean) ** 2, axis=(1, 2, 3)))
  assert np.all(d_out < d_adv), (d_out, d_adv)
  # Blind and deterministic given the key; another key gives another image.
  again = defense.purify(adv, cfg)
  np.testing.assert_array_equal(out, again)
  other = defense.purify(adv, cfg, jax.random.key(1))
  assert np.abs(other - out).max() > 1e-4
  # The config's seed makes the default key on the host: no new program.
  programs = len(defense._COMPILED)
  seeded = defense.purify(adv, cfg.replace(seed=1))
  assert len(defense._COMPILED) == programs
  np.testing.assert_array_equal(seeded, other)


def test_sharding_over_four_cpu_devices_matches_one_device():
  code = textwrap.dedent("""
      import jax, numpy as np
      from dncf_jax import defense
      jax.config.update("jax_compilation_cache_dir", ".jax_cache")
      jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
      assert jax.device_count() == 4, jax.devices()
      x = np.random.default_rng(0).uniform(0.1, 0.9, (6, 12, 12, 3)).astype(np.float32)
      for mode in defense.MODES:
        cfg = defense.DefenseConfig(mode=mode, iterations=4, channels=8, lr=0.01)
        four = defense.purify(x, cfg)                       # padded to 8, sharded
        one = defense.purify(x, cfg, mesh=defense.batch_mesh(jax.devices()[:1]))
        # Equal up to float rounding (other shapes per device fuse differently;
        # the line search's accept/reject can amplify it); padding 6 -> 8 has
        # no weight.
        err = float(np.abs(four - one).max())
        mean = float(np.abs(four - one).mean())
        assert err < 1e-3 and mean < 1e-5, (mode, err, mean)
        fn = defense._compiled(cfg, defense.batch_mesh())
        out = fn(np.concatenate([x, x[:2]]), np.ones(8, np.float32),
                 np.arange(8, dtype=np.int32), jax.random.key(0))
        assert len(out.sharding.device_set) == 4
        print(mode, err, mean)
      """)
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
             XLA_FLAGS="--xla_force_host_platform_device_count=4 "
                       + os.environ["XLA_FLAGS"])
  p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-3000:]
  assert "per_image" in p.stdout and "shared" in p.stdout, p.stdout
  print(p.stdout)


def test_bpda_forward_is_the_purifier_backward_is_identity():
  x = _smooth_batch(2, 8)
  cfg = defense.DefenseConfig(mode="per_image", iterations=1, channels=4)
  fn = defense.purify_fn(cfg)
  pur = lambda z: fn(z, jnp.ones(2), jnp.arange(2), jax.random.key(0))
  wrapped = defense.bpda(pur)
  w = jnp.asarray(np.random.default_rng(1).standard_normal(x.shape),
                  jnp.float32)
  def both(z):
    return jnp.sum(w * wrapped(z)), pur(z)
  (val, direct), g = jax.jit(jax.value_and_grad(both, has_aux=True))(x)
  np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-6)
  np.testing.assert_allclose(float(val), float(jnp.sum(w * direct)), rtol=1e-4)
  assert float(jnp.abs(direct - x).max()) > 1e-3   # the forward is not identity
  # A non-differentiable purifier (rounding) gets the identity gradient too.
  g2 = jax.grad(lambda z: jnp.sum(w * defense.bpda(jnp.round)(z)))(x)
  np.testing.assert_allclose(np.asarray(g2), np.asarray(w), atol=1e-6)


def test_eot_pgd_stays_in_the_ball_and_fools_a_linear_model():
  rng = np.random.default_rng(0)
  wmat = jnp.asarray(rng.standard_normal((8 * 8 * 3, 4)), jnp.float32)
  logits_fn = lambda z: z.reshape(z.shape[0], -1) @ wmat
  x = jnp.asarray(rng.uniform(0.2, 0.8, (6, 8, 8, 3)), jnp.float32)
  labels = jnp.argmax(logits_fn(x), -1)
  noisy = lambda z, k: jnp.clip(z + 0.01 * jax.random.normal(k, z.shape), 0, 1)
  adv = jax.jit(lambda x, y, k: defense.eot_pgd(
      logits_fn, noisy, x, y, k, eps=0.1, alpha=0.03, steps=5, samples=3))(
          x, labels, jax.random.key(0))
  assert float(jnp.max(jnp.abs(adv - x))) <= 0.1 + 1e-6
  assert float(adv.min()) >= 0 and float(adv.max()) <= 1
  assert float(jnp.mean(jnp.argmax(logits_fn(adv), -1) == labels)) < 0.5


@pytest.mark.parametrize("field,value", [
    ("iterations", 0), ("mode", "both"), ("beta", -1.0), ("lr", 0.0),
    ("channels", 0), ("y_solver", "bfgs")])
def test_bad_config_raises(field, value):
  with pytest.raises(ValueError, match=field):
    defense.DefenseConfig.from_flat(**{field: value}).validate()


def test_bad_images_raise():
  cfg = defense.DefenseConfig(iterations=1, channels=4)
  with pytest.raises(ValueError, match="batch"):
    defense.purify(np.zeros((8, 8, 3), np.float32), cfg)
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    defense.purify(np.full((1, 8, 8, 3), 2.0, np.float32), cfg)


@pytest.mark.slow
def test_default_purifier_keeps_clean_accuracy_where_the_short_fit_does_not(
    cifar, resnet20):
  images, labels = cifar
  idx = (np.arange(64) * len(images)) // 64
  x, y = images[idx], labels[idx]
  acc = lambda z: float(np.mean(np.argmax(np.asarray(resnet20(z)), -1) == y))
  bare = acc(x)
  default = acc(defense.purify(x, defense.DefenseConfig(), indices=idx))
  short = acc(defense.purify(x, defense.DefenseConfig(iterations=30),
                             indices=idx))
  # 2000 images: 79.7 % against 81.35 % bare; 64 images move by a few
  assert default >= bare - 0.1, (default, bare)
  assert short < bare - 0.15 and default > short + 0.08, (short, default)
