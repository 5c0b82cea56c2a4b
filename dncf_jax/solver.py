"""DNCF's alternating optimisation (paper sections 2 and 5).

    L(theta, y) = ||W (A(f_theta(y)) - I_s)||^2 + beta ||y - G(I_s)||^2 + R(theta)

One iteration is an Optax step on ``theta`` (on the data MSE plus
``R(theta)``, Eqs. 6-7, with the adaptive ``gamma`` of section 6), then
``y_steps`` quasi-Newton steps on ``y`` (L-BFGS or jaxopt's BFGS with a
backtracking Armijo line search, Eqs. 14-16; the L-BFGS is fused with the
theta-step so that the net's backward pass at the accepted ``y`` serves
both, :func:`fused_y_update`). Iterations run inside a
``lax.scan``; between chunks of ``checkpoint_every`` iterations the blind
selection (:mod:`dncf_jax.select`) scores the candidates on device.

``y`` is the image fed to ``f_theta`` by default. With
``feature_iterations > 0`` a second phase follows in which ``y`` is the
feature map entering the last block and only that block is trained
(Eq. 13; the flash experiment of section 6). Phases share one step.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dncf_jax import nets, penalty, physics, select

Array = jax.Array
PyTree = Any

Y_SOLVERS = ("lbfgs", "bfgs", "adam", "none")
THETA_OPTIMIZERS = ("adam", "sgd", "rmsprop")
BFGS_MAX_ENTRIES = 20_000


@dataclasses.dataclass(frozen=True)
class DNCFConfig:
  """Every knob of a DNCF run (defaults: the denoising setting)."""

  iterations: int = 600           # theta-steps in the image phase
  beta: float = 1.0               # weight of ||y - G(I_s)||^2 (Eq. 5)
  gamma: float = 1e-3             # initial penalty weight (Eq. 6)
  norm: str = "l1"                # l1 or l2 norm of the negative part
  penalty_depth: int = -3         # covers conv_XX with XX >= depth (<0: from the end)
  penalty_biases: bool = False    # cover biases as well as kernels
  adaptive_gamma: bool = True     # gamma <- gamma/4 when R > data MSE (section 6)
  learning_rate: float = 0.01     # theta-optimizer step
  theta_optimizer: str = "adam"
  y_solver: str = "lbfgs"         # lbfgs | bfgs | adam | none
  y_steps: int = 1                # y-iterations per theta-step
  y_history: int = 10             # L-BFGS memory
  y_learning_rate: float = 0.01   # for y_solver=adam
  fuse_gradients: bool = True     # lbfgs: share one backward pass (see fused_y_update)
  max_backtracks: int = 20        # Armijo line search trials
  armijo_c1: float = 1e-4         # xi in Eq. 15
  backtrack_factor: float = 0.5   # b in Eq. 15
  epsilon: float = 0.0            # std of the perturbation of y0 = G(I_s) + eps
  channels: int = 32              # skip net width
  scales: int = 5
  skip_channels: int = 4
  upsample: str = "bilinear"
  sigmoid: bool = True
  ema_decay: float = 0.95         # moving average of f(y), the noisy-task answer
  checkpoint_every: int = 10      # candidates scored every n iterations
  tau: float = 0.9                # discrepancy target tau * sigma^2 (noisy tasks)
  y_handicap: float = 1.0         # y must fit better by exp(this) (noiseless tasks)
  early_stop: bool = True         # stop once the discrepancy principle is met
  feature_iterations: int = 0     # second phase: y = features, last block only
  seed: int = 0

  def validate(self) -> None:
    """Raises ``ValueError`` naming the first bad field."""
    def need(cond, msg):
      if not cond:
        raise ValueError(msg)
    need(self.iterations >= 1, f"iterations must be >= 1, got {self.iterations}")
    need(self.feature_iterations >= 0, "feature_iterations must be >= 0")
    need(self.beta >= 0, f"beta must be >= 0, got {self.beta}")
    need(self.gamma >= 0, f"gamma must be >= 0, got {self.gamma}")
    need(self.norm in ("l1", "l2"), f"norm must be l1 or l2, got {self.norm!r}")
    need(self.learning_rate > 0, "learning_rate must be > 0")
    need(self.theta_optimizer in THETA_OPTIMIZERS,
         f"theta_optimizer must be one of {THETA_OPTIMIZERS}, "
         f"got {self.theta_optimizer!r}")
    need(self.y_solver in Y_SOLVERS,
         f"y_solver must be one of {Y_SOLVERS}, got {self.y_solver!r}")
    need(self.y_steps >= 1, "y_steps must be >= 1")
    need(self.y_history >= 1, "y_history must be >= 1")
    need(0 < self.backtrack_factor < 1, "backtrack_factor must be in (0, 1)")
    need(0 < self.armijo_c1 < 1, "armijo_c1 must be in (0, 1)")
    need(self.max_backtracks >= 1, "max_backtracks must be >= 1")
    need(self.epsilon >= 0, "epsilon must be >= 0")
    need(self.channels >= 1 and self.scales >= 1 and self.skip_channels >= 0,
         "channels and scales must be >= 1, skip_channels >= 0")
    need(self.upsample in ("bilinear", "nearest"),
         f"upsample must be bilinear or nearest, got {self.upsample!r}")
    need(0 <= self.ema_decay < 1, "ema_decay must be in [0, 1)")
    need(self.checkpoint_every >= 1, "checkpoint_every must be >= 1")
    need(self.tau > 0, "tau must be > 0")

  def net(self, out_channels: int) -> nets.Skip:
    return nets.skip_for(self.channels, self.scales, self.skip_channels,
                         self.upsample, self.sigmoid, out_channels)


class Result(NamedTuple):
  """What :func:`restore` returns."""

  image: np.ndarray            # the blind choice, (H, W, C)
  chosen: str                  # which candidate (see select.CANDIDATES)
  chosen_iteration: int        # and when it was taken
  candidates: dict             # name -> image at the last checkpoint
  history: dict                # per-iteration and per-checkpoint arrays
  noise_sigma: float           # sigma used by the discrepancy rule
  seconds: float               # wall time of the run, compilation included
  compile_seconds: float       # of which compilation
  params: PyTree               # final theta
  y: np.ndarray                # final y (padded; features in a feature phase)


# ---------------------------------------------------------------------------
# Helpers: padding to the net's multiple, optimizers, y-solvers
# ---------------------------------------------------------------------------


def compile_timed(fn: Callable, *args) -> tuple[Callable, float]:
  """``fn`` jitted and compiled ahead of time for ``args``, and the seconds
  that took (tracing and lowering included)."""
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  return compiled, time.perf_counter() - t0


def padded_shape(h: int, w: int, multiple: int) -> tuple[int, int]:
  return (-(-h // multiple) * multiple, -(-w // multiple) * multiple)


def pad_to(x: Array, hp: int, wp: int) -> Array:
  """Reflect-pads ``x`` (H, W, C) at the bottom/right to ``(hp, wp)``."""
  h, w = x.shape[0], x.shape[1]
  if (h, w) == (hp, wp):
    return x
  mode = "reflect" if hp - h < h and wp - w < w else "symmetric"
  return jnp.pad(x, ((0, hp - h), (0, wp - w), (0, 0)), mode=mode)


def theta_optimizer(cfg: DNCFConfig) -> optax.GradientTransformation:
  return {"adam": optax.adam, "sgd": optax.sgd,
          "rmsprop": optax.rmsprop}[cfg.theta_optimizer](cfg.learning_rate)


def _linesearch(fun: Callable, cfg: DNCFConfig):
  import jaxopt  # here: the default fused y-step never needs it (0.9 s import)
  return jaxopt.BacktrackingLineSearch(
      fun=fun, condition="armijo", c1=cfg.armijo_c1,
      decrease_factor=cfg.backtrack_factor, maxiter=cfg.max_backtracks,
      max_stepsize=1.0, jit=True)


def make_y_solver(fun: Callable, cfg: DNCFConfig):
  """The jaxopt quasi-Newton solver for ``y`` (``fun(y, params) -> scalar``)."""
  import jaxopt
  kw = dict(fun=fun, maxiter=cfg.y_steps, linesearch=_linesearch(fun, cfg),
            linesearch_init="max", max_stepsize=1.0, jit=True)
  if cfg.y_solver == "lbfgs":
    return jaxopt.LBFGS(history_size=cfg.y_history, **kw)
  if cfg.y_solver == "bfgs":
    return jaxopt.BFGS(**kw)
  return None


class YState(NamedTuple):
  solver: Any     # jaxopt state, or optax state for y_solver=adam, or ()
  evals: Array    # cumulative objective evaluations spent on y


def init_y_state(cfg: DNCFConfig, fun: Callable, y: Array,
                 params: PyTree, fused: bool = False) -> YState:
  """The y-solver state; ``fused``: the memory of :func:`fused_y_update`."""
  if fused:
    return YState(init_lbfgs_memory(cfg, y), jnp.zeros((), jnp.int32))
  solver = make_y_solver(fun, cfg)
  if solver is not None:
    if cfg.y_solver == "bfgs" and y.size > BFGS_MAX_ENTRIES:
      raise ValueError(
          f"y has {y.size} entries: dense BFGS would need a {y.size}^2 "
          f"matrix; use y_solver='lbfgs' (BFGS is for y of at most "
          f"{BFGS_MAX_ENTRIES} entries)")
    # The value and gradient are refreshed before every y-step, so the
    # state is built without evaluating the objective (no extra compile).
    shape = jax.eval_shape(solver.init_state, y, params)
    st = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shape)
    if cfg.y_solver == "lbfgs":
      st = st._replace(gamma=jnp.ones_like(st.gamma))
    else:
      st = st._replace(H=jnp.eye(y.size, dtype=y.dtype))
  elif cfg.y_solver == "adam":
    st = optax.adam(cfg.y_learning_rate).init(y)
  else:
    st = ()
  return YState(st, jnp.zeros((), jnp.int32))


def y_update(cfg: DNCFConfig, fun: Callable, y: Array, ys: YState,
             params: PyTree) -> tuple[Array, YState, Array, Array]:
  """``y_steps`` steps on ``y`` at the new ``theta``.

  Returns (y, state, last step size, evaluations spent in this call).
  The quasi-Newton memory is kept across theta-steps; the value and
  gradient it starts from are re-evaluated at the new ``theta`` (one
  evaluation), and pairs with non-positive curvature are dropped so that
  the direction stays a descent direction.
  """
  if cfg.y_solver == "none":
    return y, ys, jnp.zeros(()), jnp.zeros((), jnp.int32)
  if cfg.y_solver == "adam":
    opt = optax.adam(cfg.y_learning_rate)

    def body(_, carry):
      y, st = carry
      g = jax.grad(fun)(y, params)
      upd, st = opt.update(g, st, y)
      return optax.apply_updates(y, upd), st

    y, st = jax.lax.fori_loop(0, cfg.y_steps, body, (y, ys.solver))
    n = jnp.asarray(cfg.y_steps, jnp.int32)
    return y, YState(st, ys.evals + n), jnp.asarray(cfg.y_learning_rate), n

  solver = make_y_solver(fun, cfg)
  value, grad = jax.value_and_grad(fun)(y, params)
  st = ys.solver._replace(value=value, grad=grad)
  before = st.num_fun_eval

  def body(_, carry):
    y, st = carry
    y, st = solver.update(y, st, params)
    if cfg.y_solver == "lbfgs":
      st = st._replace(rho_history=jnp.maximum(st.rho_history, 0.0),
                       gamma=jnp.where(st.gamma > 0, st.gamma, 1.0))
    return y, st

  y, st = jax.lax.fori_loop(0, cfg.y_steps, body, (y, st))
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


def uses_fused(cfg: DNCFConfig) -> bool:
  """Whether :func:`make_step` runs the fused L-BFGS y-step."""
  return cfg.y_solver == "lbfgs" and cfg.fuse_gradients


def init_lbfgs_memory(cfg: DNCFConfig, y: Array) -> LbfgsMemory:
  m = cfg.y_history
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
                        direction: Array, cfg: DNCFConfig):
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


def fused_y_update(cfg: DNCFConfig, fun: Callable, y: Array, ys: YState,
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
  if cfg.y_steps > 1:
    c = jax.lax.fori_loop(0, cfg.y_steps - 1, inner, c)
  y, value, grad, mem, _, n = c
  y, mem, a, trials = one(y, value, grad, mem)
  n = n + trials + 1   # + the end gradient, shared with the theta-step
  return y, YState(mem, ys.evals + n), a, n


# ---------------------------------------------------------------------------
# The objective and one alternating step
# ---------------------------------------------------------------------------


class Problem(NamedTuple):
  """Everything the step needs that is an array (traced, not baked in)."""

  obs: Array       # I_s
  weights: Array   # W, measured entries of I_s
  anchor: Array    # G(I_s) in the space of y (padded)
  select_weights: Array  # entries the blind rule scores (W, unsaturated if noisy)


class State(NamedTuple):
  params: PyTree
  opt_state: Any
  y: Array
  ys: YState
  gamma: Array
  ema: Array       # moving average of f(y) (scene, cropped), not debiased
  ema_weight: Array  # 1 - decay^t: divide ema by it (Adam-style debiasing)
  it: Array


@dataclasses.dataclass(frozen=True)
class Model:
  """How ``f_theta`` acts on ``y`` in a phase, and what ``A`` is."""

  net: nets.Skip
  forward: Callable[[Array], Array]   # A
  scene_hw: tuple[int, int]           # (H, W) of the scene before padding
  padded_hw: tuple[int, int]
  y_space: str = "image"              # image | features

  def render(self, params, y: Array) -> Array:
    """``f_theta(y)`` cropped to the scene."""
    if self.y_space == "features":
      out = self.net.apply(params, y, method=nets.Skip.head)
    else:
      out = self.net.apply(params, y)
    return out[:self.scene_hw[0], :self.scene_hw[1]]

  def full(self, params, x: Array) -> Array:
    """The whole net on an image of the scene's size (for ``f(f(y))``)."""
    out = self.net.apply(params, pad_to(x, *self.padded_hw))
    return out[:self.scene_hw[0], :self.scene_hw[1]]

  def data_mse(self, x: Array, prob: Problem) -> Array:
    return select.residual(self.forward, x, prob.obs, prob.weights)


