"""padding_mode='fill': a constant (per channel, traced or not) outside the image.

The reference is independent of the sampler's trick (zeros padding of ``image - fill``):
the image padded with a wide frame of the fill value, sampled where the same points fall in
the larger image, reads the fill exactly where the smaller one lies outside.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from stn_jax import ops

OPTIONS = list(itertools.product(ops.MODES, [False, True]))
PAD = 6  # wider than the bicubic kernel's reach beyond the points (spread 1.4 plus 2 taps)


def _pixel(x, size, align_corners):
  return (x + 1) * (size - 1) / 2 if align_corners else ((x + 1) * size - 1) / 2


def _normalised(p, size, align_corners):
  return 2 * p / (size - 1) - 1 if align_corners else (2 * p + 1) / size - 1


def _reference(image, grid, fill, mode, align_corners):
  """The image in a frame of ``fill`` PAD pixels wide, sampled with zeros padding at the
  grid's points moved into the larger image."""
  n, h, w, c = image.shape
  framed = np.broadcast_to(np.asarray(fill, image.dtype), (n, h + 2 * PAD, w + 2 * PAD, c))
  framed = framed.copy()
  framed[:, PAD:PAD + h, PAD:PAD + w] = image
  gx = _normalised(_pixel(grid[..., 0], w, align_corners) + PAD, w + 2 * PAD, align_corners)
  gy = _normalised(_pixel(grid[..., 1], h, align_corners) + PAD, h + 2 * PAD, align_corners)
  return np.asarray(ops.sample(framed, np.stack([gx, gy], -1), mode=mode,
                               align_corners=align_corners))


@pytest.mark.parametrize("mode,align_corners", OPTIONS)
def test_fill_equals_the_image_framed_by_the_fill_value(x64, mode, align_corners):
  rng = np.random.default_rng(0)
  image = rng.normal(size=(2, 5, 7, 3))
  grid = rng.uniform(-1.4, 1.4, size=(2, 6, 4, 2))
  fill = np.array([0.5, -2.0, 3.0])  # one per channel
  out = ops.sample(image, grid, mode=mode, padding_mode="fill", fill_value=fill,
                   align_corners=align_corners)
  np.testing.assert_allclose(out, _reference(image, grid, fill, mode, align_corners),
                             rtol=1e-10, atol=1e-10)
  # Far outside, and at a NaN coordinate (which points nowhere): the fill itself.
  far = np.full((2, 1, 2, 2), 5.0)
  far[0, 0, 1] = np.nan
  np.testing.assert_allclose(ops.sample(image, far, mode=mode, padding_mode="fill",
                                        fill_value=fill), np.broadcast_to(fill, (2, 1, 2, 3)))


def test_a_shift_reads_the_fill_where_it_leaves_the_image(transformed):
  image = np.random.default_rng(1).normal(size=(2, 4, 6, 2)).astype(np.float32)
  theta = np.tile(np.array([[1.0, 0.0, 2 * 2 / 6], [0.0, 1.0, 0.0]], np.float32), (2, 1, 1))

  def fn(image, theta):  # two pixels to the right, 7 outside
    grid = ops.affine_grid(theta, (4, 6))
    return ops.sample(image, grid, padding_mode="fill", fill_value=7.0)
  out = np.asarray(transformed(fn)(image, theta))
  np.testing.assert_allclose(out[:, :, :4], image[:, :, 2:], atol=1e-5)
  np.testing.assert_allclose(out[:, :, 4:], 7.0, atol=1e-5)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_gradients_with_respect_to_image_grid_and_fill_in_both_modes(x64, mode):
  rng = np.random.default_rng(2)
  image = rng.normal(size=(1, 4, 5, 2))
  # Points 0.2-0.8 past a pixel position, inside and outside the image, away from kinks.
  px = rng.integers(-3, 7, size=(1, 3, 3)) + rng.uniform(0.2, 0.8, size=(1, 3, 3))
  py = rng.integers(-3, 6, size=(1, 3, 3)) + rng.uniform(0.2, 0.8, size=(1, 3, 3))
  grid = np.stack([_normalised(px, 5, False), _normalised(py, 4, False)], -1)
  f = lambda i, g, v: ops.sample(i, g, mode=mode, padding_mode="fill", fill_value=v)
  check_grads(f, (image, grid, np.array([0.3, -1.2])), order=2, eps=1e-5, atol=1e-5,
              rtol=1e-5)
  # Outside the image, only the fill value moves the sample.
  d_fill = jax.grad(lambda v: f(image, np.full((1, 1, 1, 2), 3.0), v).sum())(np.zeros(2))
  np.testing.assert_allclose(d_fill, [1.0, 1.0])


def test_the_separable_sampler_and_warp_fill_alike(x64):
  rng = np.random.default_rng(3)
  image = rng.normal(size=(2, 8, 9, 1))
  params = np.array([[0.8, 0.5, -0.3], [1.3, -0.2, 0.4]])  # attention boxes over the edge
  kw = dict(transform="attention", padding_mode="fill", fill_value=np.array([-4.0]))
  gathered = ops.warp(image, params, (6, 5), separable=False, **kw)
  separable = ops.warp(image, params, (6, 5), separable=True, **kw)
  np.testing.assert_allclose(separable, gathered, rtol=1e-10, atol=1e-10)
  assert np.any(np.isclose(gathered, -4.0))  # some of it lies outside


def test_fill_value_zero_is_the_zeros_mode_and_low_precision_keeps_its_dtype():
  rng = np.random.default_rng(4)
  image = jnp.asarray(rng.normal(size=(1, 5, 5, 2)), jnp.bfloat16)
  grid = jnp.asarray(rng.uniform(-1.3, 1.3, size=(1, 4, 4, 2)), jnp.float32)
  filled = ops.sample(image, grid, padding_mode="fill")
  assert filled.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(filled, np.float32),
                             np.asarray(ops.sample(image, grid), np.float32), atol=2e-2)


def test_a_fill_value_without_fill_padding_or_of_the_wrong_shape_is_refused():
  image, grid = jnp.zeros((1, 4, 4, 3)), jnp.zeros((1, 2, 2, 2))
  with pytest.raises(ValueError, match="only with padding_mode='fill'"):
    ops.sample(image, grid, fill_value=1.0)
  with pytest.raises(ValueError, match=r"one value per channel, shape \(3,\)"):
    ops.sample(image, grid, padding_mode="fill", fill_value=jnp.ones(2))
  with pytest.raises(ValueError, match="only with padding_mode='fill'"):
    ops.sample_separable(image, jnp.zeros((1, 2)), jnp.zeros((1, 2)), fill_value=1.0)
