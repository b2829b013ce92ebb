"""Runs made before the training side was redesigned (commit 9060d31) still resume.

``old_runs/`` holds two workdirs that the code of 9060d31 wrote, stopped after step 3: the
distorted-MNIST smoke ST-CNN and the co-localisation smoke run (with its encoder), both on
the digit-like IDX files of ``tests/conftest.py``'s ``mnist_dir``. Beside them, the final
parameters that code reached when it ran each config straight through (6 and 4 steps).
Resumed by today's trainers, each must end at those parameters bit for bit: the checkpoint
format, the run identity and the trajectory all survived the redesign.
"""

import json
import pathlib
import shutil

import jax
import numpy as np
import pytest

from experiment_configs import configure
from stn_jax import train
from stn_jax.runtime import checkpoint as ckpt

OLD = pathlib.Path(__file__).resolve().parent / "old_runs"
RUNS = {"classifier": ("distorted_mnist", "rts,st_cnn,smoke", 6),
        "colocalisation": ("colocalisation", "t,8,smoke", 4)}


def _flat(params):
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_run_of_the_old_code_resumes_to_its_final_parameters(name, mnist_dir, tmp_path):
  experiment, variant, steps = RUNS[name]
  workdir = tmp_path / name
  shutil.copytree(OLD / name, workdir)
  assert max(int(p.name) for p in (workdir / "checkpoints").iterdir()) == 3
  results = train.train_and_evaluate(
      configure(experiment, variant, **{"data.mnist_dir": str(mnist_dir)}), str(workdir))
  assert results["steps"] == steps
  got = _flat(ckpt.params_from(str(workdir))[0])
  want = np.load(OLD / f"{name}_final_params.npz")
  assert sorted(got) == sorted(want.files)
  for key in want.files:
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  # The records of the old steps are kept and the new ones follow them, once each.
  with open(workdir / "metrics.jsonl", encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  train_steps = [r["step"] for r in rows if r["split"] == "train"]
  assert train_steps == sorted(set(train_steps)) and train_steps[-1] == steps


def test_an_old_run_with_other_settings_is_refused(mnist_dir, tmp_path):
  workdir = tmp_path / "classifier"
  shutil.copytree(OLD / "classifier", workdir)
  config = configure("distorted_mnist", "rts,st_cnn,smoke",
                     **{"data.mnist_dir": str(mnist_dir), "learning_rate": 0.5})
  with pytest.raises(ValueError, match="holds checkpoints of another run: learning_rate"):
    train.train_and_evaluate(config, str(workdir))
