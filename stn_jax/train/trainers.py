"""The registry of trainers by name: what turns a task's config into a trained run.

A trainer is registered under a name (:func:`register`) with the function that trains
(``train(config, workdir, *, devices=None) -> results``) and, if its runs can be
evaluated again from a checkpoint, the function that does so. A config's trainer is its
``trainer`` field where it has one, else its task's (:attr:`stn_jax.tasks.Task.trainer`).
:func:`get` finds a trainer registered already, or registered by importing the module of
its name: ``stn_jax.train.<name>``, then the package ``stn_jax.<name>``.

>>> sorted(k for k in ("classifier",) if get(k).evaluate is not None)
['classifier']
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from typing import Callable, Optional

from stn_jax import tasks
from stn_jax.errors import ConfigError

__all__ = ["TRAINERS", "Trainer", "check_runs_under", "get", "name_for", "register"]


@dataclasses.dataclass(frozen=True)
class Trainer:
  """A registered trainer.

  Attributes:
    name: its name.
    train: ``train(config, workdir, *, devices=None) -> results``.
    evaluate: ``evaluate(config, workdir, *, which, sets, pictures_of) -> dict``, or None.
    not_evaluable: without ``evaluate``, the sentence that says where such a run's
      evaluation is instead.
  """
  name: str
  train: Callable
  evaluate: Optional[Callable] = None
  not_evaluable: str = "This run cannot be evaluated from a checkpoint."


TRAINERS: dict[str, Trainer] = {}


def register(name: str, train: Callable, *, evaluate: Optional[Callable] = None,
             not_evaluable: Optional[str] = None) -> Trainer:
  """Registers the trainer ``name``; returns it."""
  if name in TRAINERS and TRAINERS[name].train is not train:
    raise ValueError(f"A trainer named {name!r} is registered already "
                     f"({TRAINERS[name].train.__module__}).")
  trainer = Trainer(name, train, evaluate,
                    not_evaluable or "This run cannot be evaluated from a checkpoint.")
  TRAINERS[name] = trainer
  return trainer


def get(name: str) -> Trainer:
  """The trainer ``name``, importing the module that registers it on first use."""
  if name not in TRAINERS and isinstance(name, str) and name.isidentifier():
    for module in (f"stn_jax.train.{name}", f"stn_jax.{name}"):
      if importlib.util.find_spec(module) is not None:
        importlib.import_module(module)
        break
  if name not in TRAINERS:
    raise ConfigError(f"Unknown trainer {name!r}; known: {sorted(TRAINERS)}. Leave "
                      "config.trainer unset to use the task's own.")
  return TRAINERS[name]


def name_for(config) -> str:
  """The name of the trainer that runs ``config``: its ``trainer`` field, else its task's."""
  return config.get("trainer") or tasks.task_class(config).trainer


def check_runs_under(config, name: str) -> None:
  """Raises :class:`ConfigError` unless ``config`` runs under the trainer ``name``."""
  wanted = name_for(config)
  if wanted != name:
    raise ConfigError(f"The task {config.task!r} runs under the {wanted!r} trainer, not "
                      f"{name!r}: run it with stn_jax.train.train_and_evaluate.")
