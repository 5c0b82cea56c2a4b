"""Degradation operators ``A`` and initial guesses ``G`` for each task.

Every task is one small frozen dataclass with

* ``validate(obs)``: checks the observation (and the task's own arrays)
  and raises ``ValueError`` naming the problem;
* ``forward(x)``: ``A(x)``, the image formation applied to a candidate
  scene ``x`` of shape ``scene_shape(obs)``;
* ``weights(obs)``: which entries of the observation are measured
  (1 everywhere but for inpainting);
* ``anchor(obs)``: ``G(I_s)``, the smooth initial guess that ``y`` starts at
  and is pulled towards by the ``beta`` term of the loss (paper, Eq. 5);
* ``noise_sigma``: the noise level of the observation if known, ``None``
  to have :mod:`dncf_jax.select` estimate it;
* ``project(x, obs)`` (noiseless tasks whose measurements determine part
  of the scene: ``SuperResolution``, ``Inpaint``): the image nearest ``x``
  that reproduces the observation exactly, ``A(x) = obs``. The true scene
  is such an image, so projecting never moves ``x`` away from it;
* ``window(rows, cols)`` (tasks with arrays of the observation's size:
  ``Inpaint``, ``FlashNoFlash``): the task of a window of the observation,
  for :mod:`dncf_jax.tiles`; the others serve every window as they are.

A new task is a new class here; the solver is shared.

Tasks are pytrees (``flax.struct`` dataclasses): the arrays (``mask``,
``flash``, ``psf``) and a denoising task's known ``noise_sigma`` are
leaves and every other field is static. A task passed as an argument to
a jitted function therefore has its leaves traced, so one compiled
program serves every mask (flash image, PSF, noise level) of a shape.
Tasks of one class, one array shape and equal static fields stack into
one task with a leading batch axis on its arrays,
``jax.tree_util.tree_map(lambda *a: jnp.stack(a), *tasks)``, which
``jax.vmap`` maps over like any other batched argument. The methods
accept the arrays as given (NumPy or JAX, a mask 2-D or 3-D) and convert
them with ``jnp.asarray``; ``validate`` checks their values only where
they are concrete.
"""

from __future__ import annotations

from typing import Optional, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from dncf_jax import filters, select

Array = jax.Array


def _traced(x) -> bool:
  return isinstance(x, jax.core.Tracer)


def check_image(x, name: str = "observation") -> None:
  """Raises ``ValueError`` unless ``x`` is a finite (H, W, C) image."""
  shape = getattr(x, "shape", None)
  if shape is None or len(shape) != 3:
    raise ValueError(
        f"{name} must be an (H, W, C) array, got shape {shape}")
  if shape[2] not in (1, 3):
    raise ValueError(
        f"{name} must have 1 or 3 channels (H, W, C), got {shape[2]} "
        f"channels (shape {shape}); is it channels-first?")
  if shape[0] < 2 or shape[1] < 2:
    raise ValueError(f"{name} is too small: {shape}")
  if _traced(x):
    return
  arr = np.asarray(x)
  if not np.issubdtype(arr.dtype, np.floating):
    raise ValueError(
        f"{name} must be a float image in [0, 1], got dtype {arr.dtype}")
  if not np.all(np.isfinite(arr)):
    raise ValueError(f"{name} contains NaN or infinite values")


class Task(Protocol):
  noise_sigma: Optional[float]

  def validate(self, obs: Array) -> None: ...
  def scene_shape(self, obs_shape: tuple[int, ...]) -> tuple[int, ...]: ...
  def forward(self, x: Array) -> Array: ...
  def weights(self, obs: Array) -> Array: ...
  def anchor(self, obs: Array) -> Array: ...


class _Identity:
  """``A`` = identity on a scene of the observation's shape, all measured."""

  def scene_shape(self, obs_shape):
    return tuple(obs_shape)

  def forward(self, x: Array) -> Array:
    return x

  def weights(self, obs: Array) -> Array:
    return jnp.ones_like(obs)


