"""The transform registry, warp, and the separable fast path."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grid_cases import TORCH_PADDING_MODES
from stn_jax import ops

NAMES = ["affine", "attention", "translation", "scale_translation",
         "rotation_scale_translation", "projective", "tps"]
SEPARABLE = ["attention", "translation", "scale_translation"]


def test_registry_sizes():
  sizes = {name: ops.get_transform(name).num_params for name in NAMES}
  assert sizes == {"affine": 6, "attention": 3, "translation": 2, "scale_translation": 4,
                   "rotation_scale_translation": 4, "projective": 8, "tps": 32}
  assert sorted(ops.TRANSFORMS) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("align_corners", [False, True])
def test_identity_parameters_give_the_identity_grid(name, align_corners):
  t = ops.get_transform(name)
  assert t.identity().shape == (t.num_params,)
  grid = t.grid(jnp.tile(t.identity(), (2, 1)), (7, 5), align_corners=align_corners)
  np.testing.assert_allclose(grid[1], ops.identity_grid((7, 5), align_corners=align_corners),
                             atol=1e-5)


def test_unknown_transform_lists_the_known_ones():
  with pytest.raises(ValueError, match="Unknown transform 'similarity'.*affine.*tps"):
    ops.get_transform("similarity")


def test_options_are_checked():
  with pytest.raises(ValueError, match="takes no options"):
    ops.get_transform("affine", regularization=1.0)
  with pytest.raises(ValueError, match="Unknown option"):
    ops.get_transform("tps", grid_size=3)


@pytest.mark.parametrize("name,params,theta", [
    ("attention", [0.5, 0.1, -0.2], [[0.5, 0, 0.1], [0, 0.5, -0.2]]),
    ("translation", [0.3, -0.4], [[1, 0, 0.3], [0, 1, -0.4]]),
    ("scale_translation", [0.5, 2.0, 0.1, 0.2], [[0.5, 0, 0.1], [0, 2.0, 0.2]]),
    ("rotation_scale_translation", [np.pi / 2, 2.0, 0.1, 0.2], [[0, -2.0, 0.1], [2.0, 0, 0.2]]),
    ("affine", [1, 2, 3, 4, 5, 6], [[1, 2, 3], [4, 5, 6]]),
])
def test_restricted_parametrisations_are_the_stated_affine_maps(name, params, theta):
  got = ops.get_transform(name).grid(jnp.asarray(params, jnp.float32), (4, 6))
  want = ops.affine_grid(jnp.asarray(theta, jnp.float32), (4, 6))
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_tps_parameters_are_offsets_point_by_point():
  params = np.zeros(32, np.float32)
  params[2 * 5] = 0.2  # dx of control point 5
  grid = ops.get_transform("tps").grid(params, (10, 10), align_corners=True)
  expected = np.zeros((16, 2), np.float32)
  expected[5, 0] = 0.2
  np.testing.assert_allclose(grid, ops.tps_grid(expected, (10, 10), align_corners=True),
                             atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_warp_equals_grid_then_sample(transformed, name):
  rng = np.random.default_rng(0)
  t = ops.get_transform(name)
  image = rng.normal(size=(4, 12, 10, 3)).astype(np.float32)
  params = (np.asarray(t.identity()) + 0.1 * rng.normal(size=(4, t.num_params))).astype(
      np.float32)
  out = transformed(lambda i, p: ops.warp(i, p, (8, 9), transform=name, mode="bicubic",
                                          padding_mode="reflection"))(image, params)
  grid = t.grid(params, (8, 9))
  expected = ops.sample(image, grid, mode="bicubic", padding_mode="reflection")
  np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("name", SEPARABLE)
@pytest.mark.parametrize("mode,padding_mode,align_corners", list(
    itertools.product(ops.MODES, TORCH_PADDING_MODES, [False, True])))
def test_separable_path_equals_general_path(name, mode, padding_mode, align_corners):
  rng = np.random.default_rng(1)
  t = ops.get_transform(name)
  image = rng.normal(size=(2, 9, 11, 2)).astype(np.float32)
  params = (np.asarray(t.identity()) + 0.4 * rng.normal(size=(2, t.num_params))).astype(
      np.float32)
  kw = dict(transform=name, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
  loss = lambda sep: lambda i, p: jnp.sum(jnp.sin(ops.warp(i, p, (7, 5), separable=sep, **kw)))
  fast = jax.value_and_grad(loss(True), argnums=(0, 1))(image, params)
  general = jax.value_and_grad(loss(False), argnums=(0, 1))(image, params)
  for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(general)):
    np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-5)


def test_separable_path_has_no_gather():
  image = jnp.ones((2, 16, 16, 1))
  params = jnp.tile(jnp.array([0.5, 0.0, 0.0]), (2, 1))
  fast = jax.make_jaxpr(lambda i, p: ops.warp(i, p, (8, 8), transform="attention",
                                               separable=True))(image, params)
  general = jax.make_jaxpr(lambda i, p: ops.warp(i, p, (8, 8), transform="attention",
                                                  separable=False))(image, params)
  assert "gather" not in str(fast) and "dot_general" in str(fast)
  assert "gather" in str(general)


def test_separable_axes_match_the_grid():
  t = ops.get_transform("scale_translation")
  params = jnp.array([[0.5, 0.8, 0.1, -0.2]])
  x, y = t.axes(params, (3, 4))
  grid = t.grid(params, (3, 4))
  np.testing.assert_allclose(grid[0, 0, :, 0], x[0], atol=1e-6)
  np.testing.assert_allclose(grid[0, :, 0, 1], y[0], atol=1e-6)


def test_separable_needs_an_axis_aligned_transform():
  with pytest.raises(ValueError, match="'affine' is not one"):
    ops.warp(jnp.ones((1, 4, 4, 1)), jnp.ones((1, 6)), (4, 4), separable=True)
