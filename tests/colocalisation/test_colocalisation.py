"""The co-localisation loop: the smoke variant end to end, resumption, refusals, the NaN stop,
and its parts on known answers (IoU, eq. (1), boxes from theta, pairs and random crops).

MNIST comes from small IDX files written here, so these tests never need the real data;
``data.coloc_mnist`` points at them.
"""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from stn_jax import models, ops
from stn_jax.train import NonFiniteLossError
from stn_jax.runtime import checkpoint as ckpt
from stn_jax.colocalisation import search as coloc_search
from stn_jax import colocalisation as coloc
from stn_jax.colocalisation import trainer as coloc_trainer
import experiment_configs
from experiment_configs import configure
from mnist_files import write_split

def load_config(variant):
  return experiment_configs.load_config("colocalisation", variant)


@pytest.fixture(scope="module")
def coloc_mnist(tmp_path_factory):
  """Digit-like IDX files, every class 25 times: a bright bar placed by the label (the shared
  ``mnist_dir`` draws its labels at random; a set of one class needs enough of each)."""
  d = tmp_path_factory.mktemp("mnist")
  for name, n, seed in (("train", 250, 0), ("t10k", 40, 1)):
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
      r, c = 4 + 2 * (label // 5) * 5, 4 + 4 * (label % 5)
      images[i, r:r + 8, c:c + 4] = 255
    write_split(d, name, images, labels)
  return d


def smoke_config(coloc_mnist, variant="t,8,smoke", **overrides):
  return configure("colocalisation", variant,
                   **{"data.mnist_dir": str(coloc_mnist), **overrides})


def jsonl(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def leaves(path):
  return jax.tree_util.tree_leaves(ckpt.params_from(path)[0])


@pytest.fixture(scope="module")
def straight(coloc_mnist, tmp_path_factory):
  """One uninterrupted smoke run: a 4-step encoder, then 4 co-localisation steps."""
  workdir = str(tmp_path_factory.mktemp("straight"))
  return workdir, coloc.train_colocalisation(smoke_config(coloc_mnist), workdir)


def test_smoke_run_leaves_checkpoints_metrics_results_and_picture(straight):
  workdir, results = straight
  with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
    assert json.load(f) == results
  assert (results["digit_class"], results["distortion"], results["steps"]) == (8, "T", 4)
  assert results["num_images"] == 16 and len(results["ious"]) == 16
  ious = np.array(results["ious"])
  assert np.all((ious >= 0) & (ious <= 1))
  assert results["localised"] == pytest.approx(np.mean(ious > 0.5))
  assert results["mean_iou"] == pytest.approx(ious.mean())
  assert results["encoder_steps"] == 4 and 0 <= results["encoder_test_error"] <= 1
  assert results["config"]["margin"] == 1.0
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  assert os.listdir(os.path.join(workdir, "best")) == []  # no selection by ground truth
  # The encoder was trained by the ordinary trainer, in its own folder.
  assert sorted(os.listdir(os.path.join(workdir, "encoder", "checkpoints"))) == ["3", "4"]
  lines = jsonl(workdir)
  assert [l["step"] for l in lines if l["split"] == "train"] == [2, 4]
  assert [l["step"] for l in lines if l["split"] == "colocalisation"] == [0, 2, 4]
  assert {"loss", "active_pairs", "pair_distance", "random_distance", "grad_norm",
          "learning_rate"} <= set(lines[1])
  # The localiser starts as the identity (the whole image: IoU 784 / 7056 with every box).
  assert lines[0]["mean_iou"] == pytest.approx(1 / 9) and lines[0]["scale"] == 1.0
  # SGD moved the localiser between the two checkpoints.
  two, four = leaves(os.path.join(workdir, "checkpoints", "2")), leaves(workdir)
  assert any(not np.array_equal(a, b) for a, b in zip(two, four))
  with Image.open(os.path.join(workdir, "colocalisation.png")) as png:
    # 4 images in a row: (84 * 2 + 2) px wide each, 84 * 2 + 14 (caption) + 2 high.
    assert png.format == "PNG" and png.size == (4 * 170, 184)


def test_a_resumed_run_continues_exactly(straight, coloc_mnist, tmp_path):
  workdir, _ = straight
  encoder = os.path.join(workdir, "encoder")  # the same encoder, reused rather than retrained
  coloc.train_colocalisation(smoke_config(coloc_mnist, num_steps=2, encoder_from=encoder),
                             str(tmp_path))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
  results = coloc.train_colocalisation(smoke_config(coloc_mnist, encoder_from=encoder),
                                       str(tmp_path))
  assert results["steps"] == 4 and results["encoder_from"] == encoder
  for a, b in zip(leaves(workdir), leaves(tmp_path)):
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
  resumed = jsonl(tmp_path)
  assert [(l["step"], l["split"]) for l in resumed] == [
      (0, "colocalisation"), (2, "train"), (2, "colocalisation"),  # the first session
      (4, "train"), (4, "colocalisation")]  # the second starts at step 3
  # Steps 3 and 4 drew the same pairs and crops as in the straight run.
  want = [l for l in jsonl(workdir) if l["split"] == "train"][-1]
  assert resumed[3]["loss"] == pytest.approx(want["loss"], rel=1e-5)
  assert resumed[4]["mean_iou"] == pytest.approx(straight[1]["mean_iou"], rel=1e-6)


@pytest.mark.slow  # a co-localisation run (about 10 s); the default suite is near its time limit
def test_with_learn_scale_off_the_scale_stays_and_the_centre_moves(straight, coloc_mnist,
                                                                   tmp_path):
  encoder = os.path.join(straight[0], "encoder")
  results = coloc.train_colocalisation(
      smoke_config(coloc_mnist, encoder_from=encoder, learn_scale=False, init_scale=0.5,
                   learning_rate=0.1), str(tmp_path))
  out = ckpt.params_from(str(tmp_path))[0]["transformer"]["localization_out"]
  assert results["scale"] == 0.5  # every image's s, exactly
  assert np.all(np.asarray(out["kernel"])[:, 0] == 0) and float(out["bias"][0]) == 0.5
  assert np.any(np.asarray(out["kernel"])[:, 1:] != 0)  # tx and ty learnt


# A search over a small grid (about 15 s); the default suite is near its time limit.
@pytest.mark.slow
def test_the_search_variant_chooses_boxes_over_a_grid(straight, coloc_mnist, tmp_path):
  encoder = os.path.join(straight[0], "encoder")
  small = {"encoder_from": encoder, "search.scales": (0.333, 1.0), "search.positions": 3,
           "search.random_crops": 2, "search.rounds": 2, "search.refine_rounds": 1}
  config = smoke_config(coloc_mnist, "t,8,search,smoke", **small)
  assert (config.optimizer, config.normalize_features) == ("search", True)
  results = coloc.train_colocalisation(config, str(tmp_path))
  rounds = results["rounds"]  # rounds that moved no box are not kept
  assert [r["round"] for r in rounds] == list(range(len(rounds))) and 1 <= len(rounds) <= 4
  flags = [r["refining"] for r in rounds]
  assert flags == sorted(flags) and not flags[0]  # the grid's rounds, then refining ones
  assert [r["loss"] is None for r in rounds] == [True] + [False] * (len(rounds) - 1)
  first = rounds[0]  # the identity: the whole image
  assert first["scale"] == 1.0 and first["mean_iou"] == pytest.approx(1 / 9)
  assert results["localised"] == results["rounds"][-1]["localised"]
  assert len(results["ious"]) == len(results["theta"]) == 16 and results["steps"] == 0
  with open(tmp_path / "results.json", encoding="utf-8") as f:
    assert json.load(f) == results
  assert (tmp_path / "colocalisation.png").stat().st_size > 0
  assert np.asarray(results["theta_rounds"]).shape == (len(rounds), 16, 3)
  assert np.all(coloc_search.inside(np.asarray(results["theta_rounds"])))  # search.within
  with Image.open(tmp_path / "colocalisation_rounds.png") as im:  # 3 images x the rounds
    assert im.height > 2 * im.width / len(rounds)
  assert not (tmp_path / "checkpoints").exists()  # no localiser is trained
  # The workdir of an SGD run is not overwritten.
  with pytest.raises(ValueError, match="another run: .*optimizer: 'sgd' there, 'search'"):
    coloc.train_colocalisation(config, straight[0])
  with pytest.raises(ValueError, match="search.moves must be one of"):
    coloc.train_colocalisation(smoke_config(coloc_mnist, "t,8,search,smoke",
                                            **{**small, "search.moves": "jacobi"}), str(tmp_path))
  with pytest.raises(ValueError, match="prefer_smaller needs search.moves='sequential'"):
    coloc.train_colocalisation(smoke_config(coloc_mnist, "t,8,search,smoke",
                                            **{**small, "search.moves": "simultaneous"}),
                               str(tmp_path))
  with pytest.raises(ValueError, match="search.positions must be odd"):
    coloc.train_colocalisation(smoke_config(coloc_mnist, "t,8,search,smoke",
                                            **{**small, "search.positions": 4}), str(tmp_path))
  with pytest.raises(ValueError, match="1.0 \\(the identity"):
    coloc.train_colocalisation(smoke_config(coloc_mnist, "t,8,search,smoke",
                                            **{**small, "search.scales": (0.5,)}), str(tmp_path))


@pytest.mark.slow
def test_the_confidence_term_weighs_the_encoders_largest_class_probability(straight,
                                                                           coloc_mnist,
                                                                           tmp_path):
  """At a weight that outweighs eq. (1), each image takes the grid box where the encoder
  is surest of some class: the term is 1 - its largest probability, read at the box."""
  encoder_dir = os.path.join(straight[0], "encoder")
  small = {"encoder_from": encoder_dir, "search.scales": (0.333, 0.5, 1.0),
           "search.positions": 5, "search.random_crops": 2, "search.rounds": 3,
           "search.refine_rounds": 0, "search.confidence_weight": 1e6}
  config = smoke_config(coloc_mnist, "t,8,search,confidence,smoke", **small)
  results = coloc.train_colocalisation(config, str(tmp_path))
  images, _ = coloc.dataset(config)
  encoder, params = coloc.encoder_from_run(encoder_dir)
  grid = coloc_search.box_grid([0.333, 0.5, 1.0], 5)
  grid = grid[coloc_search.inside(grid)]
  surest = []
  for image in images:
    crops = ops.warp(jnp.broadcast_to(image, (len(grid), *image.shape)), jnp.asarray(grid),
                     (28, 28), transform="attention")
    logits = np.asarray(encoder.apply({"params": params}, crops), np.float64)[:, -10:]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    surest.append(grid[int(np.argmax(probs.max(-1) / probs.sum(-1)))])
  np.testing.assert_allclose(results["theta"], np.stack(surest), atol=1e-6)
  assert results["config"]["search"]["confidence_weight"] == 1e6


def test_a_workdir_of_another_class_or_encoder_is_refused(straight, coloc_mnist):
  workdir, _ = straight
  with pytest.raises(ValueError, match="another run: data.digit_class: 8 there, 3 here"):
    coloc.train_colocalisation(smoke_config(coloc_mnist, "t,3,smoke"), workdir)
  with pytest.raises(ValueError, match="another run: encoder_from: None there, '.*encoder' here"):
    coloc.train_colocalisation(
        smoke_config(coloc_mnist, encoder_from=os.path.join(workdir, "encoder")), workdir)


def test_an_encoder_that_is_not_a_cnn_is_refused(straight, coloc_mnist, tmp_path):
  workdir, _ = straight  # a co-localisation run: its parameters are a colocalizer's
  with pytest.raises(ValueError, match="does not hold the parameters of a `cnn` model"):
    coloc.train_colocalisation(smoke_config(coloc_mnist, encoder_from=workdir), str(tmp_path))
  with pytest.raises(FileNotFoundError, match="is not a checkpoint"):
    coloc.train_colocalisation(smoke_config(coloc_mnist, encoder_from=str(tmp_path / "none")),
                               str(tmp_path / "w"))


def test_non_finite_loss_stops_naming_the_step(straight, coloc_mnist, tmp_path, monkeypatch):
  # The alternatives of the loss run here too: same-scale random crops, unit descriptors and
  # a start at the digit's scale.
  options = dict(encoder_from=os.path.join(straight[0], "encoder"), random_crop="same_scale",
                 normalize_features=True, init_scale=1 / 3)
  coloc.train_colocalisation(smoke_config(coloc_mnist, num_steps=2, **options), str(tmp_path))
  lines = jsonl(tmp_path)
  assert lines[0]["scale"] == pytest.approx(1 / 3)
  assert 0 < lines[1]["pair_distance"] <= 4 and 0 < lines[1]["random_distance"] <= 4
  clean = coloc.triplet_hinge
  monkeypatch.setattr(coloc_trainer, "triplet_hinge",
                      lambda *a: (clean(*a)[0] * jnp.nan,) + clean(*a)[1:])
  with pytest.raises(NonFiniteLossError,
                     match="became nan at step 3.*last good checkpoint \\(step 2\\) is intact"):
    coloc.train_colocalisation(smoke_config(coloc_mnist, **options), str(tmp_path))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]


def test_config_variants_and_errors(coloc_mnist, tmp_path):
  c = load_config("tc,3")
  assert (c.task, c.model, c.data.distortion, c.data.digit_class) == (
      "colocalisation", "colocalizer", "TC", 3)
  assert (c.data.size, c.margin, c.encoder.model, c.encoder.data.distortion) == (
      100, 1.0, "cnn", None)
  d = load_config(None)
  assert (d.data.distortion, d.data.digit_class) == ("T", 8)
  assert (d.normalize_features, d.random_crop, d.init_scale) == (False, "digit", None)
  assert (d.optimizer, d.learn_scale) == ("sgd", True)  # the paper's, unless a variant says
  # The encoder's steps, schedule and data follow the top-level fields.
  d.encoder_steps = 300
  d.data.mnist_dir = "/somewhere"
  assert (d.encoder.num_steps, d.encoder.decay_every, d.encoder.eval_every) == (300, 100, 300)
  assert d.encoder.data.mnist_dir == "/somewhere"
  with pytest.raises(ValueError, match="Unknown variant 'x'. Valid variant parts "
                     "\\(dataset: t, tc; digit: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9; search: search; "
                     "confidence: confidence; smoke: smoke\\)"):
    load_config("t,x")
  with pytest.raises(ValueError, match="names the dataset twice"):
    load_config("t,tc")
  # `confidence` (ours) adds the encoder's confidence to the search; eq. (1) alone without.
  assert load_config("tc,7,search").search.confidence_weight == 0.0
  assert load_config("tc,7,search,confidence").search.confidence_weight == 0.1
  with pytest.raises(ValueError, match="'confidence' adds a term to the search: name both"):
    load_config("t,8,confidence")
  for weight in (-0.1, float("nan")):
    with pytest.raises(ValueError, match="search.confidence_weight must be a finite number"):
      coloc.train_colocalisation(smoke_config(coloc_mnist, "t,8,search,smoke", **{
          "search.confidence_weight": weight}), str(tmp_path))
  with pytest.raises(ValueError, match="confidence_weight needs search.moves='sequential'"):
    coloc.train_colocalisation(smoke_config(coloc_mnist, "t,8,search,confidence,smoke", **{
        "search.moves": "simultaneous", "search.prefer_smaller": False}), str(tmp_path))
  with pytest.raises(ValueError, match="data.size must be at least 2"):
    coloc.train_colocalisation(smoke_config(coloc_mnist, **{"data.size": 1}), str(tmp_path))
  with pytest.raises(ValueError, match="model_kwargs.out_hw must be the encoder's input"):
    coloc.train_colocalisation(smoke_config(coloc_mnist, model_kwargs={"out_hw": (21, 21)}),
                               str(tmp_path))
  with pytest.raises(ValueError, match="random_crop must be one of digit, same_scale"):
    coloc.train_colocalisation(smoke_config(coloc_mnist, random_crop="any"), str(tmp_path))
  with pytest.raises(ValueError, match="Class 8 has 25 digits, fewer than the 100"):
    coloc.train_colocalisation(smoke_config(coloc_mnist, **{"data.size": 100}), str(tmp_path))


def test_iou_of_known_boxes():
  iou = coloc.box_iou
  assert iou([0, 0, 2, 2], [0, 0, 2, 2]) == 1.0
  assert iou([0, 0, 2, 2], [1, 1, 3, 3]) == 1 / 7  # 1 / (4 + 4 - 1)
  assert iou([0, 0, 4, 4], [1, 1, 3, 3]) == 0.25  # contained: 4 / 16
  assert iou([0, 0, 2, 2], [2, 0, 4, 2]) == 0.0  # touching edges
  assert iou([0, 0, 2, 2], [5, 5, 6, 6]) == 0.0  # apart
  assert iou([1, 1, 1, 1], [1, 1, 1, 1]) == 0.0  # empty
  assert iou([0, 0, 84, 84], [10, 20, 38, 48]) == 784 / 7056  # the identity vs a digit
  assert iou([0, 0, 28, 28], [14, 0, 42, 28]) == 1 / 3  # half a box over: 392 / 1176
  # Broadcast: one box against several.
  np.testing.assert_array_equal(iou([0, 0, 2, 2], [[0, 0, 2, 2], [0, 0, 1, 2], [3, 3, 4, 4]]),
                                [1.0, 0.5, 0.0])


def test_boxes_and_theta_match_what_the_transformer_crops():
  gt = np.array([[13.0, 40.0, 41.0, 68.0], [56.0, 0.0, 84.0, 28.0]])
  theta = coloc.theta_from_box(gt, (84, 84))
  np.testing.assert_allclose(theta[:, 0], 1 / 3)
  np.testing.assert_allclose(coloc.box_from_theta(theta, (84, 84)), gt, atol=1e-12)
  # A negative scale mirrors the crop but reads the same window.
  np.testing.assert_allclose(coloc.box_from_theta(theta * [-1, 1, 1], (84, 84)), gt,
                             atol=1e-12)
  # The colocalizer with its regressor set to theta crops exactly the box's pixels.
  images = jax.random.uniform(jax.random.key(0), (2, 84, 84, 1))
  model = models.get_model("colocalizer")
  params = model.init(jax.random.key(1), images)["params"]
  out = params["transformer"]["localization_out"]
  out["kernel"] = jnp.zeros_like(out["kernel"])
  for i in range(2):
    out["bias"] = jnp.asarray(theta[i], jnp.float32)
    crops, aux = model.apply({"params": params}, images)
    x0, y0, x1, y1 = gt[i].astype(int)
    np.testing.assert_allclose(crops[i], images[i, y0:y1, x0:x1], atol=1e-5)
    np.testing.assert_allclose(coloc.box_from_theta(aux["theta"][i], (84, 84)), gt[i],
                               atol=1e-4)
  warped = ops.warp(images, jnp.asarray(theta, jnp.float32), (28, 28), transform="attention")
  np.testing.assert_allclose(warped[1], images[1, 0:28, 56:84], atol=1e-5)


def test_triplet_hinge_on_hand_made_descriptors():
  e_n = jnp.zeros((4, 2))
  e_m = jnp.array([[1.0, 0.0]] * 4)  # |e_n - e_m|^2 = 1
  e_rand = jnp.array([[3.0, 0.0], [1.0, 1.0], [0.5, 0.0], [0.0, 1.0]])  # 9, 2, 0.25, 1
  losses, d_pair, d_rand = coloc.triplet_hinge(e_n, e_m, e_rand, 1.0)
  np.testing.assert_array_equal(d_pair, [1, 1, 1, 1])
  np.testing.assert_array_equal(d_rand, [9, 2, 0.25, 1])
  # Zero once the pair is closer than the random crop by the margin (exactly at it, too).
  np.testing.assert_array_equal(losses, [0.0, 0.0, 1.75, 1.0])
  np.testing.assert_array_equal(coloc.triplet_hinge(e_n, e_m, e_rand, 0.0)[0], [0, 0, 0.75, 0])
  # Gradients: 2 (e_m - e_n) where the hinge is on, none where it is off; at the kink
  # (pair 1) any value between the two is a sub-gradient.
  g = np.asarray(jax.grad(lambda m: coloc.triplet_hinge(e_n, m, e_rand, 1.0)[0].sum())(e_m))
  np.testing.assert_array_equal(g[[0, 2, 3]], [[0, 0], [2, 0], [2, 0]])
  assert 0 <= g[1, 0] <= 2 and g[1, 1] == 0


def test_pairs_are_distinct_and_cover_every_image():
  n, m = coloc.sample_pairs(jax.random.key(0), 4000, 5)
  n, m = np.asarray(n), np.asarray(m)
  assert np.all(n != m)
  assert set(n) == set(m) == set(range(5))
  # m is uniform over the four other images: each (n, m) about 4000 / 20 = 200 times.
  counts = np.bincount(n * 5 + m, minlength=25).reshape(5, 5)
  assert np.all(np.diag(counts) == 0) and counts[~np.eye(5, dtype=bool)].min() > 140


def test_random_crops_are_windows_at_uniform_positions():
  images = jnp.arange(8 * 84 * 84, dtype=jnp.float32).reshape(8, 84, 84, 1)
  crops, boxes = coloc.random_crops(jax.random.key(3), images, (28, 28))
  assert crops.shape == (8, 28, 28, 1)
  for crop, image, (x0, y0, x1, y1) in zip(crops, images, np.asarray(boxes)):
    np.testing.assert_array_equal(crop, image[y0:y1, x0:x1])
  _, boxes = coloc.random_crops(jax.random.key(4), jnp.zeros((3000, 84, 84, 1)), (28, 28))
  corners = np.asarray(boxes)[:, :2]
  assert corners.min() == 0 and corners.max() == 56  # every position can be drawn
  assert abs(corners.mean() - 28) < 1.5


def test_same_scale_crops_read_windows_of_the_given_scale():
  images = jax.random.uniform(jax.random.key(5), (400, 84, 84, 1))
  scale = jnp.full((400,), 1 / 3)
  crops = coloc.same_scale_crops(jax.random.key(6), images, scale, (28, 28))
  assert crops.shape == (400, 28, 28, 1)
  # Every crop is the transformer's crop at some centre within [-2/3, 2/3]^2: the window
  # stays inside the image, so no sample reads the zero padding.
  key = jax.random.key(6)
  t = jax.random.uniform(key, (400, 2), minval=-1.0, maxval=1.0) * (2 / 3)
  want = ops.warp(images, jnp.concatenate([scale[:, None], t], -1), (28, 28),
                  transform="attention")
  np.testing.assert_allclose(crops, want, atol=1e-4)
  assert np.abs(np.asarray(t)).max() <= 2 / 3 and np.abs(np.asarray(t)).max() > 0.6
  # At s = 1 the only window is the whole image; at s = 2 it holds the whole image.
  whole = coloc.same_scale_crops(key, images[:2], jnp.ones(2), (84, 84))
  np.testing.assert_allclose(whole, images[:2], atol=1e-5)
  big = coloc.same_scale_crops(key, jnp.ones((64, 84, 84, 1)), jnp.full((64,), 2.0), (84, 84))
  np.testing.assert_allclose(np.asarray(big).sum((1, 2, 3)), 84 * 84 / 4, rtol=0.02)


def test_the_entry_hands_the_task_to_its_loop_and_the_trainer_refuses_it(tmp_path, monkeypatch):
  from stn_jax import train  # pylint: disable=import-outside-toplevel
  from stn_jax.train import classifier as trainer  # pylint: disable=import-outside-toplevel
  from stn_jax.train import trainers  # pylint: disable=import-outside-toplevel
  c = load_config("t,3")
  calls = []
  own = trainers.get("colocalisation")
  with monkeypatch.context() as m:
    m.setitem(trainers.TRAINERS, "colocalisation", dataclasses.replace(
        own, train=lambda *a, **k: calls.append(a) or {"ok": 1}))
    assert train.train_and_evaluate(c, str(tmp_path)) == {"ok": 1} and len(calls) == 1
  assert own.train is coloc.train_colocalisation
  with pytest.raises(ValueError, match="runs on JAX's default device"):
    train.train_and_evaluate(c, str(tmp_path), devices=[object()])
  with pytest.raises(ValueError, match="runs under the 'colocalisation' trainer, not "
                     "'classifier': run it with stn_jax.train.train_and_evaluate"):
    trainer.train_and_evaluate(c, str(tmp_path))
  assert not os.listdir(tmp_path)  # refused before writing anything
