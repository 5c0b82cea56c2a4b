"""White-box attacks on any ``logits_fn(x) -> logits`` (images NHWC in [0, 1]).

FGSM, BIM, PGD, FFGSM (L-inf) and CW-L2, each jitted, batched and written
with ``lax`` loops. Defaults are the threat model of ``BENCHMARKS.md``:
eps 8/255, alpha 2/255, 7 steps (FFGSM alpha 10/255); CW c = 1, kappa = 0,
100 Adam steps at lr 0.01, keeping the best adversarial example per image.

``targeted=True`` makes ``labels`` the target classes: the attack then
descends the loss of the target instead of ascending that of the label.
``logits_fn`` is a static argument of the jitted cores, so pass the same
function object to reuse a compiled attack.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax

Array = jax.Array
LogitsFn = Callable[[Array], Array]

EPS = 8 / 255
ALPHA = 2 / 255
STEPS = 7
FFGSM_ALPHA = 10 / 255


# ---------------------------------------------------------------------------
# Input checks (outside jit: they need concrete values)
# ---------------------------------------------------------------------------

def _check(x, labels, eps: Optional[float] = None, key=None,
           needs_key: bool = False) -> tuple[Array, Array]:
  x = jnp.asarray(x)
  labels = jnp.asarray(labels)
  if x.ndim != 4:
    raise ValueError(f"images must be a batch (N, H, W, C), got shape {x.shape}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"images must be floats in [0, 1], got dtype {x.dtype}")
  if not isinstance(x, jax.core.Tracer):
    lo, hi = float(jnp.min(x)), float(jnp.max(x))
    if not (lo >= 0.0 and hi <= 1.0):   # also catches NaN
      raise ValueError(f"image values must lie in [0, 1], got [{lo}, {hi}]")
  if labels.shape != (x.shape[0],):
    raise ValueError(f"labels must have shape ({x.shape[0]},) to match the "
                     f"images, got {labels.shape}")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"labels must be integer classes, got dtype {labels.dtype}")
  if eps is not None and not eps > 0:
    raise ValueError(f"eps must be positive, got {eps}")
  if needs_key and key is None:
    raise ValueError("this attack has a random start: pass key=jax.random.key(...)")
  return x, labels


def _loss_grad(logits_fn: LogitsFn, x: Array, labels: Array,
               targeted: bool) -> Array:
  """Gradient of the summed cross-entropy, signed so that ascent attacks."""
  def loss(z):
    logits = logits_fn(z)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(-ce if targeted else ce)
  return jax.grad(loss)(x)


def _project(adv: Array, x: Array, eps: float) -> Array:
  return jnp.clip(jnp.clip(adv, x - eps, x + eps), 0.0, 1.0)


def _uniform_start(key, x: Array, eps: float) -> Array:
  noise = jax.random.uniform(key, x.shape, x.dtype, -eps, eps)
  return jnp.clip(x + noise, 0.0, 1.0)


# ---------------------------------------------------------------------------
# L-inf attacks
# ---------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("logits_fn", "targeted"))
def _fgsm(logits_fn, x, labels, eps, targeted):
  g = _loss_grad(logits_fn, x, labels, targeted)
  return jnp.clip(x + eps * jnp.sign(g), 0.0, 1.0)


@functools.partial(jax.jit, static_argnames=("logits_fn", "steps", "targeted"))
def _iterate(logits_fn, x, start, labels, eps, alpha, steps, targeted):
  def body(_, adv):
    g = _loss_grad(logits_fn, adv, labels, targeted)
    return _project(adv + alpha * jnp.sign(g), x, eps)
  return jax.lax.fori_loop(0, steps, body, start)


@functools.partial(jax.jit, static_argnames=("logits_fn", "targeted"))
def _ffgsm(logits_fn, x, labels, key, eps, alpha, targeted):
  adv = _uniform_start(key, x, eps)
  g = _loss_grad(logits_fn, adv, labels, targeted)
  return _project(adv + alpha * jnp.sign(g), x, eps)


def fgsm(logits_fn: LogitsFn, x: Array, labels: Array, *, eps: float = EPS,
         targeted: bool = False, key=None) -> Array:
  """Goodfellow et al.: one signed-gradient step of size ``eps``."""
  x, labels = _check(x, labels, eps)
  return _fgsm(logits_fn, x, labels, eps, targeted)


def bim(logits_fn: LogitsFn, x: Array, labels: Array, *, eps: float = EPS,
        alpha: float = ALPHA, steps: int = STEPS, targeted: bool = False,
        key=None) -> Array:
  """Kurakin et al.: ``steps`` signed steps of ``alpha``, projected on the eps-ball."""
  x, labels = _check(x, labels, eps)
  return _iterate(logits_fn, x, x, labels, eps, alpha, int(steps), targeted)


def pgd(logits_fn: LogitsFn, x: Array, labels: Array, *, key=None,
        eps: float = EPS, alpha: float = ALPHA, steps: int = STEPS,
        targeted: bool = False) -> Array:
  """Madry et al.: BIM from a uniform random start in the eps-ball."""
  x, labels = _check(x, labels, eps, key, needs_key=True)
  start = _uniform_start(key, x, eps)
  return _iterate(logits_fn, x, start, labels, eps, alpha, int(steps), targeted)


def ffgsm(logits_fn: LogitsFn, x: Array, labels: Array, *, key=None,
          eps: float = EPS, alpha: float = FFGSM_ALPHA,
          targeted: bool = False) -> Array:
  """Wong et al. fast FGSM: uniform start, one step of ``alpha``, projection."""
  x, labels = _check(x, labels, eps, key, needs_key=True)
  return _ffgsm(logits_fn, x, labels, key, eps, alpha, targeted)


# ---------------------------------------------------------------------------
# Carlini-Wagner L2
# ---------------------------------------------------------------------------

def _cw_margin(logits: Array, labels: Array, kappa: float,
               targeted: bool) -> Array:
  onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=bool)
  real = jnp.sum(jnp.where(onehot, logits, 0.0), axis=-1)
  other = jnp.max(jnp.where(onehot, -jnp.inf, logits), axis=-1)
  margin = other - real if targeted else real - other
  return jnp.maximum(margin, -kappa)


def _cw_success(logits: Array, labels: Array, targeted: bool) -> Array:
  pred = jnp.argmax(logits, axis=-1)
  return pred == labels if targeted else pred != labels


@functools.partial(jax.jit, static_argnames=(
    "logits_fn", "steps", "search_steps", "targeted"))
def _cw(logits_fn, x, labels, c, kappa, lr, steps, search_steps, targeted):
  n = x.shape[0]
  axes = tuple(range(1, x.ndim))
  w0 = jnp.arctanh(jnp.clip(2.0 * x - 1.0, -1 + 1e-6, 1 - 1e-6))
  opt = optax.adam(lr)

  def to_image(w):
    return 0.5 * (jnp.tanh(w) + 1.0)

  def objective(w, c_img):
    adv = to_image(w)
    l2 = jnp.sum(jnp.square(adv - x), axis=axes)
    logits = logits_fn(adv)
    f = _cw_margin(logits, labels, kappa, targeted)
    return jnp.sum(l2 + c_img * f), (adv, l2, logits)

  def keep_best(best, adv, l2, logits):
    best_adv, best_l2, found = best
    better = _cw_success(logits, labels, targeted) & (l2 < best_l2)
    m = better.reshape((n,) + (1,) * (x.ndim - 1))
    return (jnp.where(m, adv, best_adv), jnp.where(better, l2, best_l2),
            found | better)

  def search_step(_, carry):
    best, c_img, lo, hi = carry

    def adam_step(_, inner):
      w, state, run_best = inner
      (_, (adv, l2, logits)), g = jax.value_and_grad(
          objective, has_aux=True)(w, c_img)
      run_best = keep_best(run_best, adv, l2, logits)
      upd, state = opt.update(g, state, w)
      return w + upd, state, run_best

    run_best = (x, jnp.full((n,), jnp.inf, x.dtype), jnp.zeros((n,), bool))
    w, _, run_best = jax.lax.fori_loop(
        0, steps, adam_step, (w0, opt.init(w0), run_best))
    adv = to_image(w)
    logits = logits_fn(adv)
    l2 = jnp.sum(jnp.square(adv - x), axis=axes)
    run_best = keep_best(run_best, adv, l2, logits)
    ok = run_best[2]
    better = run_best[1] < best[1]
    m = better.reshape((n,) + (1,) * (x.ndim - 1))
    best = (jnp.where(m, run_best[0], best[0]),
            jnp.where(better, run_best[1], best[1]), best[2] | ok)
    # Carlini-Wagner bisection on c: smaller after a success, larger otherwise.
    hi = jnp.where(ok, jnp.minimum(hi, c_img), hi)
    lo = jnp.where(ok, lo, jnp.maximum(lo, c_img))
    c_img = jnp.where(hi < 1e10, 0.5 * (lo + hi), c_img * 10.0)
    return best, c_img, lo, hi

  best = (x, jnp.full((n,), jnp.inf, x.dtype), jnp.zeros((n,), bool))
  c_img = jnp.full((n,), c, x.dtype)
  carry = (best, c_img, jnp.zeros((n,), x.dtype), jnp.full((n,), 1e10, x.dtype))
  best, *_ = jax.lax.fori_loop(0, search_steps, search_step, carry)
  return best[0]


def cw(logits_fn: LogitsFn, x: Array, labels: Array, *, c: float = 1.0,
       kappa: float = 0.0, steps: int = 100, lr: float = 0.01,
       binary_search_steps: int = 1, targeted: bool = False,
       key=None) -> Array:
  """Carlini-Wagner L2: Adam on ``w`` with ``x' = (tanh(w) + 1) / 2``.

  Minimises ``||x' - x||² + c·max(z_y - max_{j≠y} z_j, -kappa)`` per image
  (targeted: ``max_{j≠t} z_j - z_t``) and returns, per image, the
  successful example of smallest L2 seen (the clean image where none
  succeeded). ``binary_search_steps > 1`` bisects ``c`` per image between
  runs, starting from ``c``, as Carlini and Wagner do.
  """
  x, labels = _check(x, labels)
  if not c > 0:
    raise ValueError(f"c must be positive, got {c}")
  if int(steps) < 1 or int(binary_search_steps) < 1:
    raise ValueError("steps and binary_search_steps must be at least 1")
  return _cw(logits_fn, x, labels, c, kappa, lr, int(steps),
             int(binary_search_steps), targeted)


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------

ATTACKS: dict[str, Callable[..., Array]] = {
    "fgsm": fgsm, "bim": bim, "pgd": pgd, "ffgsm": ffgsm, "cw": cw}
RANDOM_START = frozenset({"pgd", "ffgsm"})


def attack(name: str, logits_fn: LogitsFn, x: Array, labels: Array,
           key=None, **kwargs) -> Array:
  """Runs ``ATTACKS[name]`` with its benchmark defaults, overridden by ``kwargs``."""
  if name not in ATTACKS:
    raise ValueError(f"unknown attack {name!r}; choose one of {sorted(ATTACKS)}")
  return ATTACKS[name](logits_fn, x, labels, key=key, **kwargs)
