"""What several experiment configs share: the results budget of docs/results.md, the
smoke variants that shrink a run to seconds, and the SVHN data section. Loaded by the
config files with ``stn_jax.train.config.sibling(__file__, "common")``."""

from ml_collections import config_dict

from stn_jax.train.config import base_config, mnist_data, parse_variant

# docs/results.md's budget for the distorted-MNIST tables (why not the paper's 150k steps
# of 256: docs/paper_notes.md, "First results"): steps, batch, and the schedule of
# results_budget.
RESULTS_STEPS, RESULTS_BATCH = 3000, 64
_DECAY_AT = 0.4  # fraction of the steps between learning-rate divisions
_EVALUATIONS = 10  # validation points per run (each is a checkpoint)


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
