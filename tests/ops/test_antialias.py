"""The samplers' ``antialias``: each output pixel the mean over its footprint in the image.

Known answers: an integer shrink of the whole image is the block mean (a box filter).
Against aliasing: a one-pixel checkerboard, rotated and shrunk, keeps its mean 1/2 at every
output pixel, where plain sampling reads values from near 0 to near 1. Gradients in both
modes, through the footprint too; both samplers agree; bad values are refused in a sentence.
"""

import ast
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from stn_jax import nn as stn_nn
from stn_jax import ops


def _block_mean(image, factor):
  n, h, w, c = image.shape
  return image.reshape(n, h // factor, factor, w // factor, factor, c).mean((2, 4))


def _block_mean_error(out, separable, mode="bilinear"):
  rng = np.random.default_rng(0)
  image = rng.uniform(size=(2, 84, 84, 2))
  identity = jnp.tile(jnp.array([1.0, 0.0, 0.0]), (2, 1))
  kw = dict(transform="attention", separable=separable, mode=mode)
  got = ops.warp(image, identity, (out, out), antialias=True, **kw)
  plain = ops.warp(image, identity, (out, out), **kw)
  expected = _block_mean(image, 84 // out)
  return float(np.abs(got - expected).max()), float(np.abs(plain - expected).max())


# The gather sampler's bilinear case runs in a process of its own, under XLA's default
# flags: under this suite's fast-compile flags (conftest.py) XLA's CPU backend miscompiles
# the fused gather for these points, which lie within an ulp of pixel centres, and reads the
# pixel beside the right one (docs/ops.md, "Antialiasing"). The separable sampler and the
# nearest kernel are checked here.
_SUBPROCESS = """
import jax, test_antialias as t
jax.config.update("jax_enable_x64", True)
print([t._block_mean_error(out, False) for out in (21, 28, 42)])
"""


def test_an_integer_shrink_is_the_block_mean_with_the_gather_sampler():
  env = dict(os.environ, XLA_FLAGS="", PYTHONPATH=os.pathsep.join(
      [os.path.dirname(__file__)] + [p for p in sys.path if p]))
  done = subprocess.run([sys.executable, "-c", _SUBPROCESS], env=env, capture_output=True,
                        text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  errors = ast.literal_eval(done.stdout.strip().splitlines()[-1])
  for out, (filtered, plain) in zip((21, 28, 42), errors):
    assert filtered < 1e-12, (out, filtered)
    if out < 42:  # a factor of 2 is already the block mean without filtering
      assert plain > 0.1, (out, plain)


@pytest.mark.parametrize("out,separable,mode", [(21, True, "bilinear"), (28, True, "bilinear"),
                                                (42, True, "bilinear"), (28, False, "nearest")])
def test_an_integer_shrink_is_the_block_mean(x64, out, separable, mode):
  filtered, plain = _block_mean_error(out, separable, mode)
  assert filtered < 1e-12
  if out < 42 or mode == "nearest":
    assert plain > 0.1


def test_a_rotated_checkerboard_keeps_its_mean_at_every_pixel():
  board = (np.indices((96, 96)).sum(0) % 2).astype(np.float32)[None, ..., None]
  a, s = 0.3, 0.7
  theta = jnp.array([[s * np.cos(a), -s * np.sin(a), 0.05, s * np.sin(a), s * np.cos(a), -0.03]])
  plain = np.asarray(ops.warp(board, theta, (24, 24)))
  filtered = np.asarray(ops.warp(board, theta, (24, 24), antialias=True))
  finer = np.asarray(ops.warp(board, theta, (24, 24), antialias=8))
  assert np.abs(plain - 0.5).max() > 0.4  # aliasing: samples read nearly 0 or 1
  assert np.abs(filtered - 0.5).max() < 0.05
  assert np.abs(finer - 0.5).max() < 0.01


def test_without_shrinking_it_is_plain_sampling():
  rng = np.random.default_rng(1)
  image = jnp.asarray(rng.uniform(size=(2, 16, 16, 3)), jnp.float32)
  grid = ops.affine_grid(jnp.tile(jnp.array([[0.9, 0.2, 0.1], [-0.1, 1.1, 0.0]]), (2, 1, 1)),
                         (20, 20))
  for antialias in (False, True, 1, (1, 1)):  # True: ceil(16 / 20) = 1 sub-sample
    np.testing.assert_array_equal(ops.sample(image, grid, antialias=antialias),
                                  ops.sample(image, grid))
  assert ops.antialias_counts(True, (448, 448), (224, 224)) == (2, 2)
  assert ops.antialias_counts(True, (84, 60), (28, 28)) == (3, 3)
  assert ops.antialias_counts((2, 5), (8, 8), (8, 8)) == (2, 5)


def test_both_samplers_agree_and_fill_is_the_mean_of_the_fill(x64):
  rng = np.random.default_rng(2)
  image = rng.normal(size=(3, 30, 24, 2))
  params = jnp.asarray(np.stack([rng.uniform(0.4, 1.3, 3), rng.uniform(-0.5, 0.5, 3),
                                 rng.uniform(-0.5, 0.5, 3)], -1))
  for kw in (dict(padding_mode="fill", fill_value=2.0),
             dict(mode="bicubic", padding_mode="border")):
    gather = ops.warp(image, params, (10, 8), transform="attention", separable=False,
                      antialias=True, **kw)
    separable = ops.warp(image, params, (10, 8), transform="attention", separable=True,
                         antialias=True, **kw)
    np.testing.assert_allclose(gather, separable, atol=1e-12)
  # Far outside the image every sub-sample reads the fill value.
  away = jnp.array([[1.0, 5.0, 5.0]])
  out = ops.warp(image[:1], away, (10, 8), transform="attention", padding_mode="fill",
                 fill_value=2.0, antialias=True)
  np.testing.assert_allclose(out, 2.0)


def test_gradients_in_both_modes_through_the_footprint(x64):
  rng = np.random.default_rng(3)
  image = rng.normal(size=(2, 12, 12, 1))
  # Non-integer positions, away from the bilinear kernel's kinks.
  theta = np.array([[0.83, 0.11, 0.031], [-0.07, 0.77, 0.047]])[None].repeat(2, 0)
  theta[1, :, 2] += 0.013

  def f(image, theta):
    return ops.sample(image, ops.affine_grid(theta, (5, 5)), antialias=True)

  check_grads(f, (image, theta), order=1, modes=("fwd", "rev"), atol=1e-5, rtol=1e-5)
  loss = lambda t: jnp.sum(f(image, t) ** 2)  # noqa: E731
  np.testing.assert_allclose(jax.jacfwd(loss)(theta), jax.jacrev(loss)(theta), atol=1e-10)
  # The footprint's derivative is part of it: a scale that widens the footprint changes
  # the output even where a plain sample's gradient along it would be zero.
  plain = lambda t: jnp.sum(ops.sample(image, ops.affine_grid(t, (5, 5))) ** 2)  # noqa: E731
  assert np.abs(jax.grad(loss)(theta) - jax.grad(plain)(theta)).max() > 1e-3


def test_a_point_that_points_nowhere_filters_no_other_point():
  rng = np.random.default_rng(4)
  image = jnp.asarray(rng.uniform(size=(1, 24, 24, 1)), jnp.float32)
  grid = ops.affine_grid(jnp.array([[[0.8, 0.0, 0.0], [0.0, 0.8, 0.0]]]), (8, 8))
  broken = grid.at[0, 3, 3].set(jnp.nan)
  out = ops.sample(image, broken, antialias=True)
  assert float(out[0, 3, 3, 0]) == 0.0
  assert np.isfinite(np.asarray(out)).all()
  far = np.ones((8, 8), bool)
  far[2:5, 2:5] = False  # the neighbours lose their step towards the NaN, the rest nothing
  np.testing.assert_array_equal(np.asarray(out)[0, far], np.asarray(
      ops.sample(image, grid, antialias=True))[0, far])


@pytest.mark.parametrize("bad", [0, -2, 2.5, "yes", (2,), (1, 0), None])
def test_bad_antialias_is_refused_in_a_sentence(bad):
  image, grid = jnp.zeros((1, 8, 8, 1)), jnp.zeros((1, 4, 4, 2))
  with pytest.raises(ValueError, match="`antialias` must be True, False"):
    ops.sample(image, grid, antialias=bad)
  with pytest.raises(ValueError, match="`antialias` must be True, False"):
    ops.sample_separable(image, jnp.zeros((1, 4)), jnp.zeros((1, 4)), antialias=bad)


def test_the_transformer_module_passes_it_on():
  loc = stn_nn.LayerStack((stn_nn.Dense(4),))
  x = jnp.asarray(np.random.default_rng(5).uniform(size=(2, 24, 24, 1)), jnp.float32)
  st = stn_nn.SpatialTransformer(loc, transform="attention", out_hw=(8, 8), antialias=True)
  (y, _), _ = st.init_with_output(jax.random.key(0), x)
  np.testing.assert_allclose(y, _block_mean(np.asarray(x), 3), atol=1e-6)
