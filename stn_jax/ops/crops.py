"""Crops by boxes, resized: TensorFlow's ``tf.image.crop_and_resize``, on the separable
sampler (two interpolation matrices per box, no gather of pixels)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from stn_jax.ops import _checks
from stn_jax.ops._dtypes import compute_dtype
from stn_jax.ops.sampling import sample_separable

__all__ = ["CROP_METHODS", "crop_and_resize"]

CROP_METHODS = ("bilinear", "nearest")


def _source_pixels(start, end, size: int, out: int):
  """TensorFlow's source pixel of each of ``out`` samples between normalised ``start``
  and ``end`` (``(M,)`` each) on an axis of ``size`` pixels: ``(M, out)``."""
  if out > 1:
    step = (end - start) * (size - 1) / (out - 1)
    return start[:, None] * (size - 1) + jnp.arange(out, dtype=start.dtype) * step[:, None]
  return (0.5 * (start + end) * (size - 1))[:, None]


def _normalised(pixels, size: int):
  """Pixel positions as the sampler's coordinates with ``align_corners=True``."""
  if size == 1:
    return jnp.zeros_like(pixels)  # one pixel: every in-range position is that pixel
  return 2.0 * pixels / (size - 1) - 1.0


def crop_and_resize(image, boxes, out_hw, box_indices=None, *, method: str = "bilinear",
                    extrapolation_value: float = 0.0) -> jax.Array:
  """Crops ``image`` at ``boxes`` and resizes each crop to ``out_hw``, as
  ``tf.image.crop_and_resize`` does (NHWC, boxes as ``(y1, x1, y2, x2)``).

  A box's corners are normalised: ``y`` in ``[0, 1]`` spans the image's pixel centres
  (``y * (H - 1)`` is a pixel position), and ``y1 > y2`` flips the crop. The ``h``
  samples of a box lie at ``y1 * (H - 1) + i * (y2 - y1) * (H - 1) / (h - 1)`` (one
  sample: the box's centre), and likewise along x. A sample outside ``[0, H - 1] x
  [0, W - 1]`` reads ``extrapolation_value`` (whole, not blended with the edge).
  Differentiable with respect to the image and the boxes (bilinear), in forward and
  reverse mode.

  Args:
    image: ``(N, H, W, C)`` floating-point images.
    boxes: ``(M, 4)`` boxes with ``box_indices``; without, ``(N, 4)`` one per image or
      ``(N, K, 4)``, K per image.
    out_hw: ``(h, w)`` of each crop.
    box_indices: ``(M,)`` integers, the image each box is cut from; None: see
      ``boxes``.
    method: ``'bilinear'`` or ``'nearest'`` (rounding halves away from zero, as
      TensorFlow does; no gradient with respect to the boxes).
    extrapolation_value: what samples outside the image read.

  Returns:
    ``(M, h, w, C)``, ``(N, h, w, C)`` or ``(N, K, h, w, C)`` crops (as ``boxes``
    is laid out), dtype of ``image``.

  >>> image = jnp.arange(9.0).reshape(1, 3, 3, 1)
  >>> crop_and_resize(image, jnp.array([[0.0, 0.0, 1.0, 1.0]]), (2, 2))[0, ..., 0].tolist()
  [[0.0, 2.0], [6.0, 8.0]]
  """
  _checks.check_choice(method, "method", CROP_METHODS)
  ishape = _checks.shape_of(image)
  if len(ishape) != 4:
    raise ValueError(f"`image` must have shape (N, H, W, C), but got shape {ishape}.")
  _checks.check_floating(image, "image")
  h, w = _checks.check_out_hw(out_hw)
  bshape = _checks.check_trailing(boxes, "boxes", (4,), "(M, 4), (N, 4) or (N, K, 4)")
  _checks.check_floating(boxes, "boxes")
  n, height, width, _ = ishape
  if box_indices is None:
    if len(bshape) not in (2, 3) or bshape[0] != n:
      raise ValueError(f"Without `box_indices`, `boxes` must have shape ({n}, 4) or ({n}, K, "
                       f"4) for {n} images, but got shape {bshape}.")
    layout = bshape[:-1]
    box_indices = jnp.broadcast_to(jnp.arange(n).reshape((n,) + (1,) * (len(bshape) - 2)),
                                   layout).reshape(-1)
  else:
    ishape_b = _checks.shape_of(box_indices)
    if len(bshape) != 2 or ishape_b != bshape[:1]:
      raise ValueError(f"With `box_indices`, `boxes` must have shape (M, 4) and "
                       f"`box_indices` shape (M,), but got {bshape} and {ishape_b}.")
    if not jnp.issubdtype(jnp.result_type(box_indices), jnp.integer):
      raise ValueError(f"`box_indices` must be integers, but got dtype "
                       f"{jnp.result_type(box_indices)}.")
    layout = bshape[:1]
  image = jnp.asarray(image)
  ct = compute_dtype(jnp.result_type(boxes))
  boxes = jnp.asarray(boxes, ct).reshape(-1, 4)
  y1, x1, y2, x2 = (boxes[:, i] for i in range(4))
  py = _source_pixels(y1, y2, height, h)  # (M, h)
  px = _source_pixels(x1, x2, width, w)  # (M, w)
  inside = (((py >= 0) & (py <= height - 1))[:, :, None]
            & ((px >= 0) & (px <= width - 1))[:, None, :])  # (M, h, w)
  if method == "nearest":  # TensorFlow's roundf: halves away from zero (here >= 0)
    py, px = (jnp.floor(jax.lax.stop_gradient(p) + 0.5) for p in (py, px))
  crops = sample_separable(image[jnp.asarray(box_indices)], _normalised(px, width),
                           _normalised(py, height), mode=method, align_corners=True)
  out = jnp.where(inside[..., None], crops, jnp.asarray(extrapolation_value, crops.dtype))
  return out.reshape(tuple(layout) + out.shape[1:])
