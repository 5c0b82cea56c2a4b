"""Whole images as overlapping tiles, restored as one batch and blended.

A photo is cut into ``tile x tile`` windows (in the scene's pixels) that
overlap by ``overlap`` pixels; every window, with its own crop of the
task (a mask, a flash image: ``task.window(rows, cols)``), is one image of
:func:`solver.restore_batch`, so all tiles of a photo run in one compiled
program (``batch_size`` of them at a time), each with its own blind
choice and stop (with ``config.ensemble`` > 1, each tile's answer is its
members' mean). The tiles' answers are blended with a window that rises
as ``sin^2`` over the overlap, so the weights sum to one everywhere and
no seam is left. Memory is bounded by the tiles in flight
(``batch_size``), not by the photo.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, NamedTuple, Optional

import jax
import numpy as np

from dncf_jax import select, solver
from dncf_jax.config import DNCFConfig, require
from dncf_jax.engine import Result

Array = jax.Array


def origins(length: int, tile: int, overlap: int) -> list[int]:
  """Start of every tile along an axis of ``length``: as few tiles as
  share at least ``overlap`` pixels with their neighbours, evenly spaced,
  the first at 0 and the last flush with the end; one if ``length <= tile``."""
  if length <= tile:
    return [0]
  n = -(-(length - tile) // (tile - overlap)) + 1
  return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def ramp(size: int, overlap: int) -> np.ndarray:
  """A tile's 1-D blending weights: ``sin^2`` up over ``overlap`` pixels,
  1 in the middle, down again; positive everywhere."""
  w = np.ones(size, np.float64)
  n = min(overlap, size // 2)
  if n:
    up = np.sin(0.5 * np.pi * (np.arange(n) + 0.5) / n) ** 2
    w[:n], w[size - n:] = up, up[::-1]
  return w


def blend(tiles: np.ndarray, starts: list[tuple[int, int]],
          shape: tuple[int, int, int], overlap: int) -> np.ndarray:
  """Tiles (N, th, tw, C) at ``starts`` (row, col) into one image of
  ``shape``: each pixel the weighted mean of the tiles covering it."""
  th, tw = tiles.shape[1:3]
  w = np.outer(ramp(th, overlap), ramp(tw, overlap))[:, :, None]
  acc = np.zeros(shape, np.float64)
  norm = np.zeros(shape[:2] + (1,), np.float64)
  for t, (r, c) in zip(tiles, starts):
    acc[r:r + th, c:c + tw] += w * t
    norm[r:r + th, c:c + tw] += w
  return (acc / norm).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class TileConfig:
  """How a whole image is cut and restored."""

  tile: int = 128        # side of a tile in the scene's pixels
  overlap: int = 32      # pixels shared by neighbouring tiles

  def check(self, factor: int) -> None:
    require(self.tile >= 2 and self.tile % factor == 0,
            f"tile must be >= 2 and a multiple of the scale factor {factor}, "
            f"got {self.tile}")
    require(0 <= self.overlap < self.tile and self.overlap % factor == 0,
            f"overlap must be in [0, tile) and a multiple of {factor}, got "
            f"{self.overlap}")


class TiledResult(NamedTuple):
  """What :func:`restore_tiled` returns."""

  image: np.ndarray              # the blended blind answers, (H, W, C)
  tiles: list                    # one engine Result per tile
  starts: list                   # (row, col) of each tile in the scene
  noise_sigma: float             # sigma every tile's blind rule used
  seconds: float
  compile_seconds: float


def scale_factor(task) -> int:
  """The scene's pixels per observation pixel along a side (``factor`` of
  a super-resolution task, else 1)."""
  return int(getattr(task, "factor", 1))


def grid(obs_shape, cfg: TileConfig, factor: int = 1) -> list[tuple[int, int]]:
  """(row, col) of every tile in the observation's pixels: ``cfg.tile //
  factor`` windows over an observation of ``obs_shape`` (a scene of
  ``factor`` times its size), row by row."""
  t, o = cfg.tile // factor, cfg.overlap // factor
  return [(r, c) for r in origins(obs_shape[0], t, o)
          for c in origins(obs_shape[1], t, o)]


def _windows(obs_shape, task, cfg: TileConfig, factor: int):
  h, w = obs_shape[0], obs_shape[1]
  t = cfg.tile // factor
  win = getattr(task, "window", None)
  for r, c in grid(obs_shape, cfg, factor):
    rows, cols = slice(r, r + min(t, h)), slice(c, c + min(t, w))
    yield (r * factor, c * factor), rows, cols, (
        win(rows, cols) if win else task)


def restore_tiled(observation, task, config: DNCFConfig = DNCFConfig(),
                  key: Optional[Array] = None, tiles: TileConfig = TileConfig(),
                  *, batch_size: Optional[int] = None,
                  progress: Optional[Callable[[dict], None]] = None
                  ) -> TiledResult:
  """Restores a whole image tile by tile (see the module docstring).

  With an unknown noise level (``task.noise_sigma is None``) it is
  estimated once on the whole observation (:func:`select.estimate_noise_sigma`)
  and given to every tile, so that a flat tile does not misjudge it.
  """
  t0 = time.perf_counter()
  task.validate(observation)
  factor = scale_factor(task)
  tiles.check(factor)
  obs = np.asarray(observation, np.float32)
  if getattr(task, "noise_sigma", 0.0) is None:
    weights = np.asarray(task.weights(obs), np.float32)
    unsat = select.unsaturated(obs, weights)
    task = task.replace(noise_sigma=float(select.estimate_noise_sigma(obs, unsat)))
  scene = tuple(task.scene_shape(obs.shape))
  starts, images, tasks = [], [], []
  for start, rows, cols, sub in _windows(obs.shape, task, tiles, factor):
    starts.append(start)
    images.append(obs[rows, cols])
    tasks.append(sub)
  if key is None:
    key = jax.random.key(config.seed)
  keys = [jax.random.fold_in(key, i) for i in range(len(images))]
  results = solver.restore_batch(images, tasks, config, keys,
                                 batch_size=batch_size, progress=progress)
  image = blend(np.stack([r.image for r in results]), starts, scene,
                tiles.overlap)
  return TiledResult(image, results, starts, float(results[0].noise_sigma),
                     time.perf_counter() - t0,
                     sum(results[part.start].compile_seconds   # one per chunk
                         for part in solver.chunks(len(results), batch_size)))
