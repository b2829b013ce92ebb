"""Warps by matrices in pixel coordinates, as OpenCV and kornia give them.

A pixel matrix ``M`` maps a point of the source image, ``(x, y)`` in pixels (``x`` the
column, pixel centres at integers), to where it lands in the output: ``dst(M p) = src(p)``
(``cv2.warpAffine``'s and kornia's ``warp_affine``'s convention). The rest of
``stn_jax.ops`` uses normalised ``theta``, which maps output coordinates in ``[-1, 1]`` to
source ones (``affine_grid``'s convention); :func:`pixel_to_normalized` and
:func:`normalized_to_pixel` convert between the two. ``align_corners`` says where ``-1``
and ``1`` lie, as everywhere here: on the centres of the corner pixels (``True``, the
default of kornia's pixel warps) or on their outer edges.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from stn_jax.ops import _checks
from stn_jax.ops._dtypes import compute_dtype
from stn_jax.ops.grids import affine_grid, projective_grid
from stn_jax.ops.sampling import sample

__all__ = ["get_perspective_transform", "invert_affine", "normalized_to_pixel",
           "pixel_to_normalized", "rotation_matrix", "warp_affine", "warp_perspective"]


def _to_normalised(hw, align_corners: bool) -> np.ndarray:
  """The 3x3 matrix from pixel coordinates of an ``(H, W)`` image to normalised ones."""
  h, w = hw
  if align_corners:
    sx = 2.0 / (w - 1) if w > 1 else 0.0  # one pixel: everything is its centre, 0
    sy = 2.0 / (h - 1) if h > 1 else 0.0
    return np.array([[sx, 0.0, -1.0 if w > 1 else 0.0],
                     [0.0, sy, -1.0 if h > 1 else 0.0], [0.0, 0.0, 1.0]])
  return np.array([[2.0 / w, 0.0, 1.0 / w - 1.0], [0.0, 2.0 / h, 1.0 / h - 1.0],
                   [0.0, 0.0, 1.0]])


def _from_normalised(hw, align_corners: bool) -> np.ndarray:
  h, w = hw
  if align_corners:
    return np.array([[(w - 1) / 2.0, 0.0, (w - 1) / 2.0], [0.0, (h - 1) / 2.0, (h - 1) / 2.0],
                     [0.0, 0.0, 1.0]])
  return np.array([[w / 2.0, 0.0, (w - 1) / 2.0], [0.0, h / 2.0, (h - 1) / 2.0],
                   [0.0, 0.0, 1.0]])


def _homogeneous(matrix, name):
  """``(..., 2, 3)`` or ``(..., 3, 3)`` as ``(..., 3, 3)``, and whether it was affine."""
  shape = _checks.shape_of(matrix)
  if len(shape) < 2 or shape[-2:] not in ((2, 3), (3, 3)):
    raise ValueError(f"`{name}` must have shape (..., 2, 3) or (..., 3, 3), but got shape "
                     f"{shape}.")
  _checks.check_floating(matrix, name)
  matrix = jnp.asarray(matrix)
  if shape[-2:] == (3, 3):
    return matrix, False
  last = jnp.broadcast_to(jnp.array([0.0, 0.0, 1.0], matrix.dtype), shape[:-2] + (1, 3))
  return jnp.concatenate([matrix, last], -2), True


def _between(x, name, left, right):
  """``left @ x^-1 @ right`` for ``x`` of shape ``(..., 2, 3)`` or ``(..., 3, 3)``, in
  ``x``'s shape (a homography scaled to ``h33 = 1``) and dtype."""
  h, affine = _homogeneous(x, name)
  ct = compute_dtype(h.dtype)
  hp = jax.lax.Precision.HIGHEST
  out = jnp.matmul(jnp.matmul(jnp.asarray(left, ct), jnp.linalg.inv(h.astype(ct)),
                              precision=hp), jnp.asarray(right, ct), precision=hp)
  if affine:
    return out[..., :2, :].astype(h.dtype)
  return (out / out[..., 2:, 2:]).astype(h.dtype)


def pixel_to_normalized(matrix, src_hw, out_hw, *, align_corners: bool = True):
  """The normalised ``theta`` of a pixel matrix: what ``affine_grid`` (for ``(..., 2,
  3)``) or ``projective_grid`` (``(..., 3, 3)``) takes to warp as ``matrix`` does.

  Args:
    matrix: ``(..., 2, 3)`` or ``(..., 3, 3)``, source pixels to output pixels.
    src_hw: ``(H, W)`` of the source image.
    out_hw: ``(Ho, Wo)`` of the output.
    align_corners: where -1 and 1 lie (see the module's docstring).

  Returns:
    ``theta`` of the same shape: output normalised coordinates to source ones.

  >>> shift = jnp.array([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]])  # 2 px to the right
  >>> pixel_to_normalized(shift, (5, 5), (5, 5)).tolist()  # reads 1 to the left
  [[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]]
  """
  src_hw, out_hw = _checks.check_out_hw(src_hw), _checks.check_out_hw(out_hw)
  # theta = N_src M^-1 N_out^-1: output normalised -> output pixels -> source pixels ->
  # source normalised.
  return _between(matrix, "matrix", _to_normalised(src_hw, align_corners),
                  _from_normalised(out_hw, align_corners))


