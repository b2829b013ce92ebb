"""The defaults every experiment config starts from, and the variant parser.

Config files in ``experiments/`` call :func:`base_config`, add their data section (e.g.
:func:`mnist_data`), set what their experiment needs, and parse their variant string with
:func:`parse_variant`.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

__all__ = ["RESULTS_BATCH", "RESULTS_STEPS", "base_config", "mnist_data", "mnist_smoke",
           "mnist_source", "parse_variant", "results_budget", "svhn_base", "svhn_smoke"]

# docs/results.md's budget for the distorted-MNIST tables (why not the paper's 150k steps
# of 256: docs/paper_notes.md, "First results"): steps, batch, and the schedule of
# results_budget.
RESULTS_STEPS, RESULTS_BATCH = 3000, 64
_DECAY_AT = 0.4  # fraction of the steps between learning-rate divisions
_EVALUATIONS = 10  # validation points per run (each is a checkpoint)


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


def results_budget(c, steps: int = RESULTS_STEPS, batch: int = RESULTS_BATCH,
                   decay_at: float = _DECAY_AT):
  """Sets ``c`` to ``steps`` steps of ``batch``, the rate divided by ten at each
  ``decay_at`` of them (by default 40%: at 40% and 80%), evaluated and checkpointed ten
  times: the ``results`` variant of the MNIST experiments."""
  c.num_steps = steps
  c.batch_size = batch
  c.decay_every = max(round(decay_at * steps), 1)
  c.eval_every = max(steps // _EVALUATIONS, 1)
  c.checkpoint_every = max(steps // _EVALUATIONS, 1)
  c.log_every = max(min(100, steps // _EVALUATIONS), 1)


def mnist_smoke(c, *, num_steps: int, decay_every: int, every: int):
  """Makes ``c`` a few steps on a few MNIST digits with a small network: seconds on a CPU.

  ``every`` is the evaluation and checkpoint interval; the log interval is 2 steps.
  """
  c.model_kwargs.param_budget = 20_000
  c.data.num_validation = 64
  c.data.num_train = 128
  c.data.num_eval = 32
  c.batch_size = 16
  c.eval_batch_size = 16
  c.num_steps = num_steps
  c.decay_every = decay_every
  c.log_every = 2
  c.eval_every = every
  c.checkpoint_every = every


SVHN_CHOICES = {"size": ("64", "128"), "offline": (True,), "smoke": (True,)}
SVHN_DEFAULTS = {"size": "64", "offline": False, "smoke": False}


def svhn_base(arg=None):
  """The data part of an SVHN experiment's config (supplementary 1.4) and its variant.

  Args:
    arg: the variant: ``64`` (default) or ``128``; ``offline`` for the MNIST-numbers
      stand-in (not SVHN); ``smoke`` for a few steps of a narrow network.

  Returns:
    ``(config, variant)``: :func:`base_config` with the SVHN task and data set, and the
    parsed variant; the experiment's file sets the model and the training settings.
  """
  v = parse_variant(arg, SVHN_CHOICES, SVHN_DEFAULTS)
  c = base_config()
  c.task = "svhn"
  mnist_data(c)  # MNIST-numbers, the offline stand-in, is made of MNIST digits
  c.data.dataset = "mnist_numbers" if v["offline"] else "svhn"
  c.data.size = int(v["size"])
  # Prepared datasets; None: $STN_TFDS_DIR, then data/tfds.
  c.data.data_dir = config_dict.placeholder(str)
  c.data.use_extra = True  # train + extra, as the paper's references [1, 2]
  return c, v


def svhn_smoke(c):
  """Makes ``c`` a few steps of a narrow SVHN network on a few numbers."""
  c.model_kwargs.width = 0.0625
  c.data.num_validation = 32
  c.data.num_train = 160
  c.data.num_eval = 16
  c.batch_size = 8
  c.eval_batch_size = 8
  c.num_steps = 4
  c.decay_every = 2
  c.log_every = 2
  c.eval_every = 2
  c.checkpoint_every = 2
