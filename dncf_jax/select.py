"""Blind choice of the answer (the paper's ``OPT``, section 2).

The rule is the *discrepancy principle*: a restoration should explain the
observation as well as the noise allows, and no better. For each candidate
``x`` (``y*``, ``f(y*)``, ``f(f(y*))`` and the moving average of ``f(y)``,
at every checkpoint along the run) we measure the data residual

    r(x) = sum(w * (A(x) - I_s)^2) / sum(w)

over the measured entries ``w`` and pick the candidate whose residual is
closest, in ratio, to ``tau * sigma^2``:

    score(x) = | log((r(x) + delta) / (tau * sigma^2 + delta)) |.

``sigma`` is the task's known noise level, or else estimated from the
observation alone by the median absolute deviation of its finest diagonal
Haar wavelet coefficients (Donoho and Johnstone). With a noiseless
observation (``sigma = 0``) the rule picks the best fit. Nothing here sees
the ground truth.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

CANDIDATES = ("y", "f(y)", "f(f(y))", "ema f(y)")


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


def residual(forward, x: Array, obs: Array, weights: Array) -> Array:
  """Mean squared data misfit over the measured entries."""
  d = forward(x) - obs
  return jnp.sum(weights * d * d) / jnp.maximum(jnp.sum(weights), 1.0)


def residual_stats(forward, x: Array, obs: Array, weights: Array):
  """(mean squared residual, lag-one autocorrelation of the residual).

  The autocorrelation (mean of both axes) is near 0 when the residual is
  white noise and clearly positive when it holds image structure (edges
  left behind by an over-smoothed candidate). One ``A(x)`` serves both.
  """
  e = forward(x) - obs
  n = jnp.maximum(jnp.sum(weights), 1.0)
  r = jnp.sum(weights * e * e) / n
  d = e * weights
  d = d - jnp.sum(d) / n * weights
  var = jnp.sum(d * d) + 1e-12
  ch = jnp.sum(d[1:] * d[:-1]) / var
  cw = jnp.sum(d[:, 1:] * d[:, :-1]) / var
  return r, 0.5 * (ch + cw)


def score_candidates(forward, candidates: Array, obs: Array, weights: Array,
                     sigma: Array, tau: float = 1.0, kappa: float = 10.0,
                     y_handicap: float = 1.0):
  """Scores stacked ``candidates`` (order of ``CANDIDATES``).

  Returns (scores, residuals, correlations). ``y`` is the passive fallback
  of section 2: ``y_handicap`` is added to its score, so it wins only by a
  margin.
  """
  res, corr = jax.vmap(lambda c: residual_stats(forward, c, obs, weights))(
      candidates)
  scores = discrepancy_score(res, sigma, tau, corr=corr, kappa=kappa)
  return scores.at[0].add(y_handicap), res, corr


def discrepancy_score(r: Array, sigma: Array, tau: float = 1.0,
                      delta: float = 1e-5, corr: Array | float = 0.0,
                      kappa: float = 10.0) -> Array:
  """Distance, in log-ratio, of residual ``r`` from ``tau * sigma^2``.

  With noise (``sigma > 0``) a residual that is not white is penalised by
  ``kappa * |corr|``: the residual of the right answer is the noise.
  """
  dist = jnp.abs(jnp.log((r + delta) / (tau * sigma * sigma + delta)))
  return dist + jnp.where(sigma > 0, kappa * jnp.abs(corr), 0.0)


class Choice(NamedTuple):
  """The best candidate so far (kept on device during the run)."""

  score: Array      # its discrepancy score
  image: Array      # the candidate image
  candidate: Array  # index into CANDIDATES
  iteration: Array  # the iteration it was taken at


def init_choice(image: Array) -> Choice:
  return Choice(jnp.asarray(jnp.inf, jnp.float32), image,
                jnp.asarray(-1, jnp.int32), jnp.asarray(-1, jnp.int32))


def update_choice(choice: Choice, candidates: Array, scores: Array,
                  iteration: Array) -> Choice:
  """Keeps the lowest-score candidate among ``choice`` and ``candidates``.

  ``candidates`` is stacked along axis 0 in the order of ``CANDIDATES``.
  """
  k = jnp.argmin(scores)
  better = scores[k] < choice.score
  return Choice(
      jnp.where(better, scores[k], choice.score),
      jnp.where(better, candidates[k], choice.image),
      jnp.where(better, k.astype(jnp.int32), choice.candidate),
      jnp.where(better, jnp.asarray(iteration, jnp.int32), choice.iteration))
