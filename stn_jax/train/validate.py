"""The settings of a run, checked before it reads data, compiles or writes anything.

``check_config`` raises :class:`stn_jax.errors.ConfigError` with a sentence that
names the field, the value and what to give instead. It reads only the config,
the workdir's path and the number of devices: no JAX, no data, so it costs
nothing and a test can call it directly. The settings only a task understands are
checked by the task (:meth:`stn_jax.tasks.Task.check_config`), called from here. What
needs the data (a corrupt file, a split smaller than a batch) is checked where the data
is read, which comes before the workdir is written.

>>> import ml_collections
>>> check_config(ml_collections.ConfigDict({"num_steps": 0}))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
stn_jax.errors.ConfigError: num_steps must be at least 1 (the training steps), got 0; ...
"""

from __future__ import annotations

import math
import os

from stn_jax import tasks
from stn_jax.errors import ConfigError

__all__ = ["check_config", "check_workdir"]

# Integer fields that must be at least 1 wherever a config has them, and what they count.
_AT_LEAST_ONE = {
    "batch_size": "the examples in a training batch",
    "eval_batch_size": "the examples in an evaluation batch",
    "num_steps": "the training steps",
    "log_every": "steps between log lines",
    "eval_every": "steps between evaluations",
    "checkpoint_every": "steps between checkpoints",
    "keep_checkpoints": "with 0, no checkpoint would be left to resume from",
    "decay_every": "steps between learning-rate decays",
    "encoder_steps": "the co-localisation encoder's training steps",
    "data.num_validation": "the validation examples, which choose the best checkpoint",
    "data.num_train": "the training examples; None takes them all",
    "data.num_eval": "the validation and test examples scored; None scores them all",
}
_SOURCES = ("auto", "idx", "tfds")
# Seeds, which NumPy and grain take as unsigned 32-bit integers.
_SEEDS = ("seed", "data.seed", "data.split_seed", "data.validation_seed", "data.test_seed")


_MISSING = object()


class _NoSuchPath(ConfigError, FileNotFoundError):
  """A setting names a path that does not exist (a FileNotFoundError, as where it is read)."""


def _get(config, dotted):
  """``config.a.b`` for ``'a.b'``, or ``_MISSING`` where the config has no such field."""
  node = config
  for key in dotted.split("."):
    if not hasattr(node, "keys") or key not in node:
      return _MISSING
    node = node[key]
  return node


def _fail(name, value, rule):
  raise ConfigError(f"{name} must be {rule}, got {value!r}; set --config.{name} to such a "
                    "value.")


def check_config(config, workdir=None, num_devices=None) -> None:
  """Raises ``ConfigError`` if a setting of ``config`` cannot work.

  Args:
    config: an experiment's ``ml_collections.ConfigDict``; fields it lacks are not checked.
    workdir: the run's directory; ``None``: not checked (see :func:`check_workdir`).
    num_devices: the devices of the mesh, for the task's own check
      (:meth:`stn_jax.tasks.Task.check_config`); ``None``: not checked.

  Raises:
    stn_jax.errors.ConfigError: the first problem found, as a sentence.
  """
  for name, what in _AT_LEAST_ONE.items():
    value = _get(config, name)
    if value is _MISSING or (value is None and name.startswith("data.")):  # None: all
      continue
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ConfigError(f"{name} must be at least 1 ({what}), got {value!r}; set "
                        f"--config.{name}=N with N >= 1.")
  for name in _SEEDS:
    value = _get(config, name)
    if value is not _MISSING and not (isinstance(value, int) and 0 <= value < 2**32):
      _fail(name, value, "an integer in [0, 2**32)")
  _check_optimiser(config)
  _check_data(config)
  for name in ("init_from", "encoder_from"):
    path = _get(config, name)
    if isinstance(path, str) and "://" not in path and not os.path.exists(path):
      raise _NoSuchPath(f"{name}={path!r} is not a checkpoint: it does not exist (looked "
                        f"from {os.getcwd()}); give --config.{name} the workdir of a finished "
                        "run, or leave it unset.")
  # What only the task knows: the batch's share per device, its data, its own fields (an
  # unknown task gets the defaults' checks; the trainer names what is known).
  task = tasks.find_task_class(config) if isinstance(_get(config, "task"), str) else None
  (task or tasks.Task).check_config(config, num_devices)
  encoder = _get(config, "encoder")
  if encoder is not _MISSING and hasattr(encoder, "keys") and not _get(config, "encoder_from"):
    try:
      check_config(encoder, num_devices=num_devices)
    except ConfigError as e:
      raise ConfigError(f"In the encoder's config (encoder.*): {e}".replace(
          "--config.", "--config.encoder.")) from None
  if workdir is not None:
    check_workdir(workdir)


def _check_optimiser(config):
  rate = _get(config, "learning_rate")
  if rate is not _MISSING and not (isinstance(rate, (int, float)) and math.isfinite(rate)
                                   and rate > 0):
    _fail("learning_rate", rate, "a positive finite number")
  momentum = _get(config, "momentum")
  if momentum is not _MISSING and not 0 <= momentum < 1:
    _fail("momentum", momentum, "in [0, 1)")
  for name in ("weight_decay", "localization_lr_multiplier", "decay_factor"):
    value = _get(config, name)
    if value is not _MISSING and not (math.isfinite(value) and value >= 0):
      _fail(name, value, "a finite number >= 0")


def _check_data(config):
  source = _get(config, "data.source")
  if source is not _MISSING and source not in _SOURCES:
    _fail("data.source", source, f"one of {', '.join(_SOURCES)} (IDX files if found, else "
          "TFDS; IDX files; TFDS)")


def check_workdir(workdir) -> None:
  """Raises ``ConfigError`` unless ``workdir`` is, or can become, a writable directory.

  A workdir that exists must be a directory (a run there is resumed); one that does
  not must lie under a writable directory, where it will be made. Remote paths
  (``gs://...``) are left to the file system that serves them.
  """
  if workdir is None or not str(workdir).strip():
    raise ConfigError("The workdir is empty; give --workdir=DIR, the directory for the run's "
                      "checkpoints and results.")
  workdir = os.fspath(workdir)
  if "://" in workdir:
    return
  path = os.path.abspath(workdir)
  if os.path.lexists(path) and not os.path.isdir(path):
    raise ConfigError(f"The workdir {path!r} is a file, not a directory; give --workdir a new "
                      "directory, or that of a run to resume.")
  existing = path
  while not os.path.lexists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ConfigError(f"The workdir {path!r} cannot be made: {existing!r} is a file, not a "
                      "directory; give --workdir a path under a directory.")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ConfigError(f"The workdir {path!r} cannot be written: {existing!r} is not writable "
                      "by this user; give --workdir a directory you can write to.")
