"""Pictures of what the transformers do: the region outline, the picture, and the files
the trainer writes."""

import os

import numpy as np
import pytest
from PIL import Image

from stn_jax import ops, train
from stn_jax.train import pictures
from experiment_configs import smoke_config


def test_outline_of_a_zoom_and_shift_is_its_box():
  # x_in = 0.5 x_out + 0.25, y_in = 0.5 y_out - 0.5: the box [-0.25, 0.75] x [-1, 0].
  theta = np.array([[0.5, 0.0, 0.25], [0.0, 0.5, -0.5]])
  grid = np.asarray(ops.affine_grid(theta, (7, 5)))
  outline = pictures.region_outline(grid, 40, 80)  # 40 rows, 80 columns
  np.testing.assert_allclose(outline.min(0), [(1 - 0.25) * 40, 0.0], atol=1e-5)
  np.testing.assert_allclose(outline.max(0), [(1 + 0.75) * 40, 20.0], atol=1e-5)
  np.testing.assert_allclose(outline[0], outline[-1])  # closed


def test_outline_follows_a_rotation():
  angle = np.pi / 6
  theta = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0]])
  outline = pictures.region_outline(np.asarray(ops.affine_grid(theta, (4, 4))), 2, 2)
  radius = np.hypot(*(outline - 1.0).T)  # from the centre, in units of half the side
  corners = np.sort(radius)[-4:]
  np.testing.assert_allclose(corners, np.sqrt(2), rtol=1e-6)  # the rotated square's corners


def test_picture_layout_and_outline_colour():
  images = np.zeros((3, 20, 20, 1), np.float32)
  theta = np.tile(np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]), (3, 1, 1))
  grids = [("transformer", np.asarray(ops.affine_grid(theta, (10, 10))))]
  picture = pictures.st_picture(images, grids, cell=40)
  assert picture.shape == (120, 80, 3) and picture.dtype == np.uint8
  # The centred half-size box: its left edge at x = 10 of the 40-pixel cell, in red.
  assert tuple(picture[20, 10]) == pictures.COLOURS[0]
  assert tuple(picture[20, 3]) == (0, 0, 0)


def test_shape_errors_are_sentences():
  with pytest.raises(ValueError, match=r"\(Ho, Wo, 2\)"):
    pictures.region_outline(np.zeros((4, 4)), 8, 8)


def test_trainer_draws_transformers_and_skips_plain_networks(mnist_dir, tmp_path):
  st_dir, cnn_dir = str(tmp_path / "st"), str(tmp_path / "cnn")
  c = smoke_config(mnist_dir, num_steps=3, pictures=5)
  train.train_and_evaluate(c, st_dir)
  files = sorted(os.listdir(os.path.join(st_dir, "pictures")))
  assert files == ["step_0.png", "step_3.png"]  # before training, then eval_every = 3
  for name in files:
    with Image.open(os.path.join(st_dir, "pictures", name)) as im:
      assert im.size == (2 * 96, 5 * 96)
  # Resumed (extended) runs draw no second picture of step 0.
  train.train_and_evaluate(smoke_config(mnist_dir, num_steps=6, pictures=5), st_dir)
  assert sorted(os.listdir(os.path.join(st_dir, "pictures"))) == [
      "step_0.png", "step_3.png", "step_6.png"]
  train.train_and_evaluate(smoke_config(mnist_dir, "rts,cnn,smoke", num_steps=3), cnn_dir)
  assert not os.path.exists(os.path.join(cnn_dir, "pictures"))
