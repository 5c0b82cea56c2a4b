"""The quasi-Newton step on ``y`` (paper Eqs. 14-16).

L-BFGS or dense BFGS with a backtracking Armijo line search (jaxopt), Adam,
or none; and the fused L-BFGS whose pair is completed by the next
theta-step's backward pass (:func:`fused_y_update`), same iterates as
jaxopt's ``LBFGS`` with one forward and backward pass of the net less per
iteration. Settings: :class:`dncf_jax.config.YSolverConfig`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from dncf_jax.config import YSolverConfig

Array = jax.Array
PyTree = Any

BFGS_MAX_ENTRIES = 20_000


def _linesearch(fun: Callable, cfg: YSolverConfig):
  import jaxopt  # here: the default fused y-step never needs it (0.9 s import)
  return jaxopt.BacktrackingLineSearch(
      fun=fun, condition="armijo", c1=cfg.armijo_c1,
      decrease_factor=cfg.backtrack_factor, maxiter=cfg.max_backtracks,
      max_stepsize=1.0, jit=True)


def make_y_solver(fun: Callable, cfg: YSolverConfig):
  """The jaxopt quasi-Newton solver for ``y`` (``fun(y, params) -> scalar``)."""
  import jaxopt
  kw = dict(fun=fun, maxiter=cfg.steps, linesearch=_linesearch(fun, cfg),
            linesearch_init="max", max_stepsize=1.0, jit=True)
  if cfg.solver == "lbfgs":
    return jaxopt.LBFGS(history_size=cfg.history, **kw)
  if cfg.solver == "bfgs":
    return jaxopt.BFGS(**kw)
  return None


class YState(NamedTuple):
  solver: Any     # jaxopt state, or optax state for y_solver=adam, or ()
  evals: Array    # cumulative objective evaluations spent on y


def init_y_state(cfg: YSolverConfig, fun: Callable, y: Array,
                 params: PyTree, fused: bool = False) -> YState:
  """The y-solver state; ``fused``: the memory of :func:`fused_y_update`."""
  if fused:
    return YState(init_lbfgs_memory(cfg, y), jnp.zeros((), jnp.int32))
  solver = make_y_solver(fun, cfg)
  if solver is not None:
    if cfg.solver == "bfgs" and y.size > BFGS_MAX_ENTRIES:
      raise ValueError(
          f"y has {y.size} entries: dense BFGS would need a {y.size}^2 "
          f"matrix; use y_solver='lbfgs' (BFGS is for y of at most "
          f"{BFGS_MAX_ENTRIES} entries)")
    # The value and gradient are refreshed before every y-step, so the
    # state is built without evaluating the objective (no extra compile).
    shape = jax.eval_shape(solver.init_state, y, params)
    st = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shape)
    if cfg.solver == "lbfgs":
      st = st._replace(gamma=jnp.ones_like(st.gamma))
    else:
      st = st._replace(H=jnp.eye(y.size, dtype=y.dtype))
  elif cfg.solver == "adam":
    st = optax.adam(cfg.learning_rate).init(y)
  else:
    st = ()
  return YState(st, jnp.zeros((), jnp.int32))


def y_update(cfg: YSolverConfig, fun: Callable, y: Array, ys: YState,
             params: PyTree) -> tuple[Array, YState, Array, Array]:
  """``y_steps`` steps on ``y`` at the new ``theta``.

  Returns (y, state, last step size, evaluations spent in this call).
  The quasi-Newton memory is kept across theta-steps; the value and
  gradient it starts from are re-evaluated at the new ``theta`` (one
  evaluation), and pairs with non-positive curvature are dropped so that
  the direction stays a descent direction.
  """
  if cfg.solver == "none":
    return y, ys, jnp.zeros(()), jnp.zeros((), jnp.int32)
  if cfg.solver == "adam":
    opt = optax.adam(cfg.learning_rate)

    def body(_, carry):
      y, st = carry
      g = jax.grad(fun)(y, params)
      upd, st = opt.update(g, st, y)
      return optax.apply_updates(y, upd), st

    y, st = jax.lax.fori_loop(0, cfg.steps, body, (y, ys.solver))
    n = jnp.asarray(cfg.steps, jnp.int32)
    return y, YState(st, ys.evals + n), jnp.asarray(cfg.learning_rate), n

  solver = make_y_solver(fun, cfg)
  value, grad = jax.value_and_grad(fun)(y, params)
  st = ys.solver._replace(value=value, grad=grad)
  before = st.num_fun_eval

  def body(_, carry):
    y, st = carry
    y, st = solver.update(y, st, params)
    if cfg.solver == "lbfgs":
      st = st._replace(rho_history=jnp.maximum(st.rho_history, 0.0),
                       gamma=jnp.where(st.gamma > 0, st.gamma, 1.0))
    return y, st

  y, st = jax.lax.fori_loop(0, cfg.steps, body, (y, st))
  n = (st.num_fun_eval - before).astype(jnp.int32) + 1
  return y, YState(st, ys.evals + n), st.stepsize, n


class LbfgsMemory(NamedTuple):
  """L-BFGS memory of the fused y-step (Nocedal & Wright, Alg. 7.4).

  The last step's pair is *pending* until the gradient at the accepted
  ``y`` arrives from the next iteration's joint backward pass.
  """

  s: Array          # (m, *y.shape) steps y_{k+1} - y_k
  d: Array          # (m, *y.shape) gradient differences g_{k+1} - g_k
  rho: Array        # (m,) 1 / <s, d>, 0 for an empty or non-convex pair
  gamma: Array      # initial inverse Hessian scale <s, d> / <d, d>
  count: Array      # pairs stored so far; the ring's oldest slot is count % m
  pending_s: Array  # the last accepted step
  pending_g: Array  # the gradient it started from
  pending: Array    # bool: a pair waits for its gradient


def init_lbfgs_memory(cfg: YSolverConfig, y: Array) -> LbfgsMemory:
  m = cfg.history
  z = jnp.zeros((m,) + y.shape, y.dtype)
  return LbfgsMemory(z, z, jnp.zeros((m,), y.dtype), jnp.ones((), y.dtype),
                     jnp.zeros((), jnp.int32), jnp.zeros_like(y),
                     jnp.zeros_like(y), jnp.zeros((), bool))


def _two_loop(g: Array, mem: LbfgsMemory) -> Array:
  """The L-BFGS direction ``-H g`` (Nocedal & Wright, Alg. 7.4)."""
  m = mem.rho.shape[0]
  order = (mem.count % m + jnp.arange(m)) % m   # oldest first

  def right(r, i):
    a = mem.rho[i] * jnp.vdot(mem.s[i], r)
    return r - a * mem.d[i], a

  r, alphas = jax.lax.scan(right, -g, order, reverse=True)
  r = mem.gamma * r

  def left(r, ia):
    i, a = ia
    b = mem.rho[i] * jnp.vdot(mem.d[i], r)
    return r + (a - b) * mem.s[i], None

  r, _ = jax.lax.scan(left, r, (order, alphas))
  return r


def complete_pair(mem: LbfgsMemory, g_new: Array) -> LbfgsMemory:
  """Stores the pending pair once the gradient at its end point is known.

  A pair of non-positive curvature gets ``rho = 0`` (it is then ignored),
  so that the direction stays a descent direction across theta-steps.
  """
  d = g_new - mem.pending_g
  sd = jnp.vdot(mem.pending_s, d)
  dd = jnp.vdot(d, d)
  rho = jnp.maximum(jnp.where(sd == 0, 0.0, 1.0 / sd), 0.0)
  gamma = jnp.where(dd > 0, sd / dd, 1.0)
  gamma = jnp.where(gamma > 0, gamma, 1.0)
  i = mem.count % mem.rho.shape[0]
  stored = mem._replace(
      s=mem.s.at[i].set(mem.pending_s), d=mem.d.at[i].set(d),
      rho=mem.rho.at[i].set(rho), gamma=gamma, count=mem.count + 1,
      pending=jnp.zeros((), bool))
  return jax.tree_util.tree_map(
      lambda a, b: jnp.where(mem.pending, a, b), stored, mem)


def armijo_backtracking(fun: Callable, y: Array, value: Array, grad: Array,
                        direction: Array, cfg: YSolverConfig):
  """Backtracking from step 1 until Eq. 15 (Armijo) holds.

  Returns (y + a d, a, trials). As jaxopt's ``BacktrackingLineSearch``:
  at most ``max_backtracks`` trials, the last one is kept if none passes,
  a NaN value counts as a failure.
  """
  slope = jnp.vdot(grad, direction)

  def cond(c):
    i, _, _, done = c
    return (i < cfg.max_backtracks) & ~done

  def body(c):
    i, a, _, _ = c
    trial = y + a * direction
    err = fun(trial) - (value + cfg.armijo_c1 * a * slope)
    done = ~jnp.isnan(err) & (err <= 0)
    last = done | (i + 1 == cfg.max_backtracks)
    return i + 1, jnp.where(last, a, a * cfg.backtrack_factor), trial, done

  init = (jnp.zeros((), jnp.int32), jnp.ones((), y.dtype), y,
          jnp.zeros((), bool))
  trials, a, y_new, _ = jax.lax.while_loop(cond, body, init)
  return y_new, a, trials


def fused_y_update(cfg: YSolverConfig, fun: Callable, y: Array, ys: YState,
                   params: PyTree) -> tuple[Array, YState, Array, Array]:
  """``y_steps`` L-BFGS steps on ``y``, the last one's pair left pending.

  Same iterates as jaxopt's ``LBFGS`` with its Armijo line search (the
  ``lbfgs`` path of :func:`y_update`, a test checks it), but the gradient
  at the accepted ``y`` is not computed here: the next theta-step's
  backward pass yields it with the theta-gradient (:func:`make_step`),
  which saves one forward and backward pass of the net per iteration.
  """
  f = lambda v: fun(v, params)
  value, grad = jax.value_and_grad(f)(y)      # at the new theta

  def one(y, value, grad, mem):
    y_new, a, trials = armijo_backtracking(f, y, value, grad,
                                           _two_loop(grad, mem), cfg)
    mem = mem._replace(pending_s=y_new - y, pending_g=grad,
                       pending=jnp.ones((), bool))
    return y_new, mem, a, trials

  def inner(_, c):  # all but the last step: the end gradient is needed now
    y, value, grad, mem, _, n = c
    y, mem, a, trials = one(y, value, grad, mem)
    value, grad = jax.value_and_grad(f)(y)
    return y, value, grad, complete_pair(mem, grad), a, n + trials + 1

  n0 = jnp.ones((), jnp.int32)
  c = (y, value, grad, ys.solver, jnp.ones((), y.dtype), n0)
  if cfg.steps > 1:
    c = jax.lax.fori_loop(0, cfg.steps - 1, inner, c)
  y, value, grad, mem, _, n = c
  y, mem, a, trials = one(y, value, grad, mem)
  n = n + trials + 1   # + the end gradient, shared with the theta-step
  return y, YState(mem, ys.evals + n), a, n


def step(cfg: YSolverConfig, fun: Callable, y: Array, ys: YState,
         params: PyTree, grad_at_y: Array) -> tuple[Array, YState, Array, Array]:
  """The y-step of one iteration at the new ``theta``.

  ``grad_at_y``: the gradient of ``fun`` at ``y`` under the previous
  ``theta``, from the theta-step's joint backward pass; the fused L-BFGS
  completes its pending pair with it (the other solvers ignore it).
  """
  if cfg.fused:
    ys = ys._replace(solver=complete_pair(ys.solver, grad_at_y))
    return fused_y_update(cfg, fun, y, ys, params)
  return y_update(cfg, fun, y, ys, params)
