"""Deep Image Prior (Ulyanov, Vedaldi, Lempitsky, CVPR 2018 / IJCV 2020).

A skip net ``f_theta`` maps a fixed random code ``z`` to the scene and is
fitted to the one observation through the task's physics,

    min_theta  mean(W (A f_theta(z + n_t) - I_s)^2),   n_t ~ N(0, reg_noise_std^2),

by Adam; DIP's answer is its last output or the exponential moving average
of its outputs (decay 0.99, the denoising notebook's ``exp_weight``).
:class:`DIP` is a method of the run engine (:mod:`dncf_jax.engine`), as
DNCF is: the same compiled chunks, program cache and batches.

Per-task settings (:data:`PRESETS`) follow the notebooks of the DIP
repository (github.com/DmitryUlyanov/deep-image-prior: ``denoising``,
``super-resolution``, ``inpainting``, ``flash-no-flash``); see
:func:`dip_config`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dncf_jax import engine
from dncf_jax.config import FlatConfig, NetConfig, param, require
from dncf_jax.engine import Result, pad_to, padded_shape

Array = jax.Array
PyTree = Any

INPUT_KINDS = ("noise", "meshgrid", "flash", "anchor")
OUTPUTS = ("ema", "last")


@dataclasses.dataclass(frozen=True)
class DIPConfig(FlatConfig):
  """A DIP run (defaults: the denoising notebook, F16)."""

  iterations: int = param(3000, "Adam steps (notebook F16: 3000).")
  learning_rate: float = param(0.01, "Adam step.")
  input_kind: str = param("noise", "The code z: noise, meshgrid, the flash "
                          "image, or the task's first guess.",
                          choices=INPUT_KINDS)
  input_depth: int = param(32, "Channels of the noise code.")
  input_scale: float = param(0.1, "Code ~ U[0, 1) * scale.")
  reg_noise_std: float = param(1 / 30, "Std of the perturbation of z each step.")
  ema_decay: float = param(0.99, "Decay of the moving average of the outputs.")
  output: str = param("ema", "What is returned: ema or last.")
  checkpoint_every: int = param(50, "Score the outputs every n iterations.")
  seed: int = param(0, "Seed of z, theta_0 and the input noise.")
  net: NetConfig = NetConfig(channels=128)

  def check(self) -> None:
    require(int(self.iterations) == self.iterations and self.iterations >= 1,
            f"iterations must be a positive integer, got {self.iterations}")
    require(self.learning_rate > 0,
            f"learning_rate must be > 0, got {self.learning_rate}")
    require(self.input_depth >= 1,
            f"input_depth must be >= 1, got {self.input_depth}")
    require(self.input_scale > 0,
            f"input_scale must be > 0, got {self.input_scale}")
    require(self.reg_noise_std >= 0,
            f"reg_noise_std must be >= 0, got {self.reg_noise_std}")
    require(0 <= self.ema_decay < 1,
            f"ema_decay must be in [0, 1), got {self.ema_decay}")
    require(self.output in self.outputs(),
            f"output must be one of {self.outputs()}, got {self.output!r}")
    require(self.checkpoint_every >= 1, "checkpoint_every must be >= 1")

  def outputs(self) -> tuple[str, ...]:
    """The images a run offers (``output`` picks one)."""
    return OUTPUTS


# DIP repository notebooks (see module docstring). Deviations, because
# nets.Skip has one upsampling mode and 3x3 convolutions throughout: the
# flash net upsamples bilinearly at every scale (notebook: nearest at the
# two finest); the library inpainting net (filter 5 down, widths
# 16..128, no skip, parameter noise) is not reproduced: use "inpaint".
PRESETS = {
    # denoising.ipynb, F16: skip 128/128/4, 5 scales, bilinear, z 32 ch.
    "denoise": DIPConfig(),
    # super-resolution.ipynb, x4: 2000 its, reg noise 0.03; returns out_HR.
    "sr": DIPConfig(iterations=2000, reg_noise_std=0.03, output="last"),
    # inpainting.ipynb, kate/peppers: 6001 its, skip 128 at every scale,
    # nearest upsampling, reg noise 0.03; returns the last output.
    "inpaint": DIPConfig(iterations=6000, reg_noise_std=0.03, output="last",
                         net=NetConfig(128, skip_channels=128,
                                       upsample="nearest")),
    # inpainting.ipynb, vase: meshgrid input (2 ch), no skip, 5001 its.
    "vase": DIPConfig(iterations=5000, input_kind="meshgrid", input_depth=2,
                      reg_noise_std=0.03, output="last",
                      net=NetConfig(128, skip_channels=0, upsample="nearest")),
    # flash-no-flash.ipynb: the flash image as input, lr 0.1, 601 its,
    # no input noise, skip 128/128/4.
    "flash": DIPConfig(iterations=600, learning_rate=0.1, input_kind="flash",
                       reg_noise_std=0.0, output="last"),
}


def dip_config(task: str, **overrides) -> DIPConfig:
  """The DIP notebook setting for ``task`` (a key of :data:`PRESETS`), with
  overrides by flat name (``channels=32``, ``iterations=100``)."""
  if task not in PRESETS:
    raise ValueError(f"no DIP preset for {task!r}; choose one of {tuple(PRESETS)}")
  return PRESETS[task].replace(**overrides)


def net_input(config: DIPConfig, task, obs: Array, key: Array,
              hw: tuple[int, int]) -> Array:
  """DIP's code ``z`` (H, W, depth) at the padded scene size ``hw``."""
  h, w = hw
  if config.input_kind == "noise":
    return config.input_scale * jax.random.uniform(
        key, (h, w, config.input_depth), jnp.float32)
  if config.input_kind == "meshgrid":
    xs, ys = jnp.meshgrid(jnp.arange(w) / max(w - 1, 1),
                          jnp.arange(h) / max(h - 1, 1))
    return jnp.stack([xs, ys], axis=-1).astype(jnp.float32)
  if config.input_kind == "flash":
    return pad_to(jnp.asarray(task.flash, jnp.float32), h, w)
  return pad_to(jnp.asarray(task.anchor(obs), jnp.float32), h, w)


