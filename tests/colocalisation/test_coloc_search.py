"""Eq. (1) over a grid of boxes (stn_jax.colocalisation.search): the grid, the per-box loss
against the loop's own hinge, best response and the search on hand-made descriptors; then
docs/generate/coloc_landscape.py on a smoke encoder."""

import importlib.util
import json
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from stn_jax.colocalisation import search as coloc_search
from stn_jax.colocalisation.loss import triplet_hinge
import experiment_configs
from mnist_files import write_split

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_the_grid_holds_every_scale_at_every_centre():
  grid = coloc_search.box_grid([0.5, 1.0], 3)
  assert grid.shape == (2 * 9, 3)
  assert [1.0, 0.0, 0.0] in grid.tolist()  # the identity, where the search starts
  assert sorted(set(grid[:, 1].tolist())) == pytest.approx([-0.9, 0.0, 0.9])
  for bad in ([], [0.0], [-1.0], [float("nan")]):
    with pytest.raises(ValueError, match="positive numbers"):
      coloc_search.box_grid(bad)


def test_grid_losses_average_the_loops_hinge_over_partners_and_random_crops():
  rng = np.random.default_rng(0)
  cand, partners, rand = rng.normal(size=(5, 7)), rng.normal(size=(4, 7)), rng.normal(size=(3, 7))
  got = coloc_search.grid_losses(cand, partners, rand, margin=0.5)
  for g in range(5):
    pairs = [(m, r) for m in range(4) for r in range(3)]
    want = triplet_hinge(jnp.asarray(np.repeat(cand[g:g + 1], len(pairs), 0)),
                         jnp.asarray(partners[[m for m, _ in pairs]]),
                         jnp.asarray(rand[[r for _, r in pairs]]), 0.5)[0]
    assert got[g] == pytest.approx(float(np.mean(want)), rel=1e-5)


def _hand_made(n_images=4):
  """Box 0 is the whole image (a vector of its own, leaning to the object), box 1 the
  object (one vector, shared), box 2 background (the random crops' vector)."""
  dim = n_images + 2
  obj, blank = np.eye(dim)[n_images], np.eye(dim)[n_images + 1]
  grid = np.stack([np.stack([np.eye(dim)[n] + 0.5 * obj, obj, blank]) for n in range(n_images)])
  rand = np.tile(blank, (n_images, 3, 1))
  return coloc_search.unit_length(grid), rand


def test_best_response_moves_every_image_to_the_shared_object():
  grid, rand = _hand_made()
  choices, losses = coloc_search.best_response(grid, rand, start=np.zeros(4, int), rounds=5)
  # Against whole images the object box already costs least; the next round would move
  # nothing (a fixed point), so the rounds stop there.
  assert choices.tolist() == [[0] * 4, [1] * 4] and losses.shape == (1,) and losses[0] > 0
  # Once all crop the object, every pair is closer than its background crop by more than
  # the margin: no loss left.
  partners = np.tile(grid[0, 1], (3, 1))
  assert coloc_search.grid_losses(grid[0, 1:2], partners, rand[0])[0] == pytest.approx(0.0)
  # When every image crops background, every box of image 0 costs the margin: the trap
  # plain SGD falls into is flat, and not even best response leaves it.
  partners = np.tile(grid[0, 2], (3, 1))
  assert coloc_search.grid_losses(grid[0], partners, rand[0]).tolist() == pytest.approx([1.0] * 3)


