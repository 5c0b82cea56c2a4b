"""DNCF's alternating optimisation (paper sections 2 and 5) on the run engine.

    L(theta, y) = ||W (A(f_theta(y)) - I_s)||^2 + beta ||y - G(I_s)||^2 + R(theta)

One iteration is an Optax step on ``theta`` (on the data MSE plus
``R(theta)``, Eqs. 6-7, with the adaptive ``gamma`` of section 6), then
``y_steps`` quasi-Newton steps on ``y`` (:mod:`dncf_jax.quasi_newton`,
Eqs. 14-16; the default L-BFGS is fused with the theta-step so that the
net's backward pass at the accepted ``y`` serves both). The blind
selection (:mod:`dncf_jax.select`) scores the candidates at every
checkpoint, on device; a noiseless task's answer is then projected onto
its measurements (``SelectConfig.project``, :func:`projects`), and a
denoising answer may be averaged with a classical denoiser's
(``SelectConfig.fuse``, ``fuse_with``, :func:`fuses`).

:class:`DNCF` is the engine's method (:mod:`dncf_jax.engine`) for one
phase: ``y`` is the image fed to ``f_theta``, or with
``feature_iterations > 0`` in a second phase the feature map entering the
last block, only that block trained (Eq. 13; the flash experiment of
section 6). :func:`restore_batch` restores a batch of images of one shape
in one compiled program; :func:`restore` is a batch of one.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dncf_jax import engine, nets, penalty, physics, select
from dncf_jax import quasi_newton as qn
from dncf_jax.config import (DNCFConfig, PenaltyConfig, YSolverConfig,
                             require)
from dncf_jax.engine import Result, pad_to, padded_shape

Array = jax.Array
PyTree = Any


class Problem(NamedTuple):
  """Everything the step reads that is an array (traced, not baked in)."""

  obs: Array             # I_s
  weights: Array         # W, measured entries of I_s
  anchor: Array          # G(I_s) in the space of y (padded)
  select_weights: Array  # entries the blind rule scores
  sigma: Array           # noise level of the blind rule
  task: Any              # the physics (a pytree)
  image_y: Any = None    # feature phase: the image-space y (candidate "y")


class State(NamedTuple):
  params: PyTree
  opt_state: Any
  y: Array
  ys: qn.YState
  gamma: Array
  ema: Array         # moving average of f(y) (scene, cropped), not debiased
  ema_weight: Array  # 1 - decay^t: divide ema by it (Adam-style debiasing)
  it: Array
  choice: select.Choice


@dataclasses.dataclass(frozen=True)
class Model:
  """How ``f_theta`` acts on ``y``: on the image or on the last block's input."""

  net: nets.Skip
  scene_hw: tuple[int, int]
  padded_hw: tuple[int, int]
  y_space: str = "image"

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


def theta_optimizer(name: str, learning_rate: float,
                    trainable: Optional[PyTree] = None
                    ) -> optax.GradientTransformation:
  """The Optax optimizer of ``theta``; ``trainable``: a mask, the rest frozen."""
  opt = {"adam": optax.adam, "sgd": optax.sgd,
         "rmsprop": optax.rmsprop}[name](learning_rate)
  if trainable is None:
    return opt
  frozen = jax.tree_util.tree_map(lambda t: not t, trainable)
  return optax.chain(optax.masked(opt, trainable),
                     optax.masked(optax.set_to_zero(), frozen))


