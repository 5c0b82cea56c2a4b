"""Deep Image Prior (Ulyanov, Vedaldi, Lempitsky, CVPR 2018 / IJCV 2020).

A skip net ``f_theta`` maps a fixed random code ``z`` to the scene and is
fitted to the one observation through the task's physics,

    min_theta  mean(W (A f_theta(z + n_t) - I_s)^2),   n_t ~ N(0, reg_noise_std^2),

by Adam; DIP's answer is its last output or the exponential moving average
of its outputs (decay 0.99, the denoising notebook's ``exp_weight``). The
loop is compiled as DNCF's (:mod:`dncf_jax.solver`): ``lax.scan`` chunks of
``checkpoint_every`` iterations, ahead-of-time compiled once, history kept
on device between checkpoints.

Per-task settings (:data:`PRESETS`) follow the notebooks of the DIP
repository (github.com/DmitryUlyanov/deep-image-prior: ``denoising``,
``super-resolution``, ``inpainting``, ``flash-no-flash``); see
:func:`dip_config`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dncf_jax import nets
from dncf_jax.solver import Result, compile_timed, pad_to, padded_shape

Array = jax.Array
PyTree = Any

INPUT_KINDS = ("noise", "meshgrid", "flash", "anchor")
OUTPUTS = ("ema", "last")


@dataclasses.dataclass(frozen=True)
class DIPConfig:
  """A DIP run (defaults: the denoising notebook, F16)."""

  iterations: int = 3000          # notebook F16: 3000 (paper supp.: 1800)
  learning_rate: float = 0.01     # Adam
  input_kind: str = "noise"       # noise | meshgrid | flash | anchor
  input_depth: int = 32           # channels of the noise code
  input_scale: float = 0.1        # code ~ U[0, 1) * scale (get_noise var=1/10)
  reg_noise_std: float = 1 / 30   # std of the perturbation of z each step
  channels: int = 128             # skip_n33d = skip_n33u
  scales: int = 5
  skip_channels: int = 4          # skip_n11
  upsample: str = "bilinear"
  sigmoid: bool = True
  ema_decay: float = 0.99         # exp_weight
  output: str = "ema"             # what is returned: ema | last
  checkpoint_every: int = 50
  seed: int = 0

  def validate(self) -> None:
    """Raises ``ValueError`` naming the first bad field."""
    def need(cond, msg):
      if not cond:
        raise ValueError(msg)
    need(int(self.iterations) == self.iterations and self.iterations >= 1,
         f"iterations must be a positive integer, got {self.iterations}")
    need(self.learning_rate > 0,
         f"learning_rate must be > 0, got {self.learning_rate}")
    need(self.input_kind in INPUT_KINDS,
         f"input_kind must be one of {INPUT_KINDS}, got {self.input_kind!r}")
    need(self.input_depth >= 1, f"input_depth must be >= 1, got {self.input_depth}")
    need(self.input_scale > 0, f"input_scale must be > 0, got {self.input_scale}")
    need(self.reg_noise_std >= 0,
         f"reg_noise_std must be >= 0, got {self.reg_noise_std}")
    need(self.channels >= 1 and self.scales >= 1 and self.skip_channels >= 0,
         "channels and scales must be >= 1, skip_channels >= 0")
    need(self.upsample in ("bilinear", "nearest"),
         f"upsample must be bilinear or nearest, got {self.upsample!r}")
    need(0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}")
    need(self.output in self.outputs(),
         f"output must be one of {self.outputs()}, got {self.output!r}")
    need(self.checkpoint_every >= 1, "checkpoint_every must be >= 1")

  def outputs(self) -> tuple[str, ...]:
    """The images a run offers (``output`` picks one)."""
    return OUTPUTS

  def net(self, out_channels: int) -> nets.Skip:
    return nets.skip_for(self.channels, self.scales, self.skip_channels,
                         self.upsample, self.sigmoid, out_channels)


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
    "inpaint": DIPConfig(iterations=6000, reg_noise_std=0.03,
                         skip_channels=128, upsample="nearest", output="last"),
    # inpainting.ipynb, vase: meshgrid input (2 ch), no skip, 5001 its.
    "vase": DIPConfig(iterations=5000, input_kind="meshgrid", input_depth=2,
                      reg_noise_std=0.03, skip_channels=0, upsample="nearest",
                      output="last"),
    # flash-no-flash.ipynb: the flash image as input, lr 0.1, 601 its,
    # no input noise, skip 128/128/4.
    "flash": DIPConfig(iterations=600, learning_rate=0.1, input_kind="flash",
                       reg_noise_std=0.0, output="last"),
}


def dip_config(task: str, **overrides) -> DIPConfig:
  """The DIP notebook setting for ``task`` (a key of :data:`PRESETS`), with overrides."""
  if task not in PRESETS:
    raise ValueError(f"no DIP preset for {task!r}; choose one of {tuple(PRESETS)}")
  return dataclasses.replace(PRESETS[task], **overrides)


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
    flash = getattr(task, "flash", None)
    if flash is None:
      raise ValueError("input_kind='flash' needs a FlashNoFlash task")
    return pad_to(jnp.asarray(flash, jnp.float32), h, w)
  return pad_to(jnp.asarray(task.anchor(obs), jnp.float32), h, w)


class Setup(NamedTuple):
  """What every DIP-like run needs before its loop."""

  obs: Array
  weights: Array
  scene: tuple[int, int, int]
  net: nets.Skip
  z: Array
  params: PyTree
  reference: Optional[Array]
  noise_key: Array  # raw key data (uint32), so that jnp.where can carry it
  compile_seconds: float  # of net.init, compiled ahead of time


def setup(observation, task, config: DIPConfig, key: Optional[Array],
          reference) -> Setup:
  """Validates the inputs, builds the net, its code ``z`` and ``theta_0``."""
  config.validate()
  task.validate(observation)
  obs = jnp.asarray(observation, jnp.float32)
  scene = tuple(task.scene_shape(obs.shape))
  if hasattr(task, "check_scene"):
    task.check_scene(scene)
  if reference is not None:
    if tuple(np.shape(reference)) != scene:
      raise ValueError(f"reference has shape {tuple(np.shape(reference))}, "
                       f"the restored image will have shape {scene}")
    reference = jnp.asarray(reference, jnp.float32)
  if key is None:
    key = jax.random.key(config.seed)
  if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(key)
  net = config.net(scene[2])
  hp, wp = padded_shape(scene[0], scene[1], net.required_multiple())
  k_z, k_init, k_noise = jax.random.split(key, 3)
  z = net_input(config, task, obs, k_z, (hp, wp))
  init_params, compile_seconds = compile_timed(net.init, k_init, z)
  params = init_params(k_init, z)
  weights = jnp.asarray(task.weights(obs), jnp.float32)
  return Setup(obs, weights, scene, net, z, params, reference,
               jax.random.key_data(k_noise), compile_seconds)


def render(net: nets.Skip, params, z: Array, scene) -> Array:
  """``f_theta(z)`` cropped to the scene."""
  return net.apply(params, z)[:scene[0], :scene[1]]


def data_loss(task, x: Array, obs: Array, weights: Array) -> Array:
  """DIP's loss: ``mean(W (A x - I_s)^2)`` over all observed entries."""
  d = task.forward(x) - obs
  return jnp.mean(weights * d * d)


