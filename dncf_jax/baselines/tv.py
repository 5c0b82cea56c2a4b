"""Total variation: Chambolle's projection algorithm and TV-regularised fits.

* :func:`tv_denoise` solves the ROF problem per channel,
  ``min_u ||u - f||^2 / 2 + weight * TV(u)``, by Chambolle's dual
  projection algorithm (A. Chambolle, "An algorithm for total variation
  minimization and applications", JMIV 20, 2004), step and stopping rule as
  ``skimage.restoration.denoise_tv_chambolle(image, weight, channel_axis=-1)``
  (tau = 1/4, stop when the energy changes by less than ``eps`` times the
  first energy), so that the same ``weight`` gives the same image.
* :func:`tv_restore` solves ``min_x ||W (A x - I_s)||^2 / 2 + lam TV(x)``
  for any physics operator of :mod:`dncf_jax.physics` by FISTA (Beck and
  Teboulle 2009) with the Chambolle prox, warm-started, as inner step.

``TV`` is isotropic, per channel, with forward differences (zero past the
last row and column), summed over channels.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dncf_jax import metrics, physics, select

Array = jax.Array

_TAU = 0.25  # Chambolle's step for 2-D images, 1 / (2 ndim)


def _grad(u: Array) -> Array:
  """Forward differences of ``u`` (H, W), zero at the last row / column."""
  gy = jnp.zeros_like(u).at[:-1].set(u[1:] - u[:-1])
  gx = jnp.zeros_like(u).at[:, :-1].set(u[:, 1:] - u[:, :-1])
  return jnp.stack([gy, gx])


def _d(p: Array) -> Array:
  """skimage's ``d``: minus the divergence of the dual field ``p`` (2, H, W),
  the adjoint of :func:`_grad` (``<grad u, p> = <u, d(p)>``)."""
  d = -p[0] - p[1]
  d = d.at[1:].add(p[0, :-1])
  return d.at[:, 1:].add(p[1, :, :-1])


def total_variation(x: Array) -> Array:
  """Isotropic TV of an (H, W, C) image, summed over channels."""
  g = jax.vmap(_grad, in_axes=2)(x)
  return jnp.sum(jnp.sqrt(jnp.sum(g * g, axis=1)))


def _chambolle_step(f: Array, p: Array, weight: Array):
  """One projection step: (new dual ``p``, primal ``u = f + d(p)``, energy)."""
  d = _d(p)
  out = f + d
  g = _grad(out)
  norm = jnp.sqrt(jnp.sum(g * g, axis=0))
  energy = (jnp.sum(d * d) + weight * jnp.sum(norm)) / f.size
  p = (p - _TAU * g) / (1.0 + norm * (_TAU / weight))
  return p, out, energy


def _chambolle_2d(f: Array, weight: Array, eps: float, iters: int) -> Array:
  """skimage's ``_denoise_tv_chambolle_nd`` on one channel (H, W)."""

  def cond(c):
    i, done = c[4], c[5]
    return (i < iters) & ~done

  def body(c):
    p, _, e_prev, e_init, i, _ = c
    p, out, e = _chambolle_step(f, p, weight)
    e_init = jnp.where(i == 0, e, e_init)
    done = (i > 0) & (jnp.abs(e_prev - e) < eps * e_init)
    return p, out, e, e_init, i + 1, done

  z = jnp.zeros((), f.dtype)
  init = (jnp.zeros((2,) + f.shape, f.dtype), f, z, z,
          jnp.zeros((), jnp.int32), jnp.zeros((), bool))
  return jax.lax.while_loop(cond, body, init)[1]


def _check_weight(weight, name="weight"):
  if not isinstance(weight, jax.core.Tracer):
    w = np.asarray(weight)
    if w.shape != () or not np.isfinite(w) or w <= 0:
      raise ValueError(f"{name} must be a positive finite number, got {weight}")


