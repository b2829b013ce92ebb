"""SVHN multi-digit (paper section 4.2, supplementary 1.4): st_cnn_multi.

  python -m stn_jax.main --config=experiments/svhn_multi.py --workdir=runs/svhn_multi
  python -m stn_jax.main --config=experiments/svhn_multi.py:offline --workdir=runs/svhn_multi_offline

The variants (64, 128, offline, smoke), the paper's defaults and
the data are as in svhn_cnn.py; only the network differs.
"""

from stn_jax.train.config import svhn_config


def get_config(arg=None):
  return svhn_config("st_cnn_multi", arg)