def scan_chunk(step: Callable, length: int):
  """``length`` steps in one ``lax.scan``; steps past ``stop`` are no-ops."""

  def run(state, stop):
    def body(s, _):
      new, stats = step(s)
      active = s["it"] < stop
      new = jax.tree_util.tree_map(lambda a, b: jnp.where(active, a, b), new, s)
      return new, stats

    return jax.lax.scan(body, state, None, length=length)

  return run


def run_loop(step: Callable, state: dict, iterations: int, chunk: int,
             evaluate: Callable, names: tuple[str, ...], reference,
             progress: Optional[Callable[[dict], None]]):
  """Compiles one program (a chunk of steps, then ``evaluate``) and runs it.

  ``evaluate(state) -> (candidates (K, H, W, C), stats dict)`` is scored
  at the end of every chunk, on device. Returns (state, candidates,
  history, compile seconds).
  """
  chunk = min(chunk, iterations)
  scan = scan_chunk(step, chunk)

  def program(state, stop):
    state, stats = scan(state, stop)
    cands, out = evaluate(state)
    if reference is not None:
      mse = jnp.mean(jnp.square(jnp.clip(cands, 0, 1) - reference),
                     axis=(1, 2, 3))
      out["psnr"] = -10 * jnp.log10(mse)
    return state, stats, cands, out

  stop = jnp.asarray(iterations, jnp.int32)
  run, compile_seconds = compile_timed(program, state, stop)
  history: dict[str, list] = {}
  ckpt: dict[str, list] = {"iteration": []}
  t_loop = time.perf_counter()
  cands = None
  while int(state["it"]) < iterations:
    before = int(state["it"])
    state, stats, cands, out = run(state, stop)
    done = int(state["it"])
    for k, v in jax.device_get(stats).items():
      history.setdefault(k, []).append(np.asarray(v)[:done - before])
    ckpt["iteration"].append(done)
    for k, v in jax.device_get(out).items():
      ckpt.setdefault(k, []).append(np.asarray(v))
    if progress is not None:
      elapsed = time.perf_counter() - t_loop
      info = dict(iteration=done, total=iterations,
                  its_per_second=done / max(elapsed, 1e-9),
                  loss=float(history["loss"][-1][-1]))
      if "psnr" in out:
        info["psnr"] = {n: float(p) for n, p in zip(names, out["psnr"])}
      progress(info)
  hist = {k: np.concatenate(v) for k, v in history.items()}
  hist.update({f"checkpoint_{k}": np.asarray(v) for k, v in ckpt.items()})
  hist["checkpoint_names"] = np.asarray(names)
  return state, cands, hist, compile_seconds


