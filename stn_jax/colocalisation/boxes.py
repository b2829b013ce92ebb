"""Co-localisation's boxes: the pixel box an attention transformer reads, the attention
parameters of a box, their overlap (IoU), and a picture of predicted and true boxes.

Attention parameters ``(s, tx, ty)`` read the input window ``[tx - |s|, tx + |s|] x
[ty - |s|, ty + |s|]`` in normalised coordinates, which with ``align_corners=False``
(the ``colocalizer``'s) are pixel edges: ``x = (u + 1) W / 2``; boxes are not clipped
to the image.
"""

from __future__ import annotations

import numpy as np

__all__ = ["IOU_THRESHOLD", "box_from_theta", "box_iou", "draw_boxes", "theta_from_box"]

IOU_THRESHOLD = 0.5  # "correctly localised if the overlap ... is greater than 0.5"


def box_from_theta(theta, hw):
  """Pixel boxes ``(x0, y0, x1, y1)`` read by attention parameters ``(s, tx, ty)``.

  The attention transform maps the output window ``[-1, 1]^2`` onto ``[tx - s, tx + s] x
  [ty - s, ty + s]`` of the input, in normalised coordinates; with ``align_corners=False``
  (the ``colocalizer``'s) -1 and 1 are the outer edges of the image, so ``x = (u + 1) W / 2``.
  A negative ``s`` (a mirrored crop) reads the same window.

  Args:
    theta: ``(..., 3)`` attention parameters.
    hw: ``(H, W)`` of the input image.

  Returns:
    ``(..., 4)`` float64 boxes in pixels (edges), not clipped to the image.

  >>> box_from_theta([1 / 3, 0.0, 0.0], (84, 84)).round(6).tolist()
  [28.0, 28.0, 56.0, 56.0]
  >>> box_from_theta([1.0, 0.0, 0.0], (84, 84)).tolist()  # the identity: the whole image
  [0.0, 0.0, 84.0, 84.0]
  """
  theta = np.asarray(theta, np.float64)
  if theta.shape[-1:] != (3,):
    raise ValueError(f"Attention parameters have 3 values (s, tx, ty); got shape {theta.shape}.")
  h, w = hw
  s, tx, ty = np.abs(theta[..., 0]), theta[..., 1], theta[..., 2]
  return np.stack([(tx - s + 1) * w / 2, (ty - s + 1) * h / 2,
                   (tx + s + 1) * w / 2, (ty + s + 1) * h / 2], -1)


def theta_from_box(box, hw):
  """The attention parameters ``(s, tx, ty)`` of a square pixel box (the inverse of
  :func:`box_from_theta`).

  >>> theta_from_box([0, 0, 84, 84], (84, 84)).tolist()
  [1.0, 0.0, 0.0]
  """
  box = np.asarray(box, np.float64)
  h, w = hw
  width, height = box[..., 2] - box[..., 0], box[..., 3] - box[..., 1]
  if not np.allclose(width / w, height / h):
    raise ValueError("An attention box has the image's aspect ratio (one scale for both axes); "
                     f"got widths {width} and heights {height} on a {h}x{w} image.")
  return np.stack([width / w, (box[..., 0] + box[..., 2]) / w - 1,
                   (box[..., 1] + box[..., 3]) / h - 1], -1)


def box_iou(a, b):
  """Intersection over union of boxes ``(x0, y0, x1, y1)`` (``x1 >= x0``, ``y1 >= y0``).

  Args:
    a, b: ``(..., 4)`` boxes, broadcast against each other.

  Returns:
    ``(...)`` float64 IoU in [0, 1]; 0 where both boxes are empty.

  >>> float(box_iou([0, 0, 2, 2], [1, 1, 3, 3]))  # 1 / (4 + 4 - 1)
  0.14285714285714285
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
  ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
  inter = iw * ih
  area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
  union = area(a) + area(b) - inter
  return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def draw_boxes(images, true_boxes, pred_boxes, ious=None, *, cols: int = 4,
               scale: int = 2) -> np.ndarray:
  """A grid of grey images with the ground-truth box in green and the predicted one in red.

  Args:
    images: ``(K, H, W, 1)`` in [0, 1].
    true_boxes, pred_boxes: ``(K, 4)`` pixel boxes ``(x0, y0, x1, y1)``.
    ious: ``(K,)`` printed under each image, or None.
    cols: images per row.
    scale: pixels per image pixel.

  Returns:
    ``(rows * (H * scale + caption), cols * W * scale, 3)`` uint8 picture.
  """
  from PIL import Image, ImageDraw  # pylint: disable=import-outside-toplevel

  images = np.asarray(images)
  k, h, w = images.shape[:3]
  cell_h, cell_w, caption, pad = h * scale, w * scale, 14 if ious is not None else 0, 2
  rows = -(-k // cols)
  canvas = Image.new("RGB", (cols * (cell_w + pad), rows * (cell_h + caption + pad)), "white")
  for i in range(k):
    r, c = divmod(i, cols)
    grey = (np.clip(images[i, ..., 0], 0, 1) * 255).astype(np.uint8)
    # Each image is drawn on its own tile, so a box reaching outside the image is cut at its
    # edge instead of spilling onto the neighbours.
    tile = Image.new("RGB", (cell_w, cell_h + caption), "white")
    tile.paste(Image.fromarray(grey).resize((cell_w, cell_h), Image.NEAREST).convert("RGB"))
    draw = ImageDraw.Draw(tile)
    for box, colour in ((true_boxes[i], (0, 200, 0)), (pred_boxes[i], (230, 30, 30))):
      x0, x1 = (min(max(float(v) * scale, -4.0), cell_w + 4.0) for v in box[0::2])
      y0, y1 = (min(max(float(v) * scale, -4.0), cell_h + 4.0) for v in box[1::2])
      draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colour, width=2)
    if ious is not None:
      draw.rectangle([0, cell_h, cell_w, cell_h + caption], fill="white")
      draw.text((2, cell_h + 1), f"IoU {float(ious[i]):.2f}", fill=(0, 0, 0))
    canvas.paste(tile, (c * (cell_w + pad), r * (cell_h + caption + pad)))
  return np.asarray(canvas)
