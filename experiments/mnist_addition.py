"""MNIST addition (supplementary 1.1): the sum of two independently distorted digits.

Each digit sits in its own 42x42 channel under its own RTS; the network predicts
their sum (19 classes). The variant names the model and optionally the transform:

  python -m stn_jax.main --config=experiments/mnist_addition.py:2xst_fcn --workdir=runs/add_2xst_fcn
  python -m stn_jax.main --config=experiments/mnist_addition.py:st_fcn,affine --workdir=runs/add_st_fcn
  python -m stn_jax.main --config=experiments/mnist_addition.py:cnn --workdir=runs/add_cnn

Models: fcn, cnn, st_fcn, 2xst_fcn (default). Transforms (ST models): tps (the
paper's picture of 2xST-FCN uses a TPS), affine, projective. Add ``smoke`` for a
few steps on a few digits. The paper's SGD: batch 256, 0.01 divided by ten every
50k steps, 150k steps; all models near the same parameter count (400k here).
MNIST comes from ``$STN_MNIST_DIR``, or ``--config.data.source=tfds``.
"""

from stn_jax.train.config import base_config, parse_variant

CHOICES = {"model": ("fcn", "cnn", "st_fcn", "2xst_fcn"),
           "transform": ("tps", "affine", "projective"), "smoke": (True,)}
DEFAULTS = {"model": "2xst_fcn", "transform": None, "smoke": False}


def get_config(arg=None):
  v = parse_variant(arg, CHOICES, DEFAULTS)
  c = base_config()
  c.task = "mnist_addition"
  c.model = v["model"]
  if v["transform"] is not None:
    if v["model"] not in ("st_fcn", "2xst_fcn"):
      raise ValueError(f"A transform ({v['transform']}) applies to st_fcn and 2xst_fcn only, "
                       f"not {v['model']}.")
    c.model_kwargs.transform = v["transform"]
  if v["smoke"]:
    c.model_kwargs.param_budget = 20_000
    c.data.num_validation = 64
    c.data.num_train = 128
    c.data.num_eval = 32
    c.batch_size = 16
    c.eval_batch_size = 16
    c.num_steps = 4
    c.decay_every = 2
    c.log_every = 2
    c.eval_every = 2
    c.checkpoint_every = 2
  c.lock()
  return c
