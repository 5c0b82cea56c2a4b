"""Resampling against PIL, Gaussian smoothing, physics shapes and errors."""

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from dncf_jax import filters, metrics, physics


def _rand(h, w, seed=0):
  return np.random.default_rng(seed).uniform(0.2, 0.8, (h, w, 3)).astype(np.float32)


@pytest.mark.parametrize("kernel,pil", [("lanczos", Image.LANCZOS),
                                        ("bicubic", Image.BICUBIC)])
@pytest.mark.parametrize("size", [(12, 8), (64, 40)])
def test_resize_matches_pil(kernel, pil, size):
  # smooth content so that PIL's 8-bit intermediate rounding stays small
  x = filters.gaussian_blur(jnp.asarray(_rand(32, 48)), 2.0)
  x8 = np.asarray(np.round(np.asarray(x) * 255), np.uint8)
  ref = np.asarray(Image.fromarray(x8).resize(size, pil), np.float32) / 255
  ours = np.asarray(filters.resize(jnp.asarray(x8 / 255.0, jnp.float32),
                                   size[1], size[0], kernel))
  assert ours.shape == ref.shape
  assert np.abs(ours - ref).max() < 3 / 255


def test_gaussian_blur_keeps_constants_and_reduces_noise():
  c = jnp.full((16, 16, 3), 0.3)
  assert np.allclose(filters.gaussian_blur(c, 1.5), 0.3, atol=1e-6)
  n = jnp.asarray(np.random.default_rng(0).standard_normal((32, 32, 3)), jnp.float32)
  assert float(jnp.std(filters.gaussian_blur(n, 1.0))) < 0.5 * float(jnp.std(n))


@pytest.mark.parametrize("sigma", [1.0, 6.0])   # 7 taps: shifted copies; 37: matrices
def test_gaussian_blur_matches_scipy_with_reflected_borders(sigma):
  from scipy.ndimage import convolve1d
  x = _rand(40, 56)
  k = filters.gaussian_kernel1d(sigma)
  assert (len(k) > filters.WIDE_TAPS) == (sigma > 4)
  ref = convolve1d(convolve1d(x, k, axis=0, mode="mirror"), k, axis=1,
                   mode="mirror")
  ours = np.asarray(filters.gaussian_blur(jnp.asarray(x), sigma))
  np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_smooth_fill_keeps_known_pixels_and_interpolates():
  x = jnp.asarray(np.tile(np.linspace(0, 1, 32)[None, :, None], (32, 1, 3)), jnp.float32)
  mask = np.ones((32, 32), np.float32)
  mask[10:20, 10:20] = 0
  filled = filters.smooth_fill(x * mask[:, :, None], jnp.asarray(mask)[:, :, None])
  assert np.allclose(np.asarray(filled)[mask > 0], np.asarray(x)[mask > 0])
  assert float(jnp.abs(filled - x).max()) < 0.02  # a ramp is harmonic


def _photo_crop():
  """A 64x96 part of the bundled astronaut (textured, in [0, 1])."""
  from dncf_jax import io as dio
  return dio.sample_image()[:64, :96]


def test_biharmonic_fill_matches_skimage():
  from skimage.restoration import inpaint_biharmonic
  gt = _photo_crop()
  mask = (np.random.default_rng(0).random(gt.shape[:2]) < 0.5).astype(np.float32)
  obs = gt * mask[:, :, None]
  ours = np.asarray(physics.Inpaint(mask=mask, fill="biharmonic").anchor(obs))
  ref = inpaint_biharmonic(obs, mask < 0.5, channel_axis=-1)
  assert np.array_equal(ours[mask > 0], obs[mask > 0])
  assert metrics.psnr(ours, ref) > 45          # measured 56.7 dB
  harmonic = np.asarray(physics.Inpaint(mask=mask).anchor(obs))
  assert metrics.psnr(ours, gt) > metrics.psnr(harmonic, gt) + 0.2


def test_projection_reproduces_the_measurements_and_moves_towards_the_scene():
  gt = _photo_crop()
  sr = physics.SuperResolution(4)
  lr = sr.forward(jnp.asarray(gt))
  bicubic = sr.anchor(lr)
  proj = sr.project(bicubic, lr)
  assert float(jnp.abs(sr.forward(proj) - lr).max()) < 1e-5
  assert metrics.psnr(np.asarray(proj), gt) > metrics.psnr(np.asarray(bicubic), gt) + 0.1
  mask = np.zeros(gt.shape[:2], np.float32)
  mask[::2] = 1
  inp = physics.Inpaint(mask=mask)
  out = np.asarray(inp.project(jnp.zeros_like(gt), gt * mask[:, :, None]))
  assert np.array_equal(out[::2], gt[::2]) and not out[1::2].any()


def test_task_shapes():
  obs = jnp.asarray(_rand(8, 12))
  sr = physics.SuperResolution(4)
  assert sr.scene_shape(obs.shape) == (32, 48, 3)
  assert sr.anchor(obs).shape == (32, 48, 3)
  assert sr.forward(sr.anchor(obs)).shape == obs.shape
  mask = np.ones((8, 12), np.float32)
  inp = physics.Inpaint(mask=mask)
  assert inp.forward(obs).shape == obs.shape


@pytest.mark.parametrize("bad,match", [
    (np.zeros((8, 8), np.float32), "must be an \\(H, W, C\\) array"),
    (np.zeros((3, 8, 8), np.float32), "channels-first"),
    (np.full((8, 8, 3), np.nan, np.float32), "NaN"),
    (np.zeros((8, 8, 3), np.uint8), "float image"),
])
def test_bad_observations_raise_clear_errors(bad, match):
  with pytest.raises(ValueError, match=match):
    physics.Denoise().validate(bad)


