"""ops.sample against independent references: values and gradients, every option.

tests/reference.py is a NumPy loop written from torch's documented semantics;
scipy.ndimage.map_coordinates is a second, unrelated reference for values.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from grid_cases import TORCH_PADDING_MODES, random_grid
from reference import grid_sample_ref, grid_sample_ref_vjp
from stn_jax import ops

OPTIONS = list(itertools.product(ops.MODES, TORCH_PADDING_MODES, [False, True]))


def _sizes(align_corners):
  # Dyadic normalisation: integer pixel positions are exact in any precision.
  return (5, 9) if align_corners else (4, 8)


@pytest.mark.parametrize("mode,padding_mode,align_corners", OPTIONS)
def test_values_and_gradients_match_reference(x64, transformed, mode, padding_mode,
                                              align_corners):
  rng = np.random.default_rng(0)
  h, w = _sizes(align_corners)
  image = rng.normal(size=(2, h, w, 3))
  grid = random_grid(rng, 2, 3, 10, h, w, align_corners)
  cotangent = rng.normal(size=(2, 3, 10, 3))
  kw = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners)

  def forward_and_vjp(image, grid, cotangent):
    out, vjp = jax.vjp(lambda i, g: ops.sample(i, g, **kw), image, grid)
    return (out,) + vjp(cotangent)

  out, d_image, d_grid = transformed(forward_and_vjp)(image, grid, cotangent)
  ref_d_image, ref_d_grid = grid_sample_ref_vjp(image, grid, cotangent, **kw)
  np.testing.assert_allclose(out, grid_sample_ref(image, grid, **kw), atol=1e-12)
  np.testing.assert_allclose(d_image, ref_d_image, atol=1e-12)
  np.testing.assert_allclose(d_grid, ref_d_grid, atol=1e-10)
  if mode != "nearest":
    assert np.any(d_grid != 0), "the test grid should exercise the grid gradient"


@pytest.mark.parametrize("mode,padding_mode,align_corners", OPTIONS)
def test_float32_matches_reference(mode, padding_mode, align_corners):
  rng = np.random.default_rng(1)
  h, w = _sizes(align_corners)
  image = rng.normal(size=(2, h, w, 2)).astype(np.float32)
  grid = random_grid(rng, 2, 4, 8, h, w, align_corners).astype(np.float32)
  kw = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners)
  out = ops.sample(image, grid, **kw)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, grid_sample_ref(image, grid, **kw), atol=2e-5)


# scipy's modes that match torch's padding for linear interpolation: zeros
# interpolates towards 0 beyond the edge ('grid-constant'), border repeats the
# edge ('nearest'), reflection mirrors about the edges (align_corners=False)
# or about the edge pixel centres (align_corners=True).
_SCIPY_MODES = {
    ("zeros", False): "grid-constant", ("zeros", True): "grid-constant",
    ("border", False): "nearest", ("border", True): "nearest",
    ("reflection", False): "reflect", ("reflection", True): "mirror",
}


@pytest.mark.parametrize("padding_mode,align_corners", list(_SCIPY_MODES))
def test_bilinear_matches_scipy_map_coordinates(x64, padding_mode, align_corners):
  rng = np.random.default_rng(2)
  h, w = 6, 7
  image = rng.normal(size=(1, h, w, 1))
  grid = rng.uniform(-2.5, 2.5, size=(1, 5, 9, 2))
  out = ops.sample(image, grid, padding_mode=padding_mode, align_corners=align_corners)
  if align_corners:
    cols, rows = (grid[0, ..., 0] + 1) / 2 * (w - 1), (grid[0, ..., 1] + 1) / 2 * (h - 1)
  else:
    cols, rows = ((grid[0, ..., 0] + 1) * w - 1) / 2, ((grid[0, ..., 1] + 1) * h - 1) / 2
  expected = ndimage.map_coordinates(image[0, ..., 0], [rows, cols], order=1,
                                     mode=_SCIPY_MODES[padding_mode, align_corners])
  np.testing.assert_allclose(out[0, ..., 0], expected, atol=1e-12)
