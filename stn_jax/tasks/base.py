"""The task interface and the registry of tasks by name.

A task is a subclass of :class:`Task` registered under the name a config's ``task``
field gives (:func:`register`). :func:`task_class` finds it: registered already, or
registered by importing the module of that name (``stn_jax.tasks.<name>`` for a
classifier task, the package ``stn_jax.<name>`` for a task with a package of its own),
or by importing ``config.task_module`` for a task defined outside stn_jax. A task names
the trainer that runs it (:attr:`Task.trainer`) and checks the settings only it
understands (:meth:`Task.check_config`).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Callable, Iterator

import jax.numpy as jnp
import optax

from stn_jax.errors import ConfigError

__all__ = ["TASKS", "Task", "find_task_class", "make_task", "register", "softmax_errors",
           "task_class"]


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
    trainer: the name of the trainer that runs the task (:mod:`stn_jax.train.trainers`);
      a config's ``trainer`` field, where it has one, overrides it.
    examples_per_input: training examples one network input consumes (2 for a pair of
      digits), for the check that a batch fits in the training split.
  """

  input_shape: tuple
  trainer = "classifier"
  examples_per_input = 1

  def __init__(self, config):
    self.config = config

  @classmethod
  def check_config(cls, config, num_devices=None) -> None:
    """Raises :class:`ConfigError` for a setting this task cannot work with, before any
    data is read. Default: each device takes an equal share of every batch, and the
    training split (``data.num_train``, where given) holds at least one batch.

    Args:
      config: the experiment's config.
      num_devices: the devices of the mesh (None: not checked).
    """
    if num_devices is not None:
      for name in ("batch_size", "eval_batch_size"):
        value = config.get(name)
        if isinstance(value, int) and value % num_devices:
          raise ConfigError(
              f"{name} ({value}) must be divisible by the number of devices ({num_devices}), "
              f"since each device takes an equal share; give a multiple of {num_devices}, "
              f"e.g. {max(num_devices, value // num_devices * num_devices)}.")
    data = config.get("data") or {}
    num_train, batch = data.get("num_train"), config.get("batch_size")
    if isinstance(num_train, int) and isinstance(batch, int):
      per = cls.examples_per_input
      if num_train < per * batch:
        raise ConfigError(
            f"data.num_train ({num_train}) holds fewer training examples than one batch "
            f"(batch_size {batch}{' pairs of digits' if per == 2 else ''}); give "
            f"--config.data.num_train >= {per * batch} or a smaller batch_size.")

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
      raise TypeError(f"register({name!r}) decorates a subclass of stn_jax.tasks.Task, "
                      f"not {cls!r}.")
    if name in TASKS and TASKS[name] is not cls:
      raise ValueError(f"A task named {name!r} is registered already ({TASKS[name].__module__}."
                       f"{TASKS[name].__qualname__}).")
    TASKS[name] = cls
    return cls
  return add


def _import(module, config):
  try:
    importlib.import_module(module)
  except ImportError as e:
    raise ConfigError(f"config.task_module {module!r}, which should register the task "
                      f"{config.task!r}, cannot be imported: {e}") from e


def _import_builtin(name):
  """Imports the built-in module that registers the task ``name``, if there is one."""
  for module in (f"stn_jax.tasks.{name}", f"stn_jax.{name}"):
    if importlib.util.find_spec(module) is not None:
      importlib.import_module(module)
      return


def find_task_class(config):
  """The :class:`Task` subclass ``config.task`` names, or None if none is registered under
  that name (after importing ``config.task_module`` and the built-in module of that name).
  """
  name, module = config.get("task"), config.get("task_module")
  if name not in TASKS and module:
    _import(module, config)
  if name not in TASKS and isinstance(name, str) and name.isidentifier():
    _import_builtin(name)
  return TASKS.get(name)


def task_class(config) -> type:
  """The :class:`Task` subclass ``config.task`` names.

  A task defined outside the package is found through ``config.task_module``, the module
  that registers it (e.g. ``'my_project.my_task'``), imported here if its task is not
  registered yet.

  Raises:
    ConfigError: no task of that name is registered; the message lists the known ones.
  """
  found = find_task_class(config)
  if found is None:
    module = config.get("task_module")
    where = f" (config.task_module {module!r} does not register it)" if module else ""
    _import_builtin_all()
    raise ConfigError(f"Unknown task {config.get('task')!r}{where}; known: {sorted(TASKS)}. A "
                      "task of your own: set config.task_module to the module that registers "
                      "it.")
  return found


def _import_builtin_all():
  """Imports every built-in task module, so that an error can list them all."""
  import pkgutil  # pylint: disable=import-outside-toplevel
  for info in pkgutil.iter_modules(importlib.import_module("stn_jax.tasks").__path__):
    if info.name != "base":
      importlib.import_module(f"stn_jax.tasks.{info.name}")
  for info in pkgutil.iter_modules(importlib.import_module("stn_jax").__path__):
    if info.ispkg and importlib.util.find_spec(f"stn_jax.{info.name}.task") is not None:
      importlib.import_module(f"stn_jax.{info.name}")


def make_task(config) -> Task:
  """The task named by ``config.task``, built from ``config`` (see :func:`task_class`)."""
  return task_class(config)(config)
