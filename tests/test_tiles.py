"""Whole images as tiles: cutting, blending without seams, end to end."""

import jax
import numpy as np
import pytest

import dncf_jax as dn
from dncf_jax import metrics, physics, tiles

TINY = dn.DNCFConfig.from_flat(iterations=40, channels=8, scales=2,
                               skip_channels=2, checkpoint_every=10)


def _photo(h=96, w=96, seed=0):
  """A smooth colour field with an edge and some texture."""
  rng = np.random.default_rng(seed)
  yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w),
                       indexing="ij")
  base = np.stack([0.3 + 0.4 * xx, 0.5 + 0.3 * np.sin(6 * yy),
                   0.2 + 0.5 * (xx > 0.6)], -1)
  tex = 0.05 * np.sin(25 * xx + 3 * rng.standard_normal()) * np.cos(19 * yy)
  return np.clip(base + tex[:, :, None], 0, 1).astype(np.float32)


def test_origins_cover_the_axis_with_the_overlap():
  assert tiles.origins(481, 128, 32) == [0, 88, 176, 265, 353]
  assert tiles.origins(321, 128, 32) == [0, 64, 129, 193]   # overlaps >= 32
  assert tiles.origins(100, 128, 32) == [0]
  assert tiles.origins(128, 128, 32) == [0]
  # the grid, row by row; x4 super-resolution cuts the observation at a quarter
  assert tiles.grid((321, 481, 3), tiles.TileConfig(256, 32)) == [
      (0, 0), (0, 112), (0, 225), (65, 0), (65, 112), (65, 225)]
  assert tiles.grid((80, 120, 3), tiles.TileConfig(256, 32), 4) == [
      (0, 0), (0, 56), (16, 0), (16, 56)]
  w = tiles.ramp(128, 32)
  assert np.all(w > 0) and w[64] == 1.0 and np.allclose(w, w[::-1])


def test_blending_the_tiles_of_an_image_gives_the_image():
  img = np.random.default_rng(0).uniform(size=(50, 70, 3)).astype(np.float32)
  starts = [(r, c) for r in tiles.origins(50, 24, 8)
            for c in tiles.origins(70, 24, 8)]
  parts = np.stack([img[r:r + 24, c:c + 24] for r, c in starts])
  np.testing.assert_allclose(tiles.blend(parts, starts, img.shape, 8), img,
                             atol=1e-6)


def test_tiled_denoising_leaves_no_seams():
  gt = _photo()
  rng = np.random.default_rng(1)
  obs = np.clip(gt + 0.1 * rng.standard_normal(gt.shape), 0, 1).astype(np.float32)
  cfg = tiles.TileConfig(tile=48, overlap=16)
  r = tiles.restore_tiled(obs, physics.Denoise(), TINY, jax.random.key(0), cfg)
  assert r.image.shape == gt.shape and len(r.starts) == 9
  err = np.abs(r.image - gt).mean(axis=2)
  # Tile edges inside the image (rows and columns where a tile starts or
  # ends), 2 pixels either side, against every other pixel.
  edges = sorted({e for s in tiles.origins(96, 48, 16) for e in (s, s + 48)}
                 - {0, 96})
  band = np.zeros(err.shape, bool)
  for e in edges:
    band[max(e - 2, 0):e + 2] = True
    band[:, max(e - 2, 0):e + 2] = True
  assert err[band].mean() <= 1.1 * err[~band].mean(), (err[band].mean(),
                                                      err[~band].mean())
  assert metrics.psnr(r.image, gt) > metrics.psnr(obs, gt) + 3


def test_tiled_inpainting_uses_each_tiles_mask():
  gt = _photo(64, 64)
  mask = (np.random.default_rng(2).uniform(size=(64, 64)) > 0.5).astype(np.float32)
  task = physics.Inpaint(mask=mask)
  cfg = tiles.TileConfig(tile=32, overlap=8)
  r = tiles.restore_tiled(gt * mask[:, :, None], task, TINY.replace(iterations=20),
                          jax.random.key(0), cfg)
  assert metrics.psnr(r.image, gt) > metrics.psnr(gt * mask[:, :, None], gt) + 8


def test_bad_tile_settings_raise():
  obs = _photo(32, 32)
  with pytest.raises(ValueError, match="overlap"):
    tiles.restore_tiled(obs, physics.Denoise(), TINY, None,
                        tiles.TileConfig(tile=32, overlap=32))
  with pytest.raises(ValueError, match="multiple of the scale factor 4"):
    tiles.restore_tiled(obs[:8, :8], physics.SuperResolution(4), TINY, None,
                        tiles.TileConfig(tile=30, overlap=8))
  with pytest.raises(ValueError, match="ensemble must be >= 1"):
    tiles.restore_tiled(obs, physics.Denoise(), TINY.replace(ensemble=0), None)
