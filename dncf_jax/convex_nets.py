"""FICNN, PICNN and CVXR-Net scorers of (point, label) pairs (section 6, Eq. 17).

A net maps a point ``x`` and a label proposal ``y`` (one-hot, or any point of
the box ``[0, 1]^K``) to a scalar energy ``f(x, y)``. Convention (ICNN's):
lower is better, the prediction is ``argmin_k f(x, e_k)``. Training fits
``f(x, e_k)`` to 0 for the true label and to 1 for the others with the
square distance (section 6), full batch, Adam.

Layers are named so that penalty predicates can pick the paths:
``wz_i`` are the z-path kernels (``z_{i-1} -> z_i``, the weights that must
be non-negative for convexity, Eq. 17's ``theta^z``), ``wu_i`` / ``wy_i``
the input passthroughs, ``uu_i`` / ``wzu_i`` / ``wyu_i`` PICNN's
unconstrained branch on ``x`` and its gates. The top layer is ``i =
layers``.

* FICNN (Amos, Xu, Kolter 2017): ``z_i = relu(W_z z_{i-1} + W_s s + b)`` on
  ``s = (x, y)``, non-negative ``W_z`` kept by projection after every step:
  convex in all inputs.
* PICNN: the same with an unconstrained branch ``u_{i+1} = relu(W u_i + b)``
  on ``x`` (``u_0 = x``) that gates both paths; convex in ``y`` only.
* CVXR-Net: FICNN's architecture with no constraint and
  ``R = gamma ||max(-W_z, 0)||`` added to the loss (Eqs. 6-7), optionally
  with the gamma/4 rule.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import time
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dncf_jax import penalty

Array = jax.Array
PyTree = Any

NETS = ("ficnn", "picnn", "cvxr")
MODES = ("none", "soft", "hard")
COVERAGES = ("all", "upper")

_Z_NAME = re.compile(r"wz_(\d+)$")


# ---------------------------------------------------------------------------
# Predicates on parameter paths (for penalty.coverage_mask)
# ---------------------------------------------------------------------------


def z_index(path: penalty.Path) -> Optional[int]:
  """The layer index ``i`` of a z-path kernel ``wz_i``, else ``None``."""
  if not path or path[-1] != "kernel":
    return None
  for name in path:
    m = _Z_NAME.match(name)
    if m:
      return int(m.group(1))
  return None


def z_kernels(path: penalty.Path) -> bool:
  """Covers every z-path kernel: the weights convexity needs >= 0 (Eq. 6)."""
  return z_index(path) is not None


def upper_z_kernels(depth: int) -> penalty.Predicate:
  """Covers the z-path kernels ``wz_i`` with ``i >= depth`` (Eq. 7)."""
  def pred(path: penalty.Path) -> bool:
    i = z_index(path)
    return i is not None and i >= depth
  return pred


# ---------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------


class FICNN(nn.Module):
  """Fully input-convex scorer ``f(x, y)`` (Eq. 17); CVXR-Net's architecture."""
  hidden: int = 200
  layers: int = 2

  @nn.compact
  def __call__(self, x: Array, y: Array) -> Array:
    lead = jnp.broadcast_shapes(x.shape[:-1], y.shape[:-1])
    s = jnp.concatenate([jnp.broadcast_to(x, lead + x.shape[-1:]),
                         jnp.broadcast_to(y, lead + y.shape[-1:])], -1)
    z = nn.relu(nn.Dense(self.hidden, name="wu_0")(s))
    for i in range(1, self.layers + 1):
      width = self.hidden if i < self.layers else 1
      pre = (nn.Dense(width, use_bias=False, name=f"wz_{i}")(z)
             + nn.Dense(width, name=f"wu_{i}")(s))
      z = nn.relu(pre) if i < self.layers else pre
    return z[..., 0]