def _static(default):
  """A static (non-pytree) field: part of the compiled program, not traced."""
  return struct.field(pytree_node=False, default=default)


@struct.dataclass(eq=False)
class Denoise(_Identity):
  """``A`` = identity, ``G`` = Gaussian smoothing of width ``rho``.

  ``tv > 0`` makes ``G`` total-variation denoising instead (ROF by
  Chambolle's algorithm, 100 steps) with weight ``tv * sigma``, ``sigma``
  the known ``noise_sigma`` or else the one estimated from the observation:
  a stronger first guess than the paper's smoothing filter.
  ``guess``: ``G(I_s)`` given as an image of the observation's shape (a
  classical denoiser's answer, e.g. :func:`dncf_jax.baselines.nlm_denoise`),
  used as it is in place of either.
  """

  rho: float = _static(1.0)
  noise_sigma: Optional[float] = None     # a leaf: one program for every value
  tv: float = _static(0.0)
  guess: Optional[Array] = None

  def validate(self, obs: Array) -> None:
    check_image(obs)
    sigma = self.noise_sigma
    if sigma is not None and not _traced(sigma) and not np.all(
        np.isfinite(sigma) & (np.asarray(sigma) >= 0)):
      raise ValueError(f"noise_sigma must be a finite number >= 0 (or None "
                       f"to estimate it), got {self.noise_sigma}")
    if not (np.isfinite(self.tv) and self.tv >= 0):
      raise ValueError(f"tv must be a finite number >= 0, got {self.tv}")
    if self.guess is not None:
      if tuple(np.shape(self.guess)) != tuple(obs.shape):
        raise ValueError(f"the guess has shape {tuple(np.shape(self.guess))} "
                         f"but the observation is {tuple(obs.shape)}")
      if not _traced(self.guess) and not np.all(np.isfinite(self.guess)):
        raise ValueError("the guess contains NaN or infinite values")

  def window(self, rows: slice, cols: slice) -> "Denoise":
    if self.guess is None:
      return self
    return self.replace(guess=np.asarray(self.guess)[rows, cols])

  def anchor(self, obs: Array) -> Array:
    if self.guess is not None:
      return jnp.asarray(self.guess, jnp.float32)
    if self.tv > 0:
      from dncf_jax.baselines import tv
      obs = jnp.asarray(obs)
      sigma = (select.estimate_noise_sigma(obs) if self.noise_sigma is None
               else self.noise_sigma)
      return tv.tv_denoise_steps(obs, self.tv * sigma, 100)
    return filters.gaussian_blur(obs, self.rho)