def make_step(model, cover: PyTree, opt: optax.GradientTransformation, *,
              beta: float, y_cfg: YSolverConfig, penalty_cfg: PenaltyConfig,
              ema_decay: float = 0.95):
  """``(y_fun, step)`` of the alternating optimisation; ``step(state, prob)
  -> (state, stats)``, ``y_fun(y, params, prob)`` the y-objective (Eq. 5).

  ``model.render(params, y)`` is ``f_theta(y)`` in the observation's space
  (one image, or a group sharing ``theta``). One iteration: a joint forward
  and backward pass at ``(theta_t, y_t)`` gives the data term, ``f(y)`` and
  the gradients in ``theta`` and ``y``; the Optax step on ``theta`` (data
  MSE + ``R``, Eqs. 6-7); then the y-step at the new ``theta``
  (:func:`quasi_newton.step`), whose fused L-BFGS takes the ``y``-gradient
  of the joint pass.
  """
  def y_fun(y_, params, prob: Problem):
    d = prob.task.forward(model.render(params, y_)) - prob.obs
    return (jnp.sum(prob.weights * d * d)
            + beta * jnp.sum(jnp.square(y_ - prob.anchor)))

  def joint(params, y_, prob: Problem):
    """Data MSE, f(y), d(MSE)/d(theta) and d(y_fun)/dy from one backward pass."""
    x, pullback = jax.vjp(model.render, params, y_)
    w = jnp.broadcast_to(prob.weights, prob.obs.shape)
    sq, dx = jax.value_and_grad(
        lambda x: jnp.sum(w * jnp.square(prob.task.forward(x) - prob.obs)))(x)
    g_theta, g_y = pullback(dx)
    n = jnp.maximum(jnp.sum(w), 1.0)           # select.residual's normaliser
    g_theta = jax.tree_util.tree_map(lambda g: g / n, g_theta)
    return sq / n, x, g_theta, g_y + 2 * beta * (y_ - prob.anchor)

  def step(state: State, prob: Problem):
    data, x, g_data, g_y = joint(state.params, state.y, prob)
    reg, g_reg = jax.value_and_grad(penalty.penalty)(
        state.params, cover, state.gamma, penalty_cfg.norm)
    g = jax.tree_util.tree_map(jnp.add, g_data, g_reg)
    upd, opt_state = opt.update(g, state.opt_state, state.params)
    params = optax.apply_updates(state.params, upd)
    gamma = (penalty.adapt_gamma(state.gamma, reg, data)
             if penalty_cfg.adaptive else state.gamma)
    fun = lambda v, p: y_fun(v, p, prob)
    y_new, ys, stepsize, evals = qn.step(y_cfg, fun, state.y, state.ys, params, g_y)
    ema = ema_decay * state.ema + (1 - ema_decay) * x
    ema_weight = ema_decay * state.ema_weight + (1 - ema_decay)
    stats = dict(data=data, penalty=reg, gamma=state.gamma,
                 y_stepsize=jnp.asarray(stepsize, jnp.float32), y_evals=evals,
                 prox=jnp.mean(jnp.square(y_new - prob.anchor)))
    return state._replace(params=params, opt_state=opt_state, y=y_new, ys=ys,
                          gamma=gamma, ema=ema, ema_weight=ema_weight,
                          it=state.it + 1), stats

  return y_fun, step


