"""The registry of trainers (stn_jax.train.trainers) and how a config finds its trainer."""

import ml_collections
import pytest

from stn_jax import tasks
from stn_jax.errors import ConfigError
from stn_jax.train import trainers


def _config(**fields):
  return ml_collections.ConfigDict({"task": "distorted_mnist", **fields})


def test_a_config_runs_under_its_tasks_trainer_unless_it_names_one():
  assert trainers.name_for(_config()) == "classifier"
  assert trainers.name_for(_config(task="colocalisation")) == "colocalisation"
  assert trainers.name_for(_config(trainer="colocalisation")) == "colocalisation"
  assert trainers.get("classifier").evaluate is not None
  coloc = trainers.get("colocalisation")
  assert coloc.evaluate is None and "no held-out sets" in coloc.not_evaluable


def test_an_unknown_trainer_is_refused_with_the_known_ones():
  with pytest.raises(ConfigError, match=r"Unknown trainer 'nope'; known: \[.*'classifier'"):
    trainers.get("nope")


def test_a_trainer_refuses_a_task_that_runs_under_another():
  with pytest.raises(ConfigError, match="runs under the 'colocalisation' trainer, not "
                                        "'classifier'"):
    trainers.check_runs_under(_config(task="colocalisation"), "classifier")
  trainers.check_runs_under(_config(), "classifier")


def test_a_trainer_of_ones_own_registers_and_runs(tmp_path):
  seen = []

  def train(config, workdir, *, devices=None):
    seen.append((config.task, workdir, devices))
    return {"steps": 0}

  trainers.register("my_trainer", train)
  try:
    from stn_jax import train as train_lib  # pylint: disable=import-outside-toplevel
    out = train_lib.train_and_evaluate(_config(trainer="my_trainer"), str(tmp_path))
    assert out == {"steps": 0} and seen == [("distorted_mnist", str(tmp_path), None)]
    with pytest.raises(ValueError, match="registered already"):
      trainers.register("my_trainer", lambda *a, **k: None)
  finally:
    trainers.TRAINERS.pop("my_trainer")


def test_built_in_tasks_are_found_by_name_without_an_import():
  for name in ("distorted_mnist", "mnist_addition", "svhn", "cub", "colocalisation"):
    assert tasks.task_class(ml_collections.ConfigDict({"task": name})).__name__
  with pytest.raises(ConfigError, match=r"Unknown task 'nope'.*'colocalisation'"):
    tasks.task_class(ml_collections.ConfigDict({"task": "nope"}))
