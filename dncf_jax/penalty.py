"""The convexification penalty ``R(theta) = gamma * ||max(-theta, 0)||``.

Eq. 6 covers every weight; Eq. 7 a chosen subset. Which leaves are covered
is a predicate on the leaf's path (a tuple of names), so the penalty and
its hard limit (the projection onto non-negative weights, gamma -> inf)
are plain ``jax.tree_util`` maps over the parameter pytree.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

Array = jax.Array
PyTree = Any
Path = tuple[str, ...]
Predicate = Callable[[Path], bool]


def _names(path) -> Path:
  out = []
  for k in path:
    out.append(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))))
  return tuple(out)


def _conv_index(path: Path) -> int | None:
  for name in path:
    if name.startswith("conv_") and name[5:].isdigit():
      return int(name[5:])
  return None


def from_depth(depth: int, num_layers: int | None = None,
               biases: bool = False) -> Predicate:
  """Covers the convolutions ``conv_XX`` with ``XX >= depth`` (Eq. 7).

  A negative ``depth`` counts from the output (``-1``: the last layer only)
  and needs ``num_layers``. Kernels only unless ``biases``.
  """
  if depth < 0:
    if num_layers is None:
      raise ValueError("a negative depth needs num_layers")
    depth = max(num_layers + depth, 0)

  def pred(path: Path) -> bool:
    idx = _conv_index(path)
    if idx is None or idx < depth:
      return False
    return path[-1] == "kernel" or (biases and path[-1] == "bias")

  return pred


def all_kernels(path: Path) -> bool:
  """Covers every convolution / dense kernel (Eq. 6)."""
  return path[-1] == "kernel"


def coverage_mask(params: PyTree, pred: Predicate) -> PyTree:
  """A pytree of Python bools: which leaves ``pred`` covers."""
  return jax.tree_util.tree_map_with_path(
      lambda p, _: bool(pred(_names(p))), params)


def negative_part_norm(params: PyTree, mask: PyTree, norm: str = "l1") -> Array:
  """``sum ||max(-theta[indx], 0)||`` over the covered leaves (Eq. 7, gamma = 1).

  ``l1``: the sum of the negative parts' magnitudes; ``l2``: the Euclidean
  norm of all covered negative parts together.
  """
  if norm not in ("l1", "l2"):
    raise ValueError(f"penalty norm must be 'l1' or 'l2', got {norm!r}")
  leaves = [jnp.maximum(-x, 0.0) for x, m in zip(
      jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(mask)) if m]
  if not leaves:
    return jnp.zeros((), jnp.float32)
  if norm == "l1":
    return sum(jnp.sum(v) for v in leaves)
  return jnp.sqrt(sum(jnp.sum(jnp.square(v)) for v in leaves))


def penalty(params: PyTree, mask: PyTree, gamma: Array,
            norm: str = "l1") -> Array:
  """``R(theta) = gamma * ||max(-theta[indx], 0)||`` (Eqs. 6-7)."""
  return gamma * negative_part_norm(params, mask, norm)


def adapt_gamma(gamma: Array, reg: Array, data_loss: Array,
                factor: float = 0.25) -> Array:
  """The adaptive rule of section 6: ``gamma <- gamma/4`` when ``R > data loss``."""
  return jnp.where(reg > data_loss, gamma * factor, gamma)


def project_nonnegative(params: PyTree, mask: PyTree) -> PyTree:
  """The hard limit gamma -> inf: clip covered leaves at zero (as in ICNN)."""
  return jax.tree_util.tree_map(
      lambda x, m: jnp.maximum(x, 0.0) if m else x, params, mask)