@functools.partial(jax.jit, static_argnames=("iters", "eps"))
def _tv_denoise(image, weight, iters, eps):
  out = jax.vmap(_chambolle_2d, in_axes=(2, None, None, None), out_axes=2)(
      image, weight, eps, iters)
  return out


def tv_denoise(image, weight: float = 0.1, iters: int = 200,
               eps: float = 2e-4) -> Array:
  """ROF denoising of an (H, W, C) image by Chambolle's algorithm.

  ``weight`` is skimage's (``1 / lambda`` of the ROF functional), ``iters``
  its ``max_num_iter`` and ``eps`` its relative stopping tolerance (0: run
  all ``iters``). Each channel stops on its own, as skimage's loop does.
  """
  physics.check_image(image, "image")
  _check_weight(weight)
  if int(iters) != iters or iters < 1:
    raise ValueError(f"iters must be a positive integer, got {iters}")
  if eps < 0:
    raise ValueError(f"eps must be >= 0, got {eps}")
  image = jnp.asarray(image)
  return _tv_denoise(image, jnp.asarray(weight, image.dtype), int(iters),
                     float(eps))


def tv_denoise_steps(image: Array, weight: Array, iters: int) -> Array:
  """:func:`tv_denoise` with exactly ``iters`` steps and a traced ``weight``
  (no checks, no early stop): for use inside compiled programs."""
  return _tv_denoise(image, jnp.asarray(weight, image.dtype), iters, 0.0)


def chambolle_prox(v: Array, weight: Array, p: Array, iters: int):
  """``iters`` fixed projection steps on (H, W, C) from dual ``p`` (2, H, W, C).

  Returns (prox of ``weight TV`` at ``v``, dual): FISTA's inner solver;
  ``p`` warm-starts the next call.
  """

  def one(f, p):
    def body(_, c):
      p, _ = c
      p, out, _ = _chambolle_step(f, p, weight)
      return p, out
    p, _ = jax.lax.fori_loop(0, iters, body, (p, f))
    return f + _d(p), p

  out, p = jax.vmap(one, in_axes=(2, 3), out_axes=(2, 3))(v, p)
  return out, p


def tv_objective(x, observation, lam: float, task=None) -> Array:
  """``||W (A x - I_s)||^2 / 2 + lam TV(x)`` (``task=None``: ``A = W = 1``).

  With ``task=None`` this is the ROF energy :func:`tv_denoise` minimises.
  """
  x = jnp.asarray(x)
  obs = jnp.asarray(observation)
  if task is None:
    d, w = x - obs, 1.0
  else:
    d, w = task.forward(x) - obs, task.weights(obs)
  return 0.5 * jnp.sum(w * d * d) + lam * total_variation(x)


def lipschitz(task, observation, iters: int = 30) -> float:
  """Largest eigenvalue of ``A^T W A`` by power iteration (for the FISTA step)."""
  return float(_power(task, int(iters))(jnp.asarray(observation, jnp.float32)))


@functools.lru_cache(maxsize=16)
def _power(task, iters):
  """The jitted power iteration, kept per (task, budget) like :func:`_fista`."""
  @jax.jit
  def run(obs):
    w = task.weights(obs)
    op = lambda x: jax.vjp(task.forward, x)[1](w * task.forward(x))[0]
    x0 = jax.random.uniform(jax.random.key(0), task.scene_shape(obs.shape)) + 0.1

    def body(_, x):
      y = op(x)
      return y / (jnp.linalg.norm(y) + 1e-12)

    x = jax.lax.fori_loop(0, iters, body, x0 / jnp.linalg.norm(x0))
    return jnp.vdot(x, op(x))

  return run


