"""``train_and_evaluate(config, workdir)``: the entry of every experiment, which hands the
config to its trainer (:mod:`stn_jax.train.trainers`): config -> task -> trainer -> the one
loop (:mod:`stn_jax.train.loop`) -> its actions."""

from __future__ import annotations

from stn_jax.train import trainers

__all__ = ["train_and_evaluate"]


def train_and_evaluate(config, workdir: str, *, devices=None) -> dict:
  """Trains ``config``'s experiment in ``workdir`` (resuming a run found there) with its
  trainer, and returns the contents of ``workdir/results.json``.

  Args:
    config: an ``ml_collections.ConfigDict`` from ``experiments/``.
    workdir: the run's directory.
    devices: the devices to train on (default: all of them); a trainer that runs on one
      device refuses them.

  Raises: as :func:`stn_jax.train.classifier.train_and_evaluate`.
  """
  return trainers.get(trainers.name_for(config)).train(config, workdir, devices=devices)
