"""Warps by pixel matrices (stn_jax.ops.pixel): known answers that hold without any other
library, then the same functions against kornia's (float64), when kornia is installed
(``pip install -e '.[bench]'``; CI has no torch, and skips those)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from stn_jax import ops

ALIGN = [True, False]


@pytest.mark.parametrize("align_corners", ALIGN)
def test_an_integer_shift_moves_the_pixels(transformed, align_corners):
  image = np.random.default_rng(0).normal(size=(2, 5, 6, 1)).astype(np.float32)
  shift = np.tile(np.array([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]], np.float32), (2, 1, 1))
  out = np.asarray(transformed(lambda i, m: ops.warp_affine(i, m, (5, 6),
                                                            align_corners=align_corners))(
                                                                image, shift))
  # out(x + 2, y - 1) = image(x, y)
  np.testing.assert_allclose(out[:, :4, 2:], image[:, 1:, :4], atol=1e-5)
  assert np.abs(out[:, :, :2]).max() < 1e-5 and np.abs(out[:, 4:]).max() < 1e-5


def test_a_rotation_by_90_degrees_about_the_centre_turns_the_image(x64):
  image = np.random.default_rng(1).normal(size=(1, 5, 5, 2))
  m = ops.rotation_matrix(np.array([[2.0, 2.0]]), np.array([90.0]), np.array([1.0]))
  out = ops.warp_affine(image, m, (5, 5))
  # OpenCV's positive angle turns the picture counter-clockwise on the screen.
  np.testing.assert_allclose(out[0], np.rot90(image[0], 1), atol=1e-10)
  np.testing.assert_allclose(ops.warp_affine(out, ops.invert_affine(m), (5, 5)), image,
                             atol=1e-10)


@pytest.mark.parametrize("align_corners", ALIGN)
def test_pixel_and_normalised_matrices_convert_both_ways_and_warp_alike(x64, align_corners):
  rng = np.random.default_rng(2)
  image = rng.normal(size=(2, 7, 9, 1))
  m = np.eye(3)[None].repeat(2, 0) + rng.normal(size=(2, 3, 3)) * [[0.1, 0.1, 1.0],
                                                                    [0.1, 0.1, 1.0],
                                                                    [1e-3, 1e-3, 0.0]]
  theta = ops.pixel_to_normalized(m, (7, 9), (6, 8), align_corners=align_corners)
  back = ops.normalized_to_pixel(theta, (7, 9), (6, 8), align_corners=align_corners)
  np.testing.assert_allclose(back, m / m[:, 2:, 2:], atol=1e-12)
  grid = ops.projective_grid(theta, (6, 8), align_corners=align_corners)
  np.testing.assert_allclose(
      ops.warp_perspective(image, m, (6, 8), align_corners=align_corners),
      ops.sample(image, grid, align_corners=align_corners), atol=1e-12)
  # The output pixel (x, y) reads the source where M^-1 sends it.
  x, y = 3.0, 2.0
  src = np.linalg.solve(m[0], [x, y, 1.0])
  src = src[:2] / src[2]
  to_norm = (lambda p, n: 2 * p / (n - 1) - 1) if align_corners else (
      lambda p, n: (2 * p + 1) / n - 1)
  np.testing.assert_allclose(grid[0, 2, 3], [to_norm(src[0], 9), to_norm(src[1], 7)],
                             atol=1e-12)


def test_get_perspective_transform_sends_the_points_and_is_differentiable(x64):
  rng = np.random.default_rng(3)
  src = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 8.0], [0.0, 8.0]]) + rng.normal(size=(3, 4, 2))
  dst = src + rng.normal(size=src.shape)
  h = jax.jit(ops.get_perspective_transform)(src, dst)
  moved = np.einsum("nij,nkj->nki", h, np.concatenate([src, np.ones((3, 4, 1))], -1))
  np.testing.assert_allclose(moved[..., :2] / moved[..., 2:], dst, atol=1e-9)
  assert np.allclose(h[:, 2, 2], 1.0)
  check_grads(ops.get_perspective_transform, (src, dst), order=2, eps=1e-6, atol=1e-5,
              rtol=1e-5)


def test_bad_matrices_are_refused_with_a_sentence():
  image = jnp.zeros((2, 4, 4, 1))
  with pytest.raises(ValueError, match=r"`matrix` must have shape \(\.\.\., 2, 3\)"):
    ops.warp_affine(image, jnp.zeros((2, 3, 3)), (4, 4))
  with pytest.raises(ValueError, match="one matrix per image"):
    ops.warp_perspective(image, jnp.zeros((3, 3, 3)), (4, 4))
  with pytest.raises(ValueError, match=r"`src` must have shape \(\.\.\., 4, 2\)"):
    ops.get_perspective_transform(jnp.zeros((3, 2)), jnp.zeros((4, 2)))
  with pytest.raises(ValueError, match=r"shape \(\.\.\., 2, 3\)"):
    ops.invert_affine(jnp.eye(3))


# Against kornia (float64). ---------------------------------------------------------------

OPTIONS = list(itertools.product(["bilinear", "nearest", "bicubic"],
                                 ["zeros", "border", "reflection"], ALIGN))


def _kornia():
  kornia = pytest.importorskip("kornia")
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(2)
  return kornia, torch


def _nchw(torch, x):
  return torch.tensor(np.moveaxis(np.asarray(x), -1, 1))


def _nhwc(t):
  return np.moveaxis(t.detach().numpy(), 1, -1)


@pytest.mark.parametrize("mode,padding_mode,align_corners", OPTIONS)
def test_warp_affine_and_perspective_equal_kornias(x64, mode, padding_mode, align_corners):
  kornia, torch = _kornia()
  rng = np.random.default_rng(4)
  image = rng.normal(size=(2, 7, 9, 3))
  affine = np.array([[[0.9, 0.2, 1.5], [-0.1, 1.1, -0.7]], [[1.2, -0.3, -2.0], [0.25, 0.8, 1.1]]])
  homography = np.concatenate([affine, [[[1e-2, -2e-2, 1.0]], [[-3e-2, 1e-2, 1.0]]]], 1)
  kw = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners)
  for ours, theirs, m in ((ops.warp_affine, kornia.geometry.transform.warp_affine, affine),
                          (ops.warp_perspective, kornia.geometry.transform.warp_perspective,
                           homography)):
    want = _nhwc(theirs(_nchw(torch, image), torch.tensor(m), (6, 8), **kw))
    np.testing.assert_allclose(ours(image, m, (6, 8), **kw), want, rtol=1e-9, atol=1e-9)


def test_fill_and_the_gradients_equal_kornias(x64):
  kornia, torch = _kornia()
  rng = np.random.default_rng(5)
  image = rng.normal(size=(1, 6, 7, 3))
  m = np.array([[[1.1, 0.3, 2.5], [-0.2, 0.9, -1.5], [2e-2, -1e-2, 1.0]]])
  fill = np.array([0.5, -1.0, 2.0])
  want = kornia.geometry.transform.warp_perspective(
      _nchw(torch, image), torch.tensor(m), (5, 6), padding_mode="fill",
      fill_value=torch.tensor(fill))
  got = ops.warp_perspective(image, m, (5, 6), padding_mode="fill", fill_value=fill)
  np.testing.assert_allclose(got, _nhwc(want), rtol=1e-9, atol=1e-9)
  weights = rng.normal(size=(1, 5, 6, 3))
  t_image, t_m = _nchw(torch, image).requires_grad_(), torch.tensor(m, requires_grad=True)
  (kornia.geometry.transform.warp_perspective(t_image, t_m, (5, 6))
   * _nchw(torch, weights)).sum().backward()
  d_image, d_m = jax.grad(lambda i, h: jnp.sum(ops.warp_perspective(i, h, (5, 6)) * weights),
                          (0, 1))(image, m)
  np.testing.assert_allclose(d_image, _nhwc(t_image.grad), rtol=1e-8, atol=1e-8)
  np.testing.assert_allclose(d_m, t_m.grad.numpy(), rtol=1e-7, atol=1e-8)


def test_matrix_helpers_equal_kornias(x64):
  kornia, torch = _kornia()
  rng = np.random.default_rng(6)
  src = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 8.0], [0.0, 8.0]]) + rng.normal(size=(3, 4, 2))
  dst = src + rng.normal(size=src.shape)
  np.testing.assert_allclose(
      ops.get_perspective_transform(src, dst),
      kornia.geometry.transform.get_perspective_transform(torch.tensor(src),
                                                          torch.tensor(dst)).numpy(),
      rtol=1e-9, atol=1e-9)
  center, angle = rng.normal(size=(3, 2)) * 5, rng.uniform(-180, 180, size=3)
  scale = rng.uniform(0.5, 2, size=(3, 2))
  m = ops.rotation_matrix(center, angle, scale)
  want = kornia.geometry.transform.get_rotation_matrix2d(
      torch.tensor(center), torch.tensor(angle), torch.tensor(scale)).numpy()
  np.testing.assert_allclose(m, want, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(
      ops.invert_affine(m),
      kornia.geometry.transform.invert_affine_transform(torch.tensor(want)).numpy(),
      rtol=1e-10, atol=1e-10)
