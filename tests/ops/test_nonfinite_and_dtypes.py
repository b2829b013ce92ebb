"""NaN/Inf in a grid never crash and have a defined result; bfloat16 runs finite."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grid_cases import TORCH_PADDING_MODES
from stn_jax import ops

OPTIONS = list(itertools.product(ops.MODES, TORCH_PADDING_MODES, [False, True]))
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("mode,padding_mode,align_corners", OPTIONS)
def test_nonfinite_grid_values(mode, padding_mode, align_corners):
  image = jnp.arange(1.0, 13.0).reshape(1, 3, 4, 1)
  grid = jnp.array([[[[NAN, 0.0], [0.0, NAN], [INF, 0.0], [-INF, 0.0], [0.0, INF],
                      [0.0, 0.0]]]])
  ct = jnp.ones((1, 1, 6, 1))
  out, vjp = jax.vjp(lambda i, g: ops.sample(i, g, mode=mode, padding_mode=padding_mode,
                                             align_corners=align_corners), image, grid)
  d_image, d_grid = vjp(ct)
  out = np.asarray(out).ravel()
  assert np.all(np.isfinite(out)) and np.all(np.isfinite(d_image)) and np.all(np.isfinite(d_grid))
  np.testing.assert_array_equal(out[:2], 0.0)  # NaN points nowhere, in every padding mode
  d_grid = np.asarray(d_grid)[0, 0]
  np.testing.assert_array_equal(d_grid[:2], 0.0)  # no gradient from a NaN point
  # Nor along an infinite component; with border padding the finite other
  # component still interpolates along the edge and has its gradient.
  np.testing.assert_array_equal([d_grid[2, 0], d_grid[3, 0], d_grid[4, 1]], 0.0)
  if padding_mode != "border":
    np.testing.assert_array_equal(d_grid[2:5], 0.0)
  if padding_mode == "border":
    # +inf x reads the right edge of the middle row, -inf x the left edge, +inf y the bottom row.
    centre = np.asarray(ops.sample(image, jnp.array([[[[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]]]),
                                   mode=mode, padding_mode="border", align_corners=True)).ravel()
    np.testing.assert_allclose(out[2:5], centre, atol=1e-5)
  else:
    np.testing.assert_array_equal(out[2:5], 0.0)
  assert out[5] != 0.0  # a finite point in the same batch is unaffected
  # Only the finite points (and, with border padding, the clipped infinities) send gradient.
  expected_mass = 1.0 + (3.0 if padding_mode == "border" else 0.0)
  if mode != "bicubic":  # bicubic weights sum to 1 too, but can be negative
    assert float(jnp.sum(d_image)) == pytest.approx(expected_mass, abs=1e-5)


def test_projective_division_by_zero_gives_a_finite_warp():
  # w = 1 + x: zero along the left edge of an align_corners=True grid.
  h = jnp.array([[1.0, 0, 0, 0, 1, 0, 1.0, 0]])
  image = jnp.ones((1, 5, 5, 1))
  grid = ops.projective_grid(h, (5, 5), align_corners=True)
  assert not np.all(np.isfinite(grid[:, :, 0]))
  out, grad = jax.value_and_grad(
      lambda h: ops.warp(image, h, (5, 5), transform="projective", align_corners=True).sum())(h)
  assert np.isfinite(out) and np.all(np.isfinite(grad))


@pytest.mark.parametrize("name", sorted(ops.TRANSFORMS))
@pytest.mark.parametrize("mode", ops.MODES)
def test_bfloat16_follows_the_input_and_stays_close(name, mode):
  rng = np.random.default_rng(0)
  t = ops.get_transform(name)
  image = rng.uniform(size=(2, 16, 16, 3))
  params = np.asarray(t.identity()) + 0.05 * rng.normal(size=(2, t.num_params))
  warp = lambda i, p: ops.warp(i, p, (12, 12), transform=name, mode=mode)
  out16 = warp(jnp.asarray(image, jnp.bfloat16), jnp.asarray(params, jnp.bfloat16))
  out32 = warp(jnp.asarray(image, jnp.float32), jnp.asarray(params, jnp.float32))
  assert out16.dtype == jnp.bfloat16
  assert np.all(np.isfinite(np.asarray(out16, np.float32)))
  # bfloat16 params move the grid by up to ~half a pixel; compare loosely but meaningfully.
  assert float(jnp.mean(jnp.abs(out16.astype(jnp.float32) - out32))) < 0.05
  grads = jax.grad(lambda i, p: jnp.sum(warp(i, p).astype(jnp.float32)), argnums=(0, 1))(
      jnp.asarray(image, jnp.bfloat16), jnp.asarray(params, jnp.bfloat16))
  for g in grads:
    assert g.dtype == jnp.bfloat16
    assert np.all(np.isfinite(np.asarray(g, np.float32)))


def test_bfloat16_grid_with_float32_image():
  image = jnp.ones((1, 8, 8, 1), jnp.float32)
  grid = ops.identity_grid((8, 8)).astype(jnp.bfloat16)[None]
  out = ops.sample(image, grid)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, 1.0, atol=1e-2)
