"""The CUB task and ``experiments/cub.py``: the smoke variant end to end, the 10-crop
averaging, the input pipeline, pretrained weights and the refusals.

The data are the tiny archive of ``cub_files`` (the real CUB layout: 6 train and
3 test images of 3 classes), prepared here. BN-Inception has 69 convolutions, so
compiling dominates on a CPU: the run starts from stand-in "pretrained" weights (XLA
then drops the random initialisers, the slowest part to compile) and XLA's CPU
optimisations are switched off for this file; values are checked here, not speed.
"""

import json
import logging
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets")
pytest.importorskip("array_record")

# pylint: disable=wrong-import-position
from stn_jax import train
from stn_jax.datasets import cub, prepared
from stn_jax.models.inception_bn import InceptionBN, save_backbone
from stn_jax.runtime import checkpoint as ckpt
from stn_jax.tasks import cub as cub_task
from stn_jax.train import classifier as trainer
from stn_jax.train import optim
from cub_files import IMAGES, _official_files, _pack
from experiment_configs import configure, load_config

NUM_TRAIN = sum(1 for image in IMAGES if image[3])  # 6
NUM_TEST = len(IMAGES) - NUM_TRAIN  # 3


@pytest.fixture(scope="module", autouse=True)
def fast_compile():
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  manual = tmp_path_factory.mktemp("cub_manual")
  _pack(manual / cub.ARCHIVE, _official_files())
  d = tmp_path_factory.mktemp("cub_tfds")
  prepared.prepare("cub", data_dir=d, manual_dir=manual)
  return d


def smoke_config(data_dir, variant="cnn,smoke", **overrides):
  return configure("cub", variant, **{"data.data_dir": None if data_dir is None else str(data_dir),
                                      **overrides})


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
  """Stand-in BN-Inception weights at the smoke width: He-normal kernels, identity BN."""
  width = load_config("cub", "smoke").model_kwargs.width
  shapes = jax.eval_shape(lambda: InceptionBN(width).init(
      jax.random.key(0), jnp.zeros((1, 224, 224, 3)), train=False))
  rng = np.random.default_rng(0)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      return rng.normal(size=leaf.shape) * np.sqrt(2.0 / np.prod(leaf.shape[:-1]))
    return np.full(leaf.shape, {"scale": 1.0, "bias": 0.0, "mean": 0.0, "var": 1.0}[name])

  path = tmp_path_factory.mktemp("weights") / "bn_inception.npz"
  save_backbone(jax.tree_util.tree_map_with_path(fill, shapes), path)
  return path


@pytest.fixture(scope="module")
def smoke_run(data_dir, backbone, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("cub_smoke")
  results = train.train_and_evaluate(smoke_config(data_dir, pretrained=str(backbone)),
                                     str(workdir))
  return workdir, results


@pytest.mark.slow  # 20 s: a real training run of the BN-Inception network
def test_smoke_run_leaves_checkpoints_metrics_and_results(smoke_run, backbone):
  workdir, results = smoke_run
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]
  assert len(os.listdir(workdir / "best")) == 1
  with open(workdir / "results.json", encoding="utf-8") as f:
    assert json.load(f) == results
  assert results["model"] == "cub_cnn" and results["steps"] == 4
  assert results["dataset"] == "cub_200_2011_224px"
  assert results["examples"] == {"train": NUM_TRAIN - 2, "validation": 2, "test": NUM_TEST}
  # 3 test images in batches of 2: the padding row of the second batch is not counted.
  assert results["validation_examples"] == 2 and results["test_examples"] == NUM_TEST
  for name in ("validation_error", "test_error", "best_validation_error"):
    assert 0 <= results[name] <= 1, name
  assert np.isfinite(results["test_loss"]) and results["test_loss"] > 0
  assert results["pretrained"] == str(backbone)
  with open(workdir / "metrics.jsonl", encoding="utf-8") as f:
    lines = [json.loads(line) for line in f]
  assert [l["step"] for l in lines if l["split"] == "train"] == [2, 4]
  assert [l["step"] for l in lines if l["split"] == "validation"] == [2, 4]
  assert all(0 <= l["error"] <= 1 and np.isfinite(l["loss"]) for l in lines)
  # The backbone started from the file: four small SGD steps leave conv1 close to it.
  kernel = ckpt.params_from(str(workdir))[0]["stream_0"]["conv1"]["conv"]["kernel"]
  with np.load(backbone) as stored:
    start = stored["params/conv1/conv/kernel"]
  assert np.corrcoef(kernel.ravel(), start.ravel())[0, 1] > 0.9


