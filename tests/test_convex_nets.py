"""FICNN, PICNN, CVXR-Net (section 6, Eq. 17): projection, convexity check,
the gamma limits, accuracy on moons, bad input."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dncf_jax import convex_nets as cn
from dncf_jax import penalty
from dncf_jax import toy_data

SMALL = cn.ConvexConfig(hidden=32, layers=2, steps=300, lr=3e-3)


@pytest.fixture(scope="module")
def moons():
  return toy_data.make("moons", n=200, seed=0)


@pytest.fixture(scope="module")
def fits(moons):
  """One small run per setting, shared by the tests below."""
  settings = dict(
      ficnn=dataclasses.replace(SMALL, net="ficnn"),
      picnn=dataclasses.replace(SMALL, net="picnn"),
      cvxr=dataclasses.replace(SMALL, net="cvxr", gamma=1e-3),
      cvxr_hard=dataclasses.replace(SMALL, net="cvxr", mode="hard"),
      cvxr_zero=dataclasses.replace(SMALL, net="cvxr", mode="soft", gamma=0.0),
      cvxr_none=dataclasses.replace(SMALL, net="cvxr", mode="none", gamma=5.0),
      cvxr_large=dataclasses.replace(SMALL, net="cvxr", gamma=1.0),
  )
  return {k: cn.fit(c, moons.x_train, moons.y_train) for k, c in settings.items()}


def _report(f, data):
  low, high = data.box()
  return cn.convexity_report(f.config, f.params, low, high, segments=300)


def test_predicates_select_the_z_path_kernels(fits):
  for name in ("ficnn", "picnn"):
    mask = penalty.coverage_mask(fits[name].params, cn.z_kernels)
    covered = sorted("/".join(p) for p, m in _flat(mask).items() if m)
    assert covered == ["params/wz_1/kernel", "params/wz_2/kernel"], name
  upper = penalty.coverage_mask(fits["cvxr"].params, cn.upper_z_kernels(2))
  assert [p for p, m in _flat(upper).items() if m] == [("params", "wz_2", "kernel")]


def _flat(tree):
  return {tuple(str(k.key) for k in path): v
          for path, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_projection_keeps_ficnn_z_weights_nonnegative_after_every_step(fits):
  for name in ("ficnn", "picnn", "cvxr_hard"):
    f = fits[name]
    assert f.history["min_z"].shape == (SMALL.steps,)
    assert np.all(f.history["min_z"] >= 0.0), name
    assert cn.negative_mass(f.params, cn.z_kernels) == 0.0
  # without the projection the same weights do go negative
  assert np.all(fits["cvxr_none"].history["min_z"] < 0.0)


def test_ficnn_and_picnn_pass_the_jensen_check_after_training(fits, moons):
  rep = _report(fits["ficnn"], moons)
  assert rep["convex_in"] == "xy" and rep["jensen_rate"] == 0.0
  assert rep["jensen_max_gap"] <= 1e-6
  rep = _report(fits["picnn"], moons)
  assert rep["convex_in"] == "y" and rep["jensen_rate"] == 0.0


def test_the_check_catches_a_planted_nonconvex_net(fits, moons):
  f = fits["ficnn"]
  params = jax.tree_util.tree_map(lambda a: a, f.params)
  params["params"]["wz_2"]["kernel"] = -jnp.abs(params["params"]["wz_2"]["kernel"]) - 0.1
  planted = cn.Fit(f.config, params, f.history, 2, 0.0)
  rep = _report(planted, moons)
  assert rep["jensen_rate"] > 0.2 and rep["jensen_max_gap"] > 1e-3
  assert rep["negative_mass_wz_2"] == 1.0
  # an unconstrained net trained on moons (CVXR at gamma = 0) is not convex
  assert _report(fits["cvxr_zero"], moons)["jensen_rate"] > 0.05


def test_cvxr_at_gamma_infinity_is_ficnn(fits, moons):
  a, b = fits["cvxr_hard"].params, fits["ficnn"].params
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert _report(fits["cvxr_hard"], moons)["jensen_rate"] == 0.0


def test_cvxr_at_gamma_zero_is_an_ordinary_mlp(fits):
  zero, none = fits["cvxr_zero"], fits["cvxr_none"]
  assert np.all(zero.history["reg"] == 0.0) and np.all(none.history["reg"] == 0.0)
  for x, y in zip(jax.tree_util.tree_leaves(zero.params),
                  jax.tree_util.tree_leaves(none.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_larger_gamma_leaves_less_negative_mass(fits):
  masses = [cn.negative_mass(fits[k].params, cn.z_kernels)
            for k in ("cvxr_zero", "cvxr", "cvxr_large", "cvxr_hard")]
  assert masses[0] > 0.3 and masses[0] > masses[1] > masses[2] >= masses[3] == 0.0
  assert np.all(fits["cvxr"].history["reg"][1:] > 0.0)


def test_adaptive_rule_quarters_gamma_while_penalty_dominates(moons):
  cfg = dataclasses.replace(SMALL, net="cvxr", gamma=10.0, adaptive=True, steps=50)
  h = cn.fit(cfg, moons.x_train, moons.y_train).history
  assert np.all(np.diff(h["gamma"]) <= 0.0) and h["gamma"][-1] < 10.0
  ratios = h["gamma"][1:] / h["gamma"][:-1]
  assert set(np.round(ratios, 6)) <= {1.0, 0.25}


@pytest.mark.parametrize("name", ["ficnn", "picnn", "cvxr"])
def test_each_net_beats_chance_on_moons(fits, moons, name):
  f = fits[name]
  assert cn.accuracy(f.config, f.params, moons.x_test, moons.y_test) > 0.75
  assert f.history["data"][-1] < f.history["data"][0]


def test_data_sets_are_seeded_balanced_and_standardised():
  for name in toy_data.NAMES:
    a, b = toy_data.make(name, n=100, seed=3), toy_data.make(name, n=100, seed=3)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.x_train.shape == (50, 2) and a.x_test.shape == (50, 2)
    y = np.concatenate([a.y_train, a.y_test])
    assert set(y) == {0, 1} and 0.3 < y.mean() < 0.7
    x = np.concatenate([a.x_train, a.x_test])
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-5)
  assert not np.array_equal(toy_data.make("moons", seed=1).x_train,
                            toy_data.make("moons", seed=2).x_train)


def test_bad_input_is_a_clear_value_error(fits, moons):
  with pytest.raises(ValueError, match="unknown dataset 'swiss'"):
    toy_data.make("swiss")
  with pytest.raises(ValueError, match="unknown dataset 'bogus'"):
    toy_data.parse_names("moons,bogus")
  with pytest.raises(ValueError, match="net must be"):
    cn.fit(dataclasses.replace(SMALL, net="mlp"), moons.x_train, moons.y_train)
  with pytest.raises(ValueError, match="mode must be"):
    cn.ConvexConfig(mode="medium").validate()
  with pytest.raises(ValueError, match="gamma"):
    cn.ConvexConfig(gamma=-1.0).validate()
  with pytest.raises(ValueError, match=r"shape \(N, d\)"):
    cn.fit(SMALL, moons.x_train[:, 0], moons.y_train)
  with pytest.raises(ValueError, match="labels must have shape"):
    cn.fit(SMALL, moons.x_train, moons.y_train[:-1])
  with pytest.raises(ValueError, match="NaN"):
    cn.fit(SMALL, np.full((4, 2), np.nan), np.array([0, 1, 0, 1]))
  f = fits["ficnn"]
  with pytest.raises(ValueError, match="2 coordinates"):
    cn.predict(f.config, f.params, np.zeros((5, 3)))
  with pytest.raises(ValueError, match="low < high"):
    cn.jensen_violations(f.config, f.params, [1.0, 1.0], [0.0, 2.0])
  with pytest.raises(ValueError, match="box has 3 coordinates"):
    cn.jensen_violations(f.config, f.params, [0.0] * 3, [1.0] * 3)


def _cli(*args):
  import os
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=root,
             JAX_COMPILATION_CACHE_DIR=os.path.join(root, ".jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return subprocess.run([sys.executable, "-m", "experiments.convexify", *args],
                        cwd=root, env=env, capture_output=True, text=True,
                        timeout=300)


def test_cli_bad_input_is_one_error_line(tmp_path):
  p = _cli("--datasets=moons,swiss", f"--output_dir={tmp_path}")
  assert p.returncode == 2 and "error: unknown dataset 'swiss'" in p.stderr
  assert not any(tmp_path.iterdir())
  from experiments import convexify
  assert convexify.parse_gammas("0, 0.5,hard") == [0.0, 0.5, "hard"]
  for bad, msg in (("0,abc", "'abc' is neither"), ("-1", "finite and >= 0"),
                   (",", "empty")):
    with pytest.raises(ValueError, match=msg):
      convexify.parse_gammas(bad)


def test_cli_small_run_writes_figure_table_and_json(tmp_path):
  import json
  p = _cli("--small", "--datasets=moons", "--gammas=hard",
           f"--output_dir={tmp_path}")
  assert p.returncode == 0, p.stderr[-2000:]
  for name in ("regions.png", "gamma_sweep.png", "results.md", "results.json"):
    assert (tmp_path / name).stat().st_size > 0
  out = json.loads((tmp_path / "results.json").read_text())
  assert set(out["nets"]) == {"ficnn", "picnn", "cvxr"}
  assert out["nets"]["ficnn"]["moons"]["convexity"]["jensen_rate"] == 0.0
  hard = out["gamma_sweep"]["hard (projection)"]["moons"]
  assert hard["test_accuracy"] == out["nets"]["ficnn"]["moons"]["test_accuracy"]
  assert "| FICNN |" in (tmp_path / "results.md").read_text()
  assert out["schema_version"] == 1 and out["versions"]["jax"]
  assert p.stdout.strip().splitlines()[-1].startswith("convexify: mean test")
  p = _cli("--small", "--datasets=moons", "--gammas=hard",
           f"--output_dir={tmp_path}")
  assert p.returncode == 2 and p.stderr.strip() == (
      f"error: {tmp_path}/regions.png exists; pass --overwrite or another "
      "--output_dir")
