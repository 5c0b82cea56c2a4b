"""Baselines: TV (vs skimage), TV fits through the physics, DIP, DeepRED, bicubic.

Tiny crops of the bundled astronaut photo and tiny nets: the point is
correctness and wiring, not quality.
"""

import jax
import numpy as np
import pytest
from skimage import data
from skimage.restoration import denoise_tv_chambolle

from dncf_jax import baselines as bl
from dncf_jax import engine, filters, metrics, physics
from dncf_jax.baselines import tv

# One tiny net for every DIP / DeepRED run (1 scale: XLA:CPU compile time
# dominates these tests). Two chunks of two iterations: the step must be
# compiled once and reused.
TINY = dict(iterations=4, checkpoint_every=2, channels=4, scales=1,
            skip_channels=2)


def _crop(size=48):
  return (data.astronaut()[32:32 + size, 40:40 + size] / 255.0).astype(np.float32)


def _noisy(gt, sigma=0.1, seed=0):
  rng = np.random.default_rng(seed)
  return np.clip(gt + sigma * rng.standard_normal(gt.shape), 0, 1).astype(np.float32)


def _case(name, size=32):
  gt = _crop(size)
  if name == "denoise":
    return _noisy(gt), physics.Denoise(), gt
  if name == "sr":
    task = physics.SuperResolution(4)
    return np.asarray(task.forward(gt)), task, gt
  if name == "inpaint":
    mask = (np.random.default_rng(0).uniform(size=gt.shape[:2]) > 0.3).astype(np.float32)
    return gt * mask[:, :, None], physics.Inpaint(mask=mask), gt
  if name == "flash":
    flash = np.clip(gt * 1.3 + 0.05, 0, 1).astype(np.float32)
    noflash = np.asarray(filters.gaussian_blur(gt * 0.6, 1.0))
    return noflash, physics.FlashNoFlash(flash=flash), None
  raise KeyError(name)


# ---------------------------------------------------------------------------
# TV
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("weight", [0.05, 0.1, 0.2])
def test_tv_denoise_matches_skimage(weight):
  gt = _crop()
  obs = _noisy(gt)
  ref = denoise_tv_chambolle(obs, weight=weight, channel_axis=-1)
  ours = np.asarray(tv.tv_denoise(obs, weight))
  assert abs(metrics.psnr(ours, gt) - metrics.psnr(ref, gt)) < 0.3
  assert np.max(np.abs(ours - ref)) < 1e-3  # same algorithm, same stopping


def test_tv_lowers_the_objective():
  gt = _crop()
  obs = _noisy(gt)
  x = tv.tv_denoise(obs, 0.1)
  assert tv.tv_objective(x, obs, 0.1) < tv.tv_objective(obs, obs, 0.1)
  assert tv.tv_objective(x, obs, 0.1) <= tv.tv_objective(
      tv.tv_denoise(obs, 0.1, iters=5, eps=0.0), obs, 0.1) + 1e-3
  # The data-fit form through a downsampler: FISTA lowers its objective.
  lr, task, _ = _case("sr", 48)
  x0 = task.anchor(lr)
  x = tv.tv_restore(lr, task, 1e-3, iters=30, clip=False)
  assert tv.tv_objective(x, lr, 1e-3, task) < tv.tv_objective(x0, lr, 1e-3, task)


@pytest.mark.parametrize("name,lam", [("sr", 1e-3), ("inpaint", 1e-3)])
def test_tv_restore_beats_the_initial_guess(name, lam):
  # Measured on this 48x48 crop: SR 32.5 dB vs bicubic 30.8; inpainting
  # 41.1 vs the harmonic fill 40.9 (and 10.1 for the zero-filled input).
  obs, task, gt = _case(name, 48)
  guess = np.clip(np.asarray(task.anchor(obs)), 0, 1)
  out = tv.tv_restore(obs, task, lam, iters=100)
  assert out.shape == gt.shape and np.all(np.isfinite(out))
  assert metrics.psnr(out, gt) > metrics.psnr(guess, gt)


def test_tv_weight_helpers():
  gt = _crop(32)
  obs = _noisy(gt)
  grid = [0.02, 0.1, 0.5]
  best, psnrs = tv.tv_weight_oracle(obs, physics.Denoise(), gt, grid, iters=3)
  assert best == 0.1 and len(psnrs) == 3
  w, res = tv.tv_weight_discrepancy(obs, physics.Denoise(noise_sigma=0.1),
                                    grid, iters=3)
  assert w in grid and res == sorted(res)  # residual grows with the weight
  assert min(res) <= 0.01


def test_bicubic_is_the_sr_guess():
  lr, task, gt = _case("sr")
  up = bl.bicubic_upsample(lr, 4)
  assert up.shape == gt.shape
  np.testing.assert_allclose(up, np.clip(np.asarray(task.anchor(lr)), 0, 1))


# ---------------------------------------------------------------------------
# DIP and DeepRED
# ---------------------------------------------------------------------------


def _run(fn, *args, **kw):
  """``fn(*args)``; its programs (init, one chunk) compile at most once
  though it runs two chunks."""
  before = engine.compile_count()
  r = fn(*args, **kw)
  assert engine.compile_count() - before <= 2
  return r


