"""Seeded 2-D classification sets for the convexification study (section 6).

Every set is generated in numpy from ``np.random.default_rng(seed)``,
standardised to zero mean and unit variance per coordinate, shuffled and
split into train and test. Labels are integers ``0 .. K-1`` (``K = 2``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

NAMES = ("moons", "circles", "spirals", "xor", "blobs")


@dataclasses.dataclass(frozen=True)
class Split:
  """Train and test points ``(N, 2)`` float32 with labels ``(N,)`` int32."""
  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int = 2

  def box(self, margin: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The bounding box of all points, widened by ``margin``: the x-domain."""
    x = np.concatenate([self.x_train, self.x_test])
    return x.min(0) - margin, x.max(0) + margin


def _moons(n: int, rng: np.random.Generator, noise: float) -> tuple:
  n0 = n // 2
  t0 = rng.uniform(0, np.pi, n0)
  t1 = rng.uniform(0, np.pi, n - n0)
  a = np.stack([np.cos(t0), np.sin(t0)], 1)
  b = np.stack([1 - np.cos(t1), 0.5 - np.sin(t1)], 1)
  x = np.concatenate([a, b]) + noise * rng.standard_normal((n, 2))
  return x, np.repeat([0, 1], [n0, n - n0])


def _circles(n: int, rng: np.random.Generator, noise: float) -> tuple:
  n0 = n // 2
  t = rng.uniform(0, 2 * np.pi, n)
  r = np.where(np.arange(n) < n0, 1.0, 0.5)
  x = np.stack([r * np.cos(t), r * np.sin(t)], 1)
  x = x + noise * rng.standard_normal((n, 2))
  return x, np.repeat([0, 1], [n0, n - n0])


def _spirals(n: int, rng: np.random.Generator, noise: float) -> tuple:
  n0 = n // 2
  labels = np.repeat([0, 1], [n0, n - n0])
  t = np.sqrt(rng.uniform(0.02, 1.0, n)) * 3 * np.pi  # 1.5 turns
  phase = np.pi * labels
  x = np.stack([t * np.cos(t + phase), t * np.sin(t + phase)], 1) / (3 * np.pi)
  return x + noise * rng.standard_normal((n, 2)), labels


def _xor(n: int, rng: np.random.Generator, noise: float) -> tuple:
  x = rng.uniform(-1, 1, (n, 2))
  labels = (x[:, 0] * x[:, 1] < 0).astype(np.int64)
  return x + noise * rng.standard_normal((n, 2)), labels


def _blobs(n: int, rng: np.random.Generator, noise: float) -> tuple:
  n0 = n // 2
  labels = np.repeat([0, 1], [n0, n - n0])
  centers = np.array([[-1.0, -1.0], [1.0, 1.0]])
  return centers[labels] + (0.3 + noise) * rng.standard_normal((n, 2)), labels


_MAKERS = dict(moons=(_moons, 0.1), circles=(_circles, 0.08),
               spirals=(_spirals, 0.03), xor=(_xor, 0.05), blobs=(_blobs, 0.1))


def make(name: str, n: int = 600, seed: int = 0, test_fraction: float = 0.5,
         noise: float | None = None) -> Split:
  """The set ``name`` (one of ``NAMES``) with ``n`` points, split at random.

  ``noise`` overrides the set's default noise level (its std before
  standardisation).
  """
  if name not in _MAKERS:
    raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(NAMES)}")
  if n < 4:
    raise ValueError(f"n must be at least 4, got {n}")
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
  maker, default_noise = _MAKERS[name]
  rng = np.random.default_rng(seed)
  x, labels = maker(n, rng, default_noise if noise is None else noise)
  x = (x - x.mean(0)) / x.std(0)
  order = rng.permutation(n)
  x, labels = x[order].astype(np.float32), labels[order].astype(np.int32)
  n_test = max(1, min(n - 1, int(round(n * test_fraction))))
  return Split(name, x[n_test:], labels[n_test:], x[:n_test], labels[:n_test])


def parse_names(text: str) -> list[str]:
  """A comma-separated list of set names, each checked."""
  names = [s.strip() for s in text.split(",") if s.strip()]
  if not names:
    raise ValueError("no dataset named")
  for s in names:
    if s not in _MAKERS:
      raise ValueError(f"unknown dataset {s!r}; choose from {', '.join(NAMES)}")
  return names
