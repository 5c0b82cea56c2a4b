"""Bicubic interpolation, the classical super-resolution baseline.

It is :class:`dncf_jax.physics.SuperResolution`'s initial guess ``G``
(PIL's bicubic resize, reproduced in JAX by :mod:`dncf_jax.filters`).
"""

from __future__ import annotations

import numpy as np

from dncf_jax import physics


def bicubic_upsample(observation, factor: int = 4) -> np.ndarray:
  """The low-resolution (H, W, C) image upsampled by ``factor``, clipped to [0, 1]."""
  task = physics.SuperResolution(factor=factor, rho=0.0)
  task.validate(observation)
  return np.clip(np.asarray(task.anchor(np.asarray(observation, np.float32))),
                 0.0, 1.0)
