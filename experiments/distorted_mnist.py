"""Distorted MNIST (paper section 4.1, supplementary 1.1): one model on one distortion.

The variant names the distortion, the model and optionally the transform:

  python -m stn_jax.main --config=experiments/distorted_mnist.py:rts,st_cnn --workdir=runs/rts_st_cnn
  python -m stn_jax.main --config=experiments/distorted_mnist.py:rts,st_cnn,tps --workdir=runs/rts_st_cnn_tps
  python -m stn_jax.main --config=experiments/distorted_mnist.py:tc,fcn --workdir=runs/tc_fcn

Distortions: r, rts, p, e, tc, plain. Models: fcn, cnn, st_fcn, st_cnn.
Transforms (ST models): affine (default), projective, tps.
Add ``smoke`` for a few steps on a few digits (what the tests run), e.g.
``:rts,st_cnn,smoke``. MNIST comes from ``$STN_MNIST_DIR`` (IDX files), or
``--config.data.source=tfds`` downloads it.
"""

from stn_jax.train.config import base_config, mnist_smoke, parse_variant

DISTORTIONS = {"r": "R", "rts": "RTS", "p": "P", "e": "E", "tc": "TC", "plain": None}
CHOICES = {"distortion": tuple(DISTORTIONS), "model": ("fcn", "cnn", "st_fcn", "st_cnn"),
           "transform": ("affine", "projective", "tps"), "smoke": (True,)}
DEFAULTS = {"distortion": "rts", "model": "st_cnn", "transform": None, "smoke": False}


def get_config(arg=None):
  v = parse_variant(arg, CHOICES, DEFAULTS)
  c = base_config()
  c.task = "distorted_mnist"
  c.model = v["model"]
  c.data.distortion = DISTORTIONS[v["distortion"]]
  if v["transform"] is not None:
    if not v["model"].startswith("st_"):
      raise ValueError(f"A transform ({v['transform']}) applies to st_fcn and st_cnn only, not "
                       f"{v['model']}.")
    c.model_kwargs.transform = v["transform"]
  if v["smoke"]:  # a few steps on a few digits (what the tests run)
    mnist_smoke(c, num_steps=6, decay_every=4, every=3)
  c.lock()
  return c
