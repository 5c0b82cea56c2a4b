"""The nets' building blocks against their textbook formulas."""

import jax
import jax.numpy as jnp
import numpy as np

from dncf_jax import nets


def test_batch_norm_matches_the_textbook_formula_and_its_gradient():
  """The one-pass statistics and the written-out VJP of ``nets.batch_norm``
  against autodiff of the two-pass formula, with a large mean (the shift)."""
  def textbook(x, scale, bias, eps=1e-5):
    mean = jnp.mean(x, (0, 1, 2), keepdims=True)
    var = jnp.mean(jnp.square(x - mean), (0, 1, 2), keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * scale + bias
  k = jax.random.split(jax.random.PRNGKey(0), 4)
  x = 100.0 + 0.5 * jax.random.normal(k[0], (2, 9, 7, 5))
  scale = 1 + 0.3 * jax.random.normal(k[1], (5,))
  bias = 0.3 * jax.random.normal(k[2], (5,))
  w = jax.random.normal(k[3], x.shape)
  np.testing.assert_allclose(nets.batch_norm(x, scale, bias, 1e-5),
                             textbook(x, scale, bias), atol=2e-4)
  loss = lambda f: lambda *a: jnp.sum(jnp.sin(f(*a)) * w)
  got = jax.grad(loss(lambda *a: nets.batch_norm(*a, 1e-5)), (0, 1, 2))(x, scale, bias)
  want = jax.grad(loss(textbook), (0, 1, 2))(x, scale, bias)
  for g, h in zip(got, want):
    np.testing.assert_allclose(g, h, rtol=2e-3, atol=2e-3 * float(jnp.max(jnp.abs(h))))
