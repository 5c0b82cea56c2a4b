"""The blind rule of select.py on hand-made candidates and residuals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dncf_jax import select

EMA = select.EMA


def _run(residual_rows, sigma, tau=0.9, **kw):
  """Feeds checkpoints whose candidate k at checkpoint t is the constant 10t+k."""
  choice = select.init_choice(jnp.zeros((2, 2, 1)))
  for t, res in enumerate(residual_rows):
    cands = jnp.stack([jnp.full((2, 2, 1), 10.0 * t + k) for k in range(4)])
    choice = select.update_choice(choice, cands, jnp.asarray(res, jnp.float32),
                                  jnp.asarray(sigma, jnp.float32), t, tau, **kw)
  return choice


def test_noisy_rule_takes_the_moving_average_at_the_first_crossing():
  s2 = 0.1 ** 2
  rows = [[s2, 3 * s2, 3 * s2, 2.0 * s2],   # y fits best but is not a candidate here
          [s2, 0.5 * s2, 2 * s2, 1.2 * s2],
          [s2, 0.4 * s2, 2 * s2, 0.85 * s2],  # first EMA residual below 0.9 sigma^2
          [s2, 0.3 * s2, 2 * s2, 0.89 * s2]]  # a later, closer one must not win
  c = _run(rows, 0.1)
  assert bool(c.stopped) and int(c.iteration) == 2 and int(c.candidate) == EMA
  assert float(c.image[0, 0, 0]) == 10 * 2 + EMA


def test_noisy_rule_keeps_the_latest_average_until_it_stops():
  s2 = 0.1 ** 2
  c = _run([[s2, s2, s2, 2 * s2], [s2, s2, s2, 1.5 * s2]], 0.1)
  assert not bool(c.stopped) and int(c.iteration) == 1
  assert float(c.image[0, 0, 0]) == 10 + EMA


def test_noiseless_rule_takes_the_best_fit_with_y_handicapped():
  rows = [[1e-3, 5e-3, 9e-3, 9e-3],
          [2e-3, 1e-3, 9e-3, 9e-3],    # f(y) best so far; y would need < e^-1 of it
          [5e-4, 2e-3, 9e-3, 9e-3]]    # y better, but not by the factor e
  c = _run(rows, 0.0)
  assert int(c.candidate) == 1 and int(c.iteration) == 1 and not bool(c.stopped)
  c = _run(rows + [[1e-4, 2e-3, 9e-3, 9e-3]], 0.0)
  assert int(c.candidate) == 0 and int(c.iteration) == 3


def test_saturated_pixels_leave_the_residual_and_the_noise_estimate():
  rng = np.random.default_rng(0)
  clean = np.full((64, 64, 3), 0.5, np.float32)
  clean[:32] = 0.98  # a bright half whose noise is clipped at 1
  noisy = np.clip(clean + 0.1 * rng.standard_normal(clean.shape), 0, 1)
  noisy = jnp.asarray(noisy, jnp.float32)
  w = select.unsaturated(noisy, jnp.ones((64, 64, 1)))
  assert w.shape == noisy.shape and 0.2 < 1 - float(jnp.mean(w)) < 0.3
  sig = float(select.estimate_noise_sigma(noisy, w))
  assert sig == pytest.approx(0.1, rel=0.1)
  r_all = float(select.residual(lambda x: x, jnp.asarray(clean), noisy, jnp.ones((64, 64, 1))))
  assert r_all < 0.8 * 0.1 ** 2  # clipping shrinks the residual of the truth


def test_held_out_rule_takes_the_best_score_whatever_sigma_and_waits_patience():
  rows = [[0.5, 0.4, 0.6, 0.45],
          [0.3, 0.35, 0.6, 0.2],    # best: the moving average at checkpoint 1
          [0.3, 0.25, 0.6, 0.21],
          [0.3, 0.25, 0.6, 0.22]]
  for sigma in (0.0, 0.1):
    c = _run(rows[:3], sigma, y_handicap=0.0, patience=2)
    assert int(c.iteration) == 1 and int(c.candidate) == EMA
    assert not bool(c.stopped)
    c = _run(rows, sigma, y_handicap=0.0, patience=2)
    assert bool(c.stopped) and int(c.iteration) == 1


def test_held_out_pixels_reach_neither_the_fit_nor_the_first_guess():
  rng = np.random.default_rng(0)
  obs = jnp.asarray(rng.uniform(size=(40, 50, 3)), jnp.float32)
  weights = jnp.ones((40, 50, 1))
  key = jax.random.key(3)
  fit, held, filled = select.hold_out(key, obs, weights, 0.2)
  assert fit.shape == held.shape == obs.shape
  np.testing.assert_array_equal(fit + held, 1.0)
  frac = float(jnp.mean(held))
  assert 0.15 < frac < 0.25, frac
  assert bool(jnp.all(held == held[:, :, :1]))          # whole pixels
  np.testing.assert_array_equal(np.where(fit > 0, filled, 0),
                                np.where(fit > 0, obs, 0))
  other = jnp.where(held > 0, 1.0 - obs, obs)           # new held-out values
  _, _, filled2 = select.hold_out(key, other, weights, 0.2)
  np.testing.assert_array_equal(filled, filled2)
  # what is not measured is never held out for scoring
  mask = jnp.asarray(rng.uniform(size=(40, 50, 1)) < 0.5, jnp.float32)
  fit, held, _ = select.hold_out(key, obs, mask, 0.2)
  np.testing.assert_array_equal(fit + held, jnp.broadcast_to(mask, obs.shape))
