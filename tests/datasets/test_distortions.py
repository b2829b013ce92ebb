"""The paper's distortions: shapes, parameter ranges checked through the
transforms, geometry checked on the pixels, determinism per key."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stn_jax import ops
from stn_jax.datasets import distortions as D

KEY = jax.random.key(0)


def _digits(n=16, seed=0):
  """Blobs with a bright 6x6 core at the centre and random faint strokes."""
  rng = np.random.default_rng(seed)
  d = rng.uniform(0, 0.3, (n, 28, 28)).astype(np.float32) * (rng.uniform(size=(n, 28, 28)) > 0.8)
  d[:, 11:17, 11:17] = 1.0
  return jnp.asarray(d)


def _centre_of_mass(image):
  image = np.asarray(image)
  ys, xs = np.mgrid[:image.shape[0], :image.shape[1]]
  return np.array([(xs * image).sum(), (ys * image).sum()]) / image.sum()


@pytest.mark.parametrize("name,hw", [("R", 28), ("RTS", 42), ("P", 28), ("E", 28), ("TC", 60)])
def test_shapes_dtypes_and_range(name, hw):
  images, _ = D.distort_batch(name, KEY, _digits())
  assert images.shape == (16, hw, hw, 1) and images.dtype == jnp.float32
  assert float(images.min()) >= 0 and float(images.max()) <= 1.0 + 1e-6
  assert float(images.max()) > 0.5  # the digit is there


def test_rotation_angles_in_range_and_theta_is_that_rotation():
  _, p = D.distort_batch("R", KEY, _digits(64))
  angle = np.asarray(p["angle"])
  assert angle.min() >= -np.pi / 2 and angle.max() <= np.pi / 2
  assert angle.min() < -1.0 and angle.max() > 1.0  # the range is used, not a corner of it
  theta = np.asarray(p["theta"])
  np.testing.assert_allclose(np.arctan2(theta[:, 0, 1], theta[:, 0, 0]), angle, atol=1e-5)
  np.testing.assert_allclose(theta[:, :, 2], 0, atol=1e-7)


def test_rts_parameters_through_the_transform_and_on_the_pixels():
  digits = jnp.zeros((64, 28, 28)).at[:, 12:16, 12:16].set(1.0)  # a centred square
  images, p = D.distort_batch("RTS", KEY, digits)
  theta = np.asarray(p["theta"])
  scale = np.asarray(p["scale"])
  # |det A| = (42 / (28 s))^2 recovers the scale; the canvas point that reads
  # the digit's centre (A x + t = 0) is the placed centre.
  det = np.abs(np.linalg.det(theta[:, :, :2]))
  np.testing.assert_allclose(42 / 28 / np.sqrt(det), scale, rtol=1e-5)
  assert scale.min() >= 0.7 and scale.max() <= 1.2
  angle = np.asarray(p["angle"])
  assert np.abs(angle).max() <= np.pi / 4
  x = np.linalg.solve(theta[:, :, :2], -theta[:, :, 2:])[..., 0]
  centre = (x + 1) * 21
  np.testing.assert_allclose(centre, p["centre"], atol=1e-3)
  half = 14 * scale[:, None]
  assert np.all(centre >= half - 1e-4) and np.all(centre <= 42 - half + 1e-4)
  # On the pixels: the square's centre of mass sits at the centre (pixel
  # centres are at integer + 0.5 in these continuous coordinates).
  for i in range(8):
    np.testing.assert_allclose(_centre_of_mass(images[i, :, :, 0]) + 0.5, centre[i], atol=0.1)


def test_projective_moves_the_corners_where_it_says():
  _, p = D.distort_batch("P", KEY, _digits(32))
  h = np.concatenate([np.asarray(p["h"]), np.ones((32, 1))], 1).reshape(32, 3, 3)
  corners = np.asarray(p["corners"])
  homog = np.einsum("bij,bkj->bki", h, np.concatenate([corners, np.ones((32, 4, 1))], -1))
  np.testing.assert_allclose(homog[..., :2] / homog[..., 2:],
                             np.broadcast_to(D.CORNERS, (32, 4, 2)), atol=1e-4)
  scale = np.asarray(p["scale"])
  assert scale.min() >= 0.75 and scale.max() <= 1.0
  noise_px = (corners - np.asarray(D.CORNERS) * scale[:, None, None]) * 14
  assert 3.5 < noise_px.std() < 6.5  # N(0, 5 px) over 256 values


def test_elastic_offsets_have_the_papers_spread():
  _, p = D.distort_batch("E", KEY, _digits(64))
  offsets_px = np.asarray(p["offsets"]) * 14
  assert offsets_px.shape == (64, 16, 2)
  assert abs(offsets_px.std() - 1.5) < 0.1 and abs(offsets_px.mean()) < 0.1
  scale = np.asarray(p["scale"])
  assert scale.min() >= 0.75 and scale.max() <= 1.0


def test_elastic_is_the_tps_of_its_offsets_then_the_scale():
  digit = _digits(1)[0]
  image, params = D.elastic(KEY, digit)
  # The image is the digit read through the TPS of the returned offsets, then
  # unscaled; an elastic() that drew one thing and returned another fails here.
  grid = D.ops.tps_grid(params["offsets"], (28, 28)) / params["scale"]
  np.testing.assert_allclose(image, D._warp(digit, grid), atol=1e-6)
  assert float(jnp.abs(params["offsets"]).max()) > 0
  # With the offsets at zero the same construction is a pure zoom by 1/scale.
  zoom, _ = D._affine(digit, jnp.eye(2) / params["scale"], jnp.zeros(2), (28, 28))
  grid = D.ops.tps_grid(jnp.zeros((16, 2)), (28, 28)) / params["scale"]
  np.testing.assert_allclose(D._warp(digit, grid), zoom, atol=1e-5)
  assert image.shape == (28, 28, 1)


def test_translated_cluttered_places_the_digit_and_six_patches():
  digits = _digits(16)
  images, p = D.distort_batch("TC", KEY, digits)
  for i in range(16):
    top, left = int(p["top"][i]), int(p["left"][i])
    assert 0 <= top <= 32 and 0 <= left <= 32
    box = np.asarray(images[i, top:top + 28, left:left + 28, 0])
    assert np.all(box >= np.asarray(digits[i]) - 1e-7)  # the digit is there, whole
    outside = np.asarray(images[i, :, :, 0]).copy()
    outside[top:top + 28, left:left + 28] = 0
    assert np.count_nonzero(outside) <= 6 * 36


def test_addition_puts_each_digit_in_its_own_channel():
  a = _digits(1)[0]
  image, p = D.addition(KEY, a, jnp.zeros((28, 28)))
  assert image.shape == (42, 42, 2)
  assert float(image[..., 0].max()) > 0.5 and float(image[..., 1].max()) == 0.0
  assert p["theta"].shape == (2, 2, 3)
  assert not np.allclose(p["theta"][0], p["theta"][1])  # independent RTS


@pytest.mark.parametrize("clutter", [False, True])
def test_colocalization_box_and_clutter(clutter):
  digits = _digits(8)
  image, box = D.colocalization(KEY, digits[0], digits[1:], clutter)
  assert image.shape == (84, 84, 1)
  x0, y0, x1, y1 = (int(v) for v in box)
  assert x1 - x0 == 28 and y1 - y0 == 28 and 0 <= x0 <= 56 and 0 <= y0 <= 56
  assert np.all(np.asarray(image[y0:y1, x0:x1, 0]) >= np.asarray(digits[0]) - 1e-7)
  outside = np.asarray(image[..., 0]).copy()
  outside[y0:y1, x0:x1] = 0
  if clutter:
    assert 0 < np.count_nonzero(outside) <= 16 * 36
  else:
    assert np.count_nonzero(outside) == 0


def test_same_key_same_images_other_key_other_images():
  digits = _digits(8)
  a, _ = D.distort_batch("RTS", KEY, digits)
  b, _ = D.distort_batch("RTS", KEY, digits)
  c, _ = D.distort_batch("RTS", jax.random.key(1), digits)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_errors():
  with pytest.raises(ValueError, match="Unknown distortion 'rts'; known: R, RTS"):
    D.distort_batch("rts", KEY, _digits(8))
  with pytest.raises(ValueError, match=r"shape \(B, 28, 28\)"):
    D.distort_batch("R", KEY, jnp.zeros((8, 28, 28, 1)))
  with pytest.raises(ValueError, match="more than 6 digits; got 4"):
    D.distort_batch("TC", KEY, _digits(4))


@pytest.mark.parametrize("name", ["RTS", "TC"])
def test_fixed_sets_depend_only_on_the_seed(name):
  digits = _digits(23)  # 23 = two chunks of 10 and a short one of 3
  a, pa = D.fixed_set(name, digits, seed=5, chunk=10)
  b, _ = D.fixed_set(name, digits, seed=5, chunk=10)
  c, _ = D.fixed_set(name, digits, seed=6, chunk=10)
  assert isinstance(a, np.ndarray) and a.shape[0] == 23
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  # The chunks draw different distortions from each other.
  first = pa["top"] if name == "TC" else pa["angle"]
  assert not np.allclose(first[:3], first[10:13])


def test_addition_batch_is_per_channel_and_deterministic():
  digits = _digits(4)
  images, params = D.addition_batch(KEY, digits, jnp.zeros_like(digits))
  assert images.shape == (4, 42, 42, 2) and params["theta"].shape == (4, 2, 2, 3)
  assert float(images[..., 1].max()) == 0.0
  again, _ = D.addition_batch(KEY, digits, jnp.zeros_like(digits))
  np.testing.assert_array_equal(images, again)


@pytest.mark.parametrize("dataset", ["r", "tc", "addition", "coloc_tc", "mnist_numbers"])
def test_show_samples_have_labels_and_boxes(dataset):
  from stn_jax.datasets import show

  digits = _digits(40)
  labels = np.arange(40) % 10
  images, titles, boxes = show.samples(dataset, digits, labels, seed=0, count=8)
  assert len(titles) == images.shape[0]
  if dataset == "addition":
    assert images.shape == (8, 42, 42, 2) and titles[0] == "0+8=8"
  elif dataset == "coloc_tc":
    # One class (the first label's): the four digits labelled 0, each with its box.
    assert images.shape == (4, 84, 84, 1) and set(titles) == {"0"} and boxes.shape == (4, 4)
  elif dataset == "mnist_numbers":
    assert images.shape == (8, 64, 64, 3) and all(1 <= len(t) <= 5 for t in titles)
  else:
    assert titles == [str(i % 10) for i in range(8)] and boxes is None
  with pytest.raises(ValueError, match="Unknown dataset 'x'; known: r, rts"):
    show.samples("x", digits, labels, 0, 8)


def test_colocalization_set_is_one_class_fixed_by_seed():
  digits = _digits(60)
  labels = np.arange(60) % 3
  a, boxes = D.colocalization_set(digits, labels, 1, clutter=True, seed=0, size=15)
  b, _ = D.colocalization_set(digits, labels, 1, clutter=True, seed=0, size=15)
  c, _ = D.colocalization_set(digits, labels, 1, clutter=True, seed=1, size=15)
  assert a.shape == (15, 84, 84, 1) and boxes.shape == (15, 4)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  # Every image holds a class-1 digit inside its box.
  class1 = np.asarray(digits)[labels == 1]
  for image, (x0, y0, _, _) in zip(a, boxes.astype(int)):
    crop = image[y0:y0 + 28, x0:x0 + 28, 0]
    assert any(np.all(crop >= d - 1e-7) for d in class1)
  with pytest.raises(ValueError, match="Class 1 has 20 digits, fewer than the 100"):
    D.colocalization_set(digits, labels, 1, clutter=False, seed=0)


def test_projective_shows_nothing_beyond_the_horizon():
  # A white square fills the source, so a ghost beyond the horizon would show as ink.
  squares = np.ones((512, 28, 28), np.float32)
  images, p = D.distort_batch("P", KEY, squares)
  h = np.concatenate([np.asarray(p["h"], np.float64), np.ones((512, 1))], 1).reshape(512, 3, 3)
  t = (np.arange(28) + 0.5) / 14 - 1
  xy1 = np.stack([*np.meshgrid(t, t), np.ones((28, 28))], -1)
  w = np.einsum("yxj,bj->byx", xy1, h[:, 2])
  centre = np.asarray(p["corners"]).mean(1)
  front = h[:, 2, 0] * centre[:, 0] + h[:, 2, 1] * centre[:, 1] + 1
  behind = w * front[:, None, None] <= 0
  assert behind.any(axis=(1, 2)).sum() >= 10  # the case arises in this batch
  images = np.asarray(images)[..., 0]
  assert np.all(images[behind] == 0)
  # In front of the horizon, the warp is the plain homography's.
  plain = np.asarray(jax.vmap(lambda hh, d: D._warp(d, ops.projective_grid(hh, (28, 28))))(  # pylint: disable=protected-access
      jnp.asarray(p["h"]), jnp.asarray(squares)))[..., 0]
  np.testing.assert_allclose(images[~behind], plain[~behind], atol=1e-6)
  assert plain[behind].max() > 0.5  # which would have drawn a ghost there