def candidates(model: Model, params, y: Array, ema: Array,
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


def penalty_cover(cfg: PenaltyConfig, params: PyTree) -> PyTree:
  """Which leaves ``R`` covers (Eq. 7): a pytree of Python bools."""
  n = len(nets.conv_layer_names(params))
  return penalty.coverage_mask(params, penalty.from_depth(cfg.depth, n,
                                                          cfg.biases))


# ---------------------------------------------------------------------------
# The engine's method
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DNCF:
  """DNCF on one image of shape ``scene`` for the run engine, in one phase."""

  config: DNCFConfig
  scene: tuple[int, int, int]
  y_space: str = "image"

  @property
  def model(self) -> Model:
    net = self.config.net.build(self.scene[2])
    hw = padded_shape(self.scene[0], self.scene[1], net.required_multiple())
    return Model(net, self.scene[:2], hw, self.y_space)

  def _step(self, params):
    cfg = self.config
    trainable = None
    if self.y_space == "features":
      body = _body_names(self.model.net, params)
      trainable = jax.tree_util.tree_map_with_path(
          lambda p, _: penalty._names(p)[1] not in body, params)
    opt = theta_optimizer(cfg.theta_optimizer, cfg.learning_rate, trainable)
    y_fun, step = make_step(self.model, penalty_cover(cfg.penalty, params), opt,
                            beta=cfg.beta, y_cfg=cfg.y, penalty_cfg=cfg.penalty,
                            ema_decay=cfg.select.ema_decay)
    return opt, y_fun, step

  def start(self, params, y: Array, prob: Problem, it0: int,
            choice: select.Choice) -> State:
    """The state at the start of this phase."""
    opt, y_fun, _ = self._step(params)
    ys = qn.init_y_state(self.config.y, lambda v, p: y_fun(v, p, prob), y,
                         params, fused=self.config.y.fused)
    return State(params, opt.init(params), y, ys,
                 jnp.asarray(self.config.penalty.gamma, jnp.float32),
                 jnp.zeros(self.scene, jnp.float32), jnp.zeros((), jnp.float32),
                 jnp.asarray(it0, jnp.int32), choice)

  def init(self, obs: Array, task, key: Array) -> tuple[State, Problem]:
    """The image phase's state and problem (``y0 = G(I_s) + eps``)."""
    model = self.model
    weights = jnp.asarray(task.weights(obs), jnp.float32)
    unsat = select.unsaturated(obs, weights)
    if task.noise_sigma is None:
      sigma = select.estimate_noise_sigma(obs, unsat)
    else:
      sigma = jnp.asarray(task.noise_sigma, jnp.float32)
    sel_w = jnp.where(sigma > 0, unsat, jnp.broadcast_to(weights, obs.shape))
    seen = obs                                  # what G is given
    if self.config.select.holdout > 0:
      key, k_hold = jax.random.split(key)
      weights, sel_w, seen = select.hold_out(k_hold, obs, weights,
                                             self.config.select.holdout)
    anchor = pad_to(task.anchor(seen), *model.padded_hw)
    k_init, k_eps = jax.random.split(key)
    y0 = anchor + self.config.epsilon * jax.random.normal(k_eps, anchor.shape)
    params = model.net.init(k_init, y0)
    prob = Problem(obs, weights, anchor, sel_w, sigma, task)
    choice = select.init_choice(jnp.zeros(self.scene, jnp.float32))
    return self.start(params, y0, prob, 0, choice), prob

  def enter_features(self, state: State, prob: Problem) -> tuple[State, Problem]:
    """From the image phase's end to this (feature) phase's start."""
    net = self.model.net
    features = functools.partial(net.apply, method=nets.Skip.features)
    image_y = state.y[:self.scene[0], :self.scene[1]]
    prob = prob._replace(anchor=features(state.params, prob.anchor),
                         image_y=image_y)
    y = features(state.params, state.y)
    return self.start(state.params, y, prob, state.it, state.choice), prob

  def step(self, state: State, prob: Problem):
    return self._step(state.params)[2](state, prob)

  def checkpoint(self, state: State, prob: Problem):
    sel = self.config.select
    cands = candidates(self.model, state.params, state.y,
                       state.ema / state.ema_weight, prob.image_y)
    res = select.residuals(prob.task.forward, cands, prob.obs,
                           prob.select_weights)
    held_out = sel.holdout > 0
    choice = select.update_choice(
        state.choice, cands, res, prob.sigma, state.it, sel.tau,
        0.0 if held_out else sel.y_handicap,
        patience=sel.patience * sel.checkpoint_every if held_out else None)
    halt = jnp.logical_and(sel.early_stop, choice.stopped)
    return state._replace(choice=choice), cands, dict(residual=res), halt


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


def _describe(phase: str) -> Callable[[dict, dict], dict]:
  """Progress fields from one image's chunk stats and checkpoint output."""
  def describe(stats: dict, out: dict) -> dict:
    info = dict(data=float(stats["data"][-1]),
                penalty=float(stats["penalty"][-1]),
                gamma=float(stats["gamma"][-1]),
                y_evals=float(np.mean(stats["y_evals"])),
                y_stepsize=float(stats["y_stepsize"][-1]), phase=phase)
    if "psnr" in out:
      info["psnr"] = {c: float(p) for c, p in zip(select.CANDIDATES, out["psnr"])}
    return info
  return describe


# ---------------------------------------------------------------------------
# The public drivers
# ---------------------------------------------------------------------------


def restore(observation, task: physics.Task, config: DNCFConfig = DNCFConfig(),
            key: Optional[Array] = None, *, reference=None,
            progress: Optional[Callable[[dict], None]] = None,
            snapshot_every: int = 0) -> Result:
  """Restores ``observation`` (H, W, C in [0, 1]) under ``task``'s physics.

  A batch of one of :func:`restore_batch` (same programs, so a second call
  of the same shapes compiles nothing, whatever its mask, seed, budget or
  fusion: :data:`HOST_ONLY`). ``reference`` (optional ground truth) only
  feeds the ORACLE PSNR history; the returned image is chosen blind.
  ``progress`` is called with a dict after every checkpoint (no printing
  here). ``snapshot_every`` > 0 (a multiple of ``checkpoint_every``) copies
  the candidates to the host every that many iterations:
  ``history["snapshot_iteration"]`` (K,) and ``history["snapshot_images"]``
  (K, len(CANDIDATES), H, W, C). With ``config.ensemble`` > 1 the image is
  the mean of that many restorations (:func:`restore_batch`).
  """
  if key is None:
    key = jax.random.key(config.seed)
  refs = None if reference is None else [reference]
  return restore_batch([observation], task, config, [key], references=refs,
                       progress=progress, snapshot_every=snapshot_every)[0]


def restore_batch(observations, task, config: DNCFConfig = DNCFConfig(),
                  keys: Optional[Sequence[Array]] = None, *, references=None,
                  progress: Optional[Callable[[dict], None]] = None,
                  snapshot_every: int = 0, batch_size: Optional[int] = None,
                  mesh=None, vectorize: str = "auto") -> list[Result]:
  """Restores a batch of images of one shape in one compiled program.

  ``observations``: a sequence of (H, W, C) images or an (N, H, W, C)
  array. ``task``: one task for every image, or a sequence of N tasks of
  one class and settings (their masks, flash images or PSFs may differ).
  ``keys``: one PRNG key per image (default: ``split(key(config.seed), N)``);
  image ``i`` gets what :func:`restore` with ``keys[i]`` gives (exactly
  with ``vectorize="map"``, up to float rounding with ``vmap``).
  Each image has its own blind choice and its own stopping: an image that
  meets the discrepancy principle is frozen while the others go on; the
  loop ends when all have stopped or the budget is spent. With
  ``config.ensemble = K`` every image is restored K times in the same
  batch (keys ``fold_in(keys[i], j)``) and its result's ``image`` is their
  mean (``members`` holds the K results).

  ``batch_size``: restore at most this many images at once (the batch is
  split into chunks of that size, run one after the other); a batch whose
  compiled program needs more memory than is free raises ``ValueError``
  naming the sizes and a ``batch_size`` that fits. ``mesh``: a one-axis
  ``Mesh`` (``"batch"``, see :func:`engine.batch_mesh`) to shard the batch
  over its devices; under
  ``jax.distributed`` every process passes the whole batch and gets every
  result. ``vectorize``: ``vmap`` runs the images at once (a GPU's way),
  ``map`` one after the other inside the program (the numbers of single
  runs; a stopped image costs nothing); ``auto``: ``map`` on CPU, ``vmap``
  elsewhere (:func:`engine.resolve_vectorize`). Returns one :class:`Result`
  per image (``seconds`` and ``compile_seconds`` are the whole chunk's).
  A batch split into parts (:func:`chunks`) adds ``part`` = (first image,
  end, batch size) to what ``progress`` gets.
  """
  config.validate()
  vectorize = engine.resolve_vectorize(vectorize)
  require(snapshot_every >= 0 and snapshot_every % config.select.checkpoint_every
          == 0, f"snapshot_every must be 0 or a positive multiple of "
          f"checkpoint_every ({config.select.checkpoint_every}), got "
          f"{snapshot_every}")
  obs_list = list(observations)
  tasks = list(task) if isinstance(task, (list, tuple)) else None
  n = engine.check_batch(obs_list, keys, None if tasks is None else len(tasks))
  for i, o in enumerate(obs_list):
    (tasks[i] if tasks else task).validate(o)
  if keys is None:
    keys = list(jax.random.split(jax.random.key(config.seed), n))
  if config.ensemble > 1:
    return _ensemble(obs_list, tasks or task, config, keys, references,
                     progress=progress, snapshot_every=snapshot_every,
                     batch_size=batch_size, mesh=mesh, vectorize=vectorize)
  parts = chunks(n, batch_size)
  size = parts[0].stop
  out = []
  for part in parts:
    tell = progress
    if progress is not None and len(parts) > 1:
      tell = functools.partial(_tell_part, progress, (part.start, part.stop, n))
    out += _run_batch(
        obs_list[part], tasks[part] if tasks else task, config, keys[part],
        None if references is None else references[part], tell,
        snapshot_every, mesh, vectorize, size)
  return out


def _tell_part(progress: Callable[[dict], None], part: tuple, info: dict):
  progress(dict(info, part=part))


def chunks(n: int, batch_size: Optional[int] = None) -> list[slice]:
  """The parts of a batch of ``n`` that :func:`restore_batch` runs one after
  the other: as few as hold at most ``batch_size`` images each, of one
  size (the last padded with problems that never step), so that one
  compiled program serves them all."""
  require(batch_size is None or batch_size >= 1,
          f"batch_size must be >= 1, got {batch_size}")
  m = 1 if batch_size is None else -(-n // batch_size)
  size = -(-n // m)
  return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def _ensemble(obs_list, task, config: DNCFConfig, keys, references,
              **kw) -> list[Result]:
  """``config.ensemble`` members per image (keys ``fold_in(key, j)``) in one
  batch; each image's result is its first member's with the members'
  mean as ``image`` and all of them in ``members``."""
  k = config.ensemble
  rep = lambda xs: [x for x in xs for _ in range(k)]
  members = restore_batch(
      rep(obs_list), rep(task) if isinstance(task, list) else task,
      config.replace(ensemble=1),
      [jax.random.fold_in(key, j) for key in keys for j in range(k)],
      references=None if references is None else rep(references), **kw)
  groups = [members[i:i + k] for i in range(0, len(members), k)]
  return [g[0]._replace(image=np.mean([m.image for m in g], axis=0),
                        members=tuple(g)) for g in groups]


def _check_scene(task, obs_shape, references, n) -> tuple[int, int, int]:
  scene = tuple(task.scene_shape(tuple(obs_shape)))
  if hasattr(task, "check_scene"):
    task.check_scene(scene)
  if references is not None:
    require(len(references) == n,
            f"got {len(references)} references for {n} images")
    for r in references:
      require(tuple(np.shape(r)) == scene,
              f"reference has shape {tuple(np.shape(r))}, the restored image "
              f"will have shape {scene}")
  return scene


def _run_batch(obs_list, task, config: DNCFConfig, keys, references,
               progress, snapshot_every: int, mesh, vectorize: str,
               size: int = 1) -> list[Result]:
  """One compiled batch of at least ``size`` problems (padding never steps)."""
  t_start = time.perf_counter()
  n = len(obs_list)
  tasks = task if isinstance(task, list) else [task] * n
  one_task = tasks[0]
  scene = _check_scene(one_task, np.shape(obs_list[0]), references, n)
  obs = np.stack([np.asarray(o, np.float32) for o in obs_list])
  inputs = (obs, engine.stack_tasks(task, n),
            jnp.stack([jax.random.key_data(k) for k in keys]))
  ref = None if references is None else np.stack(
      [np.asarray(r, np.float32) for r in references])
  multiple = 1 if mesh is None else mesh.size
  inputs, _ = engine.pad_batch(inputs, multiple, size)
  if ref is not None:
    ref, _ = engine.pad_batch(jnp.asarray(ref), multiple, size)
  inputs = engine.shard(inputs, mesh)
  ref = engine.shard(ref, mesh) if ref is not None else None

  method = DNCF(_program_config(config), scene)
  init, compile_s = engine.compiled((method, "init"), engine.batch_init(method),
                                    *inputs, mesh=mesh)
  engine.check_memory(init, n, f"restoring {n} images of {scene}")
  state, prob = init(*inputs)
  history = engine.new_history(n)
  total = config.iterations + config.feature_iterations
  padding = engine.shard(jnp.arange(state.it.shape[0]) >= n, mesh)
  carry = engine.Carry(state, state.it, padding)
  run = functools.partial(_run_phase, ref=ref, history=history, n=n,
                          snapshot_every=snapshot_every, progress=progress,
                          total=total, t_start=t_start, mesh=mesh,
                          vectorize=vectorize)
  carry, cands, s = run(method, carry, prob, config.iterations)
  compile_s += s
  halted = engine.host(carry.halted)[:n]
  if config.feature_iterations and not np.all(halted):
    fmethod = DNCF(method.config, scene, "features")
    enter, s = engine.compiled((fmethod, "enter"),
                               jax.vmap(fmethod.enter_features),
                               carry.state, prob, mesh=mesh)
    compile_s += s
    state, prob = enter(carry.state, prob)
    carry, cands, s = run(fmethod, carry._replace(state=state), prob, total)
    compile_s += s
  carry, cands, sigma = engine.gather((carry, cands, prob.sigma))
  results = [_result(carry.state, cands, history, b, 0.0, compile_s,
                     sigma) for b in range(n)]
  if config.select.project and projects(one_task):
    results = [r._replace(image=np.asarray(_project(tasks[b], r.image, obs[b])))
               for b, r in enumerate(results)]
  w = fuse_weight(config, one_task)
  if w:
    results = [r._replace(image=(1 - w) * r.image + w * fuse_partner(
        config, obs[b], tasks[b].noise_sigma)) for b, r in enumerate(results)]
  seconds = time.perf_counter() - t_start
  return [r._replace(seconds=seconds) for r in results]


# Settings read on the host only: the seed (it makes the keys), the budgets
# (the stopping iteration is an argument of the compiled chunk) and what is
# done to the answer after the run (projection, fusion).
HOST_ONLY = ("seed", "iterations", "feature_iterations", "project", "fuse",
             "fuse_with")


def _program_config(config: DNCFConfig) -> DNCFConfig:
  """``config`` with the :data:`HOST_ONLY` settings at their defaults: runs
  that differ in them alone share their compiled programs."""
  default = DNCFConfig().flat()
  return config.replace(**{k: default[k] for k in HOST_ONLY})


def projects(task) -> bool:
  """Whether ``task``'s answer is projected onto its measurements
  (``SelectConfig.project``): noiseless tasks with a ``project`` method."""
  return hasattr(task, "project") and task.noise_sigma == 0


def fuses(task) -> bool:
  """Whether ``task``'s answer is averaged with a classical denoiser's
  (``SelectConfig.fuse``): denoising."""
  return isinstance(task, physics.Denoise)


def fuse_weight(config: DNCFConfig, task) -> float:
  """The weight of the classical denoiser in ``task``'s answer (0: none)."""
  return config.select.fuse if fuses(task) else 0.0


def fuse_partner(config: DNCFConfig, obs,
                 sigma: Optional[float] = None) -> np.ndarray:
  """The classical denoiser's answer that the fusion averages in
  (``SelectConfig.fuse_with``; ``sigma`` ``None``: estimated)."""
  from dncf_jax.baselines import nlm, wavelet
  fn = dict(nlm=nlm.nlm_denoise, nlm_wavelet=wavelet.nlm_wavelet_denoise)
  return fn[config.select.fuse_with](obs, sigma)


@jax.jit
def _project(task, image: Array, obs: Array) -> Array:
  """The blind answer made to reproduce the observation exactly, then
  clipped to [0, 1]: both are projections onto convex sets that hold the
  true scene, so neither moves the answer away from it."""
  return jnp.clip(task.project(image, obs), 0.0, 1.0)


def _run_phase(method: DNCF, carry, prob, stop: int, *, ref, history, n,
               snapshot_every, progress, total, t_start, mesh, vectorize):
  length = min(method.config.select.checkpoint_every,
               stop - int(np.min(engine.host(carry.it))))
  program, compile_s = engine.compiled(
      (method, "chunk", length, ref is not None, vectorize),
      engine.batch_chunk(method, length, ref is not None, vectorize),
      carry, prob, ref, jnp.asarray(stop, jnp.int32), mesh=mesh)
  engine.check_memory(program, len(history.steps),
                      f"restoring {len(history.steps)} images of {method.scene}")
  carry, cands = engine.run(program, carry, prob, stop, reference=ref,
                            history=history, n_real=n,
                            snapshot_every=snapshot_every, progress=progress,
                            describe=_describe(method.y_space), total=total,
                            t_start=t_start)
  return carry, cands, compile_s


def _result(state: State, cands, history: engine.History, b: int,
            seconds: float, compile_seconds: float, sigma) -> Result:
  take = lambda tree: jax.tree_util.tree_map(lambda a: a[b], tree)
  choice = take(state.choice)
  hist = engine.history_arrays(history, b)
  snaps = history.snapshots[b]
  if snaps["iteration"]:
    hist["snapshot_iteration"] = np.asarray(snaps["iteration"], np.int32)
    hist["snapshot_images"] = np.asarray(snaps["images"])
  return Result(
      image=np.asarray(jnp.clip(choice.image, 0.0, 1.0)),
      chosen=select.CANDIDATES[int(choice.candidate)],
      chosen_iteration=int(choice.iteration),
      candidates={name: np.asarray(jnp.clip(c, 0, 1))
                  for name, c in zip(select.CANDIDATES, cands[b])},
      history=hist,
      noise_sigma=float(np.asarray(sigma)[b]),
      seconds=seconds, compile_seconds=compile_seconds,
      params=take(state.params), y=np.asarray(state.y[b]))