class PICNN(nn.Module):
  """Partially input-convex scorer: any function of ``x``, convex in ``y``.

  ICNN's Eq. (3): ``z_{i+1} = relu(W_z (z_i * relu(W_zu u_i + b_zu)) +
  W_y (y * (W_yu u_i + b_yu)) + W_u u_i + b)``, with ``W_z >= 0``.
  """
  hidden: int = 200
  layers: int = 2

  @nn.compact
  def __call__(self, x: Array, y: Array) -> Array:
    u, z = x, None
    for i in range(self.layers + 1):
      width = self.hidden if i < self.layers else 1
      gated_y = y * nn.Dense(y.shape[-1], name=f"wyu_{i}")(u)
      pre = (nn.Dense(width, use_bias=False, name=f"wy_{i}")(gated_y)
             + nn.Dense(width, name=f"wu_{i}")(u))
      if z is not None:
        gated_z = z * nn.relu(nn.Dense(z.shape[-1], name=f"wzu_{i}")(u))
        pre = pre + nn.Dense(width, use_bias=False, name=f"wz_{i}")(gated_z)
      z = nn.relu(pre) if i < self.layers else pre
      if i < self.layers:
        u = nn.relu(nn.Dense(self.hidden, name=f"uu_{i}")(u))
    return z[..., 0]


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ConvexConfig:
  """One training run. ``mode=None`` means ``hard`` for FICNN and PICNN
  (projected gradient, as in ICNN) and ``soft`` for CVXR-Net.

  ``coverage``: ``all`` z-path kernels (what convexity needs, Eq. 6) or the
  ``upper`` one only (the top layer ``wz_layers``, Eq. 7). ``adaptive``:
  ``gamma <- gamma/4`` whenever ``R`` exceeds the data loss (section 6).
  """
  net: str = "cvxr"
  hidden: int = 200
  layers: int = 2
  steps: int = 2000
  lr: float = 1e-3
  gamma: float = 0.1
  mode: Optional[str] = None
  coverage: str = "all"
  norm: str = "l1"
  adaptive: bool = False
  seed: int = 0

  def resolved_mode(self) -> str:
    if self.mode is not None:
      return self.mode
    return "soft" if self.net == "cvxr" else "hard"

  def validate(self) -> "ConvexConfig":
    if self.net not in NETS:
      raise ValueError(f"net must be one of {NETS}, got {self.net!r}")
    if self.resolved_mode() not in MODES:
      raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
    if self.coverage not in COVERAGES:
      raise ValueError(f"coverage must be one of {COVERAGES}, got {self.coverage!r}")
    if self.norm not in ("l1", "l2"):
      raise ValueError(f"norm must be 'l1' or 'l2', got {self.norm!r}")
    if self.hidden < 1 or self.layers < 1 or self.steps < 1:
      raise ValueError("hidden, layers and steps must be positive, got "
                       f"{self.hidden}, {self.layers}, {self.steps}")
    if not (self.lr > 0 and np.isfinite(self.lr)):
      raise ValueError(f"lr must be positive, got {self.lr}")
    if not (self.gamma >= 0 and np.isfinite(self.gamma)):
      raise ValueError(f"gamma must be finite and >= 0, got {self.gamma}")
    return self


def build(cfg: ConvexConfig) -> nn.Module:
  """The Flax module of ``cfg.net`` (FICNN's for CVXR-Net)."""
  cls = PICNN if cfg.net == "picnn" else FICNN
  return cls(hidden=cfg.hidden, layers=cfg.layers)


def canonical(cfg: ConvexConfig) -> ConvexConfig:
  """The config with what does not change the run made explicit or dropped:
  the mode resolved, CVXR-Net's architecture named ``ficnn``, gamma zero
  unless the mode is ``soft``. Equal canonical configs train equal nets."""
  mode = cfg.resolved_mode()
  return dataclasses.replace(
      cfg, mode=mode, net="picnn" if cfg.net == "picnn" else "ficnn",
      gamma=cfg.gamma if mode == "soft" else 0.0,
      adaptive=cfg.adaptive and mode == "soft")


def coverage_predicate(cfg: ConvexConfig) -> penalty.Predicate:
  """Which kernels the penalty or the projection covers."""
  return z_kernels if cfg.coverage == "all" else upper_z_kernels(cfg.layers)


def convex_inputs(cfg: ConvexConfig) -> str:
  """``"xy"`` (FICNN, CVXR-Net: all inputs) or ``"y"`` (PICNN: the label)."""
  return "y" if cfg.net == "picnn" else "xy"


# ---------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------


def _check_points(x: Any, dim: Optional[int] = None) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 2 or x.shape[0] < 1:
    raise ValueError(f"points must have shape (N, d), got {x.shape}")
  if dim is not None and x.shape[1] != dim:
    raise ValueError(f"points must have {dim} coordinates, got shape {x.shape}")
  if not np.all(np.isfinite(x)):
    raise ValueError("points contain NaN or inf")
  return x.astype(np.float32)


def _check_labels(labels: Any, n: int, num_classes: Optional[int]) -> tuple:
  labels = np.asarray(labels)
  if labels.shape != (n,):
    raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
  k = int(labels.max()) + 1 if num_classes is None else num_classes
  if k < 2 or labels.min() < 0 or labels.max() >= k:
    raise ValueError(f"labels must lie in 0..{k - 1} with at least 2 classes")
  return labels.astype(np.int32), k


