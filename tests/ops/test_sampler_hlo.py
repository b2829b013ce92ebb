"""What the samplers' gradients compile to: the gradient with respect to the grid alone
(the MNIST transformers' case: the input is data) builds no scatter, since the image's
tangent is a symbolic zero and its transpose, the scatter-add, is never written; with the
image's gradient there is exactly one scatter-add, for all taps together."""

import jax
import jax.numpy as jnp
import pytest

from hlo_counts import scatters
from stn_jax import ops


def _scatters(argnums, mode, antialias=False):
  image = jnp.ones((4, 12, 12, 3))
  theta = jnp.tile(jnp.array([0.9, 0.1, 0.05, -0.1, 0.8, 0.0]), (4, 1))
  cotangent = jnp.ones((4, 6, 6, 3))

  def loss(image, theta, cotangent):
    out = ops.warp(image, theta, (6, 6), mode=mode, antialias=antialias)
    return jnp.sum(out * cotangent)

  return scatters(jax.value_and_grad(loss, argnums=argnums), image, theta, cotangent)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_the_grid_gradient_alone_builds_no_scatter(mode):
  assert _scatters(1, mode) == 0
  assert _scatters(1, mode, antialias=True) == 0
  assert _scatters((0, 1), mode) == 1
