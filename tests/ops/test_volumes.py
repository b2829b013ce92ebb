"""3-D transformers (stn_jax.ops.volumes): a per-voxel NumPy reference written from torch's
5-D grid_sample semantics (each axis unnormalised and padded as in 2-D, then trilinear or
nearest), known answers, gradients in both modes; then torch's own 5-D affine_grid and
grid_sample (float64, values and gradients) when torch is installed (the bench extra)."""

import itertools
import math

import jax
import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import reference
from grid_cases import TORCH_PADDING_MODES, pixel_coordinates
from hlo_counts import scatters
from stn_jax import nn as stn_nn
from stn_jax import ops

OPTIONS = list(itertools.product(ops.MODES_3D, TORCH_PADDING_MODES, [False, True]))


def _sample_ref(volume, grid, mode, padding_mode, align_corners):
  n, d, h, w, c = volume.shape
  out = np.zeros(grid.shape[:-1] + (c,))
  for idx in np.ndindex(*grid.shape[:-1]):
    coords = []
    for value, size in zip(grid[idx], (w, h, d)):
      x, _ = reference._unnormalize(value, size, align_corners)  # pylint: disable=protected-access
      x, _ = reference._pad(x, size, padding_mode, align_corners)  # pylint: disable=protected-access
      coords.append(x)
    if not all(math.isfinite(x) for x in coords):
      continue
    if mode == "nearest":
      taps = [[(round(x), 1.0)] for x in coords]
    else:
      taps = [[(math.floor(x), 1 - (x - math.floor(x))), (math.floor(x) + 1, x - math.floor(x))]
              for x in coords]
    for (ix, wx), (iy, wy), (iz, wz) in itertools.product(*taps):
      if 0 <= ix < w and 0 <= iy < h and 0 <= iz < d:
        out[idx] += wx * wy * wz * volume[idx[0], iz, iy, ix]
  return out


def _grid(rng, n, shape, dhw, align_corners):
  """Random points, exact voxel positions (integers) and points beyond every face."""
  grid = rng.uniform(-1.3, 1.3, size=(n,) + shape + (3,))
  flat = grid.reshape(n, -1, 3)
  for axis, size in enumerate(dhw[::-1]):  # x: W, y: H, z: D
    flat[0, :size + 2, axis] = pixel_coordinates(np.arange(-1, size + 1), size, align_corners)
  return flat.reshape(grid.shape)