def make_step(cfg: DNCFConfig, model: Model, cover: PyTree,
              trainable: Optional[PyTree] = None):
  """Builds ``(y_fun, step, opt)`` for one phase; ``step(state, prob) -> (state, stats)``.

  One iteration: a joint forward and backward pass at ``(theta_t, y_t)``
  gives the data term, ``f(y)`` and the gradients in ``theta`` and ``y``;
  the Optax step on ``theta`` (data MSE + ``R``, Eqs. 6-7); then the
  y-step at the new ``theta`` (Eqs. 14-16). With the fused L-BFGS the
  ``y``-gradient of the joint pass completes the previous y-step's pair,
  so the net runs forward and backward twice per iteration (plus one
  forward pass per line-search trial) instead of three times.
  """
  opt = theta_optimizer(cfg)
  if trainable is not None:
    opt = optax.masked(opt, trainable)
    opt = optax.chain(opt, optax.masked(optax.set_to_zero(),
                                        jax.tree_util.tree_map(lambda t: not t,
                                                               trainable)))
  fused = uses_fused(cfg)

  def y_fun(y, params, prob: Problem):
    x = model.render(params, y)
    d = model.forward(x) - prob.obs
    return (jnp.sum(prob.weights * d * d)
            + cfg.beta * jnp.sum(jnp.square(y - prob.anchor)))

  def joint(params, y, prob: Problem):
    """Data MSE, f(y), d(MSE)/d(theta) and d(y_fun)/dy from one backward pass."""
    x, pullback = jax.vjp(model.render, params, y)
    w = jnp.broadcast_to(prob.weights, prob.obs.shape)
    sq, dx = jax.value_and_grad(
        lambda x: jnp.sum(w * jnp.square(model.forward(x) - prob.obs)))(x)
    g_theta, g_y = pullback(dx)
    n = jnp.maximum(jnp.sum(w), 1.0)           # select.residual's normaliser
    g_theta = jax.tree_util.tree_map(lambda g: g / n, g_theta)
    g_y = g_y + 2 * cfg.beta * (y - prob.anchor)
    return sq / n, x, g_theta, g_y

  def step(state: State, prob: Problem):
    data, x, g_data, g_y = joint(state.params, state.y, prob)
    reg, g_reg = jax.value_and_grad(penalty.penalty)(
        state.params, cover, state.gamma, cfg.norm)
    g = jax.tree_util.tree_map(jnp.add, g_data, g_reg)
    upd, opt_state = opt.update(g, state.opt_state, state.params)
    params = optax.apply_updates(state.params, upd)
    gamma = (penalty.adapt_gamma(state.gamma, reg, data)
             if cfg.adaptive_gamma else state.gamma)
    fun = lambda y, p: y_fun(y, p, prob)
    if fused:
      ys = state.ys._replace(solver=complete_pair(state.ys.solver, g_y))
      y, ys, stepsize, evals = fused_y_update(cfg, fun, state.y, ys, params)
    else:
      y, ys, stepsize, evals = y_update(cfg, fun, state.y, state.ys, params)
    ema = cfg.ema_decay * state.ema + (1 - cfg.ema_decay) * x
    ema_weight = cfg.ema_decay * state.ema_weight + (1 - cfg.ema_decay)
    stats = dict(data=data, penalty=reg, gamma=state.gamma,
                 y_stepsize=jnp.asarray(stepsize, jnp.float32),
                 y_evals=evals,
                 prox=jnp.mean(jnp.square(y - prob.anchor)))
    return State(params, opt_state, y, ys, gamma, ema, ema_weight,
                 state.it + 1), stats

  return y_fun, step, opt


