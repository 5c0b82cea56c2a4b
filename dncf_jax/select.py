"""Blind choice of the answer (the paper's ``OPT``, section 2).

Candidates are ``y*``, ``f(y*)``, ``f(f(y*))`` and the moving average of
``f(y)`` (as DIP keeps), scored at every checkpoint along the run by their
data residual

    r(x) = sum(w * (A(x) - I_s)^2) / sum(w)

over the measured entries ``w``. Nothing here sees the ground truth.

* **With noise** (``sigma > 0``) the rule is Morozov's *discrepancy
  principle* used as a stopping rule, as in iterative regularisation: a
  restoration should explain the observation as well as the noise allows,
  and no better. The answer is the moving average at the first checkpoint
  where its residual falls to ``tau * sigma^2``; the run may stop there.
  Until then the latest moving average is kept (under- rather than
  over-fitted). Saturated observations (0 or 1) carry clipped noise, so
  they are left out of both the residual and the noise estimate.
* **Without noise** (``sigma = 0``: super-resolution, inpainting, flash) the
  candidate with the smallest residual over the run wins; ``y``, the
  passive fallback of section 2, must beat the others by the factor
  ``exp(y_handicap)``. The solver then projects the winner onto the
  measurements (``SelectConfig.project``).

``sigma`` is the task's known noise level, or else estimated from the
observation alone by the median absolute deviation of its finest diagonal
Haar wavelet coefficients (Donoho and Johnstone).

* **Held out** (``holdout > 0``, any task): a random fraction of the
  measured pixels is kept out of the data term and out of ``G``
  (:func:`hold_out`), and the candidates are scored on those pixels only.
  For a held-out entry ``i`` whose noise the restoration never saw,
  ``E (x_i - I_s,i)^2 = (x_i - I_i)^2 + sigma^2``: the held-out residual
  ranks iterates and candidates as their true error does (cross-validation,
  as in Noise2Self), with or without noise and without knowing ``sigma``.
  The best over the run wins (no handicap), and the run may stop after
  ``patience`` checkpoints without a better score.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

CANDIDATES = ("y", "f(y)", "f(f(y))", "ema f(y)")
EMA = CANDIDATES.index("ema f(y)")


def estimate_noise_sigma(obs: Array, weights: Array | None = None) -> Array:
  """Noise standard deviation of ``obs`` (H, W, C) from its finest wavelet band.

  ``sigma = median(|HH|) / 0.6745`` with the orthonormal Haar diagonal
  detail ``HH``, over 2x2 blocks whose four pixels are all measured.
  """
  h, w = (obs.shape[0] // 2) * 2, (obs.shape[1] // 2) * 2
  x = obs[:h, :w]
  hh = (x[0::2, 0::2] - x[0::2, 1::2] - x[1::2, 0::2] + x[1::2, 1::2]) / 2.0
  if weights is None:
    return jnp.median(jnp.abs(hh)) / 0.6745
  m = jnp.broadcast_to(weights, obs.shape)[:h, :w] > 0.5
  ok = m[0::2, 0::2] & m[0::2, 1::2] & m[1::2, 0::2] & m[1::2, 1::2]
  return jnp.nanmedian(jnp.where(ok, jnp.abs(hh), jnp.nan)) / 0.6745


def hold_out(key: Array, obs: Array, weights: Array, fraction: float
             ) -> tuple[Array, Array, Array]:
  """Splits the measured entries of ``obs`` (H, W, C) for a held-out score.

  A random ``fraction`` of pixels (all their channels) is held out. Returns
  ``(fit, held, filled)``: the weights the data term keeps, the weights the
  blind rule scores, and ``obs`` with every held-out pixel replaced by the
  mean of its fitted 3x3 neighbours (what ``G`` is given, so that it sees
  no held-out value either).
  """
  w = jnp.broadcast_to(weights, obs.shape).astype(jnp.float32)
  held = jax.random.bernoulli(key, fraction, obs.shape[:2] + (1,))
  fit = jnp.where(held, 0.0, w)
  box = lambda a: jax.lax.reduce_window(
      jnp.pad(a, ((1, 1), (1, 1), (0, 0))), 0.0, jax.lax.add, (3, 3, 1),
      (1, 1, 1), "VALID")
  mean = box(obs * fit) / jnp.maximum(box(fit), 1e-6)
  return fit, jnp.where(held, w, 0.0), jnp.where(held, mean, obs)


def unsaturated(obs: Array, weights: Array) -> Array:
  """``weights`` without the entries where ``obs`` is clipped at 0 or 1."""
  return jnp.broadcast_to(weights, obs.shape) * ((obs > 0) & (obs < 1))


def residual(forward, x: Array, obs: Array, weights: Array) -> Array:
  """Mean squared data misfit over the measured entries."""
  d = forward(x) - obs
  w = jnp.broadcast_to(weights, d.shape)
  return jnp.sum(w * d * d) / jnp.maximum(jnp.sum(w), 1.0)


def residuals(forward, candidates: Array, obs: Array, weights: Array) -> Array:
  """``residual`` of each stacked candidate (order of ``CANDIDATES``)."""
  return jax.vmap(lambda c: residual(forward, c, obs, weights))(candidates)


class Choice(NamedTuple):
  """The answer so far (kept on device during the run)."""

  score: Array      # noiseless: log residual (+ handicap); noisy: r / (tau sigma^2)
  image: Array      # the candidate image
  candidate: Array  # index into CANDIDATES
  iteration: Array  # the iteration it was taken at
  stopped: Array    # the discrepancy principle has been met, or patience ran out


def init_choice(image: Array) -> Choice:
  return Choice(jnp.asarray(jnp.inf, jnp.float32), image,
                jnp.asarray(-1, jnp.int32), jnp.asarray(-1, jnp.int32),
                jnp.asarray(False))


def update_choice(choice: Choice, candidates: Array, res: Array, sigma: Array,
                  iteration: Array, tau: float = 0.9,
                  y_handicap: float = 1.0, delta: float = 1e-8,
                  patience: int | None = None) -> Choice:
  """The rule of the module docstring, one checkpoint at a time.

  ``candidates`` is stacked along axis 0 in the order of ``CANDIDATES``
  and ``res`` holds their residuals. ``patience`` (iterations) selects the
  held-out rule: ``res`` are held-out residuals, the best wins whatever
  ``sigma``, and ``stopped`` is set ``patience`` iterations after the last
  improvement.
  """
  it = jnp.asarray(iteration, jnp.int32)
  # Noiseless or held out: the best fit over the run, y handicapped.
  scores = jnp.log(res + delta).at[0].add(y_handicap)
  k = jnp.argmin(scores)
  better = scores[k] < choice.score
  fit = Choice(jnp.where(better, scores[k], choice.score),
               jnp.where(better, candidates[k], choice.image),
               jnp.where(better, k.astype(jnp.int32), choice.candidate),
               jnp.where(better, it, choice.iteration), choice.stopped)
  if patience is not None:
    return fit._replace(stopped=it - fit.iteration >= patience)
  # Noisy: the moving average, frozen once its residual reaches tau sigma^2.
  ratio = res[EMA] / (tau * sigma * sigma + delta)
  keep = choice.stopped
  stop = Choice(jnp.where(keep, choice.score, ratio),
                jnp.where(keep, choice.image, candidates[EMA]),
                jnp.where(keep, choice.candidate, jnp.int32(EMA)),
                jnp.where(keep, choice.iteration, it),
                keep | (ratio <= 1.0))
  return jax.tree_util.tree_map(lambda a, b: jnp.where(sigma > 0, a, b),
                                stop, fit)
