"""Volumetric (3-D) transformers: the NDHWC counterparts of torch's 5-D
``affine_grid`` and ``grid_sample``.

A 3-D grid has shape ``(..., D, H, W, 3)``; its last axis holds normalised source
coordinates ``(x, y, z)`` (``x`` along W, ``y`` along H, ``z`` along D), as in torch.
``mode='bilinear'`` is trilinear interpolation (torch's name for it in 5-D), ``'nearest'``
rounds half to even; padding and ``align_corners`` mean what they mean in 2-D, and
``'fill'`` reads ``fill_value`` outside. The per-axis coordinate arithmetic is the 2-D
sampler's, so its sub-gradient and non-finite rules carry over. The gather is left to JAX's
autodiff (one gather per tap, a scatter-add each in reverse mode), which supports forward
and reverse mode at any order.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from stn_jax.ops import _checks
from stn_jax.ops._dtypes import compute_dtype
from stn_jax.ops.grids import base_coordinates
from stn_jax.ops.sampling import _check_sample_args, _fill_value, _taps_1d

__all__ = ["MODES_3D", "affine_grid_3d", "sample_3d", "warp_3d"]

MODES_3D = ("bilinear", "nearest")


def _check_out_dhw(out_dhw) -> tuple[int, int, int]:
  try:
    d, h, w = (int(v) for v in out_dhw)
    ok = all(int(v) == v for v in out_dhw)
  except (TypeError, ValueError):
    ok = False
  if not ok or min(d, h, w) < 1:
    raise ValueError(f"`out_dhw` must be three positive integers (depth, height, width), but "
                     f"got {out_dhw!r}.")
  return d, h, w


def affine_grid_3d(theta, out_dhw, *, align_corners: bool = False) -> jax.Array:
  """Sampling grid of a 3-D affine transform, as torch's ``affine_grid`` for 5-D sizes.

  Args:
    theta: ``(..., 3, 4)`` matrices mapping output ``(x, y, z, 1)`` to source ``(x, y, z)``.
    out_dhw: ``(D, H, W)`` of the output grid.
    align_corners: PyTorch's meaning.

  Returns:
    ``(..., D, H, W, 3)`` grid, dtype of ``theta``.

  >>> affine_grid_3d(jnp.eye(3, 4), (2, 3, 4)).shape
  (2, 3, 4, 3)
  """
  _checks.check_trailing(theta, "theta", (3, 4), "(..., 3, 4)")
  _checks.check_floating(theta, "theta")
  d, h, w = _check_out_dhw(out_dhw)
  theta = jnp.asarray(theta)
  ct = compute_dtype(theta.dtype)
  zs, ys, xs = (base_coordinates(n, align_corners=align_corners) for n in (d, h, w))
  gz, gy, gx = np.meshgrid(zs, ys, xs, indexing="ij")
  base = jnp.asarray(np.stack([gx, gy, gz, np.ones_like(gx)], -1), ct)  # (D, H, W, 4)
  grid = jnp.einsum("dhwk,...ek->...dhwe", base, theta.astype(ct),
                    precision=jax.lax.Precision.HIGHEST)
  return grid.astype(theta.dtype)


@functools.partial(jax.jit, static_argnames=("mode", "padding_mode", "align_corners"))
def _sample_flat_3d(volume, grid, *, mode, padding_mode, align_corners):
  """volume (N, D, H, W, C), grid (N, Do, Ho, Wo, 3) -> (N, Do, Ho, Wo, C)."""
  n, d, h, w, c = volume.shape
  out_shape = grid.shape[1:4]
  g = grid.astype(compute_dtype(grid.dtype)).reshape(n, -1, 3)
  kw = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners)
  ix, wx = _taps_1d(g[..., 0], w, **kw)  # (N, P, K)
  iy, wy = _taps_1d(g[..., 1], h, **kw)
  iz, wz = _taps_1d(g[..., 2], d, **kw)
  flat = volume.reshape(n, d * h * w, c)
  out = 0.0
  for a, b, e in itertools.product(range(ix.shape[-1]), repeat=3):
    index = (iz[..., a] * h + iy[..., b]) * w + ix[..., e]
    tap = jnp.take_along_axis(flat, index[..., None], axis=1, mode="promise_in_bounds")
    out = out + (wz[a] * wy[b] * wx[e])[..., None] * tap.astype(wz[a].dtype)
  return out.reshape((n,) + out_shape + (c,)).astype(volume.dtype)


def sample_3d(volume, grid, *, mode: str = "bilinear", padding_mode: str = "zeros",
              align_corners: bool = False, fill_value=None) -> jax.Array:
  """Samples volumes at the normalised coordinates of a 3-D grid: the NDHWC counterpart
  of ``torch.nn.functional.grid_sample`` on 5-D inputs, with its values and gradients.

  Args:
    volume: ``(..., D, H, W, C)`` floating-point volumes.
    grid: ``(..., Do, Ho, Wo, 3)`` normalised ``(x, y, z)``; the same leading dimensions.
    mode: ``'bilinear'`` (trilinear) or ``'nearest'``.
    padding_mode, align_corners, fill_value: as in :func:`stn_jax.ops.sample`.

  Returns:
    ``(..., Do, Ho, Wo, C)``, dtype of ``volume``.

  >>> v = jnp.arange(8.0).reshape(1, 2, 2, 2, 1)
  >>> sample_3d(v, jnp.zeros((1, 1, 1, 1, 3))).ravel().tolist()  # the centre: the mean
  [3.5]
  """
  vshape, gshape = _check_sample_args(volume, grid, mode, padding_mode, dims=3, name="volume",
                                      modes=MODES_3D)
  fill = _fill_value(padding_mode, fill_value, volume, vshape[-1])
  batch = vshape[:-4]
  volume = jnp.asarray(volume).reshape((-1,) + vshape[-4:])
  grid = jnp.asarray(grid).reshape((-1,) + gshape[-4:])
  kw = dict(mode=mode, align_corners=bool(align_corners))
  if fill is None:
    out = _sample_flat_3d(volume, grid, padding_mode=padding_mode, **kw)
  else:
    out = (_sample_flat_3d(volume - fill, grid, padding_mode="zeros", **kw)
           + fill).astype(volume.dtype)
  return out.reshape(batch + out.shape[1:])


def warp_3d(volume, theta, out_dhw, *, mode: str = "bilinear", padding_mode: str = "zeros",
            align_corners: bool = False, fill_value=None) -> jax.Array:
  """:func:`affine_grid_3d` then :func:`sample_3d`.

  Args:
    volume: ``(..., D, H, W, C)``.
    theta: ``(..., 3, 4)``, one per volume.
    out_dhw: ``(Do, Ho, Wo)``.
    mode, padding_mode, align_corners, fill_value: as in :func:`sample_3d`.

  Returns:
    ``(..., Do, Ho, Wo, C)``.
  """
  vshape = _checks.check_min_rank(volume, "volume", 4, "(..., D, H, W, C)")
  tshape = _checks.check_trailing(theta, "theta", (3, 4), "(..., 3, 4)")
  if tshape[:-2] != vshape[:-4]:
    raise ValueError(f"`theta` must have one matrix per volume: `volume` has shape {vshape} "
                     f"but `theta` has shape {tshape}.")
  grid = affine_grid_3d(theta, out_dhw, align_corners=align_corners)
  return sample_3d(volume, grid.astype(compute_dtype(grid.dtype)), mode=mode,
                   padding_mode=padding_mode, align_corners=align_corners,
                   fill_value=fill_value)