def test_mask_of_another_size_is_an_error():
  with pytest.raises(ValueError, match="same height and width"):
    physics.Inpaint(mask=np.ones((9, 8))).validate(np.zeros((8, 8, 3), np.float32))
  with pytest.raises(ValueError, match="unknown fill 'nearest'"):
    physics.Inpaint(mask=np.ones((8, 8)), fill="nearest").validate(
        np.zeros((8, 8, 3), np.float32))


def test_size_the_downsampler_cannot_take_is_an_error():
  with pytest.raises(ValueError, match="cannot be downsampled by 4"):
    physics.SuperResolution(4).check_scene((30, 32, 3))


def test_flash_shape_mismatch_is_an_error():
  with pytest.raises(ValueError, match="must match"):
    physics.FlashNoFlash(flash=np.zeros((8, 9, 3), np.float32)).validate(
        np.zeros((8, 8, 3), np.float32))


def test_deblur_forward_is_the_convolution():
  psf = physics.gaussian_psf(5, 1.0)
  x = jnp.asarray(_rand(16, 16))
  y = physics.Deblur(psf=psf).forward(x)
  from scipy.ndimage import convolve
  ref = np.stack([convolve(np.asarray(x)[:, :, c], psf, mode="mirror")
                  for c in range(3)], -1)
  assert np.allclose(np.asarray(y)[3:-3, 3:-3], ref[3:-3, 3:-3], atol=1e-5)


def test_tv_guess_is_a_stronger_first_guess_and_compiles():
  import jax
  from dncf_jax import io as dio, metrics
  gt = dio.sample_image()                        # 128x128
  obs = np.clip(gt + 25 / 255 * np.random.default_rng(0).standard_normal(gt.shape),
                0, 1).astype(np.float32)
  gauss = metrics.psnr(np.asarray(physics.Denoise().anchor(obs)), gt)
  task = physics.Denoise(tv=0.8)                 # sigma estimated
  tv_guess = np.asarray(task.anchor(obs))
  assert metrics.psnr(tv_guess, gt) > gauss + 1.0   # 27.2 against 25.7 dB
  np.testing.assert_allclose(jax.jit(task.anchor)(obs), tv_guess, atol=1e-5)
  known = physics.Denoise(tv=0.8, noise_sigma=25 / 255).anchor(obs)
  assert abs(metrics.psnr(np.asarray(known), gt) - metrics.psnr(tv_guess, gt)) < 0.5
  with pytest.raises(ValueError, match="tv must be"):
    physics.Denoise(tv=-1.0).validate(obs)


def test_nlm_guess_is_a_given_first_guess():
  import jax
  from dncf_jax import io as dio, metrics
  from dncf_jax.baselines import nlm
  gt = dio.sample_image()                        # 128x128
  obs = np.clip(gt + 25 / 255 * np.random.default_rng(0).standard_normal(gt.shape),
                0, 1).astype(np.float32)
  g = nlm.nlm_denoise(obs)                       # sigma estimated
  gauss = metrics.psnr(np.asarray(physics.Denoise().anchor(obs)), gt)
  assert metrics.psnr(g, gt) > gauss + 1.0, (metrics.psnr(g, gt), gauss)
  task = physics.Denoise(guess=g)
  task.validate(obs)
  np.testing.assert_array_equal(np.asarray(jax.jit(task.anchor)(obs)), g)
  np.testing.assert_array_equal(task.window(slice(8, 40), slice(0, 16)).guess,
                                g[8:40, :16])
  assert physics.Denoise().window(slice(0, 8), slice(0, 8)).guess is None
  with pytest.raises(ValueError, match="the guess has shape"):
    physics.Denoise(guess=g[:64]).validate(obs)
  with pytest.raises(ValueError, match="guess contains NaN"):
    physics.Denoise(guess=np.full_like(g, np.nan)).validate(obs)
  with pytest.raises(ValueError, match="h must be"):
    nlm.nlm_denoise(obs, h=0.0)


def test_wavelet_and_its_pair_with_nlm_beat_smoothing():
  from dncf_jax import io as dio
  from dncf_jax.baselines import nlm, wavelet
  gt = dio.sample_image()                        # 128x128
  obs = np.clip(gt + 25 / 255 * np.random.default_rng(1).standard_normal(gt.shape),
                0, 1).astype(np.float32)
  gauss = metrics.psnr(np.asarray(physics.Denoise().anchor(obs)), gt)
  w = wavelet.wavelet_denoise(obs)
  pair = wavelet.nlm_wavelet_denoise(obs, 25 / 255)
  assert w.dtype == np.float32 and w.shape == obs.shape
  assert metrics.psnr(w, gt) > gauss + 0.5, (metrics.psnr(w, gt), gauss)
  assert metrics.psnr(pair, gt) > metrics.psnr(w, gt)
  both = 0.5 * (nlm.nlm_denoise(obs, 25 / 255, 0.8, fast=False)
                + wavelet.wavelet_denoise(obs, 25 / 255))
  np.testing.assert_allclose(pair, both, atol=1e-6)
  # one shift only is the plain decimated transform: worse than spinning
  assert metrics.psnr(wavelet.wavelet_denoise(obs, shifts=0), gt) < metrics.psnr(w, gt)
  assert wavelet.wavelet_denoise(obs[:40, :50, :1]).shape == (40, 50, 1)
  with pytest.raises(ValueError, match="shifts must be"):
    wavelet.wavelet_denoise(obs, shifts=-1)
  with pytest.raises(ValueError, match="NaN"):
    wavelet.wavelet_denoise(np.full_like(obs, np.nan))