def _crop_images(values):
  """uint8 (B, 10, 224, 224, 3) where crop (b, k) is the constant RGB ``values[b, k]``."""
  values = np.asarray(values, np.uint8)
  return np.broadcast_to(values[:, :, None, None, :], values.shape[:2] + (224, 224, 3)).copy()


def test_eval_forward_averages_the_softmax_over_the_ten_crops(data_dir):
  task = cub_task.Cub(smoke_config(data_dir, **{"data.pixel_scale": 255.0, "data.bgr": True,
                                                "data.mean": (10.0, 20.0, 30.0),
                                                "data.std": (2.0, 4.0, 5.0)}))
  # Image 0: nine crops at p = (0.5, 0.5), crop 3 at (0.9, 0.1): mean (0.54, 0.46).
  # Image 1: eight at (0.5, 0.5), crops 0 and 9 at (0.2, 0.8): mean (0.44, 0.56).
  # Averaging logits or log-probabilities, or mixing the images up, gives other values.
  logits = np.zeros((2, 10, 2), np.float32)
  logits[0, 3] = [np.log(9.0), 0.0]
  logits[1, [0, 9]] = [0.0, np.log(4.0)]
  values = np.arange(2 * 10 * 3).reshape(2, 10, 3) * 4 + 12
  seen = []

  def forward(x):
    seen.append(np.asarray(x))
    return jnp.asarray(logits.reshape(20, 2))

  out = task.eval_forward(forward, jnp.asarray(_crop_images(values)))
  np.testing.assert_allclose(np.exp(out), [[0.54, 0.46], [0.44, 0.56]], rtol=1e-6)
  # The network saw the 20 crops in (image, crop) order, normalised: BGR, 0-255, mean, std.
  (x,) = seen
  assert x.shape == (20, 224, 224, 3) and x.dtype == np.float32
  want = (values.reshape(20, 3)[:, ::-1] - np.array([10.0, 20.0, 30.0])) / [2.0, 4.0, 5.0]
  np.testing.assert_allclose(x[:, 100, 7], want, rtol=1e-5)
  loss, errors = task.losses(out, jnp.array([0, 1]))
  np.testing.assert_allclose(loss, -np.log([0.54, 0.56]), rtol=1e-5)
  np.testing.assert_array_equal(errors, [0.0, 0.0])
  np.testing.assert_array_equal(task.losses(out, jnp.array([1, 0]))[1], [1.0, 1.0])
  with pytest.raises(ValueError, match="expects crops of shape \\(B, crops, 224, 224, 3\\)"):
    task.eval_forward(forward, jnp.zeros((2, 224, 224, 3), jnp.uint8))


