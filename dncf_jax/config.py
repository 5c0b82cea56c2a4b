"""Run configurations, composed: the net, the y-solver, the penalty, the blind rule.

Each part is a frozen dataclass whose fields carry their help text
(``metadata["help"]``) and, where the command line spells it differently,
their flag name (``metadata["flag"]``). :class:`DNCFConfig` holds the parts
beside the fields of the alternating optimisation itself; DIP shares
:class:`NetConfig` and the purifier :class:`YSolverConfig`.

:func:`validate` checks a config and every part inside it; :func:`flat_fields`
lists the fields under their flag names, so that a new field is a new
command-line flag with no further code.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

from dncf_jax import nets

Y_SOLVERS = ("lbfgs", "bfgs", "adam", "none")
THETA_OPTIMIZERS = ("adam", "sgd", "rmsprop")
CONV_IMPLS = ("auto", "taps", "im2col", "xla")
FUSE_PARTNERS = ("nlm", "nlm_wavelet")


def param(default: Any, help: str, flag: str | None = None,
          choices: tuple[str, ...] | None = None):
  """A config field with its help text (and flag name and choices, if any)."""
  meta = {"help": help}
  if flag is not None:
    meta["flag"] = flag
  if choices is not None:
    meta["choices"] = choices
  return dataclasses.field(default=default, metadata=meta)


def require(cond: bool, msg: str) -> None:
  """Raises ``ValueError(msg)`` unless ``cond``."""
  if not cond:
    raise ValueError(msg)


def _parts(cfg) -> Iterator[Any]:
  for f in dataclasses.fields(cfg):
    v = getattr(cfg, f.name)
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
      yield v


def validate(cfg) -> None:
  """Checks ``cfg`` and every config part inside it; raises ``ValueError``
  naming the first bad field (choices from the fields' metadata, then each
  part's own ``check()``)."""
  for f in dataclasses.fields(cfg):
    choices = f.metadata.get("choices")
    v = getattr(cfg, f.name)
    if choices is not None:
      name = f.metadata.get("flag", f.name)
      require(v in choices, f"{name} must be one of {choices}, got {v!r}")
  for part in _parts(cfg):
    validate(part)
  check = getattr(cfg, "check", None)
  if check is not None:
    check()


@dataclasses.dataclass(frozen=True)
class NetConfig:
  """The skip net ``f_theta`` (DIP's ``skip``; DNCF: 32 channels, DIP: 128)."""

  channels: int = param(32, "Channels of every scale of the skip net.")
  scales: int = param(5, "Scales (down/up levels) of the skip net; inputs "
                      "are padded to a multiple of 2**scales.")
  skip_channels: int = param(4, "Channels of each skip connection (0: none).")
  upsample: str = param("bilinear", "Upsampling of the decoder.",
                        choices=("bilinear", "nearest"))
  sigmoid: bool = param(True, "Sigmoid on the output.")
  conv: str = param("auto", "Convolution implementation: auto (taps on CPU, "
                    "xla elsewhere), taps, im2col or xla (lax.conv).",
                    choices=CONV_IMPLS)

  def check(self) -> None:
    require(self.channels >= 1 and self.scales >= 1 and self.skip_channels >= 0,
            "channels and scales must be >= 1, skip_channels >= 0")

  def build(self, out_channels: int) -> nets.Skip:
    """The Flax module for images of ``out_channels`` channels."""
    return nets.skip_for(self.channels, self.scales, self.skip_channels,
                         self.upsample, self.sigmoid, out_channels,
                         conv=self.conv)


@dataclasses.dataclass(frozen=True)
class YSolverConfig:
  """The quasi-Newton step on ``y`` with its Armijo line search (Eqs. 14-16)."""

  solver: str = param("lbfgs", "Solver of the y-step.", flag="y_solver",
                      choices=Y_SOLVERS)
  steps: int = param(1, "y-iterations per theta-step.", flag="y_steps")
  history: int = param(10, "L-BFGS memory (pairs).", flag="y_history")
  learning_rate: float = param(0.01, "Step of the y-solver 'adam'.",
                               flag="y_learning_rate")
  fuse_gradients: bool = param(True, "L-BFGS: take the gradient at the "
                               "accepted y from the next theta-step's "
                               "backward pass (same iterates, one pass less).")
  max_backtracks: int = param(20, "Armijo line search trials.")
  armijo_c1: float = param(1e-4, "Sufficient decrease constant (xi, Eq. 15).")
  backtrack_factor: float = param(0.5, "Step shrink factor (b, Eq. 15).")

  def check(self) -> None:
    require(self.steps >= 1, "y_steps must be >= 1")
    require(self.history >= 1, "y_history must be >= 1")
    require(self.learning_rate > 0, "y_learning_rate must be > 0")
    require(0 < self.backtrack_factor < 1, "backtrack_factor must be in (0, 1)")
    require(0 < self.armijo_c1 < 1, "armijo_c1 must be in (0, 1)")
    require(self.max_backtracks >= 1, "max_backtracks must be >= 1")

  @property
  def fused(self) -> bool:
    """Whether the step runs the fused L-BFGS (:mod:`dncf_jax.quasi_newton`)."""
    return self.solver == "lbfgs" and self.fuse_gradients


@dataclasses.dataclass(frozen=True)
class PenaltyConfig:
  """``R(theta) = gamma ||max(-theta, 0)||`` on chosen layers (Eqs. 6-7)."""

  gamma: float = param(1e-3, "Initial penalty weight (Eq. 6).")
  norm: str = param("l1", "Norm of the negative part.", choices=("l1", "l2"))
  depth: int = param(-3, "Covers conv_XX with XX >= depth (< 0: counted "
                     "from the output).", flag="penalty_depth")
  biases: bool = param(False, "Cover biases as well as kernels.",
                       flag="penalty_biases")
  adaptive: bool = param(True, "gamma <- gamma/4 whenever R exceeds the data "
                         "loss (section 6).", flag="adaptive_gamma")

  def check(self) -> None:
    require(self.gamma >= 0, f"gamma must be >= 0, got {self.gamma}")


@dataclasses.dataclass(frozen=True)
class SelectConfig:
  """The blind choice of the answer (:mod:`dncf_jax.select`)."""

  ema_decay: float = param(0.95, "Decay of the moving average of f(y).")
  checkpoint_every: int = param(10, "Score the candidates every n iterations.")
  tau: float = param(0.9, "Discrepancy target tau * sigma^2 (noisy tasks).")
  y_handicap: float = param(1.0, "y must fit better by exp(this) to be "
                            "chosen (noiseless tasks).")
  early_stop: bool = param(True, "Stop once the discrepancy principle is met "
                           "(held out: once patience runs out).")
  holdout: float = param(0.0, "Fraction of the measured pixels held out of "
                         "the fit to score the candidates (0: the "
                         "discrepancy or best-fit rule).")
  patience: int = param(5, "Held out: stop after this many checkpoints "
                        "without a better held-out score.")
  project: bool = param(True, "Noiseless tasks with exact measurements "
                        "(super-resolution, inpainting): return the chosen "
                        "image projected onto those that reproduce the "
                        "observation, A(x) = I_s.")
  fuse: float = param(0.0, "Denoising: return (1 - fuse) times the chosen "
                      "image plus fuse times a classical denoiser's "
                      "(fuse_with) answer (0: DNCF's answer alone).")
  fuse_with: str = param("nlm", "Denoising: the classical denoiser of fuse: "
                         "non-local means, or the mean of pixelwise NLM "
                         "and cycle-spun wavelet shrinkage.",
                         choices=FUSE_PARTNERS)

  def check(self) -> None:
    require(0 <= self.ema_decay < 1, "ema_decay must be in [0, 1)")
    require(0 <= self.fuse <= 1, f"fuse must be in [0, 1], got {self.fuse}")
    require(0 <= self.holdout < 1, f"holdout must be in [0, 1), got {self.holdout}")
    require(self.patience >= 1, f"patience must be >= 1, got {self.patience}")
    require(self.checkpoint_every >= 1, "checkpoint_every must be >= 1")
    require(self.tau > 0, "tau must be > 0")


class FlatConfig:
  """Methods of a config with parts: validation and flat flag names."""

  def validate(self) -> None:
    """Raises ``ValueError`` naming the first bad field (:func:`validate`)."""
    validate(self)

  @classmethod
  def from_flat(cls, **flat):
    """A config from flat flag names (``channels=16, y_solver="bfgs"``)."""
    return replace_flat(cls(), flat)

  def replace(self, **flat):
    """A copy with fields changed, by flat flag name or part name."""
    return replace_flat(self, flat)

  def flat(self) -> dict[str, Any]:
    """Every field under its flag name."""
    return {name: value for name, _, value in flat_fields(self)}


@dataclasses.dataclass(frozen=True)
class DNCFConfig(FlatConfig):
  """A DNCF run (defaults: the denoising setting).

  Parts: ``net`` (:class:`NetConfig`), ``y`` (:class:`YSolverConfig`),
  ``penalty`` (:class:`PenaltyConfig`), ``select`` (:class:`SelectConfig`).
  :meth:`from_flat` and :meth:`replace` take the flat flag names
  (``channels``, ``y_solver``, ``penalty_depth``, ...).
  """

  iterations: int = param(600, "theta-steps in the image phase.")
  beta: float = param(1.0, "Weight of ||y - G(I_s)||^2 (Eq. 5).")
  learning_rate: float = param(0.01, "Step of the theta-optimizer.")
  theta_optimizer: str = param("adam", "Optimizer of theta.",
                               choices=THETA_OPTIMIZERS)
  epsilon: float = param(0.0, "Std of the perturbation of y0 = G(I_s) + eps.")
  feature_iterations: int = param(0, "Second phase: y = the features entering "
                                  "the last block, only that block trained "
                                  "(Eq. 13).")
  seed: int = param(0, "Seed of the net's initialisation and of eps.")
  ensemble: int = param(1, "Restorations per image, each from its own key "
                        "(and held-out pixels), averaged; run as one batch.")
  net: NetConfig = NetConfig()
  y: YSolverConfig = YSolverConfig()
  penalty: PenaltyConfig = PenaltyConfig()
  select: SelectConfig = SelectConfig()

  def check(self) -> None:
    require(self.iterations >= 1, f"iterations must be >= 1, got {self.iterations}")
    require(self.feature_iterations >= 0, "feature_iterations must be >= 0")
    require(self.beta >= 0, f"beta must be >= 0, got {self.beta}")
    require(self.learning_rate > 0, "learning_rate must be > 0")
    require(self.epsilon >= 0, "epsilon must be >= 0")
    require(self.ensemble >= 1, f"ensemble must be >= 1, got {self.ensemble}")


def flat_fields(cfg) -> Iterator[tuple[str, dataclasses.Field, Any]]:
  """``(flag name, field, value)`` of every leaf field of ``cfg`` and its parts."""
  for f in dataclasses.fields(cfg):
    v = getattr(cfg, f.name)
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
      yield from flat_fields(v)
    else:
      yield f.metadata.get("flag", f.name), f, v


def replace_flat(cfg, flat: dict[str, Any]):
  """``cfg`` with the fields named in ``flat`` (flag names, or names of
  whole parts) replaced; an unknown name raises ``ValueError``."""
  flat = dict(flat)
  changes = {}
  for f in dataclasses.fields(cfg):
    v = getattr(cfg, f.name)
    if f.name in flat and (dataclasses.is_dataclass(v) or
                           f.metadata.get("flag") is None):
      changes[f.name] = flat.pop(f.name)
    elif dataclasses.is_dataclass(v) and not isinstance(v, type):
      names = {n for n, _, _ in flat_fields(v)}
      mine = {k: flat.pop(k) for k in list(flat) if k in names}
      if mine:
        changes[f.name] = replace_flat(v, mine)
    elif f.metadata.get("flag") in flat:
      changes[f.name] = flat.pop(f.metadata["flag"])
  if flat:
    raise ValueError(f"unknown {type(cfg).__name__} field(s): {sorted(flat)}")
  return dataclasses.replace(cfg, **changes)
