"""DNCF purification of adversarial images (paper section 4, Table 1).

For each attacked image ``I_adv`` DNCF fits the small 3-conv net
``f_theta`` (:class:`nets.SmallConvNet`) and an input ``y`` to

    L(theta, y) = ||I_adv - f_theta(y)||^2 + beta ||G(I_adv) + eps - y||^2 + R(theta)

(section 4; ``G`` = Gaussian smoothing of width ``rho``, ``eps`` a random
perturbation of std ``epsilon``, ``R`` the penalty of Eqs. 6-7 on the
upper convolutions with the gamma/4 rule of section 6). One iteration is
an Optax step on theta, then an L-BFGS step on ``y`` with the Armijo line
search (Eqs. 14-16; :func:`solver.y_update`). The iterations run in one
``lax.scan``.

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
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dncf_jax import filters, nets, penalty, solver

Array = jax.Array
PyTree = Any

MODES = ("per_image", "shared")


@dataclasses.dataclass(frozen=True)
class DefenseConfig:
  """The knobs of DNCF purification (defaults: the CPU table setting)."""

  iterations: int = 30        # alternating (theta, y) steps
  beta: float = 1.0           # weight of ||G(I_adv) + eps - y||^2
  rho: float = 1.0            # std (pixels) of the Gaussian smoothing G
  epsilon: float = 0.03       # std of the random perturbation eps
  lr: float = 0.03            # Adam step on theta
  gamma: float = 1e-3         # initial penalty weight (Eq. 6), gamma/4 rule
  mode: str = "per_image"     # per_image | shared
  channels: int = 16          # width of the 3-conv net
  seed: int = 0
  norm: bool = True           # BatchStatNorm after the hidden convolutions
  sigmoid: bool = True
  penalty_depth: int = 1      # R covers conv_XX with XX >= depth (upper layers)
  y_solver: str = "lbfgs"     # lbfgs | adam | none (solver.y_update)
  y_steps: int = 1

  def validate(self) -> None:
    """Raises ``ValueError`` naming the first bad field."""
    def need(cond, msg):
      if not cond:
        raise ValueError(msg)
    need(self.iterations >= 1, f"iterations must be >= 1, got {self.iterations}")
    need(self.beta >= 0, f"beta must be >= 0, got {self.beta}")
    need(self.rho >= 0, f"rho must be >= 0, got {self.rho}")
    need(self.epsilon >= 0, f"epsilon must be >= 0, got {self.epsilon}")
    need(self.lr > 0, f"lr must be > 0, got {self.lr}")
    need(self.gamma >= 0, f"gamma must be >= 0, got {self.gamma}")
    need(self.mode in MODES, f"mode must be one of {MODES}, got {self.mode!r}")
    need(self.channels >= 1, f"channels must be >= 1, got {self.channels}")
    need(self.y_solver in ("lbfgs", "adam", "none"),
         f"y_solver must be lbfgs, adam or none, got {self.y_solver!r}")
    need(self.y_steps >= 1, "y_steps must be >= 1")

  def net(self, out_channels: int = 3) -> nets.SmallConvNet:
    return nets.SmallConvNet(self.channels, out_channels, self.norm,
                             self.sigmoid)

  def y_config(self) -> solver.DNCFConfig:
    """The y-step settings in the form :func:`solver.y_update` takes."""
    return solver.DNCFConfig(y_solver=self.y_solver, y_steps=self.y_steps,
                             y_learning_rate=self.lr)


# ---------------------------------------------------------------------------
# One fit: a group of images sharing theta (one image in per-image mode)
# ---------------------------------------------------------------------------


def _fit_group(cfg: DefenseConfig, images: Array, weights: Array,
               keys: Array, init_key: Array) -> Array:
  """Fits one theta to ``images`` (n, H, W, C); returns clip(f(y)) (n, H, W, C).

  ``weights`` (n,) are 1 for real images and 0 for padding: a padded image
  takes no part in the loss, so its theta and the others' are unchanged.
  """
  net = cfg.net(images.shape[-1])
  ycfg = cfg.y_config()
  render = lambda params, y: jax.vmap(lambda im: net.apply(params, im))(y)
  anchor = jax.vmap(lambda im: filters.gaussian_blur(im, cfg.rho))(images)
  noise = jax.vmap(lambda k: jax.random.normal(k, images.shape[1:]))(keys)
  anchor = anchor + cfg.epsilon * noise
  w = weights[:, None, None, None]
  n_real = jnp.maximum(jnp.sum(weights), 1.0)

  params = net.init(init_key, images[0])
  cover = penalty.coverage_mask(params, penalty.from_depth(cfg.penalty_depth))
  opt = optax.adam(cfg.lr)

  def y_fun(y, params):  # sum of squares, as solver.make_step (Eq. 5 with G + eps)
    d = render(params, y) - images
    return jnp.sum(w * (d * d + cfg.beta * jnp.square(y - anchor)))

  def theta_loss(params, y, gamma):
    d = render(params, y) - images
    data = jnp.sum(jnp.mean(d * d, axis=(1, 2, 3)) * weights) / n_real
    reg = penalty.penalty(params, cover, gamma)
    return data + reg, (data, reg)

  def step(carry, _):
    params, opt_state, y, ys, gamma = carry
    (_, (data, reg)), g = jax.value_and_grad(theta_loss, has_aux=True)(
        params, y, gamma)
    upd, opt_state = opt.update(g, opt_state, params)
    params = optax.apply_updates(params, upd)
    gamma = penalty.adapt_gamma(gamma, reg, data)
    y, ys, _, _ = solver.y_update(ycfg, y_fun, y, ys, params)
    return (params, opt_state, y, ys, gamma), data

  y0 = anchor
  ys = solver.init_y_state(ycfg, y_fun, y0, params)
  carry = (params, opt.init(params), y0, ys,
           jnp.asarray(cfg.gamma, jnp.float32))
  (params, _, y, _, _), _ = jax.lax.scan(step, carry, None,
                                         length=cfg.iterations)
  return jnp.clip(render(params, y), 0.0, 1.0)


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


# ---------------------------------------------------------------------------
# Sharded driver
# ---------------------------------------------------------------------------


def batch_mesh(devices: Optional[Sequence] = None) -> Mesh:
  """A one-axis ``Mesh`` (``"batch"``) over ``devices`` (default: all, every host)."""
  devs = np.asarray(jax.devices() if devices is None else list(devices))
  return Mesh(devs, ("batch",))


_COMPILED: dict = {}


def _compiled(cfg: DefenseConfig, mesh: Mesh):
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


# ---------------------------------------------------------------------------
# Adaptive evaluation: BPDA + EOT (Athalye et al. 2018)
# ---------------------------------------------------------------------------


def bpda(purifier: Callable[[Array], Array]) -> Callable[[Array], Array]:
  """``x -> purifier(x)`` forward, identity backward (BPDA)."""
  return lambda x: x + jax.lax.stop_gradient(purifier(x) - x)


def eot_pgd(logits_fn: Callable[[Array], Array],
            purifier: Callable[[Array, Array], Array], x: Array,
            labels: Array, key: Array, *, eps: float = 8 / 255,
            alpha: float = 2 / 255, steps: int = 7,
            samples: int = 4) -> Array:
  """L-inf PGD through ``purifier(x, key)`` with BPDA and EOT.

  Each step averages the cross-entropy gradient over ``samples`` draws of
  the purifier's randomness (fresh keys every step), each taken through
  :func:`bpda`; uniform random start in the eps-ball. Traceable: jit it
  with ``logits_fn`` and ``purifier`` closed over.
  """
  k0, kloop = jax.random.split(key)
  start = jnp.clip(x + jax.random.uniform(k0, x.shape, x.dtype, -eps, eps),
                   0.0, 1.0)

  def grad_one(adv, k):
    def loss(z):
      logits = logits_fn(bpda(lambda u: purifier(u, k))(z))
      return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(
          logits, labels))
    return jax.grad(loss)(adv)

  def body(i, adv):
    ks = jax.random.split(jax.random.fold_in(kloop, i), samples)
    g = jax.lax.map(lambda k: grad_one(adv, k), ks)
    g = jnp.mean(g, axis=0)
    adv = adv + alpha * jnp.sign(g)
    return jnp.clip(jnp.clip(adv, x - eps, x + eps), 0.0, 1.0)

  return jax.lax.fori_loop(0, steps, body, start)
