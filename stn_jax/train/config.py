"""The config schema every experiment starts from: :func:`base_config` (the fields the
trainers read, with the paper's defaults), the MNIST data section, the fields outside a
run's identity (:data:`NOT_IDENTITY`), and the variant parser of the config files.

Config files in ``experiments/`` call :func:`base_config`, add their data section (e.g.
:func:`mnist_data`), set what their experiment needs, and parse their variant string with
:func:`parse_variant`; what several of them share is in ``experiments/common.py``, which
they load with :func:`sibling`.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import ml_collections
from ml_collections import config_dict

from stn_jax.runtime import checkpoint

__all__ = ["NOT_IDENTITY", "base_config", "check_workdir", "mnist_data", "mnist_source",
           "parse_variant", "run_identity", "sibling"]

# Config fields that change nothing the run computes on its way: how long it runs (a run may
# be extended), how often it logs, evaluates, draws and saves, how evaluation is batched and
# which fixed sets it scores, where the data lies on disk and how it is read (IDX files or
# TFDS: the same digits). Every other field is part of the run's identity: a workdir refuses
# to resume a run whose identity differs.
NOT_IDENTITY = frozenset({
    "num_steps", "log_every", "eval_every", "checkpoint_every", "checkpoint_minutes",
    "keep_checkpoints", "pictures", "picture_every", "tensorboard", "eval_batch_size",
    "num_shown", "data.num_eval", "data.mnist_dir", "data.data_dir", "data.source",
    "data.validation_seed", "data.test_seed",
})


def run_identity(config) -> dict:
  """The settings that fix ``config``'s trajectory: every field but :data:`NOT_IDENTITY`,
  flattened to dotted names."""
  return checkpoint.run_identity(config, NOT_IDENTITY)


def check_workdir(config, workdir: str) -> None:
  """Raises ``ConfigError`` if ``workdir`` holds checkpoints of a run with another
  identity than ``config``'s (see :func:`run_identity`), before any work."""
  checkpoint.check_workdir(config, workdir, NOT_IDENTITY)


def base_config() -> ml_collections.ConfigDict:
  """The fields the trainer reads: the task and model, an empty ``data`` section (see
  :func:`mnist_data`), and the training, evaluation and checkpoint settings, which default
  to the paper's distorted-MNIST SGD; each experiment's file overrides what differs."""
  c = ml_collections.ConfigDict()
  c.task = config_dict.placeholder(str)
  c.model = config_dict.placeholder(str)
  c.model_kwargs = ml_collections.ConfigDict()
  c.seed = 0
  c.data = ml_collections.ConfigDict()

  # SGD as in the paper (supplementary 1.1): batch 256, 0.01, /10 every 50k, 150k steps.
  c.batch_size = 256
  c.eval_batch_size = 1000
  c.num_steps = 150_000
  c.learning_rate = 0.01
  c.decay_every = 50_000
  c.decay_factor = 0.1
  c.momentum = 0.9
  c.weight_decay = 0.0
  c.localization_lr_multiplier = 1.0

  c.log_every = 100
  c.eval_every = 5000
  c.checkpoint_every = 5000
  # Also a checkpoint every this many minutes of wall-clock time (0: only on the step
  # interval), so that a killed run loses at most that much; SIGINT/SIGTERM save too.
  c.checkpoint_minutes = 10.0
  c.keep_checkpoints = 3
  c.init_from = config_dict.placeholder(str)
  c.pictures = 16  # validation inputs in each picture of what the transformers do (0: none)
  c.picture_every = config_dict.placeholder(int)  # None: at every evaluation
  c.tensorboard = True
  return c


def mnist_source(c):
  """Adds where MNIST is read from to ``c.data``."""
  # 'idx': IDX files (data.mnist_dir, $STN_MNIST_DIR or data/mnist); 'tfds': a download
  # through TFDS on first use; 'auto': 'idx' when a directory is named or data/mnist exists,
  # else 'tfds'. The digits are the same either way.
  c.data.source = "auto"
  c.data.mnist_dir = config_dict.placeholder(str)  # None: $STN_MNIST_DIR, then data/mnist


def mnist_data(c):
  """Adds MNIST's source and splits to ``c.data``: the validation digits carved from the
  training files, optional caps on the digits used, and the seeds of the fixed
  evaluation sets."""
  mnist_source(c)
  c.data.num_validation = 5000  # carved from the training files (seeded)
  c.data.split_seed = 0
  c.data.num_train = config_dict.placeholder(int)  # None: every remaining training digit
  c.data.num_eval = config_dict.placeholder(int)  # None: the whole validation/test sets
  c.data.validation_seed = 1
  c.data.test_seed = 2


def parse_variant(arg, choices: dict, defaults: dict) -> dict:
  """Reads a config-file argument like ``'rts,st_cnn,tps,smoke'``.

  Args:
    arg: the text after ``:`` in ``--config=file.py:arg`` (None or '' for defaults).
    choices: group name -> the tokens it accepts, e.g. ``{'model': ('fcn', 'cnn')}``;
      a group whose tokens are ``(True,)`` is a flag named by the group.
    defaults: group name -> the value when no token of the group is given.

  Returns:
    group name -> chosen token (flags: True or False).
  """
  chosen = dict(defaults)
  seen = set()
  for token in filter(None, (t.strip() for t in (arg or "").split(","))):
    token = token.lower()
    groups = [g for g, tokens in choices.items()
              if token in tokens or (tokens == (True,) and token == g)]
    if not groups:
      valid = "; ".join(f"{g}: {', '.join(map(str, t)) if t != (True,) else g}"
                        for g, t in choices.items())
      raise ValueError(f"Unknown variant {token!r}. Valid variant parts ({valid}).")
    group = groups[0]
    if group in seen:
      raise ValueError(f"The variant {arg!r} names the {group} twice.")
    seen.add(group)
    chosen[group] = True if choices[group] == (True,) else token
  return chosen


def sibling(config_file: str, name: str):
  """The module ``name`` beside ``config_file`` (e.g. ``experiments/common.py`` for a
  config file in ``experiments/``), loaded once per path.

  Config files are loaded by path, not as a package, so they cannot import each other by
  name; this loads a neighbour the same way.
  """
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), f"{name}.py")
  key = f"_stn_experiments_{abs(hash(path))}_{name}"
  if key not in sys.modules:
    spec = importlib.util.spec_from_file_location(key, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    try:
      spec.loader.exec_module(module)
    except BaseException:
      del sys.modules[key]
      raise
  return sys.modules[key]
