"""Transform parametrisations by name, and ``warp``: from parameters to warped images.

Each transform maps a flat parameter vector ``(..., num_params)`` (what a
localisation network regresses) to a sampling grid. ``identity()`` is the
parameter vector of the identity transform: the bias with which a
localisation network's last layer starts (zero weights, identity bias).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from stn_jax.ops import _checks, grids, sampling
from stn_jax.ops._dtypes import compute_dtype

__all__ = ["Transform", "TRANSFORMS", "get_transform", "warp"]


@dataclasses.dataclass(frozen=True)
class Transform:
  """A named parametrisation of a spatial transform.

  Attributes:
    name: registry name.
    num_params: length of the flat parameter vector.
    identity_params: the parameters of the identity transform.
    to_grid: ``(params (..., num_params), out_hw, align_corners) -> (..., H, W, 2)``.
    to_axes: for axis-aligned transforms, ``(params, out_hw, align_corners) -> (x (..., W),
      y (..., H))``, the coordinates of the separable fast path; None otherwise.
  """
  name: str
  num_params: int
  identity_params: tuple
  to_grid: Callable
  to_axes: Optional[Callable] = None

  @property
  def separable(self) -> bool:
    return self.to_axes is not None

  def identity(self, dtype=jnp.float32) -> jax.Array:
    """``(num_params,)`` parameters of the identity transform."""
    return jnp.asarray(self.identity_params, dtype)

  def _check(self, params):
    _checks.check_trailing(params, "params", (self.num_params,),
                           f"(..., {self.num_params}) for the '{self.name}' transform")
    _checks.check_floating(params, "params")

  def grid(self, params, out_hw, *, align_corners: bool = False) -> jax.Array:
    """``(..., num_params)`` parameters to a ``(..., H, W, 2)`` sampling grid."""
    self._check(params)
    out_hw = _checks.check_out_hw(out_hw)
    return self.to_grid(jnp.asarray(params), out_hw, align_corners)

  def axes(self, params, out_hw, *, align_corners: bool = False):
    """For axis-aligned transforms: ``(x (..., W), y (..., H))`` normalised source coordinates."""
    if self.to_axes is None:
      raise ValueError(f"The '{self.name}' transform is not axis-aligned, so it has no axes.")
    self._check(params)
    out_hw = _checks.check_out_hw(out_hw)
    return self.to_axes(jnp.asarray(params), out_hw, align_corners)


def _scale_translate_axes(sx, sy, tx, ty, out_hw, align_corners):
  h, w = out_hw
  ct = compute_dtype(sx.dtype)
  bx = jnp.asarray(grids.base_coordinates(w, align_corners=align_corners), ct)
  by = jnp.asarray(grids.base_coordinates(h, align_corners=align_corners), ct)
  x = sx.astype(ct)[..., None] * bx + tx.astype(ct)[..., None]
  y = sy.astype(ct)[..., None] * by + ty.astype(ct)[..., None]
  return x.astype(sx.dtype), y.astype(sx.dtype)


def _affine_from_rows(p, a, b, c, d, e, f):
  return jnp.stack([jnp.stack([a, b, c], -1), jnp.stack([d, e, f], -1)], -2).astype(p.dtype)


def _rst_to_affine(p):
  """(angle in radians, scale, tx, ty): rotation by angle and scaling about the centre, then
  shift."""
  angle, s, tx, ty = (p[..., i] for i in range(4))
  cos, sin = s * jnp.cos(angle), s * jnp.sin(angle)
  return _affine_from_rows(p, cos, -sin, tx, sin, cos, ty)


def _translation_to_affine(p):
  one, zero = jnp.ones_like(p[..., 0]), jnp.zeros_like(p[..., 0])
  return _affine_from_rows(p, one, zero, p[..., 0], zero, one, p[..., 1])


def _scale_translation_to_affine(p):
  zero = jnp.zeros_like(p[..., 0])
  return _affine_from_rows(p, p[..., 0], zero, p[..., 2], zero, p[..., 1], p[..., 3])


def _via_affine(to_affine):
  def to_grid(p, out_hw, align_corners):
    return grids.affine_grid(to_affine(p), out_hw, align_corners=align_corners)
  return to_grid


def _tps_transform(control_points=None, regularization: float = 0.0) -> Transform:
  control = (grids.default_control_points(4) if control_points is None
             else np.asarray(control_points, np.float64))
  k = control.shape[0]

  def to_grid(p, out_hw, align_corners):
    offsets = p.reshape(p.shape[:-1] + (k, 2))
    return grids.tps_grid(offsets, out_hw, control_points=control,
                          regularization=regularization, align_corners=align_corners)

  return Transform("tps", 2 * k, (0.0,) * (2 * k), to_grid)


TRANSFORMS = {
    # theta = params.reshape(2, 3), row-major, as in PyTorch's STN tutorial.
    "affine": Transform(
        "affine", 6, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        lambda p, hw, ac: grids.affine_grid(p.reshape(p.shape[:-1] + (2, 3)), hw,
                                            align_corners=ac)),
    # (s, tx, ty): the paper's attention transform.
    "attention": Transform(
        "attention", 3, (1.0, 0.0, 0.0),
        lambda p, hw, ac: grids.attention_grid(p, hw, align_corners=ac),
        lambda p, hw, ac: _scale_translate_axes(p[..., 0], p[..., 0], p[..., 1], p[..., 2], hw,
                                                ac)),
    # (tx, ty)
    "translation": Transform(
        "translation", 2, (0.0, 0.0), _via_affine(_translation_to_affine),
        lambda p, hw, ac: _scale_translate_axes(jnp.ones_like(p[..., 0]), jnp.ones_like(p[..., 0]),
                                                p[..., 0], p[..., 1], hw, ac)),
    # (sx, sy, tx, ty): any affine transform without rotation or shear.
    "scale_translation": Transform(
        "scale_translation", 4, (1.0, 1.0, 0.0, 0.0), _via_affine(_scale_translation_to_affine),
        lambda p, hw, ac: _scale_translate_axes(p[..., 0], p[..., 1], p[..., 2], p[..., 3], hw,
                                                ac)),
    # (angle in radians, s, tx, ty)
    "rotation_scale_translation": Transform(
        "rotation_scale_translation", 4, (0.0, 1.0, 0.0, 0.0), _via_affine(_rst_to_affine)),
    # The first eight entries of the 3x3 homography, h33 = 1.
    "projective": Transform(
        "projective", 8, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0),
        lambda p, hw, ac: grids.projective_grid(p, hw, align_corners=ac)),
    # Offsets (dx, dy) of the 16 control points of a regular 4x4 grid, flattened.
    "tps": _tps_transform(),
}


def get_transform(name, **options) -> Transform:
  """Returns the transform registered under ``name``.

  Args:
    name: one of ``'affine'`` (6 params), ``'attention'`` (3: s, tx, ty),
      ``'translation'`` (2), ``'scale_translation'`` (4: sx, sy, tx, ty),
      ``'rotation_scale_translation'`` (4: angle, s, tx, ty), ``'projective'``
      (8) or ``'tps'`` (2K: control-point offsets (dx, dy), point by point). A
      :class:`Transform` is returned as it is.
    **options: for ``'tps'`` only: ``control_points`` ((K, 2) array; default the
      regular 4x4 grid) and ``regularization`` (float >= 0).

  Returns:
    The :class:`Transform`.

  >>> t = get_transform('attention')
  >>> t.num_params, t.identity().tolist()
  (3, [1.0, 0.0, 0.0])
  """
  if isinstance(name, Transform):
    if options:
      raise ValueError("Options go with a transform name, not with a Transform object.")
    return name
  if name not in TRANSFORMS:
    raise ValueError(
        f"Unknown transform {name!r}; known transforms: {', '.join(sorted(TRANSFORMS))}.")
  if name == "tps" and options:
    unknown = set(options) - {"control_points", "regularization"}
    if unknown:
      raise ValueError(f"Unknown option(s) {sorted(unknown)} for 'tps'; expected "
                       "control_points and/or regularization.")
    return _tps_transform(**options)
  if options:
    raise ValueError(f"The '{name}' transform takes no options, but got {sorted(options)}.")
  return TRANSFORMS[name]


# Where axis-aligned transforms are sampled with the separable sampler unless told
# otherwise (``warp(separable=None)`` and the transformer modules). On CPU the gather was
# measured faster at every size benchmarks/ops.py times (docs/performance.md); TPUs gather
# slowly and multiply fast; GPUs are not measured here, so they keep the gather.
SEPARABLE_PLATFORMS = ("tpu",)


def use_separable(*, transform, separable: Optional[bool] = None,
                  platform: Optional[str] = None) -> bool:
  """Whether ``transform`` is sampled with the separable sampler.

  Args:
    transform: a registered name or a :class:`Transform`.
    separable: True or False to choose; None: the platform's default
      (:data:`SEPARABLE_PLATFORMS`, for axis-aligned transforms).
    platform: the JAX platform (``'cpu'``, ``'gpu'``, ``'tpu'``); None: the default
      backend's.

  Returns:
    True for the separable sampler, False for the gather.

  >>> use_separable(transform='attention', platform='tpu')
  True
  >>> use_separable(transform='attention', platform='cpu')
  False
  """
  t = get_transform(transform)
  if separable is None:
    return t.separable and (platform or jax.default_backend()) in SEPARABLE_PLATFORMS
  if separable and not t.separable:
    raise ValueError(f"separable=True needs an axis-aligned transform, and '{t.name}' is not "
                     f"one; use attention, translation or scale_translation.")
  return bool(separable)


def warp(image, params, out_hw, *, transform="affine", separable: Optional[bool] = None,
         mode: str = "bilinear", padding_mode: str = "zeros",
         align_corners: bool = False, fill_value=None, antialias=False) -> jax.Array:
  """Warps images by transform parameters: grid generation and sampling in one call.

  Args:
    image: ``(..., H, W, C)`` images.
    params: ``(..., num_params)`` transform parameters, one vector per image.
    out_hw: ``(Ho, Wo)`` of the output.
    transform: a registered name (see :func:`get_transform`) or a :class:`Transform`.
    separable: use the gather-free separable sampler (axis-aligned transforms
      only; the results are the same either way, up to float rounding).
      ``None`` (default): :func:`use_separable`'s platform default (TPU: yes;
      CPU, measured: no; GPU: no).
    mode, padding_mode, align_corners, fill_value, antialias: as in :func:`sample`
      (``antialias=True`` filters a warp that shrinks by its local scale; both samplers
      give the same result).

  Returns:
    ``(..., Ho, Wo, C)`` warped images, dtype of ``image``.

  >>> images = jnp.ones((4, 42, 42, 1))
  >>> warp(images, jnp.tile(jnp.array([0.5, 0.0, 0.0]), (4, 1)), (21, 21),
  ...      transform='attention').shape
  (4, 21, 21, 1)
  """
  t = get_transform(transform)
  ishape = _checks.check_min_rank(image, "image", 3, "(..., H, W, C)")
  pshape = _checks.check_min_rank(params, "params", 1, f"(..., {t.num_params})")
  if pshape[:-1] != ishape[:-3]:
    raise ValueError(
        f"`params` must have one parameter vector per image: `image` has shape {ishape} (batch "
        f"{ishape[:-3]}) but `params` has shape {pshape} (batch {pshape[:-1]}).")
  sample_kwargs = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners,
                       fill_value=fill_value, antialias=antialias)
  if use_separable(transform=t, separable=separable):
    x, y = t.axes(params, out_hw, align_corners=align_corners)
    return sampling.sample_separable(image, x, y, **sample_kwargs)
  grid = t.grid(params, out_hw, align_corners=align_corners)
  return sampling.sample(image, grid, **sample_kwargs)
