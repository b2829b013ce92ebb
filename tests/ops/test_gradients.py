"""Gradients checked numerically with jax.test_util.check_grads, in forward and reverse
mode (its default modes), and forward-mode derivatives against reverse-mode ones.

The bilinear kernel has kinks at integer pixel positions and clipping has
kinks at the borders; there a central difference averages the two one-sided
slopes while the sampler (like torch) returns the slope of the cell to the
right. So the grid gradient is checked numerically just beside those points
(on both sides), and exactly on them against the reference in
test_sample_reference.py. The image gradient is linear and is checked exactly
on them. Bicubic is C1, so its grid gradient is checked exactly on integers too.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from grid_cases import TORCH_PADDING_MODES, pixel_coordinates, random_grid
from stn_jax import ops

OPTIONS = list(itertools.product(ops.MODES, TORCH_PADDING_MODES, [False, True]))


def _sampler(**kw):
  return lambda image, grid: ops.sample(image, grid, **kw)


@pytest.mark.parametrize("mode,padding_mode,align_corners", OPTIONS)
def test_image_gradient_including_integer_positions_and_borders(x64, mode, padding_mode,
                                                                align_corners):
  rng = np.random.default_rng(0)
  h, w = (5, 9) if align_corners else (4, 8)
  image = rng.normal(size=(2, h, w, 2))
  grid = random_grid(rng, 2, 2, 8, h, w, align_corners)
  f = _sampler(mode=mode, padding_mode=padding_mode, align_corners=align_corners)
  check_grads(lambda i: f(i, grid), (image,), order=1, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("mode,padding_mode,align_corners",
                         [o for o in OPTIONS if o[0] != "nearest"])
@pytest.mark.parametrize("side", [-1, 1])
def test_grid_gradient_beside_integer_positions_and_borders(x64, mode, padding_mode,
                                                            align_corners, side):
  rng = np.random.default_rng(1)
  h, w = (5, 9) if align_corners else (4, 8)
  image = rng.normal(size=(1, h, w, 2))
  # Every integer pixel position, including both edges, nudged to one side.
  xs, ys = np.meshgrid(np.arange(w), np.arange(h))
  grid = np.stack([pixel_coordinates(xs, w, align_corners),
                   pixel_coordinates(ys, h, align_corners)], -1)[None]
  grid = grid + side * 1e-3
  f = _sampler(mode=mode, padding_mode=padding_mode, align_corners=align_corners)
  check_grads(lambda g: f(image, g), (grid,), order=1, eps=1e-5,
              atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
def test_bicubic_grid_gradient_exactly_at_interior_integer_positions(x64, padding_mode):
  rng = np.random.default_rng(2)
  image = rng.normal(size=(1, 8, 8, 1))
  xs, ys = np.meshgrid(np.arange(2, 6), np.arange(2, 6))
  grid = np.stack([pixel_coordinates(xs, 8, False), pixel_coordinates(ys, 8, False)], -1)[None]
  f = _sampler(mode="bicubic", padding_mode=padding_mode)
  # C1 but not C2 there: the central difference is only O(eps) accurate.
  check_grads(lambda g: f(image, g), (grid,), order=1, eps=1e-8,
              atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["affine", "attention", "projective", "tps",
                                  "rotation_scale_translation", "scale_translation"])
def test_warp_gradient_with_respect_to_parameters(x64, name):
  rng = np.random.default_rng(3)
  t = ops.get_transform(name)
  image = rng.normal(size=(2, 9, 11, 1))
  params = np.asarray(t.identity(jnp.float64)) + 0.05 * rng.normal(size=(2, t.num_params))
  f = lambda p: ops.warp(image, p, (7, 6), transform=name, padding_mode="border")
  check_grads(f, (params,), order=1, eps=1e-6, atol=1e-5, rtol=1e-5)


def test_second_order_in_both_modes(x64):
  """The sampler's derivative rule is itself differentiable (e.g. for gradient
  penalties), in forward and reverse mode."""
  rng = np.random.default_rng(4)
  image = rng.normal(size=(1, 6, 6, 1))
  grid = rng.uniform(-0.9, 0.9, size=(1, 3, 3, 2))
  loss = lambda i: jnp.sum(ops.sample(i, grid) ** 2)
  check_grads(loss, (image,), order=2, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("mode", ["bicubic"])  # the kernel with non-zero third derivatives
def test_third_order_with_respect_to_image_and_grid_in_both_modes(x64, mode):
  rng = np.random.default_rng(6)
  image = rng.normal(size=(1, 6, 7, 2))
  # Inside cells, away from the kinks, where the kernel is smooth: pixel positions
  # 0.2-0.8 past an integer.
  xs, ys = rng.integers(0, 6, size=(2, 1, 2, 3)) + rng.uniform(0.2, 0.8, size=(2, 1, 2, 3))
  grid = np.stack([pixel_coordinates(xs, 7, False), pixel_coordinates(ys, 6, False)], -1)
  f = lambda i, g: jnp.sum(ops.sample(i, g, mode=mode, padding_mode="border") ** 2)
  # Forward over forward over forward, and reverse thrice: both modes at third order without
  # the six mixed nestings (a third of the time); mixed second order is checked above and in
  # the Hessian test below.
  for modes in (["fwd"], ["rev"]):
    check_grads(f, (image, grid), order=3, modes=modes, eps=1e-4, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mode,padding_mode,align_corners", OPTIONS)
def test_forward_mode_jacobian_equals_reverse_mode(x64, mode, padding_mode, align_corners):
  rng = np.random.default_rng(7)
  h, w = (5, 9) if align_corners else (4, 8)
  image = rng.normal(size=(2, h, w, 2))
  grid = random_grid(rng, 2, 2, 8, h, w, align_corners)
  f = jax.jit(_sampler(mode=mode, padding_mode=padding_mode, align_corners=align_corners))
  for a, b in zip(jax.jacfwd(f, (0, 1))(image, grid), jax.jacrev(f, (0, 1))(image, grid)):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["affine", "tps"])
def test_hessian_of_a_warp_is_symmetric_and_matches_forward_over_reverse(x64, name):
  rng = np.random.default_rng(8)
  t = ops.get_transform(name)
  image = rng.normal(size=(1, 9, 11, 1))
  params = np.asarray(t.identity(jnp.float64)) + 0.05 * rng.normal(size=(1, t.num_params))
  target = rng.normal(size=(1, 7, 6, 1))
  loss = lambda p: jnp.sum((ops.warp(image, p, (7, 6), transform=name, mode="bicubic")
                            - target) ** 2)
  hessian = np.asarray(jax.hessian(loss)(params)).reshape(t.num_params, t.num_params)
  rev_rev = np.asarray(jax.jacrev(jax.grad(loss))(params)).reshape(hessian.shape)
  assert np.all(np.isfinite(hessian)) and np.abs(hessian).max() > 0
  np.testing.assert_allclose(hessian, hessian.T, rtol=1e-9, atol=1e-9)
  np.testing.assert_allclose(hessian, rev_rev, rtol=1e-9, atol=1e-9)


def test_forward_mode_under_vmap_and_jit(x64):
  """``jax.jvp`` of a warp, vmapped over tangent directions inside ``jax.jit``, gives
  the columns of the reverse-mode Jacobian."""
  rng = np.random.default_rng(9)
  image = rng.normal(size=(2, 8, 8, 1))
  params = np.tile(np.eye(2, 3).ravel(), (2, 1)) + 0.05 * rng.normal(size=(2, 6))
  f = lambda p: ops.warp(image, p, (5, 5))
  directions = np.eye(12).reshape(12, 2, 6)
  columns = jax.jit(jax.vmap(lambda d: jax.jvp(f, (params,), (d,))[1]))(directions)
  jac = jax.jacrev(f)(params).reshape(2, 5, 5, 1, 12)
  np.testing.assert_allclose(np.moveaxis(np.asarray(columns), 0, -1), jac, rtol=1e-12,
                             atol=1e-12)