def test_the_search_goes_from_the_identity_to_the_object_and_refines_around_it():
  vectors, _ = _hand_made()
  rand = np.tile(vectors[0, 2], (4, 3, 1))

  def describe(n, theta):  # the whole image at scale 1, the object at any smaller scale
    return np.stack([vectors[n, 0] if t[0] == 1.0 else vectors[n, 1] for t in theta])

  grid = coloc_search.box_grid([0.5, 1.0], 1)
  thetas, losses, refining = coloc_search.search(describe, 4, rand, grid, rounds=3,
                                                 refine_rounds=3)
  assert thetas.shape == (2, 4, 3) and losses.shape == (1,)
  assert thetas[0].tolist() == [[1.0, 0.0, 0.0]] * 4
  assert thetas[1].tolist() == [[0.5, 0.0, 0.0]] * 4
  # Every refined box costs the same here: each image keeps the one it has, and a round
  # that moves nothing is not kept.
  assert refining.tolist() == [False, False]
  with pytest.raises(ValueError, match="must hold the box"):
    coloc_search.search(describe, 4, rand, coloc_search.box_grid([0.5], 3), rounds=1)
  fine = coloc_search.refined_grids([[0.5, 0.1, -0.2]], coloc_search.local_offsets())
  assert fine.shape == (1, 245, 3)
  assert fine[0, :, 0].min() == pytest.approx(0.45) and fine[0, :, 0].max() == pytest.approx(0.55)
  assert fine[0, :, 1].min() == pytest.approx(0.025)
  assert fine[0, :, 2].max() == pytest.approx(-0.125)


def _objective(grid_desc, rand_desc, rand_index, choice, margin=1.0):
  """Eq. (1)'s mean over every ordered pair and random crop, written out term by term."""
  n_images = len(choice)
  terms = []
  for n in range(n_images):
    c_n = grid_desc[n, choice[n]]
    randoms = rand_desc[n, rand_index[choice[n]]]
    terms.append(np.mean([max(0.0, np.sum((c_n - grid_desc[m, choice[m]])**2)
                              - np.sum((c_n - r)**2) + margin)
                          for m in range(n_images) if m != n for r in randoms]))
  return float(np.mean(terms))


def test_coordinate_descent_never_raises_eq_1_and_stops_where_no_image_can_lower_it():
  rng = np.random.default_rng(1)
  n_images, n_boxes, n_sets = 5, 6, 2
  grid = coloc_search.unit_length(rng.normal(size=(n_images, n_boxes, 4)))
  rand = coloc_search.unit_length(rng.normal(size=(n_images, n_sets, 3, 4)))
  index = np.arange(n_boxes) % n_sets  # each box its own random crops, as for same_scale
  choices, totals = coloc_search.coordinate_descent(grid, rand, np.zeros(n_images, int), 20,
                                                    margin=1.0, rand_index=index)
  assert len(choices) >= 2 and len(totals) == len(choices)
  for choice, total in zip(choices, totals):
    assert total == pytest.approx(_objective(grid, rand, index, choice), rel=1e-5)
  assert np.all(np.diff(totals) < 0)  # each sweep that moved a box lowered it
  final = choices[-1]
  for n in range(n_images):  # no single image can lower it: a minimum one image at a time
    for g in range(n_boxes):
      moved = final.copy()
      moved[n] = g
      assert _objective(grid, rand, index, moved) >= totals[-1] - 1e-6
  # Boxes an image may not take are never taken, even where they would cost least.
  assert final.tolist() == [5, 2, 5, 0, 1]
  allowed = np.ones((n_images, n_boxes), bool)
  allowed[:, 5] = False
  fenced, _ = coloc_search.coordinate_descent(grid, rand, np.zeros(n_images, int), 20,
                                              rand_index=index, allowed=allowed)
  assert 5 not in fenced
  with pytest.raises(ValueError, match="rand_index"):
    coloc_search.coordinate_descent(grid, rand, np.zeros(n_images, int), 1)


def test_a_unary_cost_joins_eq_1_and_the_descent_minimises_their_sum():
  rng = np.random.default_rng(2)
  n_images, n_boxes, n_sets = 5, 6, 2
  grid = coloc_search.unit_length(rng.normal(size=(n_images, n_boxes, 4)))
  rand = coloc_search.unit_length(rng.normal(size=(n_images, n_sets, 3, 4)))
  index = np.arange(n_boxes) % n_sets
  unary = rng.uniform(0.0, 0.5, size=(n_images, n_boxes))

  def total(choice):
    return _objective(grid, rand, index, choice) + unary[np.arange(n_images), choice].mean()

  choices, totals = coloc_search.coordinate_descent(grid, rand, np.zeros(n_images, int), 20,
                                                    rand_index=index, unary=unary)
  for choice, value in zip(choices, totals):
    assert value == pytest.approx(total(choice), rel=1e-5)
  assert len(totals) >= 2 and np.all(np.diff(totals) < 0)
  final = choices[-1]
  for n in range(n_images):  # no single image can lower J + mean unary
    for g in range(n_boxes):
      moved = final.copy()
      moved[n] = g
      assert total(moved) >= totals[-1] - 1e-6
  plain, _ = coloc_search.coordinate_descent(grid, rand, np.zeros(n_images, int), 20,
                                             rand_index=index)
  assert final.tolist() != plain[-1].tolist()  # the cost changed where the descent ends
  with pytest.raises(ValueError, match="unary must hold a finite cost"):
    coloc_search.coordinate_descent(grid, rand, np.zeros(n_images, int), 1, rand_index=index,
                                    unary=unary[:, :3])


