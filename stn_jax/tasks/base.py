"""What differs between the experiments (data, on-device preparation, loss and errors):
the task interface, and the registry of tasks by name.

A task is a subclass of :class:`Task` registered under the name a config's ``task``
field gives (:func:`register`); :func:`make_task` builds the one a config names, importing
``config.task_module`` first for a task defined elsewhere. The
trainer calls the methods below and nothing else. The built-in tasks are
``distorted_mnist`` (:mod:`stn_jax.train.mnist_task`), ``mnist_addition``
(:mod:`stn_jax.train.addition_task`), ``svhn``
(:mod:`stn_jax.train.svhn_task`) and ``cub`` (:mod:`stn_jax.train.cub_task`);
co-localisation trains no classifier and has a loop of its own
(:mod:`stn_jax.train.colocalisation`).
"""

from __future__ import annotations

import importlib
from typing import Callable, Iterator

import jax.numpy as jnp
import optax

from stn_jax.errors import ConfigError

__all__ = ["TASKS", "Task", "make_task", "register", "softmax_errors"]


def softmax_errors(logits, labels):
  """Per-example softmax cross-entropy and classification error (0 or 1) of ``logits``
  ``(N, classes)`` against integer ``labels`` ``(N,)``."""
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return loss, (jnp.argmax(logits, -1) != labels).astype(jnp.float32)


class Task:
  """The interface between an experiment and the trainer.

  Subclasses implement the methods that raise ``NotImplementedError`` and may
  override the others, whose defaults fit a classifier of single images. A task is
  built from the whole config (``self.config``) once per run, on every process.

  Attributes:
    input_shape: ``(H, W, C)`` of one network input, for the model's initialisation.
  """

  input_shape: tuple

  def __init__(self, config):
    self.config = config

  def model(self):
    """The Flax module to train."""
    raise NotImplementedError

  def train_iterator(self, process_index: int, process_count: int) -> Iterator[dict]:
    """Host batches (dicts of numpy arrays) of this process's share of the global batch, with
    ``get_state``/``set_state`` (a grain iterator, or a wrapper of one) so that a run
    resumes where it stopped."""
    raise NotImplementedError

  def device_batch(self, batch, key):
    """``(inputs, labels)`` of the network, made inside the jitted step from the global
    ``batch`` with the step's ``key`` (the paper's distortions are drawn here, fresh every
    step)."""
    raise NotImplementedError

  def losses(self, outputs, labels):
    """Per-example ``(loss, error)``, the error 0 or 1: training minimises the mean loss,
    evaluation sums both over the unmasked examples. Default: softmax classification."""
    return softmax_errors(outputs, labels)

  def eval_sets(self) -> tuple:
    """Names of the held-out sets, evaluated in this order; the first chooses the best
    checkpoint."""
    return ("validation", "test")

  def eval_batches(self, name: str, batch_size: int, process_index: int,
                   process_count: int) -> Iterator[dict]:
    """Fixed batches of the set ``name``, padded to ``batch_size`` and masked (``mask``)."""
    raise NotImplementedError

  def eval_forward(self, forward: Callable, images):
    """The evaluation outputs of ``images``, given ``forward`` (the network in evaluation
    mode). Default: ``forward(images)``; CUB averages ten crops."""
    return forward(images)

  def picture_inputs(self, images):
    """The network inputs of the evaluation ``images`` drawn in the transformer pictures.
    Default: the images themselves; CUB's are its centre crops."""
    return images

  def describe(self) -> dict:
    """What the data was, for the logs and ``results.json``."""
    raise NotImplementedError


TASKS: dict[str, type] = {}


def register(name: str):
  """A class decorator: registers a :class:`Task` subclass as the task ``name``.

  >>> @register("doctest_task")
  ... class Mine(Task):
  ...   pass
  >>> TASKS.pop("doctest_task") is Mine
  True
  """
  def add(cls):
    if not (isinstance(cls, type) and issubclass(cls, Task)):
      raise TypeError(f"register({name!r}) decorates a subclass of stn_jax.train.tasks.Task, "
                      f"not {cls!r}.")
    if name in TASKS and TASKS[name] is not cls:
      raise ValueError(f"A task named {name!r} is registered already ({TASKS[name].__module__}."
                       f"{TASKS[name].__qualname__}).")
    TASKS[name] = cls
    return cls
  return add


def make_task(config) -> Task:
  """The task named by ``config.task``, built from ``config``.

  A task defined outside the package is found through ``config.task_module``, the module
  that registers it (e.g. ``'my_project.my_task'``), imported here if its task is not
  registered yet.
  """
  module = config.get("task_module")
  if config.task not in TASKS and module:
    try:
      importlib.import_module(module)
    except ImportError as e:
      raise ConfigError(f"config.task_module {module!r}, which should register the task "
                        f"{config.task!r}, cannot be imported: {e}") from e
  if config.task not in TASKS:
    where = f" (config.task_module {module!r} does not register it)" if module else ""
    raise ConfigError(f"Unknown task {config.task!r}{where}; known: {sorted(TASKS)}. A task "
                      "of your own: set config.task_module to the module that registers it.")
  return TASKS[config.task](config)
