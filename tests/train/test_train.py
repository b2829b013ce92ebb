"""The trainer on the smoke variant: files it leaves, resumption, refusals, NaN stop,
warm start, and the same trajectory on 1 and 4 (simulated) devices.

MNIST comes from small IDX files written here, so these tests never need the
real data; ``data.mnist_dir`` points at them.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from stn_jax import train
from stn_jax.runtime import checkpoint as ckpt
from stn_jax.tasks import distorted_mnist as mnist_task
from stn_jax.train.config import parse_variant
from experiment_configs import REPO, load_config, smoke_config


def jsonl(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def final_params(workdir):
  return ckpt.params_from(workdir)[0]


@pytest.fixture(scope="module")
def straight(mnist_dir, tmp_path_factory):
  """One uninterrupted smoke run of 6 steps."""
  workdir = str(tmp_path_factory.mktemp("straight"))
  results = train.train_and_evaluate(smoke_config(mnist_dir), workdir)
  return workdir, results


def test_smoke_run_leaves_checkpoints_metrics_and_results(straight):
  workdir, results = straight
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
  assert len(os.listdir(os.path.join(workdir, "best"))) == 1
  with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
    on_disk = json.load(f)
  assert on_disk == results
  assert results["steps"] == 6 and results["model"] == "st_cnn"
  assert results["dataset"] == "mnist_RTS"
  assert 0 <= results["test_error"] <= 1 and results["test_examples"] == 32
  assert results["best_step"] in (3, 6)
  lines = jsonl(workdir)
  assert [l["step"] for l in lines if l["split"] == "train"] == [2, 4, 6]
  assert [l["step"] for l in lines if l["split"] == "validation"] == [3, 6]
  assert {"loss", "error", "learning_rate", "steps_per_second",
          "images_per_second"} <= set(lines[0])
  # The step schedule: 0.01 until decay_every (4), then 0.001.
  lrs = {l["step"]: l["learning_rate"] for l in lines if l["split"] == "train"}
  assert lrs[2] == pytest.approx(0.01) and lrs[6] == pytest.approx(0.001)


def test_a_resumed_run_continues_exactly(straight, mnist_dir, tmp_path):
  workdir, _ = straight
  # Stop after 3 steps (as if killed after the checkpoint), then run again to 6.
  train.train_and_evaluate(smoke_config(mnist_dir, num_steps=3), str(tmp_path))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3"]
  train.train_and_evaluate(smoke_config(mnist_dir), str(tmp_path))
  want, got = final_params(workdir), final_params(tmp_path)
  for a, b in zip(jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(got)):
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
  resumed = [l for l in jsonl(tmp_path) if l["split"] == "train" and l["step"] > 3]
  assert [l["step"] for l in resumed] == [4, 6]
  # Step 6's line averages steps 5 and 6 in both runs (step 4's covers 4 alone after the
  # restart), so it must match: the same batches, distortions and dropout keys.
  last = [l for l in jsonl(workdir) if l["split"] == "train"][-1]
  assert resumed[-1]["loss"] == pytest.approx(last["loss"], rel=1e-5)


def test_a_workdir_of_another_model_is_refused(straight, mnist_dir):
  workdir, _ = straight
  with pytest.raises(ValueError, match="holds checkpoints of another run: model: 'st_cnn' "
                     "there, 'cnn' here"):
    train.train_and_evaluate(smoke_config(mnist_dir, "rts,cnn,smoke"), workdir)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(mnist_dir, tmp_path,
                                                                   monkeypatch):
  train.train_and_evaluate(smoke_config(mnist_dir, num_steps=3), str(tmp_path))
  clean = mnist_task.DistortedMnist.device_batch

  def poisoned(self, batch, key):  # every image from step 4 on is NaN
    images, labels = clean(self, batch, key)
    return images * np.float32("nan"), labels

  monkeypatch.setattr(mnist_task.DistortedMnist, "device_batch", poisoned)
  with pytest.raises(train.NonFiniteLossError,
                     match="became nan at step 4.*last good checkpoint \\(step 3\\) is intact"):
    train.train_and_evaluate(smoke_config(mnist_dir), str(tmp_path))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3"]
  params = final_params(tmp_path)
  assert all(np.isfinite(p).all() for p in jax.tree_util.tree_leaves(params))


def test_warm_start_loads_another_runs_parameters(straight, mnist_dir, tmp_path):
  workdir, _ = straight
  # A learning rate of 1e-30 moves nothing, so the run ends where the other one stopped.
  c = smoke_config(mnist_dir, num_steps=1, init_from=workdir, learning_rate=1e-30,
                   eval_every=1, checkpoint_every=1)
  train.train_and_evaluate(c, str(tmp_path))
  for a, b in zip(jax.tree_util.tree_leaves(final_params(workdir)),
                  jax.tree_util.tree_leaves(final_params(tmp_path))):
    np.testing.assert_allclose(b, a, rtol=1e-6)


def test_warm_start_from_another_model_is_refused(straight, mnist_dir, tmp_path):
  workdir, _ = straight
  with pytest.raises(ValueError, match="holds parameters of another model"):
    train.train_and_evaluate(smoke_config(mnist_dir, "rts,fcn,smoke", init_from=workdir),
                             str(tmp_path))
  with pytest.raises(FileNotFoundError, match="is not a checkpoint"):
    train.train_and_evaluate(smoke_config(mnist_dir, init_from=str(tmp_path / "nothing")),
                             str(tmp_path / "w"))


def test_config_errors():
  with pytest.raises(ValueError, match="Unknown variant 'rst'.*distortion: r, rts, p, e, tc"):
    load_config("distorted_mnist", "rst,st_cnn")
  with pytest.raises(ValueError, match="names the model twice"):
    load_config("distorted_mnist", "cnn,fcn")
  with pytest.raises(ValueError, match="applies to st_fcn and st_cnn only"):
    load_config("distorted_mnist", "rts,cnn,tps")
  c = load_config("distorted_mnist", "tc,st_fcn,tps")
  assert (c.data.distortion, c.model, c.model_kwargs.transform) == ("TC", "st_fcn", "tps")
  with pytest.raises(AttributeError):
    c.learning_rat = 0.1  # a locked config refuses unknown keys
  assert parse_variant(None, {"smoke": (True,)}, {"smoke": False}) == {"smoke": False}


def test_batch_must_split_over_the_devices(mnist_dir, tmp_path):
  with pytest.raises(ValueError, match="batch_size \\(15\\) must be divisible"):
    train.train_and_evaluate(smoke_config(mnist_dir, batch_size=15), str(tmp_path),
                             devices=[jax.devices()[0]] * 2)


_DEVICES_SCRIPT = """
import json, sys
import jax
sys.path.insert(0, {tests!r})
from experiment_configs import smoke_config
from stn_jax import train
assert jax.device_count() == 4, jax.devices()
out = {{}}
for n in (1, 4):
  train.train_and_evaluate(smoke_config({mnist!r}), {work!r} + str(n), devices=jax.devices()[:n])
  with open({work!r} + str(n) + "/metrics.jsonl") as f:
    out[n] = [json.loads(l) for l in f]
print("RESULT" + json.dumps(out))
"""


def test_one_and_four_devices_follow_the_same_trajectory(mnist_dir, tmp_path):
  env = dict(os.environ)
  env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
  env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"),
                                       env.get("PYTHONPATH", "")])
  script = _DEVICES_SCRIPT.format(tests=str(REPO / "tests"), mnist=str(mnist_dir),
                                  work=str(tmp_path / "run"))
  proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.split("RESULT", 1)[1])
  one, four = out["1"], out["4"]
  assert [(l["step"], l["split"]) for l in one] == [(l["step"], l["split"]) for l in four]
  for a, b in zip(one, four):
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-6)
    assert b["error"] == pytest.approx(a["error"], abs=1e-6)