def test_training_and_evaluation_batches(data_dir):
  task = cub_task.Cub(smoke_config(data_dir))
  # The held-out images come from the train split and are not trained on.
  sources = task._sources  # pylint: disable=protected-access
  train_ids = {int(sources["train"][i]["image_id"]) for i in range(len(sources["train"]))}
  val_ids = {int(sources["validation"][i]["image_id"]) for i in range(len(sources["validation"]))}
  assert len(train_ids) == 4 and len(val_ids) == 2 and not train_ids & val_ids
  assert train_ids | val_ids == {i for i, image in enumerate(IMAGES, 1) if image[3]}

  def first_batches(seed):
    it = cub_task.Cub(smoke_config(data_dir, seed=seed)).train_iterator(0, 1)
    return [next(it) for _ in range(2)]

  batches = first_batches(0)
  for batch in batches:
    assert batch["image"].shape == (2, 224, 224, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].dtype == np.int32
  for a, b in zip(batches, first_batches(0)):  # the seed fixes order, crops and flips
    np.testing.assert_array_equal(a["image"], b["image"])
  assert any(not np.array_equal(a["image"], b["image"])
             for a, b in zip(batches, first_batches(1)))
  images, labels = task.device_batch(batches[0], None)
  assert images.dtype == jnp.float32 and 0 <= images.min() and images.max() <= 1
  np.testing.assert_allclose(images, batches[0]["image"] / 255.0, rtol=1e-6)

  test = cub.load("test", data_dir=data_dir)
  out = list(task.eval_batches("test", 2, 0, 1))
  assert [b["mask"].tolist() for b in out] == [[True, True], [True, False]]
  for i in range(NUM_TEST):
    batch, row = out[i // 2], i % 2
    assert batch["image"].dtype == np.uint8 and batch["image"].shape == (2, 10, 224, 224, 3)
    np.testing.assert_array_equal(batch["image"][row],
                                  cub.eval_crops(cub.decode(test[i]["image"]), size=224))
    assert batch["label"][row] == int(test[i]["label"])
  with pytest.raises(ValueError, match="Unknown CUB evaluation set 'train'"):
    task.eval_batches("train", 2, 0, 1)


def test_random_initialisation_is_stated(data_dir, caplog, monkeypatch):
  monkeypatch.setenv(prepared.ENV_VAR, str(data_dir))  # data_dir None: $STN_TFDS_DIR
  with caplog.at_level(logging.WARNING):
    task = cub_task.Cub(smoke_config(None))
  assert task.describe()["pretrained"] is None
  assert task.describe()["examples"]["test"] == NUM_TEST
  assert "NO PRETRAINED WEIGHTS" in caplog.text and "random initialisation" in caplog.text
  assert type(task.model()).__name__ == "CUBNet"


def test_pretrained_weights_go_into_every_backbone_of_an_st_model(data_dir, backbone):
  task = cub_task.Cub(smoke_config(data_dir, "2xst,smoke", pretrained=str(backbone)))
  model = task.model()
  assert isinstance(model, cub_task.PretrainedCUBNet) and model.transformers == 2
  key = jax.random.key(0)
  variables = jax.eval_shape(lambda: model.init({"params": key, "dropout": key},
                                                jnp.zeros((1, *task.input_shape)), train=False))
  assert {"stream_0", "stream_1", "transformer", "classifier"} == set(variables["params"])
  # The localisation net trains at a tenth of the base rate: the optimiser finds it.
  c = task.config
  optim.make_optimizer(variables["params"], learning_rate=c.learning_rate,
                       decay_every=c.decay_every,
                       localization_lr_multiplier=c.localization_lr_multiplier)
  assert c.localization_lr_multiplier == 0.1
  # Weights of another width do not fit, and say so when the model is initialised.
  wide = cub_task.Cub(smoke_config(data_dir, "2xst,smoke", pretrained=str(backbone),
                                   **{"model_kwargs.width": 0.125})).model()
  with pytest.raises(ValueError, match="does not fit the model"):
    jax.eval_shape(lambda: wide.init(key, jnp.zeros((1, *task.input_shape)), train=False))


def test_unprepared_cub_stops_before_compiling(tmp_path, monkeypatch):
  def compiled(*args, **kwargs):
    raise AssertionError("the run went on to initialise (compile) the model")

  monkeypatch.setattr(trainer, "_init_state", compiled)
  monkeypatch.setenv(prepared.ENV_VAR, str(tmp_path / "empty"))
  with pytest.raises(prepared.DatasetNotPreparedError) as info:
    train.train_and_evaluate(smoke_config(None), str(tmp_path / "work"))
  assert "python -m stn_jax.datasets.prepare cub" in str(info.value)
  assert str(tmp_path / "empty") in str(info.value)
  assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("overrides, error, match", [
    ({"model": "st_cnn"}, ValueError, "trains the CUB networks \\(cub_cnn, 2xst_cnn, 4xst_cnn\\)"),
    ({"pretrained": "/no/such/weights.npz"}, FileNotFoundError, "is not a file"),
    ({"data.num_validation": NUM_TRAIN}, ValueError, "must be between 1 and 5"),
    ({"data.mean": (0.5, 0.5)}, ValueError, "three finite numbers"),
    ({"data.std": (1.0, 0.0, 1.0)}, ValueError, "positive in every channel"),
    ({"data.pixel_scale": 0.0}, ValueError, "pixel_scale must be a positive number"),
])
def test_bad_settings_are_refused(data_dir, overrides, error, match):
  with pytest.raises(error, match=match):
    cub_task.Cub(smoke_config(data_dir, **overrides))


def test_variants():
  c = load_config("cub", "cnn")
  assert (c.task, c.model, c.model_kwargs.input_size) == ("cub", "cub_cnn", 224)
  assert c.localization_lr_multiplier == 1.0 and c.pretrained is None
  c = load_config("cub", None)
  assert (c.model, c.model_kwargs.input_size, c.localization_lr_multiplier) == ("4xst_cnn", 448,
                                                                               0.1)
  assert load_config("cub", "2xst,224").model_kwargs.input_size == 224
  assert load_config("cub", "cnn,448").model_kwargs.input_size == 448
  smoke = load_config("cub", "4xst,smoke")
  assert smoke.model_kwargs.input_size == 224 and smoke.model_kwargs.width == 1 / 16
  with pytest.raises(ValueError, match=re.escape(
      "Unknown variant '8xst'. Valid variant parts (model: cnn, 2xst, 4xst; resolution: "
      "224, 448; smoke: smoke).")):
    load_config("cub", "8xst")
  with pytest.raises(ValueError, match="names the resolution twice"):
    load_config("cub", "224,448")
  with pytest.raises(AttributeError):
    c.data.num_validaton = 5  # a locked config refuses unknown keys