def normalized_to_pixel(theta, src_hw, out_hw, *, align_corners: bool = True):
  """The pixel matrix of a normalised ``theta``: the inverse of
  :func:`pixel_to_normalized`, with the same arguments and shapes.

  Returns:
    ``(..., 2, 3)`` or ``(..., 3, 3)``: source pixels to output pixels.
  """
  src_hw, out_hw = _checks.check_out_hw(src_hw), _checks.check_out_hw(out_hw)
  # M = N_out^-1 theta^-1 N_src: pixel_to_normalized solved for M.
  return _between(theta, "theta", _from_normalised(out_hw, align_corners),
                  _to_normalised(src_hw, align_corners))


def _warp(image, matrix, out_hw, kind, mode, padding_mode, align_corners, fill_value):
  ishape = _checks.shape_of(image)
  if len(ishape) < 3:
    raise ValueError(f"`image` must have shape (..., H, W, C), but got shape {ishape}.")
  want = (2, 3) if kind == "affine" else (3, 3)
  mshape = _checks.shape_of(matrix)
  if len(mshape) < 2 or mshape[-2:] != want:
    raise ValueError(f"`matrix` must have shape (..., {want[0]}, {want[1]}), but got shape "
                     f"{mshape}.")
  if mshape[:-2] != ishape[:-3]:
    raise ValueError(f"`matrix` must have one matrix per image: `image` has shape {ishape} "
                     f"(batch {ishape[:-3]}) but `matrix` has shape {mshape}.")
  out_hw = _checks.check_out_hw(out_hw)
  theta = pixel_to_normalized(matrix, ishape[-3:-1], out_hw, align_corners=align_corners)
  to_grid = affine_grid if kind == "affine" else projective_grid
  grid = to_grid(theta, out_hw, align_corners=align_corners)
  return sample(image, grid.astype(compute_dtype(grid.dtype)), mode=mode,
                padding_mode=padding_mode, align_corners=align_corners, fill_value=fill_value)


def warp_affine(image, matrix, out_hw, *, mode: str = "bilinear", padding_mode: str = "zeros",
                align_corners: bool = True, fill_value=None) -> jax.Array:
  """Warps images by affine matrices in pixels, as kornia's ``warp_affine`` (and OpenCV's
  ``warpAffine`` with its inverse map) does: ``out(M p) = image(p)``.

  Args:
    image: ``(..., H, W, C)`` images.
    matrix: ``(..., 2, 3)`` one matrix per image, source pixels to output pixels.
    out_hw: ``(Ho, Wo)``.
    mode, padding_mode, fill_value: as in :func:`stn_jax.ops.sample`.
    align_corners: as in :func:`pixel_to_normalized` (default True, kornia's).

  Returns:
    ``(..., Ho, Wo, C)``.

  >>> image = jnp.arange(6.0).reshape(1, 2, 3, 1)
  >>> shift = jnp.array([[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])  # one pixel right
  >>> warp_affine(image, shift, (2, 3))[0, ..., 0].tolist()
  [[0.0, 0.0, 1.0], [0.0, 3.0, 4.0]]
  """
  return _warp(image, matrix, out_hw, "affine", mode, padding_mode, align_corners, fill_value)


def warp_perspective(image, matrix, out_hw, *, mode: str = "bilinear",
                     padding_mode: str = "zeros", align_corners: bool = True,
                     fill_value=None) -> jax.Array:
  """Warps images by homographies in pixels, as kornia's ``warp_perspective`` does.

  Args:
    image: ``(..., H, W, C)`` images.
    matrix: ``(..., 3, 3)`` one homography per image, source pixels to output pixels.
    out_hw, mode, padding_mode, align_corners, fill_value: as in :func:`warp_affine`.

  Returns:
    ``(..., Ho, Wo, C)``.
  """
  return _warp(image, matrix, out_hw, "perspective", mode, padding_mode, align_corners,
               fill_value)


