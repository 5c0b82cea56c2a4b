"""Every task end to end on a small image (one compile per task)."""

import jax
import numpy as np
import pytest

import dncf_jax as dn
from dncf_jax import metrics

from cases import CFG, case


@pytest.mark.parametrize("name,conv", [
    ("denoise", "auto"), ("sr", "auto"), ("inpaint", "auto"),
    ("flash", "auto"), ("deblur", "auto"),
    # lax.conv, what a GPU runs, checked on CPU too (its compile is the
    # slowest on CPU; test_nets.py checks the convolutions agree)
    pytest.param("denoise", "xla", marks=pytest.mark.slow)])
def test_task_end_to_end_beats_its_initial_guess(name, conv):
  obs, task, gt = case(name)
  # Deblurring climbs slowly: after 60 iterations it is 25.91-26.53 dB
  # against the observation's 25.98 (by seed and convolution rounding),
  # after 150 iterations 27.82-28.63 dB (measured with im2col and taps).
  cfg = CFG.replace(iterations=150) if name == "deblur" else CFG
  cfg = cfg.replace(conv=conv)
  r = dn.restore(obs, task, cfg, jax.random.key(0), reference=gt)
  assert r.image.shape == task.scene_shape(obs.shape)
  assert np.all(np.isfinite(r.image))
  guess = np.clip(np.asarray(task.anchor(obs)), 0, 1)
  if name == "inpaint":
    # On random 30% holes the harmonic fill is hard to beat in 60 small
    # iterations (measured 30.6 vs 31.4 dB): require a real fill instead.
    assert metrics.psnr(r.image, gt) > metrics.psnr(obs, gt) + 10
    assert metrics.psnr(r.image, gt) > metrics.psnr(guess, gt) - 1.5
  elif gt is not None:
    assert metrics.psnr(r.image, gt) > metrics.psnr(guess, gt), name
  else:  # flash: closer to the no-flash image than the initial guess
    assert metrics.mse(r.image, obs) < metrics.mse(guess, obs)
  if name in ("sr", "inpaint"):   # projected onto the measurements
    err = np.abs(np.asarray(task.forward(r.image)) - obs)
    assert np.mean(err * np.asarray(task.weights(obs))) < 1e-4, name
  assert r.chosen in dn.select.CANDIDATES
  ev = r.history["y_evals"]
  assert np.mean(ev) <= CFG.y.steps + 3, f"line search too costly: {np.mean(ev)}"