def _scan_chunk(step, length: int):
  """``length`` steps in one ``lax.scan``; steps past ``stop`` are no-ops."""

  def run(state: State, prob: Problem, stop: Array):
    def body(s, _):
      active = s.it < stop
      new, stats = step(s, prob)
      new = jax.tree_util.tree_map(lambda a, b: jnp.where(active, a, b), new, s)
      return new, stats

    return jax.lax.scan(body, state, None, length=length)

  return run


def _candidates(model: Model, params, y: Array, ema: Array,
                image_y: Optional[Array]) -> Array:
  """``y, f(y), f(f(y)), EMA`` (the order of ``select.CANDIDATES``)."""
  h, w = model.scene_hw
  if model.y_space == "image":
    # f twice through one call site of the net (a scan of length 2): XLA
    # compiles the net once instead of twice. Equal to full(render(y)).
    def apply(z, _):
      out = model.net.apply(params, z)[:h, :w]
      return pad_to(out, *model.padded_hw), out

    _, (fy, ffy) = jax.lax.scan(apply, y, None, length=2)
    return jnp.stack([y[:h, :w], fy, ffy, ema])
  fy = model.render(params, y)
  return jnp.stack([image_y, fy, model.full(params, fy), ema])


# ---------------------------------------------------------------------------
# The public driver
# ---------------------------------------------------------------------------


