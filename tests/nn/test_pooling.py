"""stn_jax.nn.pooling.max_pool: XLA's max pool, with the same gradient computed elementwise."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stn_jax.nn.pooling import max_pool


def _xla(x, window):
  pads = tuple((0, -s % window) for s in x.shape[1:3])
  return nn.max_pool(x, (window, window), strides=(window, window), padding=pads)


@pytest.mark.parametrize("shape,window", [((3, 8, 8, 4), 2), ((2, 11, 7, 3), 2),
                                          ((2, 9, 10, 2), 3), ((1, 5, 5, 1), 5)])
@pytest.mark.parametrize("values", ["normal", "relu", "ties"])
def test_the_pool_and_its_gradient_equal_xlas(shape, window, values):
  rng = np.random.default_rng(0)
  x = rng.normal(size=shape)
  if values == "relu":  # as after a ReLU: whole windows of zeros
    x = np.maximum(x, 0)
  elif values == "ties":  # many equal maxima in a window: the first one takes the gradient
    x = rng.integers(0, 3, size=shape)
  x = jnp.asarray(x, jnp.float32)
  y = jax.jit(max_pool, static_argnums=1)(x, window)
  np.testing.assert_array_equal(y, _xla(x, window))
  g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
  ours = jax.jit(lambda x, g: jax.vjp(lambda v: max_pool(v, window), x)[1](g)[0])(x, g)
  want = jax.vjp(lambda v: _xla(v, window), x)[1](g)[0]
  np.testing.assert_array_equal(ours, want)


def test_its_gradient_maps_over_a_batch():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3, 6, 6, 2)), jnp.float32)
  loss = lambda f: (lambda v: jnp.sum(f(v, 2) ** 2))
  ours = jax.vmap(jax.grad(loss(max_pool)))(x)
  want = jax.vmap(jax.grad(loss(_xla)))(x)
  np.testing.assert_array_equal(ours, want)
