"""crop_and_resize against a per-pixel NumPy reference written from TensorFlow's kernel
(crop_and_resize_op.cc: each sample's source position, whole extrapolation outside,
floor/ceil bilinear, roundf for nearest)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from stn_jax import ops


def _reference(image, boxes, box_indices, out_hw, method, extrapolation_value):
  _, height, width, channels = image.shape
  crop_h, crop_w = out_hw
  out = np.zeros((len(boxes), crop_h, crop_w, channels))
  for m, (y1, x1, y2, x2) in enumerate(boxes):
    img = image[box_indices[m]]
    hs = (y2 - y1) * (height - 1) / (crop_h - 1) if crop_h > 1 else 0.0
    ws = (x2 - x1) * (width - 1) / (crop_w - 1) if crop_w > 1 else 0.0
    for y in range(crop_h):
      in_y = y1 * (height - 1) + y * hs if crop_h > 1 else 0.5 * (y1 + y2) * (height - 1)
      for x in range(crop_w):
        in_x = x1 * (width - 1) + x * ws if crop_w > 1 else 0.5 * (x1 + x2) * (width - 1)
        if not (0 <= in_y <= height - 1 and 0 <= in_x <= width - 1):
          out[m, y, x] = extrapolation_value
          continue
        if method == "nearest":
          out[m, y, x] = img[int(math.floor(in_y + 0.5)), int(math.floor(in_x + 0.5))]
          continue
        top, bottom = math.floor(in_y), math.ceil(in_y)
        left, right = math.floor(in_x), math.ceil(in_x)
        yl, xl = in_y - top, in_x - left
        upper = img[top, left] + (img[top, right] - img[top, left]) * xl
        lower = img[bottom, left] + (img[bottom, right] - img[bottom, left]) * xl
        out[m, y, x] = upper + (lower - upper) * yl
  return out


def _boxes(rng, m):
  """Boxes inside, over the edges, flipped (y1 > y2), one of zero size."""
  boxes = rng.uniform(-0.3, 1.3, size=(m, 4))
  boxes[0] = [0.1, 0.2, 0.8, 0.9]
  boxes[1] = [0.9, 0.7, 0.2, 0.1]  # flipped both ways
  boxes[2] = [0.5, 0.5, 0.5, 0.5]
  return boxes


@pytest.mark.parametrize("method", ops.CROP_METHODS)
@pytest.mark.parametrize("out_hw", [(5, 4), (1, 3)])
def test_crop_and_resize_equals_tensorflows_kernel(x64, method, out_hw):
  rng = np.random.default_rng(0)
  image = rng.normal(size=(3, 6, 7, 2))
  boxes = _boxes(rng, 8)
  box_indices = rng.integers(0, 3, size=8)
  out = ops.crop_and_resize(image, boxes, out_hw, box_indices, method=method,
                            extrapolation_value=-5.0)
  assert out.shape == (8, *out_hw, 2)
  np.testing.assert_allclose(out, _reference(image, boxes, box_indices, out_hw, method, -5.0),
                             rtol=1e-10, atol=1e-10)


def test_nearest_rounds_halves_away_from_zero_as_tensorflow():
  image = jnp.arange(5.0).reshape(1, 1, 5, 1)
  # x samples at pixel positions 0.5, 1.5, 2.5, 3.5: TensorFlow reads 1, 2, 3, 4.
  out = ops.crop_and_resize(image, jnp.array([[0.0, 0.125, 0.0, 0.875]]), (1, 4),
                            jnp.array([0]), method="nearest")
  assert out.ravel().tolist() == [1.0, 2.0, 3.0, 4.0]


def test_boxes_per_image_and_k_per_image_lay_out_as_given(transformed):
  rng = np.random.default_rng(1)
  image = rng.normal(size=(4, 8, 8, 1)).astype(np.float32)
  boxes = rng.uniform(0, 1, size=(4, 3, 4)).astype(np.float32)
  flat = ops.crop_and_resize(image, boxes.reshape(12, 4), (5, 6), np.repeat(np.arange(4), 3))
  out = transformed(lambda i, b: ops.crop_and_resize(i, b, (5, 6)))(image, boxes)
  assert out.shape == (4, 3, 5, 6, 1)
  np.testing.assert_allclose(np.asarray(out).reshape(12, 5, 6, 1), flat, atol=1e-5)
  one = transformed(lambda i, b: ops.crop_and_resize(i, b, (5, 6)))(image, boxes[:, 0])
  np.testing.assert_allclose(one, np.asarray(out)[:, 0], atol=1e-5)


def test_gradients_with_respect_to_image_and_boxes_in_both_modes(x64):
  rng = np.random.default_rng(2)
  image = rng.normal(size=(2, 6, 7, 1))
  # Boxes inside the image whose samples fall between pixels (away from the kinks).
  boxes = np.array([[0.13, 0.07, 0.71, 0.91], [0.88, 0.21, 0.17, 0.62]])
  f = lambda i, b: ops.crop_and_resize(i, b, (4, 3))
  check_grads(f, (image, boxes), order=1, eps=1e-6, atol=1e-5, rtol=1e-5)
  # A box wholly outside sends no gradient, to the image or to itself.
  d_image, d_box = jax.grad(lambda i, b: ops.crop_and_resize(i, b, (3, 3)).sum(), (0, 1))(
      image, np.array([[1.5, 1.5, 2.0, 2.0], [2.0, 2.0, 3.0, 3.0]]))
  assert not np.any(d_image) and not np.any(d_box)


def test_bad_arguments_are_refused_with_a_sentence():
  image = jnp.zeros((2, 5, 5, 1))
  with pytest.raises(ValueError, match=r"shape \(2, 4\) or \(2, K, 4\)"):
    ops.crop_and_resize(image, jnp.zeros((3, 4)), (2, 2))
  with pytest.raises(ValueError, match="box_indices"):
    ops.crop_and_resize(image, jnp.zeros((3, 4)), (2, 2), jnp.zeros(2, jnp.int32))
  with pytest.raises(ValueError, match="must be integers"):
    ops.crop_and_resize(image, jnp.zeros((3, 4)), (2, 2), jnp.zeros(3))
  with pytest.raises(ValueError, match="Unknown `method`"):
    ops.crop_and_resize(image, jnp.zeros((2, 4)), (2, 2), method="bicubic")
  with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
    ops.crop_and_resize(jnp.zeros((5, 5, 1)), jnp.zeros((2, 4)), (2, 2))
  with pytest.raises(ValueError, match="out_hw"):
    ops.crop_and_resize(image, jnp.zeros((2, 4)), (0, 2))
