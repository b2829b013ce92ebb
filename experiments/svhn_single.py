"""SVHN multi-digit (paper section 4.2, supplementary 1.4): st_cnn_single.

  python -m stn_jax.main --config=experiments/svhn_single.py --workdir=runs/svhn_single
  python -m stn_jax.main --config=experiments/svhn_single.py:offline --workdir=runs/svhn_single_offline

The variants (64, 128, offline, smoke), the paper's defaults and
the data are as in svhn_cnn.py; only the network differs.
"""

from stn_jax.train.config import svhn_config


def get_config(arg=None):
  return svhn_config("st_cnn_single", arg)
