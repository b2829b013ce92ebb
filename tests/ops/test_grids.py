"""Grid generators: known answers for affine, attention, projective and TPS grids."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from stn_jax import ops


def _reference_affine_grid(theta, h, w, align_corners):
  """What torch.nn.functional.affine_grid computes, written out with NumPy."""
  def axis(n):
    if align_corners:
      return np.linspace(-1, 1, n) if n > 1 else np.zeros(1)
    return (np.arange(n) * 2.0 + 1.0) / n - 1.0
  xs, ys = np.meshgrid(axis(w), axis(h))
  base = np.stack([xs, ys, np.ones_like(xs)], -1)
  return np.einsum("hwk,...dk->...hwd", base, theta)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("hw", [(1, 1), (3, 4), (6, 5)])
def test_affine_grid_matches_torch_formula(transformed, align_corners, hw):
  theta = np.random.default_rng(0).normal(size=(4, 2, 3)).astype(np.float32)
  grid = transformed(lambda t: ops.affine_grid(t, hw, align_corners=align_corners))(theta)
  assert grid.shape == (4,) + hw + (2,)
  np.testing.assert_allclose(grid, _reference_affine_grid(theta, *hw, align_corners), atol=1e-6)


def test_identity_grid_corners():
  np.testing.assert_allclose(ops.identity_grid((2, 3), align_corners=True)[0, :, 0], [-1, 0, 1])
  np.testing.assert_allclose(ops.identity_grid((2, 2), align_corners=False)[:, 0, 1],
                             [-0.5, 0.5])


def test_affine_grid_leading_dimensions():
  theta = jnp.tile(jnp.eye(2, 3), (2, 3, 1, 1))
  assert ops.affine_grid(theta, (4, 5)).shape == (2, 3, 4, 5, 2)
  assert ops.affine_grid(jnp.eye(2, 3), (4, 5)).shape == (4, 5, 2)


def test_attention_grid_is_the_scaled_translated_identity():
  params = jnp.array([[0.5, 0.2, -0.3], [2.0, 0.0, 0.1]])
  grid = ops.attention_grid(params, (3, 4))
  base = ops.identity_grid((3, 4))
  expected = params[:, None, None, :1] * base + params[:, None, None, 1:]
  np.testing.assert_allclose(grid, expected, atol=1e-6)


def _homography_from_points(src, dst):
  """Direct linear transform: the H (h33 = 1) with H @ [src, 1] ~ [dst, 1]."""
  rows, rhs = [], []
  for (x, y), (u, v) in zip(src, dst):
    rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
    rhs += [u, v]
  return np.linalg.solve(np.array(rows), np.array(rhs))


def test_projective_grid_known_homography(transformed):
  corners = np.array([[-1, -1], [1, -1], [-1, 1], [1, 1]], np.float64)
  targets = np.array([[-0.8, -0.9], [0.7, -0.6], [-0.9, 0.8], [0.6, 0.5]])
  h8 = _homography_from_points(corners, targets)
  params = np.stack([h8, h8]).astype(np.float32)
  grid = transformed(lambda p: ops.projective_grid(p, (5, 5), align_corners=True))(params)
  got = np.asarray(grid)[0][[0, 0, -1, -1], [0, -1, 0, -1]]
  np.testing.assert_allclose(got, targets, atol=1e-5)
  # A point in the middle: the projective map, not the bilinear blend of the corners.
  h = np.append(h8, 1.0).reshape(3, 3)
  u, v, s = h @ np.array([0.5, 0.0, 1.0])
  np.testing.assert_allclose(np.asarray(grid)[0, 2, 3], [u / s, v / s], atol=1e-5)


def test_projective_3x3_equals_8_params_and_is_scale_invariant():
  rng = np.random.default_rng(1)
  h8 = np.array([1, 0, 0, 0, 1, 0, 0, 0], np.float32) + 0.1 * rng.normal(size=8).astype(np.float32)
  h33 = np.append(h8, 1.0).reshape(3, 3)
  a = ops.projective_grid(h8, (4, 6))
  np.testing.assert_allclose(ops.projective_grid(h33, (4, 6)), a, atol=1e-6)
  np.testing.assert_allclose(ops.projective_grid(3.0 * h33, (4, 6)), a, atol=1e-6)


def test_projective_identity_and_affine_special_case():
  theta = np.array([[0.9, 0.2, 0.1], [-0.1, 1.1, 0.0]], np.float32)
  h = np.concatenate([theta, [[0, 0, 1]]]).astype(np.float32)
  np.testing.assert_allclose(ops.projective_grid(h, (5, 7)), ops.affine_grid(theta, (5, 7)),
                             atol=1e-6)


# Thin-plate splines.


def test_tps_zero_offsets_is_the_identity():
  for align_corners in (False, True):
    grid = ops.tps_grid(jnp.zeros((3, 16, 2)), (28, 28), align_corners=align_corners)
    np.testing.assert_allclose(grid, np.broadcast_to(
        ops.identity_grid((28, 28), align_corners=align_corners), grid.shape), atol=1e-5)


def test_tps_interpolates_its_control_points(transformed):
  offsets = 0.1 * np.random.default_rng(2).normal(size=(2, 16, 2)).astype(np.float32)
  # With align_corners=True a 10x10 grid has its rows/columns 0, 3, 6, 9 at -1, -1/3, 1/3, 1:
  # exactly on the default 4x4 control points.
  grid = transformed(lambda o: ops.tps_grid(o, (10, 10), align_corners=True))(offsets)
  control = ops.default_control_points(4)
  on_points = np.asarray(grid)[:, ::3, ::3].reshape(2, 16, 2)
  np.testing.assert_allclose(on_points, control + offsets, atol=1e-5)
  moved = ops.tps_transform_points(control, offsets)
  np.testing.assert_allclose(moved, control + offsets, atol=1e-5)


def test_tps_reproduces_affine_maps_exactly():
  theta = np.array([[0.8, -0.3, 0.1], [0.25, 0.9, -0.05]])
  control = ops.default_control_points(4)
  offsets = control @ theta[:, :2].T + theta[:, 2] - control
  grid = ops.tps_grid(offsets.astype(np.float32), (9, 7))
  np.testing.assert_allclose(grid, ops.affine_grid(theta.astype(np.float32), (9, 7)), atol=1e-5)


def test_tps_bends_between_points_and_regularization_smooths():
  offsets = np.zeros((16, 2), np.float32)
  offsets[5] = [0.2, 0.0]  # move one interior point right
  grid = ops.tps_grid(offsets, (10, 10), align_corners=True)
  identity = ops.identity_grid((10, 10), align_corners=True)
  shift = np.asarray(grid - identity)[..., 0]
  assert shift[3, 3] == pytest.approx(0.2, abs=1e-5)  # on the point
  assert 0 < shift[4, 4] < 0.2  # nearby: part of the way
  smooth = ops.tps_grid(offsets, (10, 10), align_corners=True, regularization=1.0)
  smooth_shift = np.asarray(smooth - identity)[..., 0]
  assert 0 < smooth_shift[3, 3] < 0.2  # no longer interpolates


def test_tps_custom_control_points():
  control = np.array([[-1, -1], [1, -1], [0, 1], [0, 0], [0.5, -0.2]], np.float64)
  offsets = 0.05 * np.random.default_rng(3).normal(size=(5, 2)).astype(np.float32)
  moved = ops.tps_transform_points(control, offsets, control_points=control)
  np.testing.assert_allclose(moved, control + offsets, atol=1e-5)
  t = ops.get_transform("tps", control_points=control)
  assert t.num_params == 10
  assert t.grid(offsets.reshape(10), (6, 6)).shape == (6, 6, 2)


def test_tps_bfloat16_is_finite_and_close():
  offsets = 0.1 * np.random.default_rng(4).normal(size=(2, 16, 2))
  grid16 = ops.tps_grid(jnp.asarray(offsets, jnp.bfloat16), (16, 16))
  grid32 = ops.tps_grid(jnp.asarray(offsets, jnp.float32), (16, 16))
  assert grid16.dtype == jnp.bfloat16
  assert np.all(np.isfinite(np.asarray(grid16, np.float32)))
  np.testing.assert_allclose(np.asarray(grid16, np.float32), grid32, atol=1e-2)


# Control points as arrays: traced, batched, differentiated (solved in JAX). -----------


def _bent(rng, k=16):
  return ops.default_control_points(4), rng.normal(size=(k, 2)) * 0.05


def test_traced_control_points_give_the_concrete_grid(x64):
  control, offsets = _bent(np.random.default_rng(10))
  concrete = ops.tps_grid(offsets, (9, 8), control_points=control)
  traced = jax.jit(lambda c: ops.tps_grid(offsets, (9, 8), control_points=c))(control)
  np.testing.assert_allclose(traced, concrete, rtol=1e-12, atol=1e-12)


def test_control_points_batched_equal_vmapped(x64):
  rng = np.random.default_rng(11)
  control, offsets = _bent(rng)
  batch = control[None] + rng.normal(size=(3, 16, 2)) * 0.02
  vmapped = jax.vmap(lambda c: ops.tps_grid(offsets, (6, 7), control_points=c))(batch)
  batched = ops.tps_grid(np.broadcast_to(offsets, (3, 16, 2)), (6, 7), control_points=batch)
  np.testing.assert_allclose(batched, vmapped, rtol=1e-12, atol=1e-12)
  for i in range(3):  # each the grid of its own points, solved at trace time
    np.testing.assert_allclose(batched[i], ops.tps_grid(offsets, (6, 7),
                                                        control_points=batch[i]),
                               rtol=1e-10, atol=1e-10)


def test_gradients_with_respect_to_control_points_in_both_modes(x64):
  rng = np.random.default_rng(12)
  control, offsets = _bent(rng)
  control = control + rng.normal(size=control.shape) * 0.01
  f = lambda c, o: ops.tps_grid(o, (5, 5), control_points=c, regularization=0.01)
  check_grads(f, (control, offsets), order=1, eps=1e-6, atol=1e-5, rtol=1e-5)


def test_tps_transform_interpolates_reproduces_affine_and_the_ridge_smooths(x64):
  rng = np.random.default_rng(13)
  src = rng.uniform(-1, 1, size=(2, 12, 2))
  dst = src + rng.normal(size=src.shape) * 0.1
  w, a = jax.jit(ops.tps_transform)(src, dst)
  assert w.shape == (2, 12, 2) and a.shape == (2, 3, 2)
  np.testing.assert_allclose(ops.tps_warp_points(src, src, w, a), dst, atol=1e-10)
  affine = np.array([[0.1, -0.2], [0.9, 0.2], [-0.1, 1.1]])  # rows: 1, x, y
  w_aff, a_aff = ops.tps_transform(src, src @ affine[1:] + affine[0])
  np.testing.assert_allclose(w_aff, 0.0, atol=1e-10)
  np.testing.assert_allclose(a_aff, np.broadcast_to(affine, (2, 3, 2)), atol=1e-10)
  # A ridge: near the points, not through them, with less bending (w^T U w).
  w_r, a_r = ops.tps_transform(src, dst, regularization=0.5)
  miss = np.abs(ops.tps_warp_points(src, src, w_r, a_r) - dst).max()
  assert 1e-3 < miss < 0.2

  def bending(w):
    u = np.asarray(ops.tps_warp_points(src, src, w, np.zeros((2, 3, 2))))
    return float(np.sum(w * u))
  assert bending(np.asarray(w_r)) < 0.5 * bending(np.asarray(w))


def test_near_duplicate_control_points_act_as_one(x64):
  rng = np.random.default_rng(14)
  control, offsets = _bent(rng)
  twin = np.concatenate([control, control[5:6] + [1e-6, 0.0]])
  apart = np.concatenate([offsets, offsets[5:6] + [0.04, -0.03]])  # targets 0.05 apart
  merged = offsets.copy()
  merged[5] = (apart[5] + apart[16]) / 2  # one point, aiming at their mean
  expected = ops.tps_grid(merged, (8, 8), control_points=control)
  for grid in (ops.tps_grid(apart, (8, 8), control_points=twin),
               jax.jit(lambda c: ops.tps_grid(apart, (8, 8), control_points=c))(twin)):
    assert np.abs(grid).max() < 1.5  # an exact solve reached coordinates of about 350
    np.testing.assert_allclose(grid, expected, atol=1e-4)
