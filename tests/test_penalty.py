"""R(theta) (Eqs. 6-7), the gamma rule and the projection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dncf_jax import nets, penalty


def _tree():
  return {"params": {
      "conv_00": {"kernel": jnp.array([[-1.0, 2.0], [3.0, -4.0]]),
                  "bias": jnp.array([-5.0])},
      "conv_01": {"kernel": jnp.array([-0.5, 0.25, -0.25]),
                  "bias": jnp.array([-2.0, 1.0])},
      "bn_01": {"scale": jnp.array([-7.0])},
  }}


def test_penalty_matches_hand_computation_l1_and_l2():
  tree = _tree()
  cover = penalty.coverage_mask(tree, penalty.from_depth(1))
  # only conv_01's kernel: negative parts 0.5 and 0.25
  assert float(penalty.penalty(tree, cover, 2.0, "l1")) == pytest.approx(1.5)
  assert float(penalty.penalty(tree, cover, 2.0, "l2")) == pytest.approx(
      2.0 * np.sqrt(0.5 ** 2 + 0.25 ** 2))
  cover_b = penalty.coverage_mask(tree, penalty.from_depth(0, biases=True))
  # kernels 1 + 4 + 0.5 + 0.25, biases 5 + 2
  assert float(penalty.penalty(tree, cover_b, 1.0, "l1")) == pytest.approx(12.75)
  cover_all = penalty.coverage_mask(tree, penalty.all_kernels)
  assert float(penalty.penalty(tree, cover_all, 1.0, "l1")) == pytest.approx(5.75)


def test_negative_depth_counts_from_the_output():
  tree = _tree()
  cover = penalty.coverage_mask(tree, penalty.from_depth(-1, num_layers=2))
  assert cover["params"]["conv_01"]["kernel"] and not cover["params"]["conv_00"]["kernel"]
  with pytest.raises(ValueError, match="num_layers"):
    penalty.from_depth(-1)


def test_penalty_is_zero_when_covered_weights_are_nonnegative():
  tree = _tree()
  cover = penalty.coverage_mask(tree, penalty.from_depth(0, biases=True))
  projected = penalty.project_nonnegative(tree, cover)
  assert float(penalty.penalty(projected, cover, 10.0, "l1")) == 0.0
  assert float(penalty.penalty(projected, cover, 10.0, "l2")) == 0.0
  # uncovered leaves untouched
  assert float(projected["params"]["bn_01"]["scale"][0]) == -7.0


def test_gamma_rule_divides_by_four_only_when_penalty_exceeds_data():
  assert float(penalty.adapt_gamma(1.0, 2.0, 1.0)) == 0.25
  assert float(penalty.adapt_gamma(1.0, 0.5, 1.0)) == 1.0
  assert float(penalty.adapt_gamma(jnp.float32(0.25), 3.0, 1.0)) == 0.0625


def test_unknown_norm_is_an_error():
  tree = _tree()
  cover = penalty.coverage_mask(tree, penalty.all_kernels)
  with pytest.raises(ValueError, match="l1' or 'l2"):
    penalty.penalty(tree, cover, 1.0, "l3")


def test_projected_net_is_convex_in_its_input():
  """Midpoint test: fails for random weights, passes after projection."""
  net = nets.SmallConvNet(channels=8, norm=False, need_sigmoid=False,
                          pad="zero")
  key = jax.random.key(3)
  x = jnp.zeros((1, 8, 8, 3))
  params = net.init(key, x)
  cover = penalty.coverage_mask(params, penalty.from_depth(1))
  ka, kb = jax.random.split(jax.random.key(4))
  a = jax.random.normal(ka, (64, 8, 8, 3))
  b = jax.random.normal(kb, (64, 8, 8, 3))

  def gap(p):
    f = lambda z: net.apply(p, z)
    return float(jnp.max(f((a + b) / 2) - (f(a) + f(b)) / 2))

  assert gap(params) > 1e-3, "random weights should violate convexity"
  proj = penalty.project_nonnegative(params, cover)
  assert gap(proj) <= 1e-5