def get_perspective_transform(src, dst) -> jax.Array:
  """The homography that sends four points to four others, differentiable and batched
  (kornia's ``get_perspective_transform``, OpenCV's ``getPerspectiveTransform``).

  Args:
    src: ``(..., 4, 2)`` points ``(x, y)``.
    dst: ``(..., 4, 2)`` where they go.

  Returns:
    ``(..., 3, 3)`` with ``h33 = 1``: ``dst ~ H [src, 1]``.

  >>> src = jnp.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
  >>> get_perspective_transform(src, 2 * src + 1).round(5).tolist()
  [[2.0, 0.0, 1.0], [0.0, 2.0, 1.0], [0.0, 0.0, 1.0]]
  """
  for name, x in (("src", src), ("dst", dst)):
    _checks.check_trailing(x, name, (4, 2), "(..., 4, 2)")
    _checks.check_floating(x, name)
  ct = compute_dtype(jnp.result_type(src, dst))
  src, dst = jnp.asarray(src, ct), jnp.asarray(dst, ct)
  batch = jnp.broadcast_shapes(src.shape[:-2], dst.shape[:-2])
  src, dst = jnp.broadcast_to(src, batch + (4, 2)), jnp.broadcast_to(dst, batch + (4, 2))
  x, y = src[..., 0], src[..., 1]
  u, v = dst[..., 0], dst[..., 1]
  one, zero = jnp.ones_like(x), jnp.zeros_like(x)
  # u (h31 x + h32 y + 1) = h11 x + h12 y + h13, and likewise v: 8 equations, 8 unknowns.
  rows_u = jnp.stack([x, y, one, zero, zero, zero, -u * x, -u * y], -1)
  rows_v = jnp.stack([zero, zero, zero, x, y, one, -v * x, -v * y], -1)
  a = jnp.concatenate([rows_u, rows_v], -2)  # (..., 8, 8)
  b = jnp.concatenate([u, v], -1)[..., None]
  h = jnp.linalg.solve(a, b)[..., 0]
  return jnp.concatenate([h, jnp.ones(batch + (1,), ct)], -1).reshape(batch + (3, 3))


def invert_affine(matrix) -> jax.Array:
  """The inverse of affine maps ``(..., 2, 3)`` (kornia's ``invert_affine_transform``).

  Returns:
    ``(..., 2, 3)``.

  >>> (invert_affine(jnp.array([[2.0, 0.0, 4.0], [0.0, 2.0, 0.0]])) + 0.0).tolist()
  [[0.5, 0.0, -2.0], [0.0, 0.5, 0.0]]
  """
  m, affine = _homogeneous(matrix, "matrix")
  if not affine:
    raise ValueError(f"`matrix` must have shape (..., 2, 3), but got shape {m.shape}.")
  a = m[..., :2, :2]
  inverse = jnp.linalg.inv(a)
  shift = -jnp.einsum("...ij,...j->...i", inverse, m[..., :2, 2])
  return jnp.concatenate([inverse, shift[..., None]], -1)


def rotation_matrix(center, angle, scale) -> jax.Array:
  """OpenCV's ``getRotationMatrix2D`` (kornia's ``get_rotation_matrix2d``): a rotation
  by ``angle`` degrees (counter-clockwise on the screen, y pointing down) and a scaling
  about ``center``.

  Args:
    center: ``(..., 2)`` ``(x, y)`` in pixels.
    angle: ``(...)`` degrees.
    scale: ``(...)`` or ``(..., 2)`` (x and y scales).

  Returns:
    ``(..., 2, 3)`` pixel matrices for :func:`warp_affine`.

  >>> m = rotation_matrix(jnp.array([1.0, 1.0]), jnp.array(90.0), jnp.array(1.0))
  >>> (m.round(5) + 0.0).tolist()  # + 0.0: no negative zeros
  [[0.0, 1.0, 0.0], [-1.0, 0.0, 2.0]]
  """
  _checks.check_trailing(center, "center", (2,), "(..., 2)")
  for name, x in (("center", center), ("angle", angle), ("scale", scale)):
    _checks.check_floating(x, name)
  ct = compute_dtype(jnp.result_type(center, angle, scale))
  center, angle, scale = (jnp.asarray(x, ct) for x in (center, angle, scale))
  if scale.ndim == angle.ndim:
    scale = jnp.stack([scale, scale], -1)
  rad = jnp.deg2rad(angle)
  cos, sin = jnp.cos(rad), jnp.sin(rad)
  sx, sy = scale[..., 0], scale[..., 1]
  cx, cy = center[..., 0], center[..., 1]
  # kornia: the rotation's 2x2 block times diag(sx, sy), then the centre fixed.
  a11, a12 = cos * sx, sin * sy
  a21, a22 = -sin * sx, cos * sy
  row1 = jnp.stack([a11, a12, cx - a11 * cx - a12 * cy], -1)
  row2 = jnp.stack([a21, a22, cy - a21 * cx - a22 * cy], -1)
  return jnp.stack([row1, row2], -2)
