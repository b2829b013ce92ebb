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
    "tps_transform",
    "tps_transform_points",
    "tps_warp_points",
]

# Singular values of the TPS system below this fraction of the largest are dropped (a
# pseudo-inverse), so that control points closer than about 5e-4 (a hundredth of a pixel
# at 42 px) act as one point aiming at their mean target, instead of bending the plane
# through infinity. A regular 10x10 grid of points has its smallest at 1.6e-4, two points
# 1e-3 apart 2.7e-7, 1e-4 apart 3.6e-9 (measured; the ratio goes as the gap squared).
TPS_RCOND = 1e-7


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
  coef, *_ = np.linalg.lstsq(system, rhs, rcond=TPS_RCOND)  # (K + 3, K)
  feats = np.concatenate(
      [_tps_kernel(points, control), np.ones((len(points), 1)), points], 1)
  return feats @ coef


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def _check_regularization(regularization):
  if _is_concrete(regularization):
    r = np.asarray(regularization, np.float64)
    if r.shape != () or not np.isfinite(r) or r < 0:
      raise ValueError(f"`regularization` must be a finite number >= 0, but got "
                       f"{regularization!r}.")


def _check_tps_args(offsets, control_points, regularization):
  """The control points: a float64 NumPy (K, 2) array when concrete, else the traced
  ``(..., K, 2)`` array (solved in JAX)."""
  if control_points is None:
    control_points = default_control_points(4)
  shape = _checks.shape_of(control_points)
  if len(shape) < 2 or shape[-1] != 2 or shape[-2] < 3:
    raise ValueError(
        f"`control_points` must have shape (..., K, 2) with K >= 3, but got shape {shape}.")
  k = shape[-2]
  _checks.check_trailing(offsets, "offsets", (k, 2),
                         f"(..., {k}, 2) to match the {k} control points")
  _checks.check_floating(offsets, "offsets")
  _check_regularization(regularization)
  if _is_concrete(control_points) and len(shape) == 2 and _is_concrete(regularization):
    return np.asarray(control_points, np.float64)
  _checks.check_floating(control_points, "control_points")
  return jnp.asarray(control_points)


def _tps_kernel_jax(points, control):
  """U(r) = r^2 log r^2, ``(..., P, K)``, with a gradient that stays finite at r = 0."""
  d2 = jnp.sum((points[..., :, None, :] - control[..., None, :, :]) ** 2, -1)
  safe = jnp.where(d2 > 0, d2, 1.0)
  return jnp.where(d2 > 0, d2 * jnp.log(safe), 0.0)


