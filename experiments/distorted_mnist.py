"""Distorted MNIST (paper section 4.1, supplementary 1.1): one model on one distortion.

The variant names the distortion, the model and optionally the transform:

  python -m stn_jax.main --config=experiments/distorted_mnist.py:rts,st_cnn \\
      --workdir=runs/rts_st_cnn
  python -m stn_jax.main --config=experiments/distorted_mnist.py:rts,st_cnn,tps \\
      --workdir=runs/rts_st_cnn_tps
  python -m stn_jax.main --config=experiments/distorted_mnist.py:tc,fcn --workdir=runs/tc_fcn

Distortions: r, rts, p, e, tc, plain. Models: fcn, cnn, st_fcn, st_cnn.
Transforms (ST models): affine (default), projective, tps.
Add ``smoke`` for a few steps on a few digits (what the tests run), e.g.
``:rts,st_cnn,smoke``. MNIST comes from ``$STN_MNIST_DIR`` (IDX files), or
``--config.data.source=tfds`` downloads it.

``results`` is the budget of docs/results.md instead of the paper's: 3000 steps of 64,
the rate divided by ten at 40% and 80% of them, ten evaluations (why: docs/paper_notes.md,
"First results"). ``loc0.3`` or ``loc0.1`` trains the localisation net at that fraction of
the rate; the page's TC ST-CNN is ``:tc,st_cnn,results,loc0.3`` (chosen on the validation
split: docs/paper_notes.md, "First results").
"""

from stn_jax.train.config import base_config, mnist_data, parse_variant, sibling

common = sibling(__file__, "common")

DISTORTIONS = {"r": "R", "rts": "RTS", "p": "P", "e": "E", "tc": "TC", "plain": None}
LOC_RATES = {"loc0.1": 0.1, "loc0.3": 0.3}  # the localisation net's fraction of the rate
CHOICES = {"distortion": tuple(DISTORTIONS), "model": ("fcn", "cnn", "st_fcn", "st_cnn"),
           "transform": ("affine", "projective", "tps"), "smoke": (True,), "results": (True,),
           "loc": tuple(LOC_RATES)}
DEFAULTS = {"distortion": "rts", "model": "st_cnn", "transform": None, "smoke": False,
            "results": False, "loc": None}
def get_config(arg=None):
  v = parse_variant(arg, CHOICES, DEFAULTS)
  c = base_config()
  mnist_data(c)
  c.task = "distorted_mnist"
  c.model = v["model"]
  c.data.distortion = DISTORTIONS[v["distortion"]]
  if v["transform"] is not None:
    if not v["model"].startswith("st_"):
      raise ValueError(f"A transform ({v['transform']}) applies to st_fcn and st_cnn only, not "
                       f"{v['model']}.")
    c.model_kwargs.transform = v["transform"]
  if v["loc"] is not None:
    if not v["model"].startswith("st_"):
      raise ValueError(f"{v['loc']} sets the localisation net's rate: st_fcn and st_cnn only, "
                       f"not {v['model']}.")
    c.localization_lr_multiplier = LOC_RATES[v["loc"]]
  if v["results"]:
    common.results_budget(c)
  if v["smoke"]:  # a few steps on a few digits (what the tests run)
    common.mnist_smoke(c, num_steps=6, decay_every=4, every=3)
  c.lock()
  return c
