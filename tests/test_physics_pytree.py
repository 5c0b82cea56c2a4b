"""Tasks as pytrees: traced arrays, one compilation per shape, vmap over a
stack of tasks; the deblurring convolution against a reference; errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.ndimage import convolve

from dncf_jax import physics


def _rand(shape, seed=0):
  return np.random.default_rng(seed).uniform(0.2, 0.8, shape).astype(np.float32)


def _mask(h, w, seed):
  return (np.random.default_rng(seed).uniform(size=(h, w)) > 0.4).astype(
      np.float32)


def _counted(fn):
  """``fn`` jitted, and a list that grows by one each time it is traced."""
  traces = []

  def body(*args):
    traces.append(1)
    return fn(*args)

  return jax.jit(body), traces


def test_tasks_are_pytrees_with_static_settings():
  inp = physics.Inpaint(mask=_mask(6, 5, 0), fill_iterations=7)
  assert len(jax.tree_util.tree_leaves(inp)) == 1
  assert jax.tree_util.tree_leaves(physics.Denoise(rho=2.0)) == []
  assert jax.tree_util.tree_leaves(physics.SuperResolution(2)) == []
  assert (jax.tree_util.tree_structure(inp) !=
          jax.tree_util.tree_structure(physics.Inpaint(mask=_mask(6, 5, 0))))
  back = jax.tree_util.tree_map(lambda a: a, inp)
  assert back.fill_iterations == 7 and back.noise_sigma == 0.0


def test_inpaint_compiles_once_for_every_mask_of_a_shape():
  obs = jnp.asarray(_rand((12, 10, 3)))
  f, traces = _counted(lambda o, t: (t.forward(o), t.weights(o), t.anchor(o)))
  for seed in (1, 2):
    mask = _mask(12, 10, seed)
    task = physics.Inpaint(mask=mask, fill_iterations=20)
    got = f(obs, task)
    want = (task.forward(obs), task.weights(obs), task.anchor(obs))
    for a, b in zip(got, want):
      np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_array_equal(got[1][:, :, 0], mask)
  assert len(traces) == 1


def test_deblur_compiles_once_for_every_psf_of_a_size():
  obs = jnp.asarray(_rand((12, 10, 3)))
  f, traces = _counted(lambda o, t: t.forward(o))
  for psf in (physics.gaussian_psf(5, 1.0), _rand((5, 5), 3)):
    task = physics.Deblur(psf=psf)
    np.testing.assert_allclose(f(obs, task), task.forward(obs), atol=1e-6)
  assert len(traces) == 1


def test_flash_compiles_once_for_every_flash_image():
  obs = jnp.asarray(_rand((12, 10, 3)))
  f, traces = _counted(lambda o, t: t.anchor(o))
  for seed in (4, 5):
    task = physics.FlashNoFlash(flash=_rand((12, 10, 3), seed))
    np.testing.assert_allclose(f(obs, task), task.anchor(obs), atol=1e-6)
  assert len(traces) == 1


@pytest.mark.parametrize("mask_ndim", [2, 3])
def test_vmap_over_stacked_inpaint_tasks_equals_each_alone(mask_ndim):
  obs = jnp.asarray(_rand((3, 12, 10, 3)))
  masks = [_mask(12, 10, s) for s in (6, 7, 8)]
  if mask_ndim == 3:
    masks = [m[:, :, None] for m in masks]
  tasks = [physics.Inpaint(mask=m, fill_iterations=20) for m in masks]
  stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *tasks)
  assert stacked.mask.shape == (3,) + masks[0].shape
  f = lambda t, o: (t.forward(o), t.weights(o), t.anchor(o))
  got = jax.jit(jax.vmap(f))(stacked, obs)
  for i, task in enumerate(tasks):
    for a, b in zip(got, f(task, obs[i])):
      np.testing.assert_allclose(a[i], b, atol=1e-6)


def test_vmap_over_stacked_deblur_tasks_equals_each_alone():
  obs = jnp.asarray(_rand((2, 12, 10, 3)))
  tasks = [physics.Deblur(psf=physics.gaussian_psf(5, 1.0)),
           physics.Deblur(psf=_rand((5, 5), 9))]
  stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *tasks)
  got = jax.vmap(lambda t, o: t.forward(o))(stacked, obs)
  for i, task in enumerate(tasks):
    np.testing.assert_allclose(got[i], task.forward(obs[i]), atol=1e-6)


def _deblur_shifted_copies(x, psf):
  """The convolution as a sum of shifted copies of the reflected image."""
  k = jnp.asarray(psf, x.dtype)
  k = k / jnp.sum(k)
  rh, rw = k.shape[0] // 2, k.shape[1] // 2
  xp = jnp.pad(x, ((rh, rh), (rw, rw), (0, 0)), mode="reflect")
  h, w = x.shape[0], x.shape[1]
  return sum(k[k.shape[0] - 1 - i, k.shape[1] - 1 - j] * xp[i:i + h, j:j + w]
             for i in range(k.shape[0]) for j in range(k.shape[1]))


@pytest.mark.parametrize("psf_shape", [(5, 5), (3, 7), (7, 3), (1, 1)])
@pytest.mark.parametrize("channels", [1, 3])
def test_deblur_forward_matches_scipy_and_shifted_copies(psf_shape, channels):
  """An asymmetric, unnormalised PSF (the flip and the normalisation
  matter) against ``scipy.ndimage.convolve(mode="mirror")`` (the border
  reflected without repeating the edge pixel, as ``jnp.pad``'s ``reflect``)
  in float64, and against the sum of shifted copies in float32."""
  x = _rand((16, 13, channels), 1)
  psf = _rand(psf_shape, 2)
  y = np.asarray(physics.Deblur(psf=psf).forward(jnp.asarray(x)))
  k64 = psf.astype(np.float64) / psf.sum(dtype=np.float64)
  ref = np.stack([convolve(x[:, :, c].astype(np.float64), k64, mode="mirror")
                  for c in range(channels)], -1)
  np.testing.assert_allclose(y, ref, atol=1e-6)
  np.testing.assert_allclose(y, _deblur_shifted_copies(jnp.asarray(x), psf),
                             atol=1e-6)


@pytest.mark.parametrize("task,obs_shape,match", [
    (physics.Inpaint(), (8, 8, 3), "needs a mask"),
    (physics.Inpaint(mask=np.ones((8, 8, 2))), (8, 8, 3),
     "same height and width"),
    (physics.Inpaint(mask=np.zeros((8, 8))), (8, 8, 3), "no known pixel"),
    (physics.Inpaint(mask=np.full((8, 8), np.nan)), (8, 8, 3), "NaN"),
    (physics.FlashNoFlash(), (8, 8, 3), "needs the flash image"),
    (physics.FlashNoFlash(flash=np.zeros((8, 8, 3), np.uint8)), (8, 8, 3),
     "flash image must be a float image"),
    (physics.Deblur(), (8, 8, 3), "point spread function `psf`"),
    (physics.Deblur(psf=np.ones((4, 3))), (8, 8, 3), "odd sides"),
    (physics.Deblur(psf=np.ones(3)), (8, 8, 3), "odd sides"),
    (physics.Deblur(psf=np.ones((9, 3))), (8, 8, 3), "larger than the image"),
    (physics.Deblur(psf=np.zeros((3, 3))), (8, 8, 3), "non-zero sum"),
    (physics.SuperResolution(2.5), (8, 8, 3), "positive integer"),
    (physics.SuperResolution(2, kernel="box"), (8, 8, 3),
     "unknown downsampling kernel 'box'"),
])
def test_validate_names_the_problem(task, obs_shape, match):
  with pytest.raises(ValueError, match=match):
    task.validate(np.zeros(obs_shape, np.float32))


def test_validate_on_traced_tasks_checks_shapes_only():
  """Under jit a task's arrays are tracers: their shapes are still
  checked, their values (known only at run time) are not."""
  obs = np.zeros((8, 8, 3), np.float32)

  def check(o, t):
    t.validate(o)
    return o

  for task in (physics.Inpaint(mask=np.zeros((8, 8))),
               physics.Deblur(psf=np.zeros((3, 3))),
               physics.FlashNoFlash(flash=np.full((8, 8, 3), np.nan,
                                                  np.float32))):
    jax.jit(check)(obs, task)
  with pytest.raises(ValueError, match="same height and width"):
    jax.jit(check)(obs, physics.Inpaint(mask=np.ones((9, 8))))
  with pytest.raises(ValueError, match="odd sides"):
    jax.jit(check)(obs, physics.Deblur(psf=np.ones((4, 3))))
