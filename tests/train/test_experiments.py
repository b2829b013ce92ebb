"""Smoke runs of the MNIST-addition and SVHN configs, and their tasks' data and losses.

MNIST comes from the small IDX files of ``test_train``; real SVHN from a fixture
in the official format (``test_svhn``), prepared here.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stn_jax import train
from stn_jax.datasets import prepared
from stn_jax import tasks
from stn_jax.tasks import svhn as svhn_task
from experiment_configs import configure, load_config


def assert_run_files(workdir, results, steps):
  assert os.path.isfile(os.path.join(workdir, "results.json"))
  assert os.path.isdir(os.path.join(workdir, "checkpoints", str(steps)))
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    assert any(json.loads(line).get("step") == steps for line in f)
  assert results["steps"] == steps
  for name in ("validation", "test"):
    assert 0.0 <= results[f"{name}_error"] <= 1.0
    assert np.isfinite(results[f"{name}_loss"])


# ----------------------------------------------------------------- MNIST addition


def test_mnist_addition_smoke(mnist_dir, tmp_path):
  c = configure("mnist_addition", "2xst_fcn,smoke", **{"data.mnist_dir": str(mnist_dir)})
  results = train.train_and_evaluate(c, str(tmp_path))
  assert_run_files(str(tmp_path), results, c.num_steps)
  assert results["dataset"] == "mnist_addition" and results["model"] == "2xst_fcn"


def test_addition_pairs_and_sums(mnist_dir):
  c = configure("mnist_addition", "cnn,smoke", **{"data.mnist_dir": str(mnist_dir)})
  task = tasks.make_task(c)
  it = task.train_iterator(0, 1)
  batch = next(it)
  assert batch["image"].shape == (c.batch_size, 2, 28, 28, 1)
  images, labels = task.device_batch(jax.tree_util.tree_map(jnp.asarray, batch),
                                     jax.random.key(0))
  assert images.shape == (c.batch_size, 42, 42, 2)
  np.testing.assert_array_equal(labels, batch["label"].sum(1))
  # Each channel holds its own digit: both channels carry ink, and they differ.
  ink = np.asarray(images).sum(axis=(1, 2))
  assert np.all(ink > 1.0)
  assert not np.allclose(images[..., 0], images[..., 1])
  # Resuming the pair stream gives the same pairs.
  state = it.get_state()
  following = next(it)
  again = task.train_iterator(0, 1)
  again.set_state(state)
  np.testing.assert_array_equal(next(again)["label"], following["label"])
  # Evaluation pairs: sums in [0, 18], fixed by the seed.
  eval_images, sums = task._fixed("validation")  # pylint: disable=protected-access
  digits = task._digits()["validation"][1]  # pylint: disable=protected-access
  assert eval_images.shape == (len(digits), 42, 42, 2)
  assert sums.min() >= 0 and sums.max() <= 18
  assert np.all(sums >= digits) and np.mean(sums == 2 * digits) < 0.5  # partners differ
  np.testing.assert_array_equal(tasks.make_task(c)._fixed("validation")[0], eval_images)  # pylint: disable=protected-access


def test_addition_unknown_variant_lists_the_valid_ones():
  with pytest.raises(ValueError, match="2xst_fcn"):
    load_config("mnist_addition", "3xst_fcn")
  with pytest.raises(ValueError, match="st_fcn and 2xst_fcn only"):
    load_config("mnist_addition", "cnn,tps")


# ----------------------------------------------------------------- SVHN


def test_sequence_losses_count_a_number_wrong_unless_all_positions_are_right():
  labels = jnp.array([[1, 2, 10, 10, 10], [3, 10, 10, 10, 10]])
  logits = jax.nn.one_hot(labels, 11) * 20.0
  loss, error = svhn_task.sequence_losses(logits, labels)
  np.testing.assert_array_equal(error, [0.0, 0.0])
  assert np.all(np.asarray(loss) < 1e-6)
  wrong = labels.at[0, 4].set(7)  # only the last position of number 0 differs
  loss, error = svhn_task.sequence_losses(logits, wrong)
  np.testing.assert_array_equal(error, [1.0, 0.0])
  np.testing.assert_allclose(loss[0], 20.0, rtol=1e-5)  # one position at -log softmax = 20


@pytest.mark.parametrize("name", ["svhn_cnn", "svhn_multi"])
def test_svhn_offline_smoke(name, mnist_dir, tmp_path):
  c = configure(name, "offline,smoke", **{"data.mnist_dir": str(mnist_dir)})
  results = train.train_and_evaluate(c, str(tmp_path))
  assert_run_files(str(tmp_path), results, c.num_steps)
  assert results["dataset"] == "mnist_numbers_64px"  # never called SVHN
  assert results["note"].startswith("NOT SVHN")
  assert "svhn" not in json.dumps({k: v for k, v in results.items()
                                   if k not in ("config", "note", "model")}).lower()


def test_offline_numbers_have_svhn_labels(mnist_dir):
  c = configure("svhn_single", "offline,smoke", **{"data.mnist_dir": str(mnist_dir)})
  task = tasks.make_task(c)
  batch = jax.tree_util.tree_map(jnp.asarray, next(task.train_iterator(0, 1)))
  images, labels = task.device_batch(batch, jax.random.key(0))
  assert images.shape == (c.batch_size, 64, 64, 3) and labels.shape == (c.batch_size, 5)
  labels = np.asarray(labels)
  lengths = (labels != 10).sum(1)
  assert lengths.min() >= 1 and lengths.max() <= 5
  # Digits first, then "no digit": never a digit after a gap.
  assert np.all(labels == np.where(np.arange(5) < lengths[:, None], labels, 10))
  assert set(np.unique(labels[labels != 10])) <= set(np.asarray(batch["label"]).tolist())


@pytest.fixture(scope="module")
def svhn_data_dir(tmp_path_factory):
  import svhn_files  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  spec = {}
  for i in range(1, 25):
    k = int(rng.integers(1, 4))
    spec[f"{i}.png"] = (60, 40, [(8 + 14 * j, 8, 12, 22, int(rng.integers(1, 11)))
                                 for j in range(k)])
  root = tmp_path_factory.mktemp("svhn_run")
  manual = svhn_files.make_manual_dir(root / "manual", train=spec, test=svhn_files.TEST)
  prepared.prepare("svhn", config="64", data_dir=root / "tfds", manual_dir=manual)
  return root / "tfds"


def test_svhn_single_smoke_on_real_format(svhn_data_dir, tmp_path):
  c = configure("svhn_single", "smoke", **{
      "data.data_dir": str(svhn_data_dir), "data.use_extra": False,
      "data.num_validation": 8, "data.num_train": None})
  results = train.train_and_evaluate(c, str(tmp_path))
  assert_run_files(str(tmp_path), results, c.num_steps)
  assert results["dataset"] == "svhn_64px"
  assert results["examples"] == {"train": 16, "validation": 8, "test": 3}
  assert results["test_examples"] == 3


def test_svhn_not_prepared_says_how(tmp_path):
  c = configure("svhn_multi", "", **{"data.data_dir": str(tmp_path)})
  with pytest.raises(prepared.DatasetNotPreparedError) as info:
    train.train_and_evaluate(c, str(tmp_path / "run"))
  message = str(info.value)
  assert "python -m stn_jax.datasets.prepare svhn" in message and ":offline" in message
  assert not (tmp_path / "run").exists()


def test_svhn_extra_missing_says_how(svhn_data_dir):
  c = configure("svhn_cnn", "smoke", **{"data.data_dir": str(svhn_data_dir)})
  with pytest.raises(ValueError, match="use_extra=False"):
    tasks.make_task(c)


def test_svhn_config_defaults_are_the_papers():
  c = load_config("svhn_multi", None)
  assert (c.batch_size, c.learning_rate, c.decay_every, c.num_steps) == (128, 0.01, 80_000,
                                                                          400_000)
  assert (c.weight_decay, c.localization_lr_multiplier, c.data.num_validation) == (0.0005, 0.1,
                                                                                  5000)
  assert c.model == "st_cnn_multi" and c.data.dataset == "svhn" and c.data.size == 64
  assert load_config("svhn_single", "128").data.size == 128
  with pytest.raises(ValueError, match="Valid variant parts"):
    load_config("svhn_cnn", "96")
  # The plain CNN has no localisation net, so no multiplier; every file says it all.
  c = load_config("svhn_cnn", "128,offline")
  assert (c.model, c.localization_lr_multiplier, c.data.dataset, c.data.size,
          c.weight_decay) == ("svhn_cnn", 1.0, "mnist_numbers", 128, 0.0005)


def test_the_results_budget_and_the_localisation_rate_are_variants():
  c = load_config("distorted_mnist", "tc,st_cnn,results,loc0.3")
  assert (c.num_steps, c.batch_size, c.decay_every, c.eval_every, c.checkpoint_every,
          c.log_every) == (3000, 64, 1200, 300, 300, 100)
  assert c.localization_lr_multiplier == 0.3 and c.data.distortion == "TC"
  assert load_config("distorted_mnist", "rts,st_fcn,loc0.1").localization_lr_multiplier == 0.1
  plain = load_config("distorted_mnist", "tc,st_cnn")
  assert (plain.num_steps, plain.batch_size, plain.localization_lr_multiplier) == (
      150_000, 256, 1.0)
  with pytest.raises(ValueError, match="loc0.3 sets the localisation net's rate: st_fcn and "
                     "st_cnn only, not cnn"):
    load_config("distorted_mnist", "tc,cnn,loc0.3")


# ----------------------------------------------------------------- several seeds


def test_seeds_run_in_their_own_folders_and_are_summarised(mnist_dir, tmp_path):
  from stn_jax import seeds  # pylint: disable=import-outside-toplevel
  c = configure("distorted_mnist", "rts,fcn,smoke", **{"data.mnist_dir": str(mnist_dir),
                                                      "num_steps": 2, "eval_every": 2,
                                                      "checkpoint_every": 2})
  summary = seeds.run_seeds(c, str(tmp_path), [3, 5])
  runs = {s: json.loads((tmp_path / f"seed_{s}" / "results.json").read_text()) for s in (3, 5)}
  assert runs[3]["config"]["seed"] == 3 and runs[5]["config"]["seed"] == 5
  assert runs[3]["test_error"] != runs[5]["test_error"] or (
      runs[3]["test_loss"] != runs[5]["test_loss"])  # the seed changes the run
  stats = json.loads((tmp_path / "summary.json").read_text())["stats"]["test_loss"]
  assert stats["mean"] == pytest.approx((runs[3]["test_loss"] + runs[5]["test_loss"]) / 2)
  assert stats["std"] == pytest.approx(abs(runs[3]["test_loss"] - runs[5]["test_loss"])
                                       / np.sqrt(2))
  assert summary["seeds"] == [3, 5]
  with pytest.raises(ValueError, match="distinct"):
    seeds.run_seeds(c, str(tmp_path), [1, 1])


def run_main(*args, env=None):
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return subprocess.run(
      [sys.executable, "-m", "stn_jax.main", *args], cwd=repo, capture_output=True, text=True,
      timeout=120, check=False,
      env={**os.environ, **(env or {}), "PYTHONPATH": repo, "JAX_PLATFORMS": "cpu"})


def test_an_unknown_config_key_lists_the_valid_ones(tmp_path):
  out = run_main("--config=experiments/distorted_mnist.py:rts,fcn,smoke",
                 f"--workdir={tmp_path / 'w'}", "--config.data.sourc=idx")
  assert out.returncode != 0
  assert "--config.data.sourc names no field of the config: data has" in out.stderr
  assert "source" in out.stderr and "Traceback" not in out.stderr
  assert not (tmp_path / "w").exists()


def test_missing_mnist_stops_with_a_sentence_and_writes_nothing(tmp_path):
  out = run_main("--config=experiments/distorted_mnist.py:rts,fcn,smoke",
                 f"--workdir={tmp_path / 'w'}", env={"STN_MNIST_DIR": str(tmp_path / "none")})
  assert out.returncode == 1
  assert out.stderr.strip().splitlines()[-1].startswith("error: MNIST directory")
  assert "STN_MNIST_DIR" in out.stderr and "Traceback" not in out.stderr
  assert not (tmp_path / "w").exists()


def test_a_seed_reaches_the_fields_tied_to_it(monkeypatch, tmp_path):
  from stn_jax import seeds, train as train_lib  # pylint: disable=import-outside-toplevel
  seen = []
  monkeypatch.setattr(train_lib, "train_and_evaluate",
                      lambda c, workdir: seen.append((c.seed, c.encoder.seed)) or {"x": 1.0})
  seeds.run_seeds(load_config("colocalisation", "t,8,smoke"), str(tmp_path), [4, 9])
  assert seen == [(4, 4), (9, 9)]  # the co-localisation encoder follows the run's seed
