"""The objective, its gradients, the y-step and the compiled loop."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dncf_jax as dn
from dncf_jax import engine, nets, penalty, physics, select, solver
from dncf_jax import quasi_newton as qn

TINY = dn.DNCFConfig.from_flat(iterations=20, channels=8, scales=2,
                               skip_channels=2, checkpoint_every=10)


def _problem(cfg, h=16, w=16, dtype=jnp.float32):
  rng = np.random.default_rng(0)
  obs = jnp.asarray(rng.uniform(0, 1, (h, w, 3)), dtype)
  task = physics.Denoise()
  net = cfg.net.build(3)
  anchor = task.anchor(obs)
  params = net.init(jax.random.key(0), anchor)
  params = jax.tree_util.tree_map(lambda a: a.astype(dtype), params)
  cover = solver.penalty_cover(cfg.penalty, params)
  model = solver.Model(net, (h, w), (h, w))
  prob = solver.Problem(obs, jnp.ones_like(obs), anchor, jnp.ones_like(obs),
                        jnp.zeros(()), task)
  return model, prob, params, cover


def _make_step(cfg, model, cover):
  opt = solver.theta_optimizer(cfg.theta_optimizer, cfg.learning_rate)
  y_fun, step = solver.make_step(model, cover, opt, beta=cfg.beta,
                                 y_cfg=cfg.y, penalty_cfg=cfg.penalty)
  return y_fun, step, opt


def test_head_of_features_is_the_whole_net():
  net = TINY.net.build(3)
  x = jax.random.uniform(jax.random.key(1), (16, 16, 3))
  p = net.init(jax.random.key(0), x)
  full = net.apply(p, x)
  split = net.apply(p, net.apply(p, x, method=nets.Skip.features),
                    method=nets.Skip.head)
  assert np.allclose(full, split, atol=1e-6)


def test_gradients_match_finite_differences_in_float64():
  jax.config.update("jax_enable_x64", True)
  try:
    cfg = TINY.replace(gamma=0.5)
    model, prob, params, cover = _problem(cfg, 8, 8, jnp.float64)
    y_fun, _, _ = _make_step(cfg, model, cover)

    @jax.jit      # one program, not dispatched op by op
    def total(params, y):
      reg = penalty.penalty(params, cover, cfg.penalty.gamma, cfg.penalty.norm)
      return y_fun(y, params, prob) + reg

    y = prob.anchor
    gp, gy = jax.jit(jax.grad(total, argnums=(0, 1)))(params, y)
    rng = np.random.default_rng(0)
    h = 1e-6
    for _ in range(3):  # random directions
      dy = jnp.asarray(rng.standard_normal(y.shape))
      fd = (total(params, y + h * dy) - total(params, y - h * dy)) / (2 * h)
      assert float(jnp.vdot(gy, dy)) == pytest.approx(float(fd), rel=1e-5, abs=1e-7)
      dp = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.standard_normal(a.shape)), params)
      plus = jax.tree_util.tree_map(lambda a, d: a + h * d, params, dp)
      minus = jax.tree_util.tree_map(lambda a, d: a - h * d, params, dp)
      fd = (total(plus, y) - total(minus, y)) / (2 * h)
      an = sum(float(jnp.vdot(a, d)) for a, d in zip(jax.tree_util.tree_leaves(gp),
                                                       jax.tree_util.tree_leaves(dp)))
      assert an == pytest.approx(float(fd), rel=1e-5, abs=1e-7)
  finally:
    jax.config.update("jax_enable_x64", False)


@pytest.mark.parametrize("y_solver", ["lbfgs", "bfgs"])
def test_y_step_satisfies_armijo_and_lowers_the_loss(y_solver):
  cfg = TINY.replace(y_solver=y_solver, epsilon=0.1)
  model, prob, params, cover = _problem(cfg)
  y_fun, _, _ = _make_step(cfg, model, cover)
  fun = lambda y, p: y_fun(y, p, prob)
  y0 = prob.anchor + 0.1 * jax.random.normal(jax.random.key(2), prob.anchor.shape)
  ys = qn.init_y_state(cfg.y, fun, y0, params)
  f0, g0 = jax.value_and_grad(fun)(y0, params)
  y1, ys1, step, evals = jax.jit(
      lambda y, s, p: qn.y_update(cfg.y, fun, y, s, p))(y0, ys, params)
  f1 = fun(y1, params)
  slope = float(jnp.vdot(g0, y1 - y0))  # = step * p^T d
  assert float(f1) < float(f0)
  assert float(f1) <= float(f0) + cfg.y.armijo_c1 * slope + 1e-6 * abs(float(f0))
  assert slope < 0
  assert 1 <= int(evals) <= cfg.y.max_backtracks + 1


# two y steps per iteration: the same check, a second compile (slow)
@pytest.mark.parametrize("y_steps", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_fused_lbfgs_gives_jaxopt_iterates(y_steps):
  """The fused y-step (one backward pass shared with theta) changes no iterate."""
  rng = np.random.default_rng(0)
  obs = np.clip(rng.uniform(0, 1, (16, 16, 3)) + 0.1 * rng.standard_normal(
      (16, 16, 3)), 0, 1).astype(np.float32)
  runs = []
  for fuse in (True, False):
    cfg = TINY.replace(iterations=15, y_steps=y_steps,
                              epsilon=0.05, early_stop=False,
                              fuse_gradients=fuse)
    assert cfg.y.fused == fuse
    runs.append(dn.restore(obs, physics.Denoise(), cfg))
  fused, ref = runs
  np.testing.assert_allclose(fused.y, ref.y, atol=1e-5)
  np.testing.assert_allclose(fused.history["data"], ref.history["data"],
                             rtol=1e-5)
  np.testing.assert_array_equal(fused.history["y_evals"], ref.history["y_evals"])
  np.testing.assert_allclose(fused.history["y_stepsize"],
                             ref.history["y_stepsize"])


def test_two_loop_meets_the_secant_equation():
  """-H d = -s for the newest pair (H: the L-BFGS inverse Hessian, Alg. 7.4)."""
  a = np.random.default_rng(1).standard_normal((4, 4))
  q = jnp.asarray(a @ a.T + 4 * np.eye(4), jnp.float32)
  grad = lambda x: q @ x
  cfg = TINY.replace(y_history=3)
  mem = qn.init_lbfgs_memory(cfg.y, jnp.zeros(4))
  x = jnp.ones(4)
  for i in range(5):     # more pairs than the memory holds: the ring wraps
    s = jnp.asarray(np.random.default_rng(i).standard_normal(4), jnp.float32)
    mem = mem._replace(pending_s=s, pending_g=grad(x), pending=jnp.array(True))
    x = x + s
    mem = qn.complete_pair(mem, grad(x))
    np.testing.assert_allclose(qn._two_loop(q @ s, mem), -s, rtol=1e-4,
                               atol=1e-5)
  assert int(mem.count) == 5
  # nothing pending: completing again changes nothing
  again = qn.complete_pair(mem, grad(x))
  assert int(again.count) == 5


def test_bfgs_refuses_image_sized_y():
  cfg = TINY.replace(y_solver="bfgs")
  with pytest.raises(ValueError, match="dense BFGS"):
    qn.init_y_state(cfg.y, lambda y, p: jnp.sum(y), jnp.zeros((128, 128, 3)), {})


def test_alternating_step_compiles_once_across_iterations():
  cfg = TINY.replace(early_stop=False)
  obs = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (16, 16, 3)),
                    jnp.float32)
  method = solver.DNCF(cfg, (16, 16, 3))
  state, prob = method.init(obs, physics.Denoise(), jax.random.key(0))
  run = jax.jit(lambda c, p, stop: engine.chunk(method, c, p, stop, 5))
  carry = engine.Carry(state, state.it, jnp.zeros((), bool))
  for _ in range(3):
    carry, stats, out, cands = run(carry, prob, jnp.int32(100))
  assert run._cache_size() == 1
  assert int(carry.it) == 15 and int(carry.state.it) == 15
  assert np.all(np.isfinite(stats["data"]))
  assert cands.shape == (len(select.CANDIDATES), 16, 16, 3)


def test_gamma_adapts_inside_the_compiled_loop():
  cfg = TINY.replace(gamma=100.0, iterations=10)
  obs = np.random.default_rng(0).uniform(0, 1, (16, 16, 3)).astype(np.float32)
  r = dn.restore(obs, physics.Denoise(), cfg)
  # Compilation (init, the chunk program) is part of the wall time (0 when
  # another test compiled the same programs); the loop is the rest.
  assert 0 <= r.compile_seconds < r.seconds
  g = r.history["gamma"]
  assert g[0] == 100.0 and g[-1] < 100.0
  ratios = g[1:] / g[:-1]
  assert np.all(np.isclose(ratios, 1.0) | np.isclose(ratios, 0.25))
  # it only shrinks when R exceeded the data loss
  shrank = ~np.isclose(ratios, 1.0)
  assert np.all(r.history["penalty"][:-1][shrank] > r.history["data"][:-1][shrank])


def test_bad_config_values_raise():
  obs = np.zeros((16, 16, 3), np.float32)
  for field, value, match in [("y_solver", "newton", "y_solver"),
                              ("norm", "l3", "norm"),
                              ("iterations", 0, "iterations")]:
    with pytest.raises(ValueError, match=match):
      dn.restore(obs, physics.Denoise(), TINY.replace(**{field: value}))


def test_noise_estimate_is_close_on_a_smooth_image():
  rng = np.random.default_rng(0)
  clean = np.asarray(dn.filters.gaussian_blur(jnp.asarray(rng.uniform(0, 1, (64, 64, 3)), jnp.float32), 3.0))
  noisy = clean + 0.1 * rng.standard_normal(clean.shape)
  assert float(select.estimate_noise_sigma(jnp.asarray(noisy, jnp.float32))) == pytest.approx(0.1, rel=0.1)


def test_snapshots_are_opt_in_and_span_both_phases():
  rng = np.random.default_rng(0)
  noflash = rng.uniform(0, 1, (16, 16, 3)).astype(np.float32)
  task = physics.FlashNoFlash(flash=np.clip(noflash * 1.2, 0, 1))
  cfg = TINY.replace(iterations=4, feature_iterations=2,
                            checkpoint_every=2, early_stop=False)
  r = dn.restore(noflash, task, cfg, snapshot_every=2)
  assert list(r.history["snapshot_iteration"]) == [2, 4, 6]
  snaps = r.history["snapshot_images"]
  assert snaps.shape == (3, len(select.CANDIDATES), 16, 16, 3)
  for i, name in enumerate(select.CANDIDATES):
    assert np.allclose(snaps[-1, i], r.candidates[name])
  plain = dn.restore(noflash, task, cfg)
  assert "snapshot_images" not in plain.history
  assert np.allclose(plain.image, r.image)
  with pytest.raises(ValueError, match="snapshot_every"):
    dn.restore(noflash, task, cfg, snapshot_every=3)
