"""The pieces every training loop shares: the train state, warm starts, the finite-loss
stop, logging of the training metrics, checkpoint saves, the stop on a signal, resuming
and the run's config file.

:mod:`stn_jax.train.trainer` (the classifier loop of every experiment) and
:mod:`stn_jax.train.colocalisation` (the co-localisation loop) both build on them, so a
diverged state is never saved, a signal saves where it stops and a run resumes alike in
both.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from stn_jax.errors import RunStopped, StnError
from stn_jax.train import checkpoint as ckpt

__all__ = ["NonFiniteLossError", "Saver", "TrainState", "check_finite", "log_train", "restore",
           "stopped", "warm_start", "write_config"]


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


def check_finite(step, logged, checkpoints):
  """Raises NonFiniteLossError if a loss in ``logged`` (the metrics of the steps up to
  ``step``) is not finite, naming the first such step."""
  if all(np.isfinite(x["loss"]) for x in logged):
    return
  first_step = step - len(logged) + 1
  i = next(i for i, x in enumerate(logged) if not np.isfinite(x["loss"]))
  raise NonFiniteLossError(
      f"The training loss became {float(logged[i]['loss'])} at step {first_step + i}. The run "
      f"stopped and {_kept(checkpoints)}. Lower the learning rate or check the data.")


def log_train(step, pending, checkpoints, writer, progress, shown):
  """Logs the means of the device metrics ``pending`` (the steps since the last log, up to
  ``step``) as the ``train`` split, after checking their losses are finite; the console
  line shows the names in ``shown``."""
  logged = jax.device_get(pending)
  check_finite(step, logged, checkpoints)
  means = {k: float(np.mean([x[k] for x in logged])) for k in logged[0]}
  means.update(progress.rates(step))
  writer.scalars(step, "train", means)
  progress.line(step, {k: means[k] for k in shown})


def _kept(checkpoints):
  last = checkpoints.latest_step()
  return ("no checkpoint had been saved yet" if last is None else
          f"the last good checkpoint (step {last}) is intact")


@jax.jit
def _finite(tree):
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


class Saver:
  """Saves a loop's checkpoints, only of states known to be finite.

  Shared by every training loop: before a save, the losses of the steps not yet
  logged (``pending``) and the parameters are checked, so no checkpoint, latest
  or best, holds a diverged state; the ``record`` saved with it holds the best
  validation error so far and how far ``metrics.jsonl`` was written; the
  wall-clock save interval restarts.
  """

  def __init__(self, checkpoints, writer, guard, data=None):
    self.checkpoints, self.writer, self.guard, self.data = checkpoints, writer, guard, data

  def __call__(self, step, state, pending, history, *, best=False):
    if pending:
      check_finite(step, jax.device_get(pending), self.checkpoints)
    if not bool(jax.device_get(_finite(state.params))):
      raise NonFiniteLossError(
          f"The parameters became NaN or Inf at step {step} (the loss was still finite). The "
          f"run stopped and {_kept(self.checkpoints)}. Lower the learning rate or check the "
          "data.")
    record = {**history, "metrics_bytes": self.writer.offset()}
    self.checkpoints.save(step, state, self.data.get_state() if self.data else {}, record,
                          best=best)
    self.writer.flush()
    self.guard.restart_clock()


def stopped(guard, signum, step, checkpoints):
  """The :class:`RunStopped` to raise once the checkpoint of ``step`` is written."""
  checkpoints.wait()
  return RunStopped(
      f"Stopped by {guard.name(signum)} at step {step}, with its checkpoint saved in "
      f"{checkpoints.dirs['latest']}: run the same command to resume from step {step}.",
      step=step, signum=signum)


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
