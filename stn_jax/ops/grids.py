"""Grid generators: from transform parameters to sampling grids.

A grid has shape ``(..., H, W, 2)``; its last axis holds normalised source
coordinates ``(x, y)`` in ``[-1, 1]`` (``-1`` is the left/top edge), the
convention of ``torch.nn.functional.affine_grid``. ``align_corners`` has
PyTorch's meaning: with ``True`` the extreme values refer to the centres of
the corner pixels, with ``False`` to their outer edges.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from stn_jax.ops import _checks
from stn_jax.ops._dtypes import compute_dtype

__all__ = [
    "affine_grid",
    "attention_grid",
    "base_coordinates",
    "default_control_points",
    "identity_grid",
    "projective_grid",
    "tps_grid",
    "tps_transform_points",
]


def base_coordinates(size: int, *, align_corners: bool = False) -> np.ndarray:
  """Normalised centres of ``size`` pixels along one axis.

  Args:
    size: number of pixels.
    align_corners: PyTorch's meaning.

  Returns:
    ``(size,)`` float64 NumPy array, left to right.

  >>> base_coordinates(2, align_corners=False)
  array([-0.5,  0.5])
  """
  if align_corners:
    return np.linspace(-1.0, 1.0, size) if size > 1 else np.zeros(1)
  return (2.0 * np.arange(size) + 1.0) / size - 1.0


def _homogeneous_base(out_hw, align_corners) -> np.ndarray:
  h, w = out_hw
  xs = base_coordinates(w, align_corners=align_corners)
  ys = base_coordinates(h, align_corners=align_corners)
  gx, gy = np.meshgrid(xs, ys)  # (H, W) each
  return np.stack([gx, gy, np.ones_like(gx)], axis=-1)  # (H, W, 3)


def identity_grid(out_hw, *, align_corners: bool = False, dtype=jnp.float32) -> jax.Array:
  """The grid that samples every output pixel at its own position.

  Args:
    out_hw: ``(H, W)`` of the grid.
    align_corners: PyTorch's meaning.
    dtype: dtype of the result.

  Returns:
    ``(H, W, 2)`` grid of ``(x, y)`` pixel-centre coordinates.

  >>> identity_grid((1, 2))[0].tolist()
  [[-0.5, 0.0], [0.5, 0.0]]
  """
  out_hw = _checks.check_out_hw(out_hw)
  return jnp.asarray(_homogeneous_base(out_hw, align_corners)[..., :2], dtype)


def affine_grid(theta, out_hw, *, align_corners: bool = False) -> jax.Array:
  """Sampling grid of a 2-D affine transform, as ``torch.nn.functional.affine_grid``.

  Output pixel at normalised position ``(x, y)`` samples the source at
  ``theta @ [x, y, 1]``.

  Args:
    theta: ``(..., 2, 3)`` affine matrices mapping output to source coordinates.
    out_hw: ``(H, W)`` of the output grid.
    align_corners: PyTorch's meaning (see the module docstring).

  Returns:
    ``(..., H, W, 2)`` grid of ``(x, y)`` source coordinates, dtype of ``theta``.

  >>> theta = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
  >>> affine_grid(theta, (3, 4)).shape
  (3, 4, 2)
  """
  _checks.check_trailing(theta, "theta", (2, 3), "(..., 2, 3)")
  _checks.check_floating(theta, "theta")
  out_hw = _checks.check_out_hw(out_hw)
  theta = jnp.asarray(theta)
  ct = compute_dtype(theta.dtype)
  base = jnp.asarray(_homogeneous_base(out_hw, align_corners), ct)
  grid = jnp.einsum("hwk,...dk->...hwd", base, theta.astype(ct),
                    precision=jax.lax.Precision.HIGHEST)
  return grid.astype(theta.dtype)


def attention_grid(params, out_hw, *, align_corners: bool = False) -> jax.Array:
  """Grid of the paper's attention transform: isotropic scale ``s`` and translation.

  ``params[..., :] = (s, tx, ty)`` stands for ``theta = [[s, 0, tx], [0, s, ty]]``.

  Args:
    params: ``(..., 3)`` array of ``(s, tx, ty)``.
    out_hw: ``(H, W)`` of the output grid.
    align_corners: PyTorch's meaning.

  Returns:
    ``(..., H, W, 2)`` grid, dtype of ``params``.

  >>> attention_grid(jnp.array([0.5, 0.0, 0.0]), (2, 2)).tolist()
  [[[-0.25, -0.25], [0.25, -0.25]], [[-0.25, 0.25], [0.25, 0.25]]]
  """
  _checks.check_trailing(params, "params", (3,), "(..., 3) = (s, tx, ty)")
  _checks.check_floating(params, "params")
  return affine_grid(_attention_to_affine(params), out_hw, align_corners=align_corners)


def _attention_to_affine(params) -> jax.Array:
  """``(..., 3)`` ``(s, tx, ty)`` to ``(..., 2, 3)`` affine matrices."""
  params = jnp.asarray(params)
  s, tx, ty = params[..., 0], params[..., 1], params[..., 2]
  zero = jnp.zeros_like(s)
  return jnp.stack([jnp.stack([s, zero, tx], -1), jnp.stack([zero, s, ty], -1)], -2)


def projective_grid(h, out_hw, *, align_corners: bool = False) -> jax.Array:
  """Sampling grid of a projective transform (homography).

  Output pixel ``(x, y)`` samples the source at ``(u / w, v / w)`` where
  ``[u, v, w] = h @ [x, y, 1]``. Where ``w`` is 0 the coordinate is infinite or
  NaN; the samplers read such points as lying nowhere and return 0 there.

  Args:
    h: ``(..., 3, 3)`` matrices, or ``(..., 8)`` of their first eight entries
      in row-major order with ``h[2, 2]`` fixed to 1.
    out_hw: ``(H, W)`` of the output grid.
    align_corners: PyTorch's meaning.

  Returns:
    ``(..., H, W, 2)`` grid, dtype of ``h``.

  >>> eye = jnp.array([1.0, 0, 0, 0, 1, 0, 0, 0])
  >>> bool(jnp.allclose(projective_grid(eye, (4, 4)), identity_grid((4, 4))))
  True
  """
  shape = _checks.check_min_rank(h, "h", 1, "(..., 3, 3) or (..., 8)")
  _checks.check_floating(h, "h")
  out_hw = _checks.check_out_hw(out_hw)
  h = jnp.asarray(h)
  if shape[-1] == 8:
    h = jnp.concatenate([h, jnp.ones(shape[:-1] + (1,), h.dtype)], -1)
    h = h.reshape(shape[:-1] + (3, 3))
  elif len(shape) < 2 or shape[-2:] != (3, 3):
    raise ValueError(
        f"`h` must have shape (..., 3, 3) or (..., 8), but got shape {shape}.")
  ct = compute_dtype(h.dtype)
  base = jnp.asarray(_homogeneous_base(out_hw, align_corners), ct)
  uvw = jnp.einsum("hwk,...dk->...hwd", base, h.astype(ct),
                   precision=jax.lax.Precision.HIGHEST)
  u, w = uvw[..., :2], uvw[..., 2:]
  # Where w == 0 the point is at infinity: keep the non-finite value (the
  # sampler reads it as pointing nowhere) but differentiate a safe division,
  # or the zero cotangent there times an infinite derivative would be NaN.
  at_infinity = w == 0
  grid = jnp.where(at_infinity, jax.lax.stop_gradient(u / w), u / jnp.where(at_infinity, 1, w))
  return grid.astype(h.dtype)


# Thin-plate splines ---------------------------------------------------------


def default_control_points(grid_size: int = 4) -> np.ndarray:
  """A regular ``grid_size x grid_size`` grid of control points over ``[-1, 1]^2``.

  Returns a ``(grid_size**2, 2)`` float64 array of ``(x, y)``, row by row.
  """
  c = np.linspace(-1.0, 1.0, grid_size)
  gx, gy = np.meshgrid(c, c)
  return np.stack([gx.ravel(), gy.ravel()], -1)


def _tps_kernel(points: np.ndarray, control: np.ndarray) -> np.ndarray:
  """U(r) = r^2 log r^2 between every point and every control point (float64)."""
  d2 = np.sum((points[:, None, :] - control[None, :, :]) ** 2, -1)
  with np.errstate(divide="ignore", invalid="ignore"):
    u = np.where(d2 > 0, d2 * np.log(np.where(d2 > 0, d2, 1.0)), 0.0)
  return u


def _tps_weights(points: np.ndarray, control: np.ndarray, regularization: float) -> np.ndarray:
  """Matrix B (P, K) such that warped points = points + B @ offsets.

  The TPS through the control points is linear in their target positions, and
  it reproduces affine maps exactly, so only the offsets need a matrix product:
  zero offsets give the identity up to rounding alone. The system is solved
  once, in float64 NumPy, because it depends on the (fixed) control points
  only; this keeps it finite and accurate whatever the input dtype.
  """
  k = control.shape[0]
  kernel = _tps_kernel(control, control) + regularization * np.eye(k)
  poly = np.concatenate([np.ones((k, 1)), control], 1)  # (K, 3)
  system = np.zeros((k + 3, k + 3))
  system[:k, :k] = kernel
  system[:k, k:] = poly
  system[k:, :k] = poly.T
  # lstsq instead of inv: a well-posed system gives the exact solution, a
  # degenerate control set (e.g. collinear points) still gives a finite one.
  rhs = np.concatenate([np.eye(k), np.zeros((3, k))], 0)
  coef, *_ = np.linalg.lstsq(system, rhs, rcond=None)  # (K + 3, K)
  feats = np.concatenate(
      [_tps_kernel(points, control), np.ones((len(points), 1)), points], 1)
  return feats @ coef


def _check_tps_args(offsets, control_points, regularization):
  if control_points is None:
    control_points = default_control_points(4)
  try:
    control = np.asarray(control_points, np.float64)
  except (TypeError, jax.errors.TracerArrayConversionError) as e:
    raise ValueError(
        "`control_points` must be a concrete (K, 2) array, not a traced value: the TPS "
        "system is solved once at trace time.") from e
  if control.ndim != 2 or control.shape[1] != 2 or control.shape[0] < 3:
    raise ValueError(
        f"`control_points` must have shape (K, 2) with K >= 3, but got shape {control.shape}.")
  k = control.shape[0]
  _checks.check_trailing(offsets, "offsets", (k, 2),
                         f"(..., {k}, 2) to match the {k} control points")
  _checks.check_floating(offsets, "offsets")
  if not np.isfinite(regularization) or regularization < 0:
    raise ValueError(f"`regularization` must be a finite number >= 0, but got {regularization!r}.")
  return control


def tps_transform_points(points, offsets, *, control_points=None, regularization: float = 0.0):
  """Maps points through the thin-plate spline defined by moved control points.

  Args:
    points: ``(P, 2)`` concrete array of ``(x, y)`` normalised coordinates.
    offsets: ``(..., K, 2)`` displacement of each control point.
    control_points: ``(K, 2)`` concrete array; default: the paper's regular 4x4 grid.
    regularization: ridge added to the kernel; 0 interpolates exactly.

  Returns:
    ``(..., P, 2)`` mapped points, dtype of ``offsets``.
  """
  control = _check_tps_args(offsets, control_points, regularization)
  pts = np.asarray(points, np.float64)
  if pts.ndim != 2 or pts.shape[1] != 2:
    raise ValueError(f"`points` must have shape (P, 2), but got shape {pts.shape}.")
  offsets = jnp.asarray(offsets)
  ct = compute_dtype(offsets.dtype)
  b = jnp.asarray(_tps_weights(pts, control, float(regularization)), ct)
  moved = jnp.asarray(pts, ct) + jnp.einsum(
      "pk,...kd->...pd", b, offsets.astype(ct), precision=jax.lax.Precision.HIGHEST)
  return moved.astype(offsets.dtype)


def tps_grid(offsets, out_hw, *, control_points=None, regularization: float = 0.0,
             align_corners: bool = False) -> jax.Array:
  """Sampling grid of a thin-plate spline (TPS) transform.

  The TPS maps each output position to a source position; it sends control
  point ``k`` to ``control_points[k] + offsets[..., k, :]`` and is the
  smoothest (least bending energy) map that does so.

  Args:
    offsets: ``(..., K, 2)`` displacements ``(dx, dy)`` of the K control points,
      in normalised coordinates.
    out_hw: ``(H, W)`` of the output grid.
    control_points: ``(K, 2)`` concrete positions ``(x, y)`` in the output
      frame; default: a regular 4x4 grid over ``[-1, 1]^2`` (the paper's 16).
    regularization: non-negative ridge on the kernel (0: exact interpolation;
      larger values give smoother warps that pass near, not through, the points).
    align_corners: PyTorch's meaning.

  Returns:
    ``(..., H, W, 2)`` grid, dtype of ``offsets``.

  >>> tps_grid(jnp.zeros((16, 2)), (8, 8)).shape
  (8, 8, 2)
  """
  out_hw = _checks.check_out_hw(out_hw)
  control = _check_tps_args(offsets, control_points, regularization)
  pts = _homogeneous_base(out_hw, align_corners)[..., :2].reshape(-1, 2)
  flat = tps_transform_points(pts, offsets, control_points=control,
                              regularization=regularization)
  return flat.reshape(flat.shape[:-2] + out_hw + (2,))