def tps_transform(src, dst, *, regularization=0.0):
  """The thin-plate spline that sends ``src`` points to ``dst``, solved in JAX (like
  kornia's ``get_tps_transform``): the points may be traced, batched, vmapped and
  differentiated.

  Args:
    src: ``(..., K, 2)`` control points ``(x, y)``, K >= 3.
    dst: ``(..., K, 2)`` where each goes.
    regularization: a ridge on the kernel (0: exact interpolation; larger: smoother,
      passing near the points). May be traced.

  Returns:
    ``(kernel_weights (..., K, 2), affine_weights (..., 3, 2))`` for
    :func:`tps_warp_points`: ``f(p) = sum_k U(|p - src_k|) w_k + [1, x, y] @ A``.
    Points closer than about 5e-4 act as one (see ``TPS_RCOND``).

  >>> src = jnp.asarray(default_control_points(3), jnp.float32)
  >>> w, a = tps_transform(src, src + 0.1)  # a shift
  >>> [round(float(v), 3) for v in tps_warp_points(jnp.array([[0.0, 0.5]]), src, w, a)[0]]
  [0.1, 0.6]
  """
  sshape = _checks.check_trailing(src, "src", (2,), "(..., K, 2)")
  dshape = _checks.check_trailing(dst, "dst", (2,), "(..., K, 2)")
  if len(sshape) < 2 or sshape[-2] < 3 or sshape[-2] != dshape[-2]:
    raise ValueError(f"`src` and `dst` must have shape (..., K, 2) with the same K >= 3, but "
                     f"got {sshape} and {dshape}.")
  _checks.check_floating(src, "src")
  _checks.check_floating(dst, "dst")
  _check_regularization(regularization)
  ct = compute_dtype(jnp.result_type(src, dst))
  src, dst = jnp.asarray(src, ct), jnp.asarray(dst, ct)
  batch = jnp.broadcast_shapes(src.shape[:-2], dst.shape[:-2])
  src = jnp.broadcast_to(src, batch + src.shape[-2:])
  dst = jnp.broadcast_to(dst, batch + dst.shape[-2:])
  k = src.shape[-2]
  kernel = _tps_kernel_jax(src, src) + jnp.asarray(regularization, ct) * jnp.eye(k, dtype=ct)
  poly = jnp.concatenate([jnp.ones(batch + (k, 1), ct), src], -1)  # (..., K, 3)
  top = jnp.concatenate([kernel, poly], -1)
  bottom = jnp.concatenate([jnp.swapaxes(poly, -1, -2), jnp.zeros(batch + (3, 3), ct)], -1)
  system = jnp.concatenate([top, bottom], -2)  # (..., K + 3, K + 3)
  rhs = jnp.concatenate([dst, jnp.zeros(batch + (3, 2), ct)], -2)
  coef = jnp.linalg.pinv(system, rtol=TPS_RCOND, hermitian=True) @ rhs
  return coef[..., :k, :], coef[..., k:, :]


def tps_warp_points(points, src, kernel_weights, affine_weights):
  """Maps points through the spline of :func:`tps_transform`.

  Args:
    points: ``(..., P, 2)`` points ``(x, y)``.
    src: ``(..., K, 2)`` the spline's control points (``tps_transform``'s ``src``).
    kernel_weights, affine_weights: what :func:`tps_transform` returned.

  Returns:
    ``(..., P, 2)`` the mapped points.
  """
  _checks.check_trailing(points, "points", (2,), "(..., P, 2)")
  ct = compute_dtype(jnp.result_type(points, src, kernel_weights, affine_weights))
  points, src = jnp.asarray(points, ct), jnp.asarray(src, ct)
  u = _tps_kernel_jax(points, src)  # (..., P, K)
  hp = jax.lax.Precision.HIGHEST
  return (jnp.einsum("...pk,...kd->...pd", u, jnp.asarray(kernel_weights, ct), precision=hp)
          + affine_weights[..., :1, :].astype(ct)
          + jnp.einsum("...pe,...ed->...pd", points, affine_weights[..., 1:, :].astype(ct),
                       precision=hp))


def tps_transform_points(points, offsets, *, control_points=None, regularization: float = 0.0):
  """Maps points through the thin-plate spline defined by moved control points.

  Args:
    points: ``(P, 2)`` concrete array of ``(x, y)`` normalised coordinates.
    offsets: ``(..., K, 2)`` displacement of each control point.
    control_points: ``(K, 2)``; default: the paper's regular 4x4 grid. Concrete, the
      system is solved once at trace time in float64 NumPy; traced or batched
      (``(..., K, 2)``), it is solved in JAX (:func:`tps_transform`), and may be
      differentiated.
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
  if not isinstance(control, np.ndarray):  # traced or batched: the system solved in JAX
    control = control.astype(ct)
    w, a = tps_transform(control, control + offsets.astype(ct), regularization=regularization)
    # The spline minus the identity, added to the points: zero offsets give them back.
    moved = tps_warp_points(jnp.asarray(pts, ct), control, w, a)
    return moved.astype(offsets.dtype)
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
    control_points: ``(K, 2)`` positions ``(x, y)`` in the output frame; default: a
      regular 4x4 grid over ``[-1, 1]^2`` (the paper's 16). Concrete, the TPS system
      is solved once at trace time; traced or batched ``(..., K, 2)`` (under ``jit``,
      ``vmap`` or ``grad``), it is solved in JAX.
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