def test_a_rank_chooses_between_boxes_of_equal_loss_and_moves_without_raising_it():
  n_images, dim = 4, 6
  eye = np.eye(dim)
  # Box 0: the image's own background (like its random crops); boxes 1 and 2: the shared
  # object, seen alike (e.g. one box larger than the other, both holding it).
  grid = np.stack([np.stack([eye[n + 1], eye[0], eye[0]]) for n in range(n_images)])
  rand = np.stack([eye[n + 1][None] for n in range(n_images)])  # (N, R=1, D)
  rank = np.array([0.0, 0.9, 0.5])  # box 2 is preferred to box 1 (smaller)
  plain, _ = coloc_search.coordinate_descent(grid, rand, np.zeros(n_images, int), 5, margin=0.1)
  assert plain[-1].tolist() == [1] * n_images  # the first of the boxes of equal loss
  ranked, totals = coloc_search.coordinate_descent(grid, rand, np.zeros(n_images, int), 5,
                                                   margin=0.1, rank=rank)
  assert ranked[-1].tolist() == [2] * n_images and totals[-1] == 0.0
  # From boxes of zero loss, the rank alone moves them; the loss stays where it was.
  moved, totals = coloc_search.coordinate_descent(grid, rand, np.ones(n_images, int), 5,
                                                  margin=0.1, rank=rank)
  assert moved.tolist() == [[1] * n_images, [2] * n_images] and totals.tolist() == [0.0, 0.0]
  kept, _ = coloc_search.coordinate_descent(grid, rand, np.ones(n_images, int), 5, margin=0.1)
  assert kept.tolist() == [[1] * n_images]  # without a rank, nothing to gain: no move
  # Two smaller boxes alike (boxes 2 and 3): the one nearest the image's own box (1), not
  # the first in the grid.
  grid4 = np.concatenate([grid, grid[:, 2:]], 1)
  places = np.array([[1.0, 0.0, 0.0], [0.6, 0.5, 0.5], [0.5, -0.5, -0.5], [0.5, 0.5, 0.4]])
  rank4 = places[:, 0]
  first, _ = coloc_search.coordinate_descent(grid4, rand, np.ones(n_images, int), 5,
                                             margin=0.1, rank=rank4)
  near, _ = coloc_search.coordinate_descent(grid4, rand, np.ones(n_images, int), 5,
                                            margin=0.1, rank=rank4, places=places)
  assert first[-1].tolist() == [2] * n_images and near[-1].tolist() == [3] * n_images


