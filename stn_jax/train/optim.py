"""The paper's optimiser: SGD with a step schedule, weight decay and a
learning-rate multiplier for the localisation nets.

Every experiment in the paper trains with SGD at a base rate divided by ten at
fixed intervals (MNIST: 0.01, /10 every 50k steps; SVHN: 0.01, /10 every 80k).
SVHN adds weight decay 0.0005 and trains the localisation nets at a tenth of
the base rate. The localisation parameters are found by name
(:func:`stn_jax.nn.localization_mask`).
"""

from __future__ import annotations

import math

import jax
import optax

from stn_jax.nn import localization_mask

__all__ = ["learning_rate_schedule", "make_optimizer"]


def learning_rate_schedule(base: float, decay_every: int, decay_factor: float = 0.1):
  """``base`` times ``decay_factor ** (step // decay_every)``: optax's staircase
  exponential decay, with the arguments checked first.

  >>> round(float(learning_rate_schedule(0.01, 50_000)(120_000)), 10)
  0.0001
  """
  if not (math.isfinite(base) and base > 0):
    raise ValueError(f"The learning rate must be a positive finite number, got {base}.")
  if decay_every <= 0:
    raise ValueError(f"`decay_every` must be a positive number of steps, got {decay_every}.")

  return optax.exponential_decay(base, transition_steps=decay_every, decay_rate=decay_factor,
                                 staircase=True)


def make_optimizer(params, *, learning_rate: float, decay_every: int,
                   decay_factor: float = 0.1, momentum: float = 0.9,
                   weight_decay: float = 0.0, localization_lr_multiplier: float = 1.0,
                   nesterov: bool = False):
  """SGD (with momentum) for ``params``, localisation nets at ``localization_lr_multiplier``.

  Weight decay is the classic L2 form (``weight_decay * w`` added to the
  gradient before the momentum), as the Torch and Caffe trainers of the time
  applied it, to every parameter. The localisation multiplier scales the
  final update of the localisation parameters, which equals training them at
  that fraction of the learning rate (momentum is linear).

  Args:
    params: the parameter tree (only its structure and names are used).
    learning_rate, decay_every, decay_factor: see
      :func:`learning_rate_schedule`.
    momentum: SGD momentum (0 for plain SGD).
    weight_decay: L2 coefficient.
    localization_lr_multiplier: e.g. 0.1 for the paper's SVHN networks.
    nesterov: Nesterov momentum.

  Returns:
    ``(optax.GradientTransformation, schedule)``.
  """
  if not 0 <= momentum < 1:
    raise ValueError(f"`momentum` must be in [0, 1), got {momentum}.")
  if weight_decay < 0 or localization_lr_multiplier < 0:
    raise ValueError("`weight_decay` and `localization_lr_multiplier` must not be negative.")
  schedule = learning_rate_schedule(learning_rate, decay_every, decay_factor)
  parts = []
  if weight_decay:
    parts.append(optax.add_decayed_weights(weight_decay))
  parts.append(optax.sgd(schedule, momentum=momentum or None, nesterov=nesterov))
  if localization_lr_multiplier != 1.0:
    mask = localization_mask(params)
    if not any(jax.tree_util.tree_leaves(mask)):
      raise ValueError("`localization_lr_multiplier` is set, but the model has no localisation "
                       "parameters (none under a key starting with 'localization').")
    parts.append(optax.masked(optax.scale(localization_lr_multiplier), mask))
  return optax.chain(*parts), schedule
