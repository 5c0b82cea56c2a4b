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
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from dncf_jax.baselines import dip, tv
from dncf_jax.config import require
from dncf_jax.engine import Result

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

  def check(self) -> None:
    super().check()
    require(self.beta >= 0, f"beta must be >= 0, got {self.beta}")
    require(self.mu > 0, f"mu must be > 0, got {self.mu}")
    require(self.denoiser_weight > 0,
            f"denoiser_weight must be > 0, got {self.denoiser_weight}")
    require(self.denoiser_iters >= 1, "denoiser_iters must be >= 1")
    require(self.update_every >= 1, "update_every must be >= 1")
    require(self.increase_reg >= 0, "increase_reg must be >= 0")
    require(self.x_init in X_INITS,
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
                             reg_noise_std=0.03, beta=0.05, mu=0.06,
                             net=dip.PRESETS["inpaint"].net,
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
  return PRESETS[task].replace(**overrides)


@dataclasses.dataclass(frozen=True)
class DeepRED(dip.DIP):
  """DeepRED on one image: DIP's method with the ADMM variables ``x``, ``u``."""

  def init(self, obs: Array, task, key: Array) -> tuple[dict, dict]:
    st, inp = super().init(obs, task, key)
    cfg = self.config
    if cfg.x_init == "observation":
      x0 = obs
    elif cfg.x_init == "zeros":
      x0 = jnp.zeros(self.scene, jnp.float32)
    else:
      x0 = jnp.asarray(task.anchor(obs), jnp.float32)
    f32 = lambda v: jnp.asarray(v, jnp.float32)
    st.update(x=x0, u=jnp.zeros_like(x0), fx=x0, beta=f32(cfg.beta),
              mu=f32(cfg.mu), threshold=f32(cfg.threshold))
    return st, inp

  def denoise(self, x: Array) -> Array:
    """``D(x)``: TV (Chambolle) of weight ``denoiser_weight``."""
    cfg = self.config
    return tv._tv_denoise(x, jnp.asarray(cfg.denoiser_weight, x.dtype),
                          cfg.denoiser_iters, 2e-4)

  def step(self, st: dict, inp: dict):
    cfg = self.config
    x, u, beta, mu = st["x"], st["u"], st["beta"], st["mu"]
    params, opt_state, key, data, f = self.fit(
        st, inp, lambda f: mu * jnp.mean(jnp.square(f - (x - u))))
    fx = jax.lax.cond((st["it"] + 1) % cfg.update_every == 0, self.denoise,
                      lambda _: st["fx"], x)
    x = jnp.clip((beta * fx + mu * (f + u)) / (beta + mu), 0.0, 1.0)
    u = u + f - x
    psnr_fit = -10 * jnp.log10(jnp.maximum(data, 1e-12))
    grow = (psnr_fit > st["threshold"]) & (cfg.increase_reg > 0)
    inc = jnp.where(grow, cfg.increase_reg, 0.0)
    new = dict(params=params, opt_state=opt_state, ema=self.ema(st, f),
               key=key, it=st["it"] + 1, x=x, u=u, fx=fx, beta=beta + inc,
               mu=mu + inc, threshold=st["threshold"] + jnp.where(
                   grow, cfg.threshold_step, 0.0))
    return new, dict(loss=data, beta=beta, mu=mu)

  def candidates(self, st: dict, inp: dict) -> Array:
    last = self.render(st["params"], inp["z"])
    return jnp.stack([st["ema"], last, st["x"] - st["u"]])


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
  scene = dip.check_inputs(observation, task, config, reference)
  if config.x_init == "observation" and scene != tuple(np.shape(observation)):
    raise ValueError("x_init='observation' needs a scene of the "
                     "observation's shape; use 'zeros' or 'anchor'")
  return dip.run_method(DeepRED(config, scene), observation, task, key,
                        reference, progress)