def _check_run(r, task, obs, names):
  assert r.image.shape == task.scene_shape(obs.shape)
  assert np.all(np.isfinite(r.image))
  assert set(r.candidates) == set(names)
  assert len(r.history["loss"]) == TINY["iterations"]
  assert list(r.history["checkpoint_iteration"]) == [2, 4]
  assert r.chosen_iteration == TINY["iterations"]
  assert np.all(np.isfinite(r.history["loss"]))


@pytest.mark.parametrize("name", ["denoise", "sr", "inpaint", "flash"])
def test_dip_runs_every_task(name):
  obs, task, gt = _case(name)
  cfg = bl.dip_config(name, input_depth=4, **TINY)
  r = _run(bl.dip_restore, obs, task, cfg, jax.random.key(0), reference=gt)
  _check_run(r, task, obs, bl.dip.OUTPUTS)
  assert r.chosen == cfg.output
  if gt is not None:  # oracle curve: one PSNR per checkpoint and candidate
    assert r.history["checkpoint_psnr"].shape == (2, 2)
  if name == "denoise":  # another seed: the same programs, another image
    before = engine.compile_count()
    other = bl.dip_restore(obs, task, cfg.replace(seed=1), reference=gt)
    assert engine.compile_count() == before
    assert np.abs(other.image - r.image).max() > 1e-3


@pytest.mark.parametrize("name", ["denoise", "sr", "inpaint", "flash"])
def test_deepred_runs_every_task(name):
  obs, task, gt = _case(name)
  cfg = bl.deepred_config(name, input_depth=4, update_every=2,
                          denoiser_iters=5, **TINY)
  r = _run(bl.deepred_restore, obs, task, cfg, jax.random.key(0),
           reference=gt)
  _check_run(r, task, obs, bl.deepred.OUTPUTS)
  assert np.all(np.isfinite(r.candidates["x-u"]))


def test_presets_follow_the_notebooks():
  assert bl.dip_config("denoise").reg_noise_std == pytest.approx(1 / 30)
  assert bl.dip_config("sr").iterations == 2000
  assert bl.dip_config("inpaint").net.skip_channels == 128
  assert bl.dip_config("flash").input_kind == "flash"
  assert bl.deepred_config("sr").output == "x-u"
  for name in bl.dip.PRESETS:
    bl.dip_config(name).validate()
  for name in bl.deepred.PRESETS:
    bl.deepred_config(name).validate()


@pytest.mark.parametrize("bad,msg", [
    (dict(iterations=0), "iterations"),
    (dict(learning_rate=-1.0), "learning_rate"),
    (dict(input_kind="image"), "input_kind"),
    (dict(output="best"), "output"),
    (dict(upsample="cubic"), "upsample"),
    (dict(ema_decay=1.0), "ema_decay"),
    (dict(reg_noise_std=-0.1), "reg_noise_std"),
])
def test_bad_dip_config_raises(bad, msg):
  obs, task, _ = _case("denoise")
  with pytest.raises(ValueError, match=msg):
    bl.dip_restore(obs, task, bl.DIPConfig.from_flat(**bad))


@pytest.mark.parametrize("bad,msg", [
    (dict(mu=0.0), "mu"), (dict(beta=-1.0), "beta"),
    (dict(denoiser_weight=0.0), "denoiser_weight"),
    (dict(x_init="noise"), "x_init"), (dict(update_every=0), "update_every"),
])
def test_bad_deepred_config_raises(bad, msg):
  obs, task, _ = _case("denoise")
  with pytest.raises(ValueError, match=msg):
    bl.deepred_restore(obs, task, bl.DeepREDConfig.from_flat(**bad))


def test_bad_shapes_raise():
  obs, task, gt = _case("denoise")
  cfg = bl.DIPConfig.from_flat(**TINY)
  with pytest.raises(ValueError, match="channels-first"):
    bl.dip_restore(np.transpose(obs, (2, 0, 1)), task, cfg)
  with pytest.raises(ValueError, match="reference"):
    bl.dip_restore(obs, task, cfg, reference=gt[:16])
  with pytest.raises(ValueError, match="flash"):
    bl.dip_restore(obs, task, cfg.replace(input_kind="flash"))
  with pytest.raises(ValueError, match="DeepREDConfig"):
    bl.deepred_restore(obs, task, cfg)
  with pytest.raises(ValueError, match="observation's shape"):
    lr, sr, _ = _case("sr")
    bl.deepred_restore(lr, sr, bl.deepred_config("denoise", **TINY))
  with pytest.raises(ValueError, match="mask"):
    bl.dip_restore(obs, physics.Inpaint(mask=np.ones((8, 8))), cfg)
  with pytest.raises(ValueError, match="weight"):
    tv.tv_denoise(obs, -0.1)
  with pytest.raises(ValueError, match="lam"):
    tv.tv_restore(obs, task, 0.0)
  with pytest.raises(ValueError, match=r"\(H, W, C\)"):
    tv.tv_denoise(obs[:, :, 0], 0.1)
  with pytest.raises(ValueError, match="init"):
    tv.tv_restore(obs, task, 0.1, init=obs[:16])
