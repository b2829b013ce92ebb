"""MNIST-numbers: an offline stand-in for SVHN multi-digit, made of MNIST digits.

It is NOT SVHN. Where the real SVHN is not prepared, it lets the ``svhn_*``
networks and configs run end to end on any machine, with the same input format
and label structure: 64x64x3 float32 images in [0, 1] and five labels per image
(the digits left to right, then class 10, "no digit"). Its results say nothing
about SVHN, and logs and result files must call it ``mnist_numbers``.

An image is 1-5 MNIST digits side by side on a black strip, each shifted
randomly in x and y, cropped around their union box enlarged by 30% (as the
SVHN preprocessing does with the house-number box) and resized to 64x64.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from stn_jax import ops

__all__ = ["MAX_DIGITS", "NO_DIGIT", "NAME", "number_batch"]

NAME = "mnist_numbers"
MAX_DIGITS = 5
NO_DIGIT = 10
_DIGIT = 28


def _number(key, pool, pool_labels, size):
  kl, ki, ks, ky = jax.random.split(key, 4)
  length = jax.random.randint(kl, (), 1, MAX_DIGITS + 1)
  idx = jax.random.randint(ki, (MAX_DIGITS,), 0, pool.shape[0])
  step = jax.random.uniform(ks, (), minval=16.0, maxval=24.0)  # digit spacing in pixels
  dy = jax.random.uniform(ky, (MAX_DIGITS,), minval=-3.0, maxval=3.0)
  present = jnp.arange(MAX_DIGITS) < length
  # A strip of MAX_DIGITS slots: digit j's box starts at x = j * step.
  width = int(_DIGIT + 24 * (MAX_DIGITS - 1)) + 8
  strip_h = _DIGIT + 8
  ys, xs = jnp.mgrid[:strip_h, :width].astype(jnp.float32) + 0.5  # pixel centres

  def draw(j):
    # Where strip pixel (x, y) falls in digit j, in its normalised coordinates.
    u = (xs - (4 + j * step)) / (_DIGIT / 2) - 1
    v = (ys - (4 + dy[j])) / (_DIGIT / 2) - 1
    grid = jnp.stack([u, v], -1)
    img = ops.sample(pool[idx[j]][None, :, :, None], grid[None])[0, ..., 0]
    return jnp.where(present[j], img, 0.0)

  strip = jnp.max(jax.vmap(draw)(jnp.arange(MAX_DIGITS)), 0)
  # The union box of the digits, enlarged by 30% about its centre, to size x size.
  x0, x1 = 4.0, 4 + (length - 1) * step + _DIGIT
  y0 = 4 + jnp.min(jnp.where(present, dy, 99.0))
  y1 = 4 + _DIGIT + jnp.max(jnp.where(present, dy, -99.0))
  cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
  hw, hh = 1.3 * (x1 - x0) / 2, 1.3 * (y1 - y0) / 2
  # Output normalised (p, q) -> strip pixels (cx + p hw, cy + q hh) -> strip normalised.
  theta = jnp.array([[hw / (width / 2), 0.0, (cx - width / 2) / (width / 2)],
                     [0.0, hh / (strip_h / 2), (cy - strip_h / 2) / (strip_h / 2)]])
  image = ops.sample(strip[None, :, :, None], ops.affine_grid(theta[None], (size, size)))[0]
  labels = jnp.where(present, pool_labels[idx], NO_DIGIT)
  box = jnp.stack([x0, y0, x1, y1])
  return jnp.repeat(image, 3, axis=-1), labels.astype(jnp.int32), box


def number_batch(key, pool, pool_labels, batch: int, size: int = 64):
  """A batch of MNIST-numbers images.

  Args:
    key: PRNG key; image ``i`` uses ``fold_in(key, i)``.
    pool: ``(K, 28, 28)`` float32 digits in [0, 1] to draw from.
    pool_labels: ``(K,)`` their labels.
    batch: number of images.
    size: output side (64, or 128 for the 128px experiments).

  Returns:
    ``(images (batch, size, size, 3), labels (batch, 5) int32, boxes (batch, 4))``;
    ``labels[i, j] == 10`` where number ``i`` has no ``j``-th digit; boxes are
    the digits' union box in strip pixels (before the 30% enlargement).

  >>> pool = jnp.zeros((3, 28, 28)); labels = jnp.array([1, 2, 3])
  >>> images, digits, _ = number_batch(jax.random.key(0), pool, labels, 2)
  >>> images.shape, digits.shape
  ((2, 64, 64, 3), (2, 5))
  """
  pool = jnp.asarray(pool, jnp.float32)
  if pool.ndim != 3 or pool.shape[1:] != (_DIGIT, _DIGIT):
    raise ValueError(f"`pool` must have shape (K, 28, 28), but got shape {pool.shape}.")
  if pool_labels.shape != pool.shape[:1]:
    raise ValueError(f"`pool_labels` must have shape ({pool.shape[0]},), but got shape "
                     f"{pool_labels.shape}.")
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(batch))
  return _jitted(int(size))(keys, pool, jnp.asarray(pool_labels))


@functools.lru_cache(maxsize=None)
def _jitted(size: int):
  return jax.jit(jax.vmap(lambda k, p, l: _number(k, p, l, size), in_axes=(0, None, None)))