def energies(module: nn.Module, params: PyTree, x: Array,
             num_classes: int) -> Array:
  """``f(x, e_k)`` for every label: ``(N, K)`` (Eq. 17 at one-hot ``y``)."""
  eye = jnp.eye(num_classes, dtype=x.dtype)
  return module.apply(params, x[:, None, :], eye[None])


@functools.partial(jax.jit, static_argnums=(0, 3))
def _energies_jit(module, params, x, num_classes):
  return energies(module, params, x, num_classes)


def scores(cfg: ConvexConfig, params: PyTree, x: Any,
           num_classes: int = 2) -> np.ndarray:
  """``f(x, e_k)`` for points ``x`` of shape ``(N, d)``: ``(N, K)`` energies."""
  x = _check_points(x, _input_dim(params, cfg, num_classes))
  return np.asarray(_energies_jit(build(cfg), params, jnp.asarray(x),
                                  num_classes))


def predict(cfg: ConvexConfig, params: PyTree, x: Any,
            num_classes: int = 2) -> np.ndarray:
  """The label of lowest energy for each point (ICNN's argmin convention)."""
  return np.argmin(scores(cfg, params, x, num_classes), -1)


def accuracy(cfg: ConvexConfig, params: PyTree, x: Any, labels: Any,
             num_classes: int = 2) -> float:
  x = _check_points(x)
  labels, _ = _check_labels(labels, x.shape[0], num_classes)
  return float(np.mean(predict(cfg, params, x, num_classes) == labels))


def _input_dim(params: PyTree, cfg: ConvexConfig, num_classes: int) -> int:
  p = params["params"]
  if cfg.net == "picnn":
    return int(p["uu_0"]["kernel"].shape[0])
  return int(p["wu_0"]["kernel"].shape[0]) - num_classes


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Fit:
  """A trained net: its params, per-step history (numpy) and settings."""
  config: ConvexConfig
  params: PyTree
  history: dict
  num_classes: int
  seconds: float


def init_params(cfg: ConvexConfig, key: Array, dim: int,
                num_classes: int) -> PyTree:
  """Flax init; in ``hard`` mode projected at once so every step is feasible."""
  params = build(cfg).init(key, jnp.zeros((1, dim)), jnp.zeros((1, num_classes)))
  if cfg.resolved_mode() == "hard":
    params = penalty.project_nonnegative(
        params, penalty.coverage_mask(params, coverage_predicate(cfg)))
  return params


def _min_covered(params: PyTree, mask: PyTree) -> Array:
  leaves = [jnp.min(x) for x, m in zip(jax.tree_util.tree_leaves(params),
                                       jax.tree_util.tree_leaves(mask)) if m]
  return jnp.min(jnp.stack(leaves))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _train(cfg: ConvexConfig, num_classes: int, params: PyTree, x: Array,
           labels: Array, gamma: Array):
  module, mode = build(cfg), cfg.resolved_mode()
  mask = penalty.coverage_mask(params, coverage_predicate(cfg))
  zmask = penalty.coverage_mask(params, z_kernels)
  target = 1.0 - jax.nn.one_hot(labels, num_classes)
  tx = optax.adam(cfg.lr)

  def loss_fn(p, g):
    data = jnp.mean((energies(module, p, x, num_classes) - target) ** 2)
    reg = (penalty.penalty(p, mask, g, cfg.norm) if mode == "soft"
           else jnp.zeros(()))
    return data + reg, (data, reg)

  def step(carry, _):
    p, opt, g = carry
    (_, (data, reg)), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, g)
    updates, opt = tx.update(grads, opt, p)
    p = optax.apply_updates(p, updates)
    if mode == "hard":
      p = penalty.project_nonnegative(p, mask)
    if cfg.adaptive and mode == "soft":
      g = penalty.adapt_gamma(g, reg, data)
    out = dict(data=data, reg=reg, gamma=g, min_z=_min_covered(p, zmask))
    return (p, opt, g), out

  (params, _, _), hist = jax.lax.scan(
      step, (params, tx.init(params), gamma), None, length=cfg.steps)
  return params, hist


def fit(cfg: ConvexConfig, x: Any, labels: Any,
        num_classes: Optional[int] = None) -> Fit:
  """Trains ``cfg.net`` on ``(x, labels)`` full-batch for ``cfg.steps`` steps.

  History per step: ``data`` (the square distance), ``reg`` (``R``, Eq. 7),
  ``gamma``, ``min_z`` (the smallest z-path weight after the step).
  """
  cfg.validate()
  x = _check_points(x)
  labels, k = _check_labels(labels, x.shape[0], num_classes)
  params = init_params(cfg, jax.random.key(cfg.seed), x.shape[1], k)
  # gamma and the seed are traced values: one compiled program serves all
  static = dataclasses.replace(canonical(cfg), gamma=0.0, seed=0)
  t0 = time.perf_counter()
  params, hist = _train(static, k, params, jnp.asarray(x), jnp.asarray(labels),
                        jnp.float32(cfg.gamma))
  params = jax.block_until_ready(params)
  return Fit(cfg, params, {n: np.asarray(v) for n, v in hist.items()}, k,
             time.perf_counter() - t0)


