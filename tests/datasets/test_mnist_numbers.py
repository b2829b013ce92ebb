"""MNIST-numbers, the offline SVHN stand-in: SVHN's format and label structure."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stn_jax.datasets import mnist_numbers as M


def _pool(label=None, n=20):
  rng = np.random.default_rng(0)
  pool = np.zeros((n, 28, 28), np.float32)
  pool[:, 6:22, 10:18] = rng.uniform(0.5, 1.0, (n, 1, 1))
  labels = np.full(n, label) if label is not None else np.arange(n) % 10
  return jnp.asarray(pool), jnp.asarray(labels)


def test_format_and_label_structure():
  pool, labels = _pool()
  images, digits, boxes = M.number_batch(jax.random.key(0), pool, labels, 64)
  assert images.shape == (64, 64, 64, 3) and images.dtype == jnp.float32
  assert float(images.min()) >= 0 and float(images.max()) <= 1
  np.testing.assert_array_equal(images[..., 0], images[..., 2])  # grey in three channels
  digits = np.asarray(digits)
  assert digits.shape == (64, 5) and digits.dtype == np.int32
  lengths = (digits != M.NO_DIGIT).sum(1)
  assert set(lengths.tolist()) == {1, 2, 3, 4, 5}
  for row, n in zip(digits, lengths):  # digits first, then only "no digit"
    assert np.all(row[:n] < 10) and np.all(row[n:] == M.NO_DIGIT)
  width = np.asarray(boxes[:, 2] - boxes[:, 0])
  assert np.all(width >= (lengths - 1) * 16 + 28 - 1e-4)
  assert np.all(width <= (lengths - 1) * 24 + 28 + 1e-4)


def test_labels_come_from_the_digits_drawn():
  pool, labels = _pool(label=7)
  _, digits, _ = M.number_batch(jax.random.key(1), pool, labels, 16)
  assert set(np.asarray(digits).ravel().tolist()) <= {7, M.NO_DIGIT}


def test_the_digits_fill_the_crop_and_128px_works():
  pool, labels = _pool()
  images, _, _ = M.number_batch(jax.random.key(2), pool, labels, 8, size=128)
  assert images.shape == (8, 128, 128, 3)
  ink = np.asarray(images[..., 0]) > 0.2
  # The crop is centred on the digits' union box (the pool's ink is centred in
  # each digit's box), and the 30% margin keeps the outer columns dark.
  for row in ink.any(1):
    cols = np.flatnonzero(row)
    assert abs(cols[0] + cols[-1] - 127) <= 3
  assert not ink[:, :, :4].any() and not ink[:, :, -4:].any()


def test_deterministic_per_key_and_errors():
  pool, labels = _pool()
  a = M.number_batch(jax.random.key(3), pool, labels, 4)[0]
  b = M.number_batch(jax.random.key(3), pool, labels, 4)[0]
  c = M.number_batch(jax.random.key(4), pool, labels, 4)[0]
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  with pytest.raises(ValueError, match=r"`pool` must have shape \(K, 28, 28\)"):
    M.number_batch(jax.random.key(0), pool[..., None], labels, 2)
  with pytest.raises(ValueError, match=r"`pool_labels` must have shape \(20,\)"):
    M.number_batch(jax.random.key(0), pool, labels[:3], 2)