def dip_step(s: Setup, task, config: DIPConfig,
             opt: optax.GradientTransformation) -> Callable[[dict], tuple]:
  """One DIP iteration on the state of :func:`initial_state`: a fresh
  ``z + N(0, reg_noise_std^2)``, an ``opt`` step on ``theta`` for
  :func:`data_loss`, the moving average of the outputs. Returns
  ``(state, dict(loss=...))``."""

  def loss_fn(params, z):
    x = render(s.net, params, z, s.scene)
    return data_loss(task, x, s.obs, s.weights), x

  def step(st):
    k, sub = jax.random.split(jax.random.wrap_key_data(st["key"]))
    z = s.z + config.reg_noise_std * jax.random.normal(sub, s.z.shape)
    (loss, x), g = jax.value_and_grad(loss_fn, has_aux=True)(st["params"], z)
    upd, opt_state = opt.update(g, st["opt_state"], st["params"])
    params = optax.apply_updates(st["params"], upd)
    d = config.ema_decay
    ema = jnp.where(st["it"] == 0, x, d * st["ema"] + (1 - d) * x)
    new = dict(params=params, opt_state=opt_state, ema=ema,
               key=jax.random.key_data(k),
               it=st["it"] + 1)
    return new, dict(loss=loss)

  return step


def initial_state(s: Setup, opt: optax.GradientTransformation) -> dict:
  """The state :func:`dip_step` carries, at iteration 0."""
  return dict(params=s.params, opt_state=opt.init(s.params),
              ema=jnp.zeros(s.scene, jnp.float32), key=s.noise_key,
              it=jnp.zeros((), jnp.int32))


def dip_restore(observation, task, config: DIPConfig = DIPConfig(),
                key: Optional[Array] = None, reference=None,
                progress: Optional[Callable[[dict], None]] = None) -> Result:
  """Deep Image Prior on ``observation`` under ``task``'s physics.

  Returns a :class:`dncf_jax.solver.Result`: ``image`` is what DIP returns
  blind, ``config.output``: ``"ema"`` (the moving average of the training
  outputs, initialised with the first, as the denoising notebook) or
  ``"last"`` (``f_theta(z)`` at the final ``theta``, without input noise);
  both are in ``candidates``. ``history``: per-iteration ``loss``;
  per-checkpoint ``checkpoint_residual`` and, with ``reference``, the
  ORACLE ``checkpoint_psnr`` (columns ``checkpoint_names``), never used to
  choose; ``step_traces``: how often the step was traced (1 = compiled
  once). ``chosen_iteration`` is the last iteration.
  """
  if config.output not in OUTPUTS:
    raise ValueError(f"DIP returns one of {OUTPUTS}, got output="
                     f"{config.output!r}")
  t_start = time.perf_counter()
  s = setup(observation, task, config, key, reference)
  opt = optax.adam(config.learning_rate)
  traces = [0]
  train = dip_step(s, task, config, opt)

  def step(st):
    traces[0] += 1
    return train(st)

  def evaluate(st):
    last = render(s.net, st["params"], s.z, s.scene)
    cands = jnp.stack([st["ema"], last])
    res = jax.vmap(lambda x: data_loss(task, x, s.obs, s.weights))(cands)
    return cands, dict(residual=res)

  state = initial_state(s, opt)
  state, cands, hist, compile_s = run_loop(
      step, state, config.iterations, config.checkpoint_every, evaluate,
      OUTPUTS, s.reference, progress)
  return make_result(config, task, s, state, cands, hist, compile_s,
                     traces[0], OUTPUTS, t_start)


def make_result(config, task, s, state, cands, hist, compile_s, traces,
                outputs, t_start) -> Result:
  """The :class:`Result` of a DIP-style run (shared with DeepRED)."""
  hist["step_traces"] = np.asarray(traces)
  cands = {n: np.asarray(jnp.clip(c, 0, 1)) for n, c in zip(outputs, cands)}
  sigma = getattr(task, "noise_sigma", None)
  return Result(
      image=cands[config.output], chosen=config.output,
      chosen_iteration=int(state["it"]), candidates=cands, history=hist,
      noise_sigma=float("nan") if sigma is None else float(sigma),
      seconds=time.perf_counter() - t_start,
      compile_seconds=compile_s + s.compile_seconds,
      params=state["params"], y=np.asarray(s.z))