def restore(observation, task: physics.Task, config: DNCFConfig = DNCFConfig(),
            key: Optional[Array] = None, *, reference=None,
            progress: Optional[Callable[[dict], None]] = None,
            snapshot_every: int = 0) -> Result:
  """Restores ``observation`` (H, W, C in [0, 1]) under ``task``'s physics.

  ``reference`` (optional ground truth) only feeds the PSNR history (the
  "oracle" curve); the returned image is chosen blind. ``progress`` is
  called with a dict after every checkpoint (no printing here).
  ``snapshot_every`` > 0 (a multiple of ``checkpoint_every``) copies the
  candidates to the host every that many iterations:
  ``history["snapshot_iteration"]`` (K,) and ``history["snapshot_images"]``
  (K, len(CANDIDATES), H, W, C); 0 (default) keeps none.
  """
  config.validate()
  if snapshot_every < 0 or snapshot_every % config.checkpoint_every:
    raise ValueError(f"snapshot_every must be 0 or a positive multiple of "
                     f"checkpoint_every ({config.checkpoint_every}), got "
                     f"{snapshot_every}")
  task.validate(observation)
  obs = jnp.asarray(observation, jnp.float32)
  if key is None:
    key = jax.random.key(config.seed)
  scene = task.scene_shape(obs.shape)
  if reference is not None:
    reference = jnp.asarray(reference, jnp.float32)
    if tuple(reference.shape) != tuple(scene):
      raise ValueError(f"reference has shape {tuple(reference.shape)}, the "
                       f"restored image will have shape {tuple(scene)}")
  if hasattr(task, "check_scene"):
    task.check_scene(scene)

  t_start = time.perf_counter()
  net = config.net(scene[2])
  hp, wp = padded_shape(scene[0], scene[1], net.required_multiple())

  @jax.jit
  def prepare(obs, key):
    weights = jnp.asarray(task.weights(obs), jnp.float32)
    anchor = pad_to(task.anchor(obs), hp, wp)
    unsat = select.unsaturated(obs, weights)
    if task.noise_sigma is None:
      sigma = select.estimate_noise_sigma(obs, unsat)
    else:
      sigma = jnp.asarray(task.noise_sigma, jnp.float32)
    sel_w = jnp.where(sigma > 0, unsat, jnp.broadcast_to(weights, obs.shape))
    k_init, k_eps = jax.random.split(key)
    y0 = anchor + config.epsilon * jax.random.normal(k_eps, anchor.shape)
    return weights, anchor, sigma, sel_w, k_init, y0

  # Compiled ahead of time, so that compile_seconds counts every compile.
  prepare, prepare_s = compile_timed(prepare, obs, key)
  weights, anchor, sigma, sel_w, k_init, y0 = prepare(obs, key)
  init_params, init_s = compile_timed(net.init, k_init, y0)
  params = init_params(k_init, y0)
  num_convs = len(nets.conv_layer_names(params))
  cover = penalty.coverage_mask(params, penalty.from_depth(
      config.penalty_depth, num_convs, config.penalty_biases))
  model = Model(net, task.forward, scene[:2], (hp, wp))

  history: dict[str, list] = {}
  ckpt: dict[str, list] = {"iteration": [], "residual": []}
  snapshots: dict[str, list] = {"iteration": [], "images": []}
  if reference is not None:
    ckpt["psnr"] = []
  compile_seconds = prepare_s + init_s
  state_y_image = None

  def run_phase(model, prob, params, y, iterations, trainable, it0, choice):
    nonlocal compile_seconds
    y_fun, step, opt = make_step(config, model, cover, trainable)

    @jax.jit
    def init(params, y, prob):
      ys = init_y_state(config, lambda y, p: y_fun(y, p, prob), y, params,
                        fused=uses_fused(config))
      return State(params, opt.init(params), y, ys,
                   jnp.asarray(config.gamma, jnp.float32),
                   jnp.zeros(scene, jnp.float32), jnp.zeros((), jnp.float32),
                   jnp.asarray(it0, jnp.int32))

    t0 = time.perf_counter()
    state = init(params, y, prob)
    chunk = min(config.checkpoint_every, iterations)
    run = jax.jit(_scan_chunk(step, chunk))
    run = run.lower(state, prob, jnp.asarray(0, jnp.int32)).compile()

    def evaluate(state, choice, sigma):
      cands = _candidates(model, state.params, state.y,
                          state.ema / state.ema_weight, state_y_image)
      res = select.residuals(model.forward, cands, prob.obs,
                             prob.select_weights)
      choice = select.update_choice(choice, cands, res, sigma, state.it,
                                    config.tau, config.y_handicap)
      out = dict(residual=res)
      if reference is not None:
        mse = jnp.mean(jnp.square(jnp.clip(cands, 0, 1) - reference),
                       axis=(1, 2, 3))
        out["psnr"] = -10 * jnp.log10(mse)
      return choice, cands, out

    evaluate = jax.jit(evaluate).lower(state, choice, sigma).compile()
    compile_seconds += time.perf_counter() - t0
    stop = it0 + iterations
    cands = None
    t_phase = time.perf_counter()
    while int(state.it) < stop:
      before = int(state.it)
      state, stats = run(state, prob, jnp.asarray(stop, jnp.int32))
      choice, cands, out = evaluate(state, choice, sigma)
      n_done = int(state.it)
      stats = jax.device_get(stats)
      for k, v in stats.items():
        history.setdefault(k, []).append(np.asarray(v)[:n_done - before])
      out = jax.device_get(out)
      ckpt["iteration"].append(n_done)
      for k, v in out.items():
        ckpt[k].append(np.asarray(v))
      if snapshot_every and n_done % snapshot_every == 0:
        snapshots["iteration"].append(n_done)
        snapshots["images"].append(np.clip(np.asarray(cands), 0, 1))
      if progress is not None:
        elapsed = time.perf_counter() - t_phase
        info = dict(iteration=n_done, total=total_iterations,
                    seconds=time.perf_counter() - t_start,
                    its_per_second=(n_done - it0) / max(elapsed, 1e-9),
                    data=float(stats["data"][-1]),
                    penalty=float(stats["penalty"][-1]),
                    gamma=float(stats["gamma"][-1]),
                    y_evals=float(np.mean(stats["y_evals"])),
                    y_stepsize=float(stats["y_stepsize"][-1]),
                    phase=model.y_space)
        if "psnr" in out:
          info["psnr"] = {c: float(p) for c, p in
                          zip(select.CANDIDATES, out["psnr"])}
        progress(info)
      if config.early_stop and bool(choice.stopped):
        break
    return state, choice, cands

  total_iterations = config.iterations + config.feature_iterations
  prob = Problem(obs, weights, anchor, sel_w)
  choice = select.init_choice(jnp.zeros(scene, jnp.float32))
  state, choice, cands = run_phase(model, prob, params, y0, config.iterations,
                                   None, 0, choice)
  if config.feature_iterations and not (config.early_stop and
                                        bool(choice.stopped)):
    state_y_image = state.y[:scene[0], :scene[1]]
    fmodel = dataclasses.replace(model, y_space="features")
    # Compiled once for both calls (eagerly, each of the net's operations
    # compiled on its own: 15.6 s on 2 cores at 128x128, in every run).
    features, features_s = compile_timed(
        functools.partial(net.apply, method=nets.Skip.features),
        state.params, state.y)
    compile_seconds += features_s
    feats = features(state.params, state.y)
    f_anchor = features(state.params, anchor)
    head_only = jax.tree_util.tree_map_with_path(
        lambda p, _: penalty._names(p)[1] not in _body_names(net, state.params),
        state.params)
    state, choice, cands = run_phase(
        fmodel, Problem(obs, weights, f_anchor, sel_w), state.params, feats,
        config.feature_iterations, head_only, config.iterations, choice)

  image = np.asarray(jnp.clip(choice.image, 0.0, 1.0))
  hist = {k: np.concatenate(v) for k, v in history.items()}
  hist.update({f"checkpoint_{k}": np.asarray(v) for k, v in ckpt.items()})
  if snapshot_every:
    hist["snapshot_iteration"] = np.asarray(snapshots["iteration"], np.int32)
    hist["snapshot_images"] = np.asarray(snapshots["images"]).reshape(
        (-1, len(select.CANDIDATES)) + tuple(scene))
  return Result(
      image=image,
      chosen=select.CANDIDATES[int(choice.candidate)],
      chosen_iteration=int(choice.iteration),
      candidates={name: np.asarray(jnp.clip(c, 0, 1))
                  for name, c in zip(select.CANDIDATES, cands)},
      history=hist,
      noise_sigma=float(sigma),
      seconds=time.perf_counter() - t_start,
      compile_seconds=compile_seconds,
      params=state.params,
      y=np.asarray(state.y))


def _body_names(net: nets.Skip, params) -> set[str]:
  """Top-level module names used before the last block."""
  n_body = net.num_body_convs()
  names = set()
  for k in params["params"]:
    idx = int(k.split("_")[-1]) if k.split("_")[-1].isdigit() else None
    if k.startswith(("conv_", "bn_")) and idx is not None and idx < n_body:
      names.add(k)
    if k.startswith("bn_cat_") and k != "bn_cat_0":
      names.add(k)
  return names
