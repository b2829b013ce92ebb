"""SVHN multi-digit (paper section 4.2, supplementary 1.4): svhn_cnn.

  python -m stn_jax.main --config=experiments/svhn_cnn.py --workdir=runs/svhn_cnn
  python -m stn_jax.main --config=experiments/svhn_cnn.py:128 --workdir=runs/svhn_cnn_128

Reads the real SVHN prepared by
python -m stn_jax.datasets.prepare svhn --manual_dir=DIR [--config=128] (see
data/README.md; a run on unprepared data stops with that command). Without SVHN,
:offline trains on MNIST-numbers, a stand-in made of MNIST digits in the same
format: it is not SVHN and its results say nothing about SVHN. smoke runs a
few steps of a narrow network (e.g. :offline,smoke). The paper's defaults:
SGD, batch 128, 0.01 divided by ten every 80k steps, 400k steps, weight decay
0.0005, dropout 0.5, localisation nets at a tenth of the base rate; training on
train + extra less 5k validation numbers (--config.data.use_extra=False for
train alone).
"""

from stn_jax.train.config import sibling

common = sibling(__file__, "common")


def get_config(arg=None):
  c, v = common.svhn_base(arg)
  c.model = "svhn_cnn"
  # Supplementary 1.4: 400k steps of SGD, batch 128, 0.01 divided by ten every 80k,
  # weight decay 0.0005 (dropout 0.5 is the models' default).
  c.batch_size = 128
  c.eval_batch_size = 500
  c.num_steps = 400_000
  c.learning_rate = 0.01
  c.decay_every = 80_000
  c.weight_decay = 0.0005
  c.eval_every = 10_000
  c.checkpoint_every = 5000
  if v["smoke"]:
    common.svhn_smoke(c)
  c.lock()
  return c
