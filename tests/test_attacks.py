"""Attacks (eps, range, effect, errors) and the purification baselines."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dncf_jax import attacks, defense_baselines as db

EPS = 8 / 255
ALL = sorted(attacks.ATTACKS)


def _toy():
  """A random linear classifier on 8x8x3 images: compiles in a blink."""
  w = jax.random.normal(jax.random.key(1), (8 * 8 * 3, 10)) * 0.5
  x = jax.random.uniform(jax.random.key(2), (16, 8, 8, 3))
  x = x.at[:2].set(jnp.clip(x[:2].round(), 0, 1))   # saturated pixels too
  logits_fn = lambda z: z.reshape(z.shape[0], -1) @ w
  return logits_fn, x, jnp.argmax(logits_fn(x), axis=1)


TOY = _toy()


@pytest.mark.parametrize("name", ALL)
def test_every_attack_stays_in_eps_ball_and_range(name):
  f, x, y = TOY
  adv = attacks.attack(name, f, x, y, key=jax.random.key(0))
  assert adv.shape == x.shape and adv.dtype == x.dtype
  assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
  if name != "cw":   # CW-L2 has no L-inf budget
    assert float(jnp.abs(adv - x).max()) <= EPS + 1e-6
  acc = float(jnp.mean(jnp.argmax(f(adv), 1) == y))
  assert acc < 0.5, (name, acc)
  # fewer steps / a smaller eps are honoured too
  if name in ("bim", "pgd", "fgsm", "ffgsm"):
    small = attacks.attack(name, f, x, y, key=jax.random.key(0), eps=2 / 255)
    assert float(jnp.abs(small - x).max()) <= 2 / 255 + 1e-6


def test_targeted_attacks_reach_the_target():
  f, x, y = TOY
  target = (y + 3) % 10
  big = dict(eps=64 / 255, alpha=16 / 255)   # the toy's classes lie far apart
  for name, kw in (("pgd", big), ("bim", big), ("fgsm", dict(eps=64 / 255)),
                   ("cw", dict(c=10.0))):
    adv = attacks.attack(name, f, x, target, key=jax.random.key(0),
                         targeted=True, **kw)
    hit = float(jnp.mean(jnp.argmax(f(adv), 1) == target))
    assert hit >= (0.3 if name == "fgsm" else 0.8), (name, hit)


def test_cw_keeps_smallest_successful_example_and_binary_search():
  f, x, y = TOY
  adv1 = attacks.cw(f, x, y, steps=50)
  ok = np.asarray(jnp.argmax(f(adv1), 1) != y)
  # unsuccessful images come back unchanged
  np.testing.assert_array_equal(np.asarray(adv1)[~ok], np.asarray(x)[~ok])
  adv3 = attacks.cw(f, x, y, steps=50, c=0.1, binary_search_steps=3)
  ok3 = np.asarray(jnp.argmax(f(adv3), 1) != y)
  assert ok3.mean() >= ok.mean() - 1e-9
  l2 = lambda a: np.sqrt(np.sum((np.asarray(a) - np.asarray(x)) ** 2, (1, 2, 3)))
  assert np.all(l2(adv3)[ok3] > 0)


def test_pgd_start_is_random_and_reproducible():
  f, x, y = TOY
  a = attacks.pgd(f, x, y, key=jax.random.key(0), steps=1)
  b = attacks.pgd(f, x, y, key=jax.random.key(0), steps=1)
  c = attacks.pgd(f, x, y, key=jax.random.key(5), steps=1)
  np.testing.assert_array_equal(a, b)
  assert float(jnp.abs(a - c).max()) > 0


def test_pgd_and_bim_break_resnet20_on_a_small_batch(cifar, resnet20):
  images, labels = cifar
  idx = np.arange(0, 2000, 250)                 # 8 images, 8 classes
  x, y = jnp.asarray(images[idx]), jnp.asarray(labels[idx])
  clean = int(jnp.sum(jnp.argmax(resnet20(x), 1) == y))
  assert clean >= 5
  for name in ("bim", "pgd"):   # one compiled program serves both
    adv = attacks.attack(name, resnet20, x, y, key=jax.random.key(0))
    assert float(jnp.abs(adv - x).max()) <= EPS + 1e-6
    assert int(jnp.sum(jnp.argmax(resnet20(adv), 1) == y)) <= 1, name


def test_bad_inputs_raise_clear_errors():
  f, x, y = TOY
  with pytest.raises(ValueError, match="unknown attack"):
    attacks.attack("deepfool", f, x, y)
  with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
    attacks.fgsm(f, x[0], y[0])
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    attacks.fgsm(f, x * 255, y)
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    attacks.bim(f, x.at[0, 0, 0, 0].set(jnp.nan), y)
  with pytest.raises(ValueError, match="labels must have shape"):
    attacks.bim(f, x, y[:3])
  with pytest.raises(ValueError, match="integer"):
    attacks.fgsm(f, x, y.astype(jnp.float32))
  with pytest.raises(ValueError, match="floats"):
    attacks.fgsm(f, (x * 255).astype(jnp.uint8), y)
  with pytest.raises(ValueError, match="key"):
    attacks.pgd(f, x, y)
  with pytest.raises(ValueError, match="key"):
    attacks.ffgsm(f, x, y)
  with pytest.raises(ValueError, match="eps must be positive"):
    attacks.pgd(f, x, y, key=jax.random.key(0), eps=0.0)
  with pytest.raises(ValueError, match="c must be positive"):
    attacks.cw(f, x, y, c=-1.0)


# --- purification baselines -------------------------------------------------

@pytest.mark.parametrize("name", sorted(db.DEFENSES))
def test_baselines_keep_shape_and_range(name):
  x = jax.random.uniform(jax.random.key(3), (3, 16, 16, 3))
  out = db.defend(name, x)
  assert out.shape == x.shape
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  assert float(jnp.abs(out - x).mean()) > 0     # it did something


def test_baselines_do_what_they_say():
  flat = jnp.full((2, 16, 16, 3), 0.5)
  salt = flat.at[:, 5, 7, :].set(1.0)
  np.testing.assert_allclose(db.median3x3(salt), flat, atol=1e-7)
  np.testing.assert_allclose(db.gaussian_blur(flat, 1.5), flat, atol=1e-6)
  x = jax.random.uniform(jax.random.key(4), (2, 8, 8, 3))
  q = db.bit_depth(x, 1)
  assert set(np.unique(np.asarray(q)).tolist()) <= {0.0, 1.0}
  smooth = db.gaussian_blur(jax.random.uniform(jax.random.key(4), (1, 32, 32, 3)), 2.0)
  assert float(jnp.abs(db.jpeg(smooth, 95) - smooth).max()) < 0.05
  assert float(jnp.std(db.tv_denoise(x, 0.5))) < float(jnp.std(x))
  gray = db.jpeg(x[..., :1], 50)
  assert gray.shape == (2, 8, 8, 1)


def test_baselines_reject_bad_input():
  x = jnp.zeros((2, 8, 8, 3))
  with pytest.raises(ValueError, match="unknown defense"):
    db.defend("magic", x)
  with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
    db.median3x3(x[0])
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    db.jpeg(x + 2.0)
  with pytest.raises(ValueError, match="bits"):
    db.bit_depth(x, 0)


# --- the published behaviour, by hand: python -m pytest -m slow ---------------

@pytest.mark.slow
def test_published_attack_behaviour_on_200_images(cifar, resnet20):
  images, labels = cifar
  idx = np.arange(0, 2000, 10)
  bars = dict(pgd=0.05, bim=0.05, cw=0.10, fgsm=0.30, ffgsm=0.30)
  for name, bar in bars.items():
    correct = 0
    for b in range(0, len(idx), 100):
      x, y = jnp.asarray(images[idx[b:b + 100]]), jnp.asarray(labels[idx[b:b + 100]])
      adv = attacks.attack(name, resnet20, x, y, key=jax.random.key(b))
      correct += int(jnp.sum(jnp.argmax(resnet20(adv), 1) == y))
    assert correct / len(idx) < bar, (name, correct / len(idx))
