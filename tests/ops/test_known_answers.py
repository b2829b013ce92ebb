"""Known answers: warps whose result is an exact NumPy array operation."""

import jax.numpy as jnp
import numpy as np
import pytest

from stn_jax import ops

ALIGN = [False, True]


def _image(rng, n=2, h=6, w=6, c=2):
  return rng.normal(size=(n, h, w, c)).astype(np.float32)


def _warp_affine(transformed, image, theta, align_corners, **kw):
  def fn(image, theta):
    grid = ops.affine_grid(theta, image.shape[1:3], align_corners=align_corners)
    return ops.sample(image, grid, align_corners=align_corners, **kw)
  return np.asarray(transformed(fn)(image, np.asarray(theta, np.float32)))


def _thetas(n, matrix):
  return np.tile(np.asarray(matrix, np.float32), (n, 1, 1))


@pytest.mark.parametrize("align_corners", ALIGN)
@pytest.mark.parametrize("mode", ops.MODES)
def test_identity_returns_the_image(transformed, align_corners, mode):
  image = _image(np.random.default_rng(0))
  out = _warp_affine(transformed, image, _thetas(2, np.eye(2, 3)), align_corners, mode=mode)
  np.testing.assert_allclose(out, image, atol=1e-5)


def _shift_theta(dx, dy, h, w, align_corners):
  """Affine theta that reads the source ``dx`` pixels right and ``dy`` pixels down."""
  sx = 2.0 / (w - 1) if align_corners else 2.0 / w
  sy = 2.0 / (h - 1) if align_corners else 2.0 / h
  return [[1.0, 0.0, dx * sx], [0.0, 1.0, dy * sy]]


@pytest.mark.parametrize("align_corners", ALIGN)
@pytest.mark.parametrize("dx,dy", [(2, 0), (0, -1), (-3, 2)])
def test_integer_shift_moves_pixels_and_pads_with_zeros(transformed, align_corners, dx, dy):
  h, w = 5, 8
  image = _image(np.random.default_rng(1), h=h, w=w)
  theta = _thetas(2, _shift_theta(dx, dy, h, w, align_corners))
  out = _warp_affine(transformed, image, theta, align_corners)
  expected = np.zeros_like(image)
  ys, xs = np.mgrid[0:h, 0:w]
  inside = (ys + dy >= 0) & (ys + dy < h) & (xs + dx >= 0) & (xs + dx < w)
  expected[:, inside] = image[:, (ys + dy)[inside], (xs + dx)[inside]]
  np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("align_corners", ALIGN)
def test_integer_shift_with_border_padding_repeats_the_edge(transformed, align_corners):
  h, w = 5, 8
  image = _image(np.random.default_rng(2), h=h, w=w)
  out = _warp_affine(transformed, image, _thetas(2, _shift_theta(3, 0, h, w, align_corners)),
                     align_corners, padding_mode="border")
  cols = np.minimum(np.arange(w) + 3, w - 1)
  np.testing.assert_allclose(out, image[:, :, cols], atol=1e-5)


@pytest.mark.parametrize("align_corners", ALIGN)
@pytest.mark.parametrize("matrix,flip", [
    ([[-1, 0, 0], [0, 1, 0]], lambda a: a[:, :, ::-1]),
    ([[1, 0, 0], [0, -1, 0]], lambda a: a[:, ::-1, :]),
    ([[-1, 0, 0], [0, -1, 0]], lambda a: a[:, ::-1, ::-1]),
])
def test_flips(transformed, align_corners, matrix, flip):
  image = _image(np.random.default_rng(3), h=5, w=7)
  out = _warp_affine(transformed, image, _thetas(2, matrix), align_corners)
  np.testing.assert_allclose(out, flip(image), atol=1e-5)


@pytest.mark.parametrize("align_corners", ALIGN)
@pytest.mark.parametrize("quarter_turns", [1, 2, 3])
def test_rotations_by_90_degrees(transformed, align_corners, quarter_turns):
  image = _image(np.random.default_rng(4), h=6, w=6)
  angle = quarter_turns * np.pi / 2
  params = np.tile(np.array([angle, 1.0, 0.0, 0.0], np.float32), (2, 1))
  fn = lambda i, p: ops.warp(i, p, (6, 6), transform="rotation_scale_translation",
                             align_corners=align_corners)
  out = np.asarray(transformed(fn)(image, params))
  # Output (x, y) reads source (x cos - y sin, x sin + y cos); with y pointing
  # down that is np.rot90 by the same number of turns, counter-clockwise on screen.
  np.testing.assert_allclose(out, np.rot90(image, k=quarter_turns, axes=(1, 2)), atol=1e-5)


def test_downsampling_by_two_averages_pixel_pairs():
  # align_corners=False: output pixel i of a half-size grid sits between source pixels 2i, 2i+1.
  image = _image(np.random.default_rng(5), h=4, w=8)
  grid = ops.identity_grid((2, 4), align_corners=False)[None].repeat(2, 0)
  out = ops.sample(image, grid, align_corners=False)
  expected = image.reshape(2, 2, 2, 4, 2, 2).mean(axis=(2, 4))
  np.testing.assert_allclose(out, expected, atol=1e-5)


def test_centre_of_2x2_image_is_the_mean():
  image = jnp.arange(4.0).reshape(1, 2, 2, 1)
  for align_corners in ALIGN:
    out = ops.sample(image, jnp.zeros((1, 1, 1, 2)), align_corners=align_corners)
    assert float(out.squeeze()) == pytest.approx(1.5)


def test_nearest_rounds_half_to_even():
  # 1x4 image, align_corners=True: x = -1/3 is pixel 1, x = 0 is pixel 1.5 -> 2 (even).
  image = jnp.array([10.0, 11.0, 12.0, 13.0]).reshape(1, 1, 4, 1)
  grid = jnp.array([[[[-1.0 / 3, 0.0], [0.0, 0.0], [1.0 / 3, 0.0]]]])
  out = ops.sample(image, grid, mode="nearest", align_corners=True)
  np.testing.assert_array_equal(out.ravel(), [11.0, 12.0, 12.0])
