"""Co-localisation's objective: the triplet hinge loss of eq. (1) of the supplement, the
random pairs of images it compares, and the random crops ``I_n^rand`` of an image.

  ``max(0, |e(I_n^T) - e(I_m^T)|^2 - |e(I_n^T) - e(I_n^rand)|^2 + alpha)``
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from stn_jax import ops

__all__ = ["random_crops", "same_scale_crops", "sample_pairs", "triplet_hinge"]


def triplet_hinge(e_n, e_m, e_rand, margin: float = 1.0):
  """Eq. (1) for a batch of pairs: ``max(0, |e_n - e_m|^2 - |e_n - e_rand|^2 + margin)``.

  Args:
    e_n, e_m: ``(B, D)`` descriptors of the crops of images ``n`` and ``m``.
    e_rand: ``(B, D)`` descriptors of random crops of images ``n``.
    margin: alpha (1 in the paper).

  Returns:
    ``(losses (B,), pair distances (B,), random distances (B,))``, squared distances.

  >>> losses, _, _ = triplet_hinge(jnp.zeros((1, 2)), jnp.array([[1.0, 0.0]]),
  ...                              jnp.array([[0.5, 0.0]]))
  >>> losses.tolist()  # 1 - 0.25 + 1
  [1.75]
  """
  d_pair = jnp.sum(jnp.square(e_n - e_m), -1)
  d_rand = jnp.sum(jnp.square(e_n - e_rand), -1)
  return jnp.maximum(0.0, d_pair - d_rand + margin), d_pair, d_rand


def sample_pairs(key, batch_size: int, num_images: int):
  """``batch_size`` random pairs ``(n, m)`` with ``m != n``: ``n`` uniform over the images,
  ``m`` uniform over the other ``num_images - 1``.

  Returns:
    ``(n, m)``, two ``(batch_size,)`` int32 arrays.
  """
  kn, km = jax.random.split(key)
  n = jax.random.randint(kn, (batch_size,), 0, num_images)
  m = (n + jax.random.randint(km, (batch_size,), 1, num_images)) % num_images
  return n, m


def random_crops(key, images, hw):
  """One window of size ``hw`` per image at a uniform integer position inside it.

  Args:
    key: PRNG key.
    images: ``(B, H, W, C)``.
    hw: ``(h, w)`` of the windows, at most the images'.

  Returns:
    ``((B, h, w, C) crops, (B, 4) boxes (x0, y0, x1, y1) in pixels)``.
  """
  b, height, width, c = images.shape
  h, w = hw
  ky, kx = jax.random.split(key)
  y0 = jax.random.randint(ky, (b,), 0, height - h + 1)
  x0 = jax.random.randint(kx, (b,), 0, width - w + 1)
  crops = jax.vmap(lambda im, y, x: jax.lax.dynamic_slice(im, (y, x, 0), (h, w, c)))(
      images, y0, x0)
  return crops, jnp.stack([x0, y0, x0 + w, y0 + h], -1)


def same_scale_crops(key, images, scale, out_hw):
  """Random attention windows of the transformer's scale ``|scale|``, for
  ``random_crop='same_scale'``.

  The centre is uniform over ``[-|1 - s|, |1 - s|]^2``: windows inside the image when
  ``s < 1``, windows holding the whole image when ``s > 1``.

  Args:
    key: PRNG key.
    images: ``(B, H, W, C)``.
    scale: ``(B,)`` the window's half-size in normalised coordinates.
    out_hw: the crops' ``(h, w)``.

  Returns:
    ``(B, h, w, C)`` crops, sampled as the transformer samples.
  """
  s = jnp.abs(scale)
  t = jax.random.uniform(key, (images.shape[0], 2), minval=-1.0, maxval=1.0) * jnp.abs(
      1 - s)[:, None]
  return ops.warp(images, jnp.concatenate([s[:, None], t], -1).astype(images.dtype), out_hw,
                  transform="attention")
