"""The run engine: programs compiled once, batches, per-image stopping, errors."""

import jax
import numpy as np
import pytest

import dncf_jax as dn
from dncf_jax import engine, physics
from dncf_jax.baselines import nlm

CFG = dn.DNCFConfig.from_flat(iterations=2, channels=8, scales=2,
                              skip_channels=2, checkpoint_every=2)


def _images(n=4, size=16, sigma=0.1, seed=0):
  """Smooth images (stripes of different frequencies) with Gaussian noise."""
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    rows = 0.5 + 0.3 * np.sin(np.linspace(0, 3 + i, size))
    clean = np.repeat(rows[:, None, None], size, 1) * np.ones((1, 1, 3))
    out.append(np.clip(clean + sigma * rng.standard_normal(clean.shape), 0, 1))
  return [o.astype(np.float32) for o in out]


def test_restore_compiles_once_for_every_mask_and_seed_of_a_shape():
  obs = _images(1)[0]
  rng = np.random.default_rng(1)
  masks = [(rng.uniform(size=(16, 16)) > 0.3).astype(np.float32)
           for _ in range(2)]
  results, compiles = [], []
  for m in masks:
    before = engine.compile_count()
    results.append(dn.restore(obs * m[:, :, None], physics.Inpaint(mask=m), CFG))
    compiles.append(engine.compile_count() - before)
  assert compiles[1] == 0, compiles
  assert results[1].compile_seconds == 0.0
  assert np.abs(results[0].image - results[1].image).max() > 1e-3
  # nor for another seed (it only makes the key)
  before = engine.compile_count()
  other = dn.restore(obs * masks[1][:, :, None], physics.Inpaint(mask=masks[1]),
                     CFG.replace(seed=1))
  assert engine.compile_count() == before
  assert np.abs(other.image - results[1].image).max() > 1e-3
  # nor for another budget or without the projection (read on the host)
  loose = dn.restore(obs * masks[1][:, :, None], physics.Inpaint(mask=masks[1]),
                     CFG.replace(seed=1, project=False, iterations=4))
  assert engine.compile_count() == before
  assert len(loose.history["data"]) == 4
  assert np.abs(loose.image - other.image).max() > 1e-3


def test_known_noise_levels_share_a_program():
  """A known sigma is a leaf of the task: another value, or one per image
  of a batch, compiles nothing."""
  obs = _images(3)                    # the batches of the tests below
  dn.restore(obs[0], physics.Denoise(noise_sigma=0.1), CFG)
  dn.restore_batch(obs, physics.Denoise(noise_sigma=0.1), CFG)
  before = engine.compile_count()
  one = dn.restore(obs[0], physics.Denoise(noise_sigma=0.05), CFG)
  each = dn.restore_batch(obs, [physics.Denoise(noise_sigma=s)
                                for s in (0.05, 0.2, 0.1)], CFG)
  assert engine.compile_count() == before
  assert [r.noise_sigma for r in (one, *each)] == pytest.approx(
      [0.05, 0.05, 0.2, 0.1])
  # the fused answer averages in the partner at each image's own sigma
  fused = dn.restore_batch(obs, [physics.Denoise(noise_sigma=s)
                                 for s in (0.05, 0.2, 0.1)], CFG.replace(fuse=0.5))
  for o, s, e, f in zip(obs, (0.05, 0.2, 0.1), each, fused):
    np.testing.assert_allclose(
        f.image, 0.5 * e.image + 0.5 * nlm.nlm_denoise(o, s), atol=1e-6)
  with pytest.raises(ValueError, match="noise_sigma must be a finite number"):
    dn.restore(obs[0], physics.Denoise(noise_sigma=-0.1), CFG)


def test_restore_batch_equals_single_restores():
  """``map`` (the CPU default) runs each image through the single-image
  program: the numbers of single runs, up to rounding. With the tests' XLA
  flags the batched and single programs round apart (1e-5 after two
  iterations, 1e-3 where a line search decides otherwise), and the
  alternating optimisation amplifies it over longer runs: compared after
  two iterations, on three images and ``CFG`` (the programs of the tests
  around it)."""
  obs = _images(3)
  keys = list(jax.random.split(jax.random.key(3), 3))
  task = physics.Denoise(noise_sigma=0.1)
  batch = dn.restore_batch(obs, task, CFG, keys, vectorize="map")
  for o, k, b in zip(obs, keys, batch):
    one = dn.restore(o, task, CFG, k)
    np.testing.assert_allclose(b.image, one.image, atol=5e-5)
    np.testing.assert_allclose(b.y, one.y, atol=5e-5)
    assert b.chosen == one.chosen
    np.testing.assert_allclose(b.history["data"], one.history["data"],
                               rtol=1e-5)
  # an ensemble is such a batch of one image: the mean of its members
  ens = dn.restore(obs[0], task, CFG.replace(ensemble=3), keys[0])
  members = [dn.restore(obs[0], task, CFG, jax.random.fold_in(keys[0], j))
             for j in range(3)]
  assert len(ens.members) == 3
  mean = np.mean([m.image for m in members], 0)
  assert np.abs(members[0].image - members[1].image).max() > 0.02
  np.testing.assert_allclose(ens.image, mean, atol=3e-3)


