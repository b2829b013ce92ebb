"""Volumetric (3-D) transformers: the NDHWC counterparts of torch's 5-D
``affine_grid`` and ``grid_sample``.

A 3-D grid has shape ``(..., D, H, W, 3)``; its last axis holds normalised source
coordinates ``(x, y, z)`` (``x`` along W, ``y`` along H, ``z`` along D), as in torch.
``mode='bilinear'`` is trilinear interpolation (torch's name for it in 5-D), ``'nearest'``
rounds half to even; padding and ``align_corners`` mean what they mean in 2-D, and
``'fill'`` reads ``fill_value`` outside. The per-axis coordinate arithmetic is the 2-D
sampler's, so its sub-gradient and non-finite rules carry over. The weighted gather's
derivative is written out as the 2-D sampler's is (a ``jax.custom_jvp`` that JAX transposes
for reverse mode): the volume's tangent goes through one gather of all taps, so the
volume's gradient is one scatter-add (JAX's own derivative of the per-tap gathers made it
one per tap, 8 for trilinear), and the weights' tangent takes each tap's gathered values
from the forward pass, so a gradient with respect to the grid alone scatters nothing.
Forward and reverse mode work at any order.
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


def _flat_index(indices, taps, sizes):
  """Flat voxel index of one tap: ``indices`` per axis, slowest first, ``(N, P, K)`` each;
  ``taps`` the tap number along each axis; ``sizes`` the volume's extent along each."""
  index = indices[0][..., taps[0]]
  for idx, t, size in zip(indices[1:], taps[1:], sizes[1:]):
    index = index * size + idx[..., t]
  return index


def _tap_weight(weights, taps):
  """The product of the taps' per-axis weights, ``(N, P)``."""
  return functools.reduce(lambda a, b: a * b, (w[t] for w, t in zip(weights, taps)))


def _all_taps(indices):
  return itertools.product(*(range(idx.shape[-1]) for idx in indices))


def _gather(flat, index):
  return jnp.take_along_axis(flat, index[..., None], axis=1, mode="promise_in_bounds")


def _tap_sum_nd(flat, indices, weights, sizes):
  """``sum_taps prod_axes w[axis][tap] * flat[n, index(tap)]``: flat (N, V, C); ``indices``
  per axis (N, P, K); ``weights`` per axis K arrays (N, P) -> (N, P, C). One gather per tap,
  as in the 2-D sampler (a single wide gather runs several times slower on a CPU)."""
  out = 0.0
  for taps in _all_taps(indices):
    w = _tap_weight(weights, taps)
    out = out + w[..., None] * _gather(flat, _flat_index(indices, taps, sizes)).astype(w.dtype)
  return out


def _tap_sum_nd_wide(flat, indices, weights, sizes):
  """:func:`_tap_sum_nd` as one gather of all taps: linear in ``flat``, it carries the
  volume's tangent, and its transpose is a single scatter-add into the volume's gradient."""
  n, p = indices[0].shape[:2]
  rank = len(indices)
  index, weight = 0, 1.0
  for axis, (idx, w, size) in enumerate(zip(indices, weights, sizes)):
    shape = (n, p) + tuple(-1 if a == axis else 1 for a in range(rank))
    index = index * size + idx.reshape(shape)
    weight = weight * jnp.stack(w, -1).reshape(shape)
  taps = int(np.prod([idx.shape[-1] for idx in indices]))
  index = jnp.broadcast_to(index, (n, p) + tuple(idx.shape[-1] for idx in indices))
  weight = jnp.broadcast_to(weight, index.shape).reshape(n, p * taps)
  values = _gather(flat, index.reshape(n, p * taps))
  out = weight[..., None] * values.astype(weight.dtype)
  return out.reshape(n, p, taps, -1).sum(2)


def _weight_tangent_nd(flat, indices, weights, d_weights, sizes):
  """The tangent of :func:`_tap_sum_nd` along its weights, ``d_weights`` per axis (None: a
  zero tangent): per tap, ``sum_axes d_w[axis] prod_(other axes) w`` times the tap's values.
  Each tap's weight is an array of its own, so the transpose is, per tap, one product with
  the cotangent summed over channels."""
  out = 0.0
  for taps in _all_taps(indices):
    terms = []
    for axis, d_w in enumerate(d_weights):
      if d_w is not None:
        factors = [d_w[taps[axis]]] + [w[t] for a, (w, t) in enumerate(zip(weights, taps))
                                       if a != axis]
        terms.append(functools.reduce(lambda a, b: a * b, factors))
    w = functools.reduce(jnp.add, terms)
    out = out + w[..., None] * _gather(flat, _flat_index(indices, taps, sizes)).astype(w.dtype)
  return out


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _weighted_gather_nd(flat, indices, weights, sizes):
  """:func:`_tap_sum_nd`, differentiable in forward and reverse mode at any order, with the
  derivative of the 2-D sampler's ``_weighted_gather``: the volume's tangent through
  :func:`_tap_sum_nd_wide` (one scatter-add when transposed), the weights' through
  :func:`_weight_tangent_nd` (the taps gathered in the forward pass, no scatter)."""
  return _tap_sum_nd(flat, indices, weights, sizes)


@functools.partial(_weighted_gather_nd.defjvp, symbolic_zeros=True)
def _weighted_gather_nd_jvp(sizes, primals, tangents):
  flat, indices, weights = primals
  d_flat, _, d_weights = tangents
  out = _tap_sum_nd(flat, indices, weights, sizes)
  zero = jax.custom_derivatives.SymbolicZero
  parts = []
  if not isinstance(d_flat, zero):
    parts.append(_tap_sum_nd_wide(d_flat, indices, weights, sizes))
  d_weights = [None if all(isinstance(t, zero) for t in d_w) else
               tuple(jnp.zeros_like(w) if isinstance(t, zero) else t for w, t in zip(ws, d_w))
               for ws, d_w in zip(weights, d_weights)]
  if any(d_w is not None for d_w in d_weights):
    parts.append(_weight_tangent_nd(flat, indices, weights, d_weights, sizes))
  tangent = functools.reduce(jnp.add, parts) if parts else jnp.zeros_like(out)
  return out, tangent.astype(out.dtype)


@functools.partial(jax.jit, static_argnames=("mode", "padding_mode", "align_corners"))
def _sample_flat_3d(volume, grid, *, mode, padding_mode, align_corners):
  """volume (N, D, H, W, C), grid (N, Do, Ho, Wo, 3) -> (N, Do, Ho, Wo, C)."""
  n, d, h, w, c = volume.shape
  out_shape = grid.shape[1:4]
  g = grid.astype(compute_dtype(grid.dtype)).reshape(n, -1, 3)
  kw = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners)
  ix, wx = _taps_1d(g[..., 0], w, **kw)  # (N, P, K), K x (N, P)
  iy, wy = _taps_1d(g[..., 1], h, **kw)
  iz, wz = _taps_1d(g[..., 2], d, **kw)
  weights = (wz, wy, wx)
  if mode == "nearest":  # the weights are constant: no tangent to carry
    weights = jax.lax.stop_gradient(weights)
  out = _weighted_gather_nd(volume.reshape(n, d * h * w, c), (iz, iy, ix), weights, (d, h, w))
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