def data_loss(task, x: Array, obs: Array, weights: Array) -> Array:
  """DIP's loss: ``mean(W (A x - I_s)^2)`` over all observed entries."""
  d = task.forward(x) - obs
  return jnp.mean(weights * d * d)


@dataclasses.dataclass(frozen=True)
class DIP:
  """DIP on one image of shape ``scene``: a method of the run engine.

  State: a dict with ``params``, ``opt_state``, ``ema``, ``key`` (raw key
  data), ``it``; inputs: a dict with ``obs``, ``weights``, ``z``, ``task``.
  """

  config: DIPConfig
  scene: tuple[int, int, int]

  @property
  def net(self):
    return self.config.net.build(self.scene[2])

  @property
  def opt(self) -> optax.GradientTransformation:
    return optax.adam(self.config.learning_rate)

  def render(self, params, z: Array) -> Array:
    """``f_theta(z)`` cropped to the scene."""
    return self.net.apply(params, z)[:self.scene[0], :self.scene[1]]

  def init(self, obs: Array, task, key: Array) -> tuple[dict, dict]:
    net = self.net
    hw = padded_shape(self.scene[0], self.scene[1], net.required_multiple())
    k_z, k_init, k_noise = jax.random.split(key, 3)
    z = net_input(self.config, task, obs, k_z, hw)
    params = net.init(k_init, z)
    weights = jnp.asarray(task.weights(obs), jnp.float32)
    state = dict(params=params, opt_state=self.opt.init(params),
                 ema=jnp.zeros(self.scene, jnp.float32),
                 key=jax.random.key_data(k_noise), it=jnp.zeros((), jnp.int32))
    return state, dict(obs=obs, weights=weights, z=z, task=task)

  def fit(self, st: dict, inp: dict, extra_loss=None):
    """One Adam step of ``theta`` on DIP's loss (plus ``extra_loss(f)``)
    at a fresh ``z + N(0, reg_noise_std^2)``; returns the new ``params``,
    ``opt_state``, key data, the data loss and ``f``."""
    k, sub = jax.random.split(jax.random.wrap_key_data(st["key"]))
    z = inp["z"] + self.config.reg_noise_std * jax.random.normal(
        sub, inp["z"].shape)

    def loss_fn(params):
      f = self.render(params, z)
      data = data_loss(inp["task"], f, inp["obs"], inp["weights"])
      extra = 0.0 if extra_loss is None else extra_loss(f)
      return data + extra, (data, f)

    (_, (data, f)), g = jax.value_and_grad(loss_fn, has_aux=True)(st["params"])
    upd, opt_state = self.opt.update(g, st["opt_state"], st["params"])
    params = optax.apply_updates(st["params"], upd)
    return params, opt_state, jax.random.key_data(k), data, f

  def ema(self, st: dict, f: Array) -> Array:
    """The moving average of the outputs, started at the first."""
    d = self.config.ema_decay
    return jnp.where(st["it"] == 0, f, d * st["ema"] + (1 - d) * f)

  def step(self, st: dict, inp: dict):
    params, opt_state, key, loss, f = self.fit(st, inp)
    return dict(params=params, opt_state=opt_state, ema=self.ema(st, f),
                key=key, it=st["it"] + 1), dict(loss=loss)

  def candidates(self, st: dict, inp: dict) -> Array:
    return jnp.stack([st["ema"], self.render(st["params"], inp["z"])])

  def checkpoint(self, st: dict, inp: dict):
    cands = self.candidates(st, inp)
    res = jax.vmap(lambda x: data_loss(inp["task"], x, inp["obs"],
                                       inp["weights"]))(cands)
    return st, cands, dict(residual=res), jnp.zeros((), bool)