def test_the_search_compares_each_box_with_random_crops_of_its_scale_and_stays_inside():
  vectors, _ = _hand_made()
  asked = []

  def randoms(scales):  # (N, K) -> (N, K, R, D): background crops, whatever the scale
    asked.append(np.array(scales))
    return np.broadcast_to(vectors[:, 2][:, None, None], (*scales.shape, 3, vectors.shape[-1]))

  def describe(n, theta):  # the object at s = 0.5, wherever; elsewhere the whole image
    return np.stack([vectors[n, 1] if t[0] == 0.5 else vectors[n, 0] for t in theta])

  grid = coloc_search.box_grid([0.5, 1.0], 3)  # centres -0.9, 0, 0.9
  thetas, losses, refining = coloc_search.search(describe, 4, randoms, grid, rounds=3,
                                                 refine_rounds=1, within=True)
  assert asked[0].tolist() == [[0.5, 1.0]] * 4  # the grid's scales, for every image
  # Refining: each image's own scale times the offsets' factors.
  assert asked[1] == pytest.approx(np.tile([0.45, 0.475, 0.5, 0.525, 0.55], (4, 1)))
  # Only (0.5, 0, 0) of the s = 0.5 boxes is inside the image; the others reach over
  # the edge (|t| + s = 1.4) and are not on the grid.
  assert thetas[1].tolist() == [[0.5, 0.0, 0.0]] * 4 and losses.shape == (1,)
  assert not refining.any()
  assert np.all(coloc_search.inside(thetas))
  with pytest.raises(ValueError, match="moves must be one of"):
    coloc_search.search(describe, 4, randoms, grid, rounds=1, moves="jacobi")
  with pytest.raises(ValueError, match="prefer_smaller needs moves='sequential'"):
    coloc_search.search(describe, 4, randoms, grid, rounds=1, moves="simultaneous",
                        prefer_smaller=True)
  # A score that makes the object's box dear sends every image elsewhere; at weight 0
  # (or without a score) eq. (1) alone decides, as above.
  scored = []

  def score(n, theta):
    scored.append(len(theta))
    return np.where(theta[:, 0] == 0.5, 1.0, 0.0)

  for weight, box in ((0.0, [0.5, 0.0, 0.0]), (10.0, [1.0, 0.0, 0.0])):
    thetas, _, _ = coloc_search.search(describe, 4, randoms, grid, rounds=3, within=True,
                                       prefer_smaller=True, score=score, score_weight=weight)
    assert thetas[-1].tolist() == [box] * 4
  assert scored == [2] * 4  # asked once per image, only when weighed
  with pytest.raises(ValueError, match="A score needs moves='sequential'"):
    coloc_search.search(describe, 4, randoms, grid, rounds=1, moves="simultaneous",
                        score=score, score_weight=1.0)
  with pytest.raises(ValueError, match="score_weight must be a finite number >= 0"):
    coloc_search.search(describe, 4, randoms, grid, rounds=1, score=score, score_weight=-1.0)


def test_best_response_refuses_what_it_cannot_compare():
  grid, rand = _hand_made()
  with pytest.raises(ValueError, match="at least 2 images"):
    coloc_search.best_response(grid[:1], rand[:1], start=[0], rounds=1)
  with pytest.raises(ValueError, match="one grid index"):
    coloc_search.best_response(grid, rand, start=[0, 1, 3, 0], rounds=1)


@pytest.mark.slow  # trains a smoke encoder (about 15 s)
def test_the_landscape_command_measures_every_view_and_descriptor(tmp_path, monkeypatch):
  from stn_jax import train  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  labels = (np.arange(250) % 10).astype(np.uint8)
  images = rng.integers(0, 40, (250, 28, 28)).astype(np.uint8)
  images[:, 8:20, 10:16] = 255
  for name in ("train", "t10k"):
    write_split(tmp_path, name, images, labels)
  enc = experiment_configs.load_config("colocalisation", "t,8,smoke").encoder
  with enc.unlocked():
    enc.data.mnist_dir = str(tmp_path)
    enc.tensorboard = False
  train.train_and_evaluate(enc, str(tmp_path / "encoder"))
  spec = importlib.util.spec_from_file_location("coloc_landscape",
                                                REPO / "docs" / "generate" / "coloc_landscape.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  monkeypatch.setenv("STN_MNIST_DIR", str(tmp_path))
  common = ["--encoder", str(tmp_path / "encoder"), "--size", "6", "--scales", "0.333,1.0",
            "--positions", "3", "--random_crops", "2"]
  land = module.main([*common, "--images", "2", "--out", str(tmp_path / "land.json")])
  assert set(land["results"]) == {f"{v}/{l}/{n}" for v in module.VIEWS
                                  for l in ("all", "late", "logits") for n in ("raw", "unit")}
  for row in land["results"].values():
    for others in ("true", "identity"):
      assert 0 <= row[others]["least_loss_box_localised"] <= 1
      assert 0 <= row[others]["share_of_grid_below_the_true_box"] <= 1
  assert json.loads((tmp_path / "land.json").read_text())["images"] == land["images"]
