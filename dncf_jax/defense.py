"""DNCF purification of adversarial images (paper section 4, Table 1).

For each attacked image ``I_adv`` DNCF fits the small 3-conv net
``f_theta`` (:class:`nets.SmallConvNet`) and an input ``y`` to

    L(theta, y) = ||I_adv - f_theta(y)||^2 + beta ||G(I_adv) + eps - y||^2 + R(theta)

(section 4; ``G`` = Gaussian smoothing of width ``rho``, ``eps`` a random
perturbation of std ``epsilon``, ``R`` the penalty of Eqs. 6-7 on the
upper convolutions with the gamma/4 rule of section 6). One iteration is
an Optax step on theta, then an L-BFGS step on ``y`` with the Armijo line
search (Eqs. 14-16): DNCF's own step (:func:`solver.make_step`), run by the
engine's chunk (:func:`engine.chunk`), all iterations in one ``lax.scan``.

Blind choice: the purified image is ``clip(f_theta(y), 0, 1)`` at the end
of the fixed budget of ``iterations`` (the paper classifies
``f_theta*(y*)``); nothing looks at the clean image or the label.

Modes: ``per_image`` (each image has its own theta and y: the shared
program ``vmap``-ed over images) and ``shared`` (one theta for the batch,
the paper's cheaper mode; the net still runs on each image alone, so its
normalisation statistics are per image). :func:`purify` shards the batch
over every device (a ``Mesh`` over ``jax.devices()``, batch axis
``"batch"``); image ``i``'s randomness comes from ``fold_in(key, index_i)``,
so results do not depend on the number of devices or on the batching
(per-image mode).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dncf_jax import engine, filters, nets, physics, select, solver
from dncf_jax.adaptive import bpda, eot_pgd  # noqa: F401  (adaptive attacks)
from dncf_jax import quasi_newton as qn
from dncf_jax.config import (FlatConfig, PenaltyConfig, YSolverConfig, param,
                             require)

Array = jax.Array
PyTree = Any

MODES = ("per_image", "shared")


@dataclasses.dataclass(frozen=True)
class DefenseConfig(FlatConfig):
  """The knobs of DNCF purification.

  The default budget (120 iterations) is the shortest measured fit that
  keeps the classifier's clean accuracy above 78 % on the CIFAR-10 subset
  (the trade-off curves of docs/defense.md); Table 1's flagfile runs 30.
  """

  iterations: int = param(120, "Alternating (theta, y) steps.")
  beta: float = param(1.0, "Weight of ||G(I_adv) + eps - y||^2.")
  rho: float = param(1.0, "Std (pixels) of the Gaussian smoothing G.")
  epsilon: float = param(0.03, "Std of the random perturbation eps.")
  lr: float = param(0.03, "Adam step on theta.")
  gamma: float = param(1e-3, "Initial penalty weight (Eq. 6), gamma/4 rule.")
  mode: str = param("per_image", "per_image: a net per image; shared: one "
                    "net for the batch.", choices=MODES)
  channels: int = param(16, "Width of the 3-conv net.")
  seed: int = param(0, "Seed of the nets and of eps.")
  norm: bool = param(True, "Batch-statistics normalisation after the hidden "
                     "convolutions.")
  sigmoid: bool = param(True, "Sigmoid on the output.")
  penalty_depth: int = param(1, "R covers conv_XX with XX >= depth.")
  y: YSolverConfig = YSolverConfig()

  def check(self) -> None:
    require(self.iterations >= 1, f"iterations must be >= 1, got {self.iterations}")
    require(self.beta >= 0, f"beta must be >= 0, got {self.beta}")
    require(self.rho >= 0, f"rho must be >= 0, got {self.rho}")
    require(self.epsilon >= 0, f"epsilon must be >= 0, got {self.epsilon}")
    require(self.lr > 0, f"lr must be > 0, got {self.lr}")
    require(self.gamma >= 0, f"gamma must be >= 0, got {self.gamma}")
    require(self.channels >= 1, f"channels must be >= 1, got {self.channels}")
    require(self.y.solver in ("lbfgs", "adam", "none"),
            f"y_solver must be lbfgs, adam or none, got {self.y.solver!r}")

  def net(self, out_channels: int = 3) -> nets.SmallConvNet:
    return nets.SmallConvNet(self.channels, out_channels, self.norm,
                             self.sigmoid)

  def penalty(self) -> PenaltyConfig:
    """``R`` on the upper convolutions with the gamma/4 rule."""
    return PenaltyConfig(gamma=self.gamma, depth=self.penalty_depth)


# ---------------------------------------------------------------------------
# One fit: a group of images sharing theta (one image in per-image mode)
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GroupModel:
  """``f_theta`` applied to each image of a group (``y``: (n, H, W, C))."""

  net: nets.SmallConvNet

  def render(self, params, y: Array) -> Array:
    return jax.vmap(lambda im: self.net.apply(params, im))(y)


@dataclasses.dataclass(frozen=True)
class Purifier:
  """The purifier as a method of the run engine: DNCF's alternating step
  (:func:`solver.make_step`) on a group of images sharing ``theta``; the
  candidate is ``clip(f_theta(y), 0, 1)``."""

  config: DefenseConfig
  out_channels: int = 3

  @property
  def model(self) -> GroupModel:
    return GroupModel(self.config.net(self.out_channels))

  def _step(self, params):
    cfg, pen = self.config, self.config.penalty()
    opt = optax.adam(cfg.lr)
    y_fun, step = solver.make_step(
        self.model, solver.penalty_cover(pen, params), opt,
        beta=cfg.beta, y_cfg=cfg.y, penalty_cfg=pen)
    return opt, y_fun, step

  def init(self, images: Array, weights: Array, noise_keys: Array,
           init_key: Array) -> tuple[solver.State, solver.Problem]:
    """``y0 = G(I_adv) + eps``; ``weights`` (n,): 1 real, 0 padding (no part
    in the loss, so the others' theta is unchanged)."""
    cfg = self.config
    anchor = jax.vmap(lambda im: filters.gaussian_blur(im, cfg.rho))(images)
    noise = jax.vmap(lambda k: jax.random.normal(k, images.shape[1:]))(
        noise_keys)
    anchor = anchor + cfg.epsilon * noise
    w = weights[:, None, None, None]
    prob = solver.Problem(images, w, anchor, w, jnp.zeros(()),
                          physics.Denoise())
    params = self.model.net.init(init_key, images[0])
    opt, y_fun, _ = self._step(params)
    ys = qn.init_y_state(cfg.y, lambda v, p: y_fun(v, p, prob), anchor, params,
                         fused=cfg.y.fused)
    state = solver.State(params, opt.init(params), anchor, ys,
                         jnp.asarray(cfg.gamma, jnp.float32),
                         jnp.zeros_like(images), jnp.zeros((), jnp.float32),
                         jnp.zeros((), jnp.int32),
                         select.init_choice(jnp.zeros((), jnp.float32)))
    return state, prob

  def step(self, state: solver.State, prob: solver.Problem):
    return self._step(state.params)[2](state, prob)

  def checkpoint(self, state: solver.State, prob: solver.Problem):
    out = jnp.clip(self.model.render(state.params, state.y), 0.0, 1.0)
    return state, out[None], {}, jnp.zeros((), bool)


def _fit_group(cfg: DefenseConfig, images: Array, weights: Array,
               keys: Array, init_key: Array) -> Array:
  """Fits one theta to ``images`` (n, H, W, C); returns clip(f(y)) (n, H, W, C).

  The run engine's chunk (:func:`engine.chunk`) of all ``iterations``,
  traceable (so that attacks can differentiate through it with BPDA).
  """
  method = Purifier(cfg, images.shape[-1])
  state, prob = method.init(images, weights, keys, init_key)
  carry = engine.Carry(state, jnp.zeros((), jnp.int32), jnp.zeros((), bool))
  stop = jnp.asarray(cfg.iterations, jnp.int32)
  _, _, _, out = engine.chunk(method, carry, prob, stop, cfg.iterations)
  return out[0]


def purify_fn(cfg: DefenseConfig) -> Callable[[Array, Array, Array, Array], Array]:
  """A pure, traceable ``f(images, weights, indices, key) -> purified``.

  ``indices`` (n,) int: the images' global indices (their noise keys are
  ``fold_in(key, index)``); ``weights`` (n,): 1 real, 0 padding.
  """
  cfg.validate()

  def run(images: Array, weights: Array, indices: Array, key: Array) -> Array:
    k_img, k_shared = jax.random.split(key)
    keys = jax.vmap(lambda i: jax.random.fold_in(k_img, i))(indices)
    split = jax.vmap(lambda k: jax.random.split(k))(keys)
    noise_keys, init_keys = split[:, 0], split[:, 1]
    if cfg.mode == "shared":
      return _fit_group(cfg, images, weights, noise_keys, k_shared)
    one = lambda im, wt, nk, ik: _fit_group(cfg, im[None], wt[None], nk[None],
                                            ik)[0]
    return jax.vmap(one)(images, weights, noise_keys, init_keys)

  return run


def forward(cfg: DefenseConfig) -> Callable[[Array, Array], Array]:
  """``(images, key) -> purified``: :func:`purify_fn` on a whole batch (every
  image weighted 1, indexed by its position), for adaptive attacks
  (:func:`adaptive.eot_pgd`, :func:`adaptive.bpda`)."""
  fn = purify_fn(cfg)
  return lambda x, key: fn(x, jnp.ones(x.shape[0]), jnp.arange(x.shape[0]),
                           key)


# ---------------------------------------------------------------------------
# Sharded driver
# ---------------------------------------------------------------------------


batch_mesh = engine.batch_mesh


_COMPILED: dict = {}


def _compiled(cfg: DefenseConfig, mesh: Mesh):
  cfg = cfg.replace(seed=0)   # the seed only makes the key, on the host
  k = (cfg, mesh)
  if k not in _COMPILED:
    shard = NamedSharding(mesh, P("batch"))
    rep = NamedSharding(mesh, P())
    _COMPILED[k] = jax.jit(purify_fn(cfg),
                           in_shardings=(shard, shard, shard, rep),
                           out_shardings=shard)
  return _COMPILED[k]


def _check(images) -> None:
  if np.ndim(images) != 4:
    raise ValueError(f"images must be a batch (N, H, W, C), got shape "
                     f"{np.shape(images)}")
  if np.shape(images)[0] == 0:
    raise ValueError("images is an empty batch")
  a = np.asarray(images)
  if not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 1:
    raise ValueError("image values must be finite and lie in [0, 1]")


def purify(images, config: DefenseConfig = DefenseConfig(),
           key: Optional[Array] = None, *, indices=None,
           mesh: Optional[Mesh] = None) -> np.ndarray:
  """Purifies a batch (N, H, W, C in [0, 1]); returns the same shape in [0, 1].

  The batch is padded to a multiple of the mesh size (padding has weight 0)
  and sharded over its ``"batch"`` axis; ``indices`` (default ``arange(N)``)
  seed each image's randomness. Under ``jax.distributed`` every host passes
  the whole batch and gets the whole result back (each computes its shards).
  """
  config.validate()
  _check(images)
  x = np.asarray(images, np.float32)
  n = x.shape[0]
  idx = np.arange(n) if indices is None else np.asarray(indices, np.int32)
  if idx.shape != (n,):
    raise ValueError(f"indices must have shape ({n},), got {idx.shape}")
  if key is None:
    key = jax.random.key(config.seed)
  mesh = batch_mesh() if mesh is None else mesh
  m = mesh.size
  pad = (-n) % m
  wts = np.ones(n + pad, np.float32)
  if pad:
    x = np.concatenate([x, np.repeat(x[-1:], pad, 0)])
    idx = np.concatenate([idx, np.full(pad, idx[-1])])
    wts[n:] = 0.0
  shard = NamedSharding(mesh, P("batch"))
  put = lambda a: jax.make_array_from_callback(a.shape, shard, lambda i: a[i])
  out = _compiled(config, mesh)(put(x), put(wts), put(idx.astype(np.int32)),
                                key)
  if not out.is_fully_addressable:  # several hosts: every host gets it all
    from jax.experimental import multihost_utils
    out = multihost_utils.process_allgather(out, tiled=True)
  return np.asarray(out)[:n]