def check_inputs(observation, task, config, reference) -> tuple[int, int, int]:
  """Validates a DIP-style run's inputs; returns the scene shape."""
  config.validate()
  task.validate(observation)
  scene = tuple(task.scene_shape(np.shape(observation)))
  if hasattr(task, "check_scene"):
    task.check_scene(scene)
  if reference is not None and tuple(np.shape(reference)) != scene:
    raise ValueError(f"reference has shape {tuple(np.shape(reference))}, "
                     f"the restored image will have shape {scene}")
  if config.input_kind == "flash" and getattr(task, "flash", None) is None:
    raise ValueError("input_kind='flash' needs a FlashNoFlash task")
  return scene


def run_method(method, observation, task, key: Optional[Array], reference,
               progress: Optional[Callable[[dict], None]]) -> Result:
  """Runs a DIP-style ``method`` (:class:`DIP` or DeepRED) on one image on
  the run engine; the answer is ``config.output`` (no early stop)."""
  config = method.config
  t_start = time.perf_counter()
  if key is None:
    key = jax.random.key(config.seed)
  if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(key)
  method = engine.unseeded(method)
  inputs = (jnp.asarray(observation, jnp.float32)[None],
            engine.stack_tasks(task, 1), jax.random.key_data(key)[None])
  ref = None if reference is None else jnp.asarray(reference, jnp.float32)[None]
  init, compile_s = engine.compiled((method, "init"), engine.batch_init(method),
                                    *inputs)
  state, inp = init(*inputs)
  carry = engine.Carry(state, state["it"], jnp.zeros((1,), bool))
  length = min(config.checkpoint_every, config.iterations)
  stop = jnp.asarray(config.iterations, jnp.int32)
  program, s = engine.compiled(
      (method, "chunk", length, ref is not None),
      engine.batch_chunk(method, length, ref is not None),
      carry, inp, ref, stop)
  history = engine.new_history(1)
  names = config.outputs()

  def describe(stats: dict, out: dict) -> dict:
    info = dict(loss=float(stats["loss"][-1]))
    if "psnr" in out:
      info["psnr"] = {n: float(p) for n, p in zip(names, out["psnr"])}
    return info

  carry, cands = engine.run(program, carry, inp, config.iterations,
                            reference=ref, history=history, progress=progress,
                            describe=describe, t_start=t_start)
  hist = engine.history_arrays(history, 0)
  hist["checkpoint_names"] = np.asarray(names)
  cands = {n: np.asarray(jnp.clip(c, 0, 1)) for n, c in zip(names, cands[0])}
  sigma = getattr(task, "noise_sigma", None)
  return Result(
      image=cands[config.output], chosen=config.output,
      chosen_iteration=int(carry.it[0]), candidates=cands, history=hist,
      noise_sigma=float("nan") if sigma is None else float(sigma),
      seconds=time.perf_counter() - t_start, compile_seconds=compile_s + s,
      params=jax.tree_util.tree_map(lambda a: a[0], carry.state["params"]),
      y=np.asarray(inp["z"][0]))


def dip_restore(observation, task, config: DIPConfig = DIPConfig(),
                key: Optional[Array] = None, reference=None,
                progress: Optional[Callable[[dict], None]] = None) -> Result:
  """Deep Image Prior on ``observation`` under ``task``'s physics.

  Returns a :class:`dncf_jax.engine.Result`: ``image`` is what DIP
  returns blind, ``config.output``: ``"ema"`` (the moving average of the
  training outputs, initialised with the first, as the denoising
  notebook) or ``"last"`` (``f_theta(z)`` at the final ``theta``, without
  input noise); both are in ``candidates``. ``history``: per-iteration
  ``loss``; per-checkpoint ``checkpoint_residual`` and, with
  ``reference``, the ORACLE ``checkpoint_psnr`` (columns
  ``checkpoint_names``), never used to choose. ``chosen_iteration`` is the
  last iteration.
  """
  if config.output not in OUTPUTS:
    raise ValueError(f"DIP returns one of {OUTPUTS}, got output="
                     f"{config.output!r}")
  scene = check_inputs(observation, task, config, reference)
  return run_method(DIP(config, scene), observation, task, key, reference,
                    progress)