def test_vmapped_batch_equals_single_restores_up_to_rounding():
  """``vmap`` sums in another order than a single run (a few 1e-7 after
  the first step), and the alternating optimisation amplifies rounding as
  a change of machine would (about 3e-5 after 5 iterations): exact
  comparison after 2 iterations, by PSNR after 20."""
  obs = _images(4)
  clean = _images(4, sigma=0.0)
  keys = list(jax.random.split(jax.random.key(3), 4))
  task = physics.Denoise(noise_sigma=0.1)
  batch = dn.restore_batch(obs, task, CFG, keys, vectorize="vmap")
  longer = CFG.replace(iterations=20)          # the same programs
  batch20 = dn.restore_batch(obs, task, longer, keys, vectorize="vmap")
  for o, c, k, b, b20 in zip(obs, clean, keys, batch, batch20):
    one = dn.restore(o, task, CFG, k)
    np.testing.assert_allclose(b.image, one.image, atol=1e-5)
    np.testing.assert_allclose(b.y, one.y, atol=1e-5)
    one20 = dn.restore(o, task, longer, k)
    assert abs(dn.metrics.psnr(b20.image, c) -
               dn.metrics.psnr(one20.image, c)) < 0.05


def test_held_out_pixels_change_the_score_never_the_fit():
  obs = _images(1, size=32)[0]
  task = physics.Denoise()
  cfg = CFG.replace(iterations=20, checkpoint_every=10, holdout=0.2)
  key = jax.random.key(0)
  _, k_hold = jax.random.split(key)          # what DNCF.init draws
  _, held, _ = dn.select.hold_out(k_hold, obs, task.weights(obs), 0.2)
  other = np.where(held > 0, 1.0 - obs, obs).astype(np.float32)
  a, b = dn.restore(obs, task, cfg, key), dn.restore(other, task, cfg, key)
  np.testing.assert_array_equal(a.history["data"], b.history["data"])
  assert not np.allclose(a.history["checkpoint_residual"],
                         b.history["checkpoint_residual"])
  # the held-out residual is the noise (sigma 0.1) plus the error there
  res = a.history["checkpoint_residual"]
  assert np.all(res > 0.5 * 0.1 ** 2) and np.all(res < 4 * 0.1 ** 2), res


@pytest.mark.parametrize("vectorize", ["map", "vmap"])
def test_one_image_stops_early_while_the_others_go_on(vectorize):
  cfg = CFG.replace(iterations=30, checkpoint_every=10)
  obs = _images(3)
  # A flat image declared as noisy as the others: its fit reaches the
  # discrepancy target tau * sigma^2 at the first checkpoint.
  obs[1] = np.full_like(obs[1], 0.5)
  out = dn.restore_batch(obs, physics.Denoise(noise_sigma=0.1), cfg,
                         vectorize=vectorize)
  assert [len(r.history["data"]) for r in out] == [30, 10, 30]
  assert out[1].chosen_iteration == 10
  assert list(out[1].history["checkpoint_iteration"]) == [10]
  assert list(out[0].history["checkpoint_iteration"]) == [10, 20, 30]


def test_batch_size_splits_the_batch_into_parts_of_one_program():
  """Parts of one size, the last padded with problems that never step:
  eight images in parts of three run the program of three (that of the
  tests around it), compiling nothing, and give the unsplit answers."""
  assert [(p.start, p.stop) for p in dn.solver.chunks(5, 2)] == [
      (0, 2), (2, 4), (4, 5)]
  assert [p.stop - p.start for p in dn.solver.chunks(7, 4)] == [4, 3]
  assert dn.solver.chunks(3) == [slice(0, 3)]
  obs = _images(3)
  keys = list(jax.random.split(jax.random.key(0), 3))
  task = physics.Denoise(noise_sigma=0.1)
  whole = dn.restore_batch(obs, task, CFG, keys)
  before = engine.compile_count()
  parts = dn.restore_batch((obs * 3)[:8], task, CFG, (keys * 3)[:8],
                           batch_size=3)
  assert engine.compile_count() == before and len(parts) == 8
  for i, b in enumerate(parts):      # the third part: two images, padded
    np.testing.assert_allclose(whole[i % 3].image, b.image, atol=1e-5)
  with pytest.raises(ValueError, match="batch_size must be >= 1"):
    dn.restore_batch(obs, task, CFG, keys, batch_size=0)


def test_one_task_per_image():
  obs = _images(2)
  rng = np.random.default_rng(2)
  masks = [(rng.uniform(size=(16, 16)) > 0.5).astype(np.float32)
           for _ in range(2)]
  tasks = [physics.Inpaint(mask=m) for m in masks]
  keys = list(jax.random.split(jax.random.key(0), 2))
  out = dn.restore_batch([o * m[:, :, None] for o, m in zip(obs, masks)],
                         tasks, CFG, keys)
  one = dn.restore(obs[1] * masks[1][:, :, None], tasks[1], CFG, keys[1])
  other = dn.restore(obs[1] * masks[1][:, :, None], tasks[0], CFG, keys[1])
  # Image 1 is restored under its own mask: it is the single run, far
  # from the same run under the other image's mask.
  assert np.abs(out[1].image - one.image).max() < 1e-5
  assert np.abs(other.image - one.image).max() > 5e-2


def test_bad_batches_raise_one_clear_error(monkeypatch):
  obs = _images(2)
  task = physics.Denoise()
  with pytest.raises(ValueError, match="one shape"):
    dn.restore_batch([obs[0], obs[1][:8]], task, CFG)
  with pytest.raises(ValueError, match="3 keys for 2 images"):
    dn.restore_batch(obs, task, CFG, list(jax.random.split(jax.random.key(0), 3)))
  with pytest.raises(ValueError, match="3 tasks for 2 images"):
    dn.restore_batch(obs, [task] * 3, CFG)
  with pytest.raises(ValueError, match="empty"):
    dn.restore_batch([], task, CFG)
  monkeypatch.setattr(engine, "free_bytes", lambda: 1000)
  with pytest.raises(ValueError, match="batch_size="):
    dn.restore_batch(obs, task, CFG)