@struct.dataclass
class SuperResolution:
  """``A`` = antialiased downsampling by ``factor`` (as ``PIL.Image.resize``).

  ``G`` is bicubic upsampling of the low-resolution observation, optionally
  smoothed by ``rho``.
  """

  factor: int = _static(4)
  kernel: str = _static("lanczos")
  rho: float = _static(0.0)
  noise_sigma: Optional[float] = _static(0.0)

  def validate(self, obs: Array) -> None:
    check_image(obs)
    if int(self.factor) != self.factor or self.factor < 1:
      raise ValueError(f"super-resolution factor must be a positive integer, "
                       f"got {self.factor}")
    if self.kernel not in ("lanczos", "bicubic", "bilinear"):
      raise ValueError(f"unknown downsampling kernel {self.kernel!r}; "
                       "choose lanczos, bicubic or bilinear")

  def check_scene(self, hr_shape) -> None:
    """Raises unless a high-resolution image of ``hr_shape`` can be downsampled."""
    h, w = hr_shape[0], hr_shape[1]
    if h % self.factor or w % self.factor:
      raise ValueError(
          f"a {h}x{w} image cannot be downsampled by {self.factor}: both "
          f"sides must be multiples of the factor (crop it to "
          f"{h - h % self.factor}x{w - w % self.factor})")

  def scene_shape(self, obs_shape):
    return (obs_shape[0] * self.factor, obs_shape[1] * self.factor,
            obs_shape[2])

  def forward(self, x: Array) -> Array:
    self.check_scene(x.shape)
    return filters.resize(x, x.shape[0] // self.factor,
                          x.shape[1] // self.factor, self.kernel)

  def weights(self, obs: Array) -> Array:
    return jnp.ones_like(obs)

  def anchor(self, obs: Array) -> Array:
    h, w, _ = self.scene_shape(obs.shape)
    up = filters.resize(obs, h, w, "bicubic")
    return filters.gaussian_blur(up, self.rho)

  def project(self, x: Array, obs: Array) -> Array:
    """``x + A^+ (obs - A(x))``, ``A^+`` the pseudo-inverse of the
    separable downsampling."""
    h, w = x.shape[0], x.shape[1]
    ph = jnp.asarray(filters.resample_pinv(h, h // self.factor, self.kernel))
    pw = jnp.asarray(filters.resample_pinv(w, w // self.factor, self.kernel))
    return x + jnp.einsum("hi,ijc,wj->hwc", ph, obs - self.forward(x), pw)


FILLS = ("harmonic", "biharmonic")


@struct.dataclass(eq=False)
class Inpaint:
  """``A`` = the mask (1 = known pixel); ``G`` = a smooth fill of the holes.

  ``mask``: (H, W) or (H, W, 1 or C), broadcast over the channels.
  ``fill``: ``"harmonic"`` (:func:`filters.smooth_fill`, ``fill_iterations``
  Jacobi sweeps) or ``"biharmonic"`` (:func:`filters.biharmonic_fill`, as
  ``skimage.restoration.inpaint_biharmonic``, from the harmonic fill).
  The harmonic fill is the benchmark's; the inpaint command takes the
  biharmonic one with ``y_handicap=0`` and 50 iterations, above that on
  most masks (docs/results.md).
  """

  mask: Optional[Array] = None
  fill_iterations: int = _static(400)
  noise_sigma: Optional[float] = _static(0.0)
  fill: str = _static("harmonic")

  def _mask(self, shape) -> Array:
    m = jnp.asarray(self.mask, jnp.float32)
    if m.ndim == 2:
      m = m[:, :, None]
    return jnp.broadcast_to(m, shape)

  def validate(self, obs: Array) -> None:
    check_image(obs)
    if self.mask is None:
      raise ValueError("inpainting needs a mask (1 = known pixel)")
    shape = tuple(np.shape(self.mask))
    if len(shape) not in (2, 3) or shape[:2] != tuple(obs.shape[:2]) or (
        len(shape) == 3 and shape[2] not in (1, obs.shape[2])):
      raise ValueError(
          f"the mask has shape {shape} but the observation is "
          f"{tuple(obs.shape)}: they must have the same height and width")
    if self.fill not in FILLS:
      raise ValueError(f"unknown fill {self.fill!r}; choose one of {FILLS}")
    if _traced(self.mask):
      return
    m = np.asarray(self.mask)
    if not np.all(np.isfinite(m)):
      raise ValueError("the mask contains NaN or infinite values")
    if not np.any(m > 0.5):
      raise ValueError("the mask has no known pixel (all zero)")

  def scene_shape(self, obs_shape):
    return tuple(obs_shape)

  def forward(self, x: Array) -> Array:
    return x * self._mask(x.shape)

  def weights(self, obs: Array) -> Array:
    return self._mask(obs.shape)

  def anchor(self, obs: Array) -> Array:
    mask = self._mask(obs.shape)
    fill = filters.smooth_fill(obs, mask, self.fill_iterations)
    if self.fill == "biharmonic":
      fill = filters.biharmonic_fill(obs, mask, start=fill)
    return fill

  def project(self, x: Array, obs: Array) -> Array:
    """The known pixels of ``obs`` with ``x`` in the holes."""
    mask = self._mask(x.shape)
    return mask * obs + (1 - mask) * x

  def window(self, rows: slice, cols: slice) -> "Inpaint":
    """The task of the observation's window ``[rows, cols]``."""
    return self.replace(mask=np.asarray(self.mask)[rows, cols])


@struct.dataclass(eq=False)
class FlashNoFlash(_Identity):
  """Flash / no-flash (L_flash): fit the no-flash image ``obs``.

  ``A`` = identity; ``y`` stays near the smoothed flash image, so the net
  carries the flash image's detail with the no-flash colours.
  """

  flash: Optional[Array] = None
  rho: float = _static(1.0)
  noise_sigma: Optional[float] = _static(0.0)

  def validate(self, obs: Array) -> None:
    check_image(obs, "no-flash image")
    if self.flash is None:
      raise ValueError("flash/no-flash needs the flash image")
    check_image(self.flash, "flash image")
    if tuple(np.shape(self.flash)) != tuple(obs.shape):
      raise ValueError(
          f"the flash image has shape {tuple(np.shape(self.flash))} but the "
          f"no-flash image is {tuple(obs.shape)}: they must match")

  def anchor(self, obs: Array) -> Array:
    return filters.gaussian_blur(jnp.asarray(self.flash, obs.dtype), self.rho)

  def window(self, rows: slice, cols: slice) -> "FlashNoFlash":
    """The task of the observation's window ``[rows, cols]``."""
    return self.replace(flash=np.asarray(self.flash)[rows, cols])


@struct.dataclass(eq=False)
class Deblur:
  """Non-blind deblurring (Eq. 3 with a known PSF): ``A(x) = x * K``.

  ``psf``: a 2-D array of odd sides, normalised by its sum in ``forward``;
  the image is reflected at its borders (``jnp.pad(..., "reflect")``).
  """

  psf: Optional[Array] = None
  noise_sigma: Optional[float] = _static(None)

  def validate(self, obs: Array) -> None:
    check_image(obs)
    if self.psf is None:
      raise ValueError("deblurring needs the point spread function `psf`")
    shape = tuple(np.shape(self.psf))
    if len(shape) != 2 or shape[0] % 2 == 0 or shape[1] % 2 == 0:
      raise ValueError(f"the PSF must be a 2-D array of odd sides, got {shape}")
    if shape[0] >= obs.shape[0] or shape[1] >= obs.shape[1]:
      raise ValueError(f"the PSF {shape} is larger than the image "
                       f"{tuple(obs.shape[:2])}")
    if _traced(self.psf):
      return
    k = np.asarray(self.psf)
    if not np.all(np.isfinite(k)) or abs(k.sum()) < 1e-8:
      raise ValueError("the PSF must be finite with a non-zero sum")

  def scene_shape(self, obs_shape):
    return tuple(obs_shape)

  def forward(self, x: Array) -> Array:
    k = jnp.asarray(self.psf, x.dtype)
    k = k / jnp.sum(k)
    rh, rw = k.shape[0] // 2, k.shape[1] // 2
    c = x.shape[-1]
    xp = jnp.pad(x, ((rh, rh), (rw, rw), (0, 0)), mode="reflect")
    # A true convolution: lax.conv correlates, so the kernel is flipped;
    # one filter per channel (depthwise).
    kc = jnp.broadcast_to(k[::-1, ::-1, None, None], k.shape + (1, c))
    y = jax.lax.conv_general_dilated(
        xp[None], kc, (1, 1), "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c,
        precision=jax.lax.Precision.HIGHEST)
    return y[0]

  def weights(self, obs: Array) -> Array:
    return jnp.ones_like(obs)

  def anchor(self, obs: Array) -> Array:
    return obs


def gaussian_psf(size: int, sigma: float) -> np.ndarray:
  """A normalised ``size x size`` Gaussian PSF (for :class:`Deblur`)."""
  k = filters.gaussian_kernel1d(sigma, truncate=(size // 2) / max(sigma, 1e-6))
  k2 = np.outer(k, k)
  return (k2 / k2.sum()).astype(np.float32)


TASKS = {
    "denoise": Denoise,
    "sr": SuperResolution,
    "inpaint": Inpaint,
    "flash": FlashNoFlash,
    "deblur": Deblur,
}
