"""A restore's determinism, NaN-freedom, blindness, shapes and stopping."""

import jax
import numpy as np
import pytest

import dncf_jax as dn

from cases import CFG, case


def test_same_seed_same_image():
  obs, task, _ = case("denoise")
  cfg = CFG.replace(iterations=20)
  a = dn.restore(obs, task, cfg, jax.random.key(7)).image
  b = dn.restore(obs, task, cfg, jax.random.key(7)).image
  c = dn.restore(obs, task, cfg, jax.random.key(8)).image
  assert np.array_equal(a, b)
  assert not np.array_equal(a, c)


def test_fused_answer_is_the_mean_with_nl_means():
  from dncf_jax import metrics
  from dncf_jax.baselines import nlm, wavelet
  obs, task, gt = case("denoise")
  cfg = CFG.replace(iterations=20)
  a = dn.restore(obs, task, cfg, jax.random.key(7))
  before = dn.engine.compile_count()
  f = dn.restore(obs, task, cfg.replace(fuse=0.5), jax.random.key(7))
  assert dn.engine.compile_count() == before   # the same programs
  other = nlm.nlm_denoise(obs)                     # sigma estimated
  np.testing.assert_allclose(f.image, 0.5 * (a.image + other), atol=1e-6)
  assert f.chosen == a.chosen and f.chosen_iteration == a.chosen_iteration
  # 48x48, 20 iterations: DNCF 23.9 dB, NLM 26.6, their mean 25.9
  assert metrics.psnr(f.image, gt) > metrics.psnr(a.image, gt) + 1.0
  assert not dn.solver.fuses(dn.physics.SuperResolution(4))
  with pytest.raises(ValueError, match="fuse must be in"):
    cfg.replace(fuse=1.5).validate()
  # the other partner: the mean of pixelwise NLM and wavelet shrinkage
  g = dn.restore(obs, task, cfg.replace(fuse=0.5, fuse_with="nlm_wavelet"),
                 jax.random.key(7))
  pair = wavelet.nlm_wavelet_denoise(obs)
  np.testing.assert_allclose(g.image, 0.5 * (a.image + pair), atol=1e-6)
  assert metrics.psnr(g.image, gt) > metrics.psnr(a.image, gt) + 1.0
  with pytest.raises(ValueError, match="fuse_with must be one of"):
    cfg.replace(fuse_with="bm3d").validate()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["denoise", "sr", "inpaint", "flash", "deblur"])
def test_no_nan_in_five_seeds(name):
  cfg = CFG.replace(iterations=20)
  for seed in range(5):
    obs, task, _ = case(name, seed)
    r = dn.restore(obs, task, cfg, jax.random.key(seed))
    assert np.all(np.isfinite(r.image)), (name, seed)
    for k, v in r.history.items():
      assert np.all(np.isfinite(v)), (name, seed, k)


def test_selection_is_blind():
  """The ground truth changes the oracle history, never the answer."""
  obs, task, gt = case("denoise")
  cfg = CFG.replace(iterations=20)
  with_gt = dn.restore(obs, task, cfg, jax.random.key(0), reference=gt)
  other = np.clip(gt[::-1] + 0.2, 0, 1)
  with_other = dn.restore(obs, task, cfg, jax.random.key(0), reference=other)
  without = dn.restore(obs, task, cfg, jax.random.key(0))
  assert np.array_equal(with_gt.image, without.image)
  assert np.array_equal(with_other.image, without.image)
  assert with_gt.chosen == without.chosen
  assert "checkpoint_psnr" in with_gt.history and "checkpoint_psnr" not in without.history
  import inspect
  for fn in (dn.select.update_choice, dn.select.residuals,
             dn.select.estimate_noise_sigma, dn.select.residual):
    params = inspect.signature(fn).parameters
    assert not any(p in params for p in ("reference", "ground_truth", "gt"))


def test_feature_phase_runs_and_keeps_improving_the_fit():
  obs, task, _ = case("flash")
  cfg = CFG.replace(iterations=20, feature_iterations=20)
  r = dn.restore(obs, task, cfg, jax.random.key(0))
  assert len(r.history["data"]) == 40
  assert r.y.shape[-1] == cfg.net.skip_channels + cfg.net.channels  # features
  assert r.history["data"][-1] < r.history["data"][19]


def test_any_size_and_gray_images_are_padded_and_cropped_back():
  obs, task, gt = case("denoise")
  r = dn.restore(obs[:29, :30, :1], task, CFG.replace(iterations=10),
                 jax.random.key(0))
  assert r.image.shape == (29, 30, 1)


def test_reference_of_wrong_shape_is_an_error():
  obs, task, gt = case("denoise")
  with pytest.raises(ValueError, match="reference has shape"):
    dn.restore(obs, task, CFG, reference=gt[:16])


def test_noisy_run_stops_where_the_average_meets_the_discrepancy_target():
  obs, task, gt = case("denoise")
  r = dn.restore(obs, task, CFG.replace(iterations=300), jax.random.key(0))
  n = len(r.history["data"])
  assert r.chosen == "ema f(y)" and n == r.chosen_iteration < 300
  res = r.history["checkpoint_residual"][:, dn.select.EMA]
  target = CFG.select.tau * r.noise_sigma ** 2
  assert res[-1] <= target and np.all(res[:-1] > target)

