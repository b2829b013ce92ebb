"""What a run's checkpoint holds and how a run starts from one: the train state, a warm
start from another run's parameters, the resume from the newest intact checkpoint, and
the run's ``config.json``."""

from __future__ import annotations

import logging
import os
from typing import Any

import flax
import jax

from stn_jax.errors import StnError
from stn_jax.runtime import checkpoint as ckpt

__all__ = ["NonFiniteLossError", "TrainState", "restore", "warm_start", "write_config"]


@flax.struct.dataclass
class TrainState:
  """What a checkpoint holds of a run: the step, the parameters, BatchNorm's statistics
  (empty for models without), the optimiser's state and the run's PRNG key."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array  # raw uint32 key data, so that checkpoints hold a plain array


class NonFiniteLossError(StnError, FloatingPointError):
  """The training loss became NaN or Inf; the run stopped without saving that state."""


def warm_start(path, params, batch_stats):
  """``(params, batch_stats)`` from the checkpoint at ``path`` (``init_from``), checked to
  be of the same model: the same tree and shapes (``batch_stats`` only if the model has
  them)."""
  loaded, loaded_stats = ckpt.params_from(path)
  want = jax.tree_util.tree_structure(params)
  if jax.tree_util.tree_structure(loaded) != want:
    raise ValueError(f"init_from={path!r} holds parameters of another model: their tree "
                     "differs from this model's.")
  for a, b in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(params)):
    if a.shape != b.shape:
      raise ValueError(f"init_from={path!r}: a parameter of shape {a.shape} where this model "
                       f"has {b.shape}.")
  logging.info("Warm start: parameters from %s.", path)
  return loaded, (loaded_stats if batch_stats else batch_stats)


def restore(checkpoints, state, workdir):
  """``(state, resumed)``: ``state`` replaced by the newest intact checkpoint's, if any."""
  abstract = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
  resumed = checkpoints.resume(abstract)
  if resumed is None:
    return state, None
  logging.info("Resumed from the checkpoint of step %d in %s.", resumed.step, workdir)
  return resumed.state, resumed


def write_config(config, workdir):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
    f.write(config.to_json_best_effort(indent=2))