def tv_restore(observation, task, lam: float, iters: int = 100,
               inner_iters: int = 10, init=None, clip: bool = True
               ) -> np.ndarray:
  """TV-regularised least squares through ``task``'s physics, by FISTA.

  Minimises ``||W (A x - I_s)||^2 / 2 + lam TV(x)`` from ``init``
  (default the task's smooth guess ``G(I_s)``: bicubic for super-resolution,
  the smooth fill for inpainting); step ``1 / L`` with ``L`` the power
  iteration estimate of ``||A^T W A||``; the prox is ``inner_iters``
  Chambolle steps warm-started from the previous dual. With ``Denoise``
  (``A = W = 1``, ``L = 1``) it solves the same problem as :func:`tv_denoise`.
  Returns the (H, W, C) scene, clipped to [0, 1] when ``clip``.
  """
  task.validate(observation)
  _check_weight(lam, "lam")
  for name, v in (("iters", iters), ("inner_iters", inner_iters)):
    if int(v) != v or v < 1:
      raise ValueError(f"{name} must be a positive integer, got {v}")
  obs = jnp.asarray(observation, jnp.float32)
  scene = task.scene_shape(obs.shape)
  if hasattr(task, "check_scene"):
    task.check_scene(scene)
  x0 = task.anchor(obs) if init is None else jnp.asarray(init, jnp.float32)
  if tuple(x0.shape) != tuple(scene):
    raise ValueError(f"init has shape {tuple(x0.shape)}, the scene is "
                     f"{tuple(scene)}")
  step = 1.0 / (1.02 * lipschitz(task, obs))
  run = _fista(task, int(iters), int(inner_iters), bool(clip))
  return np.asarray(run(obs, x0, jnp.float32(lam), jnp.float32(step)))


@functools.lru_cache(maxsize=16)
def _fista(task, iters, inner_iters, clip):
  """The jitted FISTA loop, kept per (task, budget) so a weight grid compiles once."""
  @jax.jit
  def run(obs, x0, lam, step):
    w = task.weights(obs)

    def grad(x):
      return jax.vjp(task.forward, x)[1](w * (task.forward(x) - obs))[0]

    def body(_, c):
      x, z, t, p = c
      v = z - step * grad(z)
      x_new, p = chambolle_prox(v, step * lam, p, inner_iters)
      t_new = 0.5 * (1 + jnp.sqrt(1 + 4 * t * t))
      z = x_new + ((t - 1) / t_new) * (x_new - x)
      return x_new, z, t_new, p

    p0 = jnp.zeros((2,) + x0.shape, x0.dtype)
    x, *_ = jax.lax.fori_loop(0, iters, body, (x0, x0, jnp.ones(()), p0))
    return jnp.clip(x, 0, 1) if clip else x

  return run


def tv_weight_oracle(observation, task, reference,
                     grid: Sequence[float], iters: int = 100, **kw):
  """ORACLE: the weight of ``grid`` whose :func:`tv_restore` has the best PSNR
  against ``reference`` (needs the ground truth). Returns (weight, psnrs)."""
  psnrs = [metrics.psnr(tv_restore(observation, task, w, iters, **kw), reference)
           for w in grid]
  return float(grid[int(np.argmax(psnrs))]), psnrs


def tv_weight_discrepancy(observation, task, grid: Sequence[float],
                          iters: int = 100, sigma: Optional[float] = None,
                          tau: float = 1.0, **kw):
  """Blind weight by Morozov's discrepancy principle.

  The largest weight of ``grid`` whose mean squared residual over the
  measured entries stays at or below ``tau sigma^2``; ``sigma`` is the
  task's noise level, else estimated from the observation
  (:func:`dncf_jax.select.estimate_noise_sigma`). A noiseless task
  (``sigma = 0``) gets the smallest weight. Returns (weight, residuals).
  """
  obs = jnp.asarray(observation, jnp.float32)
  w = task.weights(obs)
  if sigma is None:
    sigma = task.noise_sigma
  if sigma is None:
    sigma = float(select.estimate_noise_sigma(obs, w))
  grid = sorted(float(g) for g in grid)
  res = [float(select.residual(task.forward,
                               jnp.asarray(tv_restore(obs, task, g, iters, **kw)),
                               obs, w)) for g in grid]
  ok = [g for g, r in zip(grid, res) if r <= tau * sigma ** 2]
  return (max(ok) if ok else grid[0]), res