# ---------------------------------------------------------------------------
# Convexity report
# ---------------------------------------------------------------------------


def negative_mass(params: PyTree, pred: penalty.Predicate) -> float:
  """``sum max(-w, 0) / sum |w|`` over the kernels ``pred`` covers."""
  mask = penalty.coverage_mask(params, pred)
  neg = penalty.negative_part_norm(params, mask, "l1")
  total = sum(float(jnp.sum(jnp.abs(w))) for w, m in zip(
      jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(mask)) if m)
  return float(neg) / total if total > 0 else 0.0


def _energy64(module: nn.Module, params: PyTree, x: np.ndarray,
              y: np.ndarray) -> np.ndarray:
  """``f(x, y)`` in float64, so that a 1e-6 Jensen tolerance is meaningful."""
  with jax.enable_x64(True):
    p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    return np.asarray(module.apply(p64, jnp.asarray(x, jnp.float64),
                                   jnp.asarray(y, jnp.float64)))


def jensen_violations(cfg: ConvexConfig, params: PyTree, low: Any, high: Any,
                      num_classes: int = 2, segments: int = 1000,
                      points_per_segment: int = 8, seed: int = 0,
                      tol: float = 1e-6) -> dict:
  """Checks ``f(t a + (1-t) b) <= t f(a) + (1-t) f(b) + tol`` on random segments.

  For FICNN and CVXR-Net the endpoints ``a, b`` are random points of the
  x-box ``[low, high]`` times the label box ``[0, 1]^K``; for PICNN ``x`` is
  one random point per segment and only ``y`` moves. ``rate``: the fraction
  of segments with at least one violating ``t``; ``max_gap``: the largest
  ``f(mid) - chord``.
  """
  low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
  if low.shape != high.shape or low.ndim != 1 or np.any(low >= high):
    raise ValueError(f"need low < high, two 1-D boxes, got {low} and {high}")
  if low.shape[0] != _input_dim(params, cfg, num_classes):
    raise ValueError(f"the box has {low.shape[0]} coordinates, the net takes "
                     f"{_input_dim(params, cfg, num_classes)}")
  rng = np.random.default_rng(seed)
  d, k, s, m = low.shape[0], num_classes, segments, points_per_segment
  xa = rng.uniform(low, high, (s, d))
  xb = xa if convex_inputs(cfg) == "y" else rng.uniform(low, high, (s, d))
  ya, yb = rng.uniform(0, 1, (s, k)), rng.uniform(0, 1, (s, k))
  t = rng.uniform(0, 1, (s, m, 1))
  xt = t * xa[:, None] + (1 - t) * xb[:, None]
  yt = t * ya[:, None] + (1 - t) * yb[:, None]
  module = build(cfg)
  fa, fb = _energy64(module, params, xa, ya), _energy64(module, params, xb, yb)
  ft = _energy64(module, params, xt, yt)
  gap = ft - (t[..., 0] * fa[:, None] + (1 - t[..., 0]) * fb[:, None])
  return dict(rate=float(np.mean(np.any(gap > tol, axis=1))),
              max_gap=float(max(gap.max(), 0.0)), segments=s,
              points_per_segment=m, convex_in=convex_inputs(cfg))


def convexity_report(cfg: ConvexConfig, params: PyTree, low: Any, high: Any,
                     num_classes: int = 2, segments: int = 1000,
                     seed: int = 0) -> dict:
  """Negative weight mass (all z-path kernels, and those ``cfg`` covers) and
  the Jensen violation rate in the inputs the net is meant to be convex in."""
  out = dict(negative_mass_z=negative_mass(params, z_kernels),
             negative_mass_covered=negative_mass(params, coverage_predicate(cfg)))
  for i in range(1, cfg.layers + 1):
    out[f"negative_mass_wz_{i}"] = negative_mass(
        params, lambda p, i=i: z_index(p) == i)
  j = jensen_violations(cfg, params, low, high, num_classes, segments, seed=seed)
  out.update(jensen_rate=j["rate"], jensen_max_gap=j["max_gap"],
             convex_in=j["convex_in"])
  return out