@pytest.mark.parametrize("mode,padding_mode,align_corners", OPTIONS)
def test_sample_3d_equals_the_per_voxel_reference(x64, mode, padding_mode, align_corners):
  rng = np.random.default_rng(0)
  volume = rng.normal(size=(2, 3, 4, 5, 2))
  grid = _grid(rng, 2, (3, 3, 4), (3, 4, 5), align_corners)
  out = ops.sample_3d(volume, grid, mode=mode, padding_mode=padding_mode,
                      align_corners=align_corners)
  np.testing.assert_allclose(out, _sample_ref(volume, grid, mode, padding_mode,
                                              align_corners), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("align_corners", [False, True])
def test_the_identity_returns_the_volume_and_an_integer_shift_moves_slices(transformed,
                                                                          align_corners):
  rng = np.random.default_rng(1)
  volume = rng.normal(size=(2, 4, 5, 6, 1)).astype(np.float32)
  eye = np.tile(np.eye(3, 4, dtype=np.float32), (2, 1, 1))
  same = transformed(lambda v, t: ops.warp_3d(v, t, (4, 5, 6), align_corners=align_corners))
  np.testing.assert_allclose(same(volume, eye), volume, atol=1e-5)
  shift = eye.copy()  # read one slice further along z
  shift[:, 2, 3] = 2.0 / 3 if align_corners else 2.0 / 4
  out = np.asarray(same(volume, shift))
  np.testing.assert_allclose(out[:, :3], volume[:, 1:], atol=1e-5)
  assert np.abs(out[:, 3]).max() < 1e-5


def test_a_quarter_turn_about_z_turns_every_slice(x64):
  volume = np.random.default_rng(2).normal(size=(1, 3, 5, 5, 1))
  theta = np.array([[[0.0, -1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]])
  out = ops.warp_3d(volume, theta, (3, 5, 5))
  # out(x, y) = in(-y, x), so out[r, c] = in[c, 4 - r] in every (H, W) slice: np.rot90.
  np.testing.assert_allclose(out[0, ..., 0], np.rot90(volume[0, ..., 0], 1, axes=(1, 2)),
                             atol=1e-12)


@pytest.mark.parametrize("mode", ops.MODES_3D)
def test_gradients_in_both_modes_and_jacfwd_equals_jacrev(x64, mode):
  rng = np.random.default_rng(3)
  volume = rng.normal(size=(1, 3, 4, 4, 2))
  # Inside cells, away from the kinks: pixel positions 0.2-0.8 past an integer.
  pos = rng.integers(-1, 3, size=(1, 2, 2, 2, 3)) + rng.uniform(0.2, 0.8, size=(1, 2, 2, 2, 3))
  grid = np.stack([pixel_coordinates(pos[..., 0], 4, False),
                   pixel_coordinates(pos[..., 1], 4, False),
                   pixel_coordinates(pos[..., 2], 3, False)], -1)
  f = lambda v, g: ops.sample_3d(v, g, mode=mode, padding_mode="border")
  check_grads(f, (volume, grid), order=2, eps=1e-6, atol=1e-5, rtol=1e-5)
  for a, b in zip(jax.jacfwd(f, (0, 1))(volume, grid), jax.jacrev(f, (0, 1))(volume, grid)):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_fill_and_bad_arguments():
  volume = jnp.ones((1, 2, 3, 3, 2))
  far = jnp.full((1, 1, 1, 1, 3), 4.0)
  np.testing.assert_allclose(ops.sample_3d(volume, far, padding_mode="fill",
                                           fill_value=jnp.array([7.0, -1.0])).ravel(),
                             [7.0, -1.0])
  with pytest.raises(ValueError, match="Unknown `mode` 'bicubic'"):
    ops.sample_3d(volume, far, mode="bicubic")
  with pytest.raises(ValueError, match=r"`grid` must have shape \(\.\.\., Do, Ho, Wo, 3\)"):
    ops.sample_3d(volume, jnp.zeros((1, 1, 1, 1, 2)))
  with pytest.raises(ValueError, match="same leading"):
    ops.sample_3d(volume, jnp.zeros((2, 1, 1, 1, 3)))
  with pytest.raises(ValueError, match=r"`theta` must have shape \(\.\.\., 3, 4\)"):
    ops.affine_grid_3d(jnp.zeros((2, 3)), (2, 2, 2))
  with pytest.raises(ValueError, match="out_dhw"):
    ops.affine_grid_3d(jnp.zeros((3, 4)), (2, 2))
  with pytest.raises(ValueError, match="one matrix per volume"):
    ops.warp_3d(volume, jnp.zeros((2, 3, 4)), (2, 2, 2))


# Against torch's 5-D affine_grid and grid_sample (float64). ------------------------------


def _torch():
  torch = pytest.importorskip("torch")
  torch.set_num_threads(2)
  return torch


@pytest.mark.parametrize("mode,padding_mode,align_corners", OPTIONS)
def test_values_and_gradients_equal_torchs_5d_grid_sample(x64, mode, padding_mode,
                                                          align_corners):
  torch = _torch()
  rng = np.random.default_rng(4)
  volume = rng.normal(size=(2, 3, 4, 5, 2))
  grid = _grid(rng, 2, (3, 2, 4), (3, 4, 5), align_corners)
  weights = rng.normal(size=(2, 3, 2, 4, 2))
  t_volume = torch.tensor(np.moveaxis(volume, -1, 1), requires_grad=True)
  t_grid = torch.tensor(grid, requires_grad=True)
  t_out = torch.nn.functional.grid_sample(t_volume, t_grid, mode=mode,
                                          padding_mode=padding_mode,
                                          align_corners=align_corners)
  (t_out * torch.tensor(np.moveaxis(weights, -1, 1))).sum().backward()
  kw = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners)
  np.testing.assert_allclose(ops.sample_3d(volume, grid, **kw),
                             np.moveaxis(t_out.detach().numpy(), 1, -1), rtol=1e-12,
                             atol=1e-12)
  d_volume, d_grid = jax.grad(lambda v, g: jnp.sum(ops.sample_3d(v, g, **kw) * weights),
                              (0, 1))(volume, grid)
  np.testing.assert_allclose(d_volume, np.moveaxis(t_volume.grad.numpy(), 1, -1),
                             rtol=1e-10, atol=1e-10)
  np.testing.assert_allclose(d_grid, t_grid.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("align_corners", [False, True])
def test_affine_grid_3d_equals_torchs(x64, align_corners):
  torch = _torch()
  theta = np.random.default_rng(5).normal(size=(2, 3, 4))
  want = torch.nn.functional.affine_grid(torch.tensor(theta), [2, 1, 3, 4, 5],
                                         align_corners=align_corners).numpy()
  np.testing.assert_allclose(ops.affine_grid_3d(theta, (3, 4, 5), align_corners=align_corners),
                             want, rtol=1e-12, atol=1e-12)


class _Flat(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    return nn.relu(nn.Dense(6)(x.reshape(x.shape[0], -1)))


def test_the_3d_spatial_transformer_starts_at_the_identity_and_learns():
  volume = jnp.asarray(np.random.default_rng(6).normal(size=(2, 4, 5, 6, 1)), jnp.float32)
  st = stn_nn.SpatialTransformer3D(_Flat())
  params = st.init(jax.random.key(0), volume)["params"]
  (out, aux) = st.apply({"params": params}, volume)
  np.testing.assert_allclose(out, volume, atol=1e-5)
  np.testing.assert_allclose(aux["theta"], np.tile(np.eye(3, 4), (2, 1, 1)), atol=1e-6)
  grads = jax.grad(lambda p: jnp.sum(st.apply({"params": p}, volume)[0] * volume[..., ::-1, :]))(
      params)
  assert np.abs(grads["localization_out"]["bias"]).max() > 0  # the warp's gradient arrives
  mask = stn_nn.localization_mask(params)
  assert all(jax.tree_util.tree_leaves(mask))  # all of it is the localisation net's
  with pytest.raises(ValueError, match=r"\(N, D, H, W, C\)"):
    st.apply({"params": params}, volume[0])


def _scatters(argnums, mode):
  """Scatter instructions in the optimised HLO of the jitted gradient of a 3-D warp."""
  def loss(volume, theta, weights):
    return jnp.sum(ops.warp_3d(volume, theta, (3, 4, 5), mode=mode) * weights)
  args = (jnp.ones((2, 3, 4, 5, 2)), jnp.tile(jnp.eye(3, 4), (2, 1, 1)), jnp.ones((2, 3, 4, 5, 2)))
  return scatters(jax.grad(loss, argnums), *args)


@pytest.mark.parametrize("mode", ops.MODES_3D)
def test_the_volumes_gradient_is_one_scatter_add_and_thetas_alone_none(mode):
  # JAX's own derivative of the per-tap gathers scattered once per tap (8 for trilinear);
  # the custom JVP's volume tangent is one gather of all taps, so one scatter-add.
  assert _scatters((0, 1), mode) == 1
  assert _scatters(0, mode) == 1
  assert _scatters(1, mode) == 0
