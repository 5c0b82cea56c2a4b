"""DeepRED: DIP powered by RED (Mataev, Milanfar, Elad, ICCV-W 2019), TV inside.

    min_{theta, x}  ||W (A f_theta(z) - I_s)||^2 / 2 + beta/2 x^T (x - D(x))
    s.t.  x = f_theta(z)

by ADMM as the DeepRED code (github.com/GaryMataev/DeepRED,
``train_via_admm``), one iteration:

1. theta: one Adam step on ``mean(W (A f - I_s)^2) + mu mean((f - (x - u))^2)``
   with ``f = f_theta(z + noise)``;
2. x: the fixed-point update ``x = (beta D(x) + mu (f + u)) / (beta + mu)``,
   clipped to [0, 1], where ``D(x)`` (here TV, :func:`..tv.tv_denoise`) is
   refreshed every ``update_every`` iterations;
3. u: ``u = u + f - x``.

With ``increase_reg > 0`` (the denoising code) ``beta`` and ``mu`` grow by
``increase_reg`` whenever the data PSNR of ``f`` exceeds ``threshold`` dB,
which then rises by ``threshold_step``. The DeepRED code returns the moving
average of ``f`` for denoising and ``x - u`` for super-resolution.
The denoiser runs in step (not lagged in a thread as in the original).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dncf_jax.baselines import dip, tv
from dncf_jax.solver import Result

Array = jax.Array

OUTPUTS = ("ema", "last", "x-u")
X_INITS = ("observation", "zeros", "anchor")


@dataclasses.dataclass(frozen=True)
class DeepREDConfig(dip.DIPConfig):
  """A DeepRED run: DIP's fields (net, code, Adam) plus the ADMM ones.

  Defaults: DeepRED's denoising code (6000 iterations, lr 0.008, input
  noise 0.033, beta = mu = 0.5, threshold 20 dB, increase 0.03).
  """

  iterations: int = 6000
  learning_rate: float = 0.008
  reg_noise_std: float = 0.033
  beta: float = 0.5                 # RED weight (lambda in the paper)
  mu: float = 0.5                   # ADMM penalty
  denoiser_weight: float = 0.02     # TV weight of D (skimage's scale)
  denoiser_iters: int = 50          # Chambolle iterations of D (max)
  update_every: int = 10            # D(x) refreshed every n iterations
  threshold: float = 20.0           # dB of data fit above which beta, mu grow
  threshold_step: float = 0.01
  increase_reg: float = 0.03        # 0: fixed beta and mu
  x_init: str = "observation"       # observation | zeros | anchor

  def outputs(self) -> tuple[str, ...]:
    return OUTPUTS

  def validate(self) -> None:
    super().validate()
    def need(cond, msg):
      if not cond:
        raise ValueError(msg)
    need(self.beta >= 0, f"beta must be >= 0, got {self.beta}")
    need(self.mu > 0, f"mu must be > 0, got {self.mu}")
    need(self.denoiser_weight > 0,
         f"denoiser_weight must be > 0, got {self.denoiser_weight}")
    need(self.denoiser_iters >= 1, "denoiser_iters must be >= 1")
    need(self.update_every >= 1, "update_every must be >= 1")
    need(self.increase_reg >= 0, "increase_reg must be >= 0")
    need(self.x_init in X_INITS,
         f"x_init must be one of {X_INITS}, got {self.x_init!r}")


# DeepRED repository notebooks: denoising (defaults) and super_resolution
# (2000 its, lr 0.001, noise 0.02, beta 0.05, mu 0.06, x from zeros,
# returns x - u, no threshold rule). Inpainting and flash are not in the
# DeepRED code: DIP's notebook net and input with the noiseless (SR) ADMM
# weights, our choice.
PRESETS = {
    "denoise": DeepREDConfig(),
    "sr": DeepREDConfig(iterations=2000, learning_rate=0.001,
                        reg_noise_std=0.02, beta=0.05, mu=0.06,
                        increase_reg=0.0, x_init="zeros", output="x-u"),
    "inpaint": DeepREDConfig(iterations=6000, learning_rate=0.01,
                             reg_noise_std=0.03, skip_channels=128,
                             upsample="nearest", beta=0.05, mu=0.06,
                             increase_reg=0.0, x_init="anchor", output="x-u"),
    "flash": DeepREDConfig(iterations=600, learning_rate=0.1,
                           input_kind="flash", reg_noise_std=0.0, beta=0.05,
                           mu=0.06, increase_reg=0.0, output="x-u"),
}


def deepred_config(task: str, **overrides) -> DeepREDConfig:
  """The DeepRED setting for ``task`` (a key of :data:`PRESETS`), with overrides."""
  if task not in PRESETS:
    raise ValueError(f"no DeepRED preset for {task!r}; choose one of "
                     f"{tuple(PRESETS)}")
  return dataclasses.replace(PRESETS[task], **overrides)


def deepred_restore(observation, task, config: DeepREDConfig = DeepREDConfig(),
                    key: Optional[Array] = None, reference=None,
                    progress: Optional[Callable[[dict], None]] = None) -> Result:
  """DeepRED with TV as the RED denoiser; same return as :func:`dip.dip_restore`.

  ``candidates``: ``ema`` (moving average of ``f``), ``last`` (``f_theta(z)``
  at the end), ``x-u`` (the ADMM estimate); ``image`` is
  ``config.output``. ``history`` adds per-iteration ``beta`` and ``mu``.
  """
  if not isinstance(config, DeepREDConfig):
    raise ValueError("deepred_restore needs a DeepREDConfig, got "
                     f"{type(config).__name__}")
  config.validate()
  task.validate(observation)
  if config.x_init == "observation" and tuple(
      task.scene_shape(np.shape(observation))) != tuple(np.shape(observation)):
    raise ValueError("x_init='observation' needs a scene of the "
                     "observation's shape; use 'zeros' or 'anchor'")
  t_start = time.perf_counter()
  s = dip.setup(observation, task, config, key, reference)
  opt = optax.adam(config.learning_rate)
  traces = [0]
  every = config.update_every

  def denoise(x):
    return tv._tv_denoise(x, jnp.asarray(config.denoiser_weight, x.dtype),
                          config.denoiser_iters, 2e-4)

  def loss_fn(params, z, target, mu):
    f = dip.render(s.net, params, z, s.scene)
    data = dip.data_loss(task, f, s.obs, s.weights)
    return data + mu * jnp.mean(jnp.square(f - target)), (data, f)

  def step(st):
    traces[0] += 1
    k, sub = jax.random.split(jax.random.wrap_key_data(st["key"]))
    z = s.z + config.reg_noise_std * jax.random.normal(sub, s.z.shape)
    x, u, beta, mu = st["x"], st["u"], st["beta"], st["mu"]
    (_, (data, f)), g = jax.value_and_grad(loss_fn, has_aux=True)(
        st["params"], z, x - u, mu)
    upd, opt_state = opt.update(g, st["opt_state"], st["params"])
    params = optax.apply_updates(st["params"], upd)
    fx = jax.lax.cond((st["it"] + 1) % every == 0, denoise,
                      lambda _: st["fx"], x)
    x = jnp.clip((beta * fx + mu * (f + u)) / (beta + mu), 0.0, 1.0)
    u = u + f - x
    psnr_fit = -10 * jnp.log10(jnp.maximum(data, 1e-12))
    grow = (psnr_fit > st["threshold"]) & (config.increase_reg > 0)
    inc = jnp.where(grow, config.increase_reg, 0.0)
    d = config.ema_decay
    ema = jnp.where(st["it"] == 0, f, d * st["ema"] + (1 - d) * f)
    new = dict(params=params, opt_state=opt_state, ema=ema,
               key=jax.random.key_data(k), it=st["it"] + 1, x=x, u=u, fx=fx,
               beta=beta + inc, mu=mu + inc,
               threshold=st["threshold"] + jnp.where(grow, config.threshold_step,
                                                     0.0))
    return new, dict(loss=data, beta=beta, mu=mu)

  def evaluate(st):
    last = dip.render(s.net, st["params"], s.z, s.scene)
    cands = jnp.stack([st["ema"], last, st["x"] - st["u"]])
    res = jax.vmap(lambda x: dip.data_loss(task, x, s.obs, s.weights))(cands)
    return cands, dict(residual=res)

  if config.x_init == "observation":
    x0 = s.obs
  elif config.x_init == "zeros":
    x0 = jnp.zeros(s.scene, jnp.float32)
  else:
    x0 = jnp.asarray(task.anchor(s.obs), jnp.float32)
  f32 = lambda v: jnp.asarray(v, jnp.float32)
  state = dict(params=s.params, opt_state=opt.init(s.params),
               ema=jnp.zeros(s.scene, jnp.float32), key=s.noise_key,
               it=jnp.zeros((), jnp.int32), x=x0, u=jnp.zeros_like(x0), fx=x0,
               beta=f32(config.beta), mu=f32(config.mu),
               threshold=f32(config.threshold))
  state, cands, hist, compile_s = dip.run_loop(
      step, state, config.iterations, config.checkpoint_every, evaluate,
      OUTPUTS, s.reference, progress)
  return dip.make_result(config, task, s, state, cands, hist, compile_s,
                         traces[0], OUTPUTS, t_start)
