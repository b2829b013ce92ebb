"""``train_and_evaluate(config, workdir)``: the entry of every experiment, which hands
the config to its task's training loop.

Every task trains in :func:`stn_jax.train.trainer.train_and_evaluate` (a classifier,
its loss, evaluation and results), except co-localisation, which trains no classifier
and has a loop of its own (:mod:`stn_jax.train.colocalisation`); both loops share the
pieces of :mod:`stn_jax.train.loop`.
"""

from __future__ import annotations

from stn_jax.errors import ConfigError
from stn_jax.train import colocalisation, trainer

__all__ = ["train_and_evaluate"]


def train_and_evaluate(config, workdir: str, *, devices=None) -> dict:
  """Trains ``config``'s experiment in ``workdir`` (resuming a run found there) with the
  loop of its task, and returns the contents of ``workdir/results.json``.

  Args:
    config: an ``ml_collections.ConfigDict`` from ``experiments/``.
    workdir: the run's directory.
    devices: the devices of the trainer's mesh (default: all of them); the
      co-localisation loop runs on JAX's default device and takes none.

  Raises: as :func:`stn_jax.train.trainer.train_and_evaluate`.
  """
  if config.task == "colocalisation":
    if devices is not None:
      raise ConfigError("The co-localisation loop runs on JAX's default device; do not pass "
                        "`devices` for it.")
    return colocalisation.train_colocalisation(config, workdir)
  return trainer.train_and_evaluate(config, workdir, devices=devices)
