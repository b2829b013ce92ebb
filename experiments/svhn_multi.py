"""SVHN multi-digit (paper section 4.2, supplementary 1.4): st_cnn_multi.

  python -m stn_jax.main --config=experiments/svhn_multi.py --workdir=runs/svhn_multi
  python -m stn_jax.main --config=experiments/svhn_multi.py:offline \\
      --workdir=runs/svhn_multi_offline

The variants (64, 128, offline, smoke) and the data are as in svhn_cnn.py; the
paper's settings are below, as there, with the localisation nets at a tenth of the rate.
"""

from stn_jax.train.config import sibling

common = sibling(__file__, "common")


def get_config(arg=None):
  c, v = common.svhn_base(arg)
  c.model = "st_cnn_multi"
  # Supplementary 1.4: 400k steps of SGD, batch 128, 0.01 divided by ten every 80k,
  # weight decay 0.0005, localisation nets at a tenth of the base rate (dropout 0.5 is
  # the models' default).
  c.batch_size = 128
  c.eval_batch_size = 500
  c.num_steps = 400_000
  c.learning_rate = 0.01
  c.decay_every = 80_000
  c.weight_decay = 0.0005
  c.localization_lr_multiplier = 0.1
  c.eval_every = 10_000
  c.checkpoint_every = 5000
  if v["smoke"]:
    common.svhn_smoke(c)
  c.lock()
  return c
