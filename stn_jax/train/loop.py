"""The one training loop, and the actions it runs at their intervals.

Every trainer (:mod:`stn_jax.train.trainers`) builds a state and a step and hands them
to :func:`train`, which owns what every run needs alike: resuming from the newest intact
checkpoint, the run's records (``metrics.jsonl``, TensorBoard, the console line),
logging the training metrics with the finite-loss stop, checkpoints on a step interval,
on the wall clock and on SIGINT/SIGTERM (never of a diverged state), the stop itself,
and ``results.json``. What a trainer adds are :class:`Every` actions (evaluate, draw)
and a ``finish`` that makes the results.

A loop iteration: the step; the named point ``step`` (:mod:`stn_jax.runtime.events`,
where tests hook in); the log line every ``log_every`` steps; each due action in order;
the signal and clock poll; the checkpoint when an action found the best state so far, at
``checkpoint_every``, when the clock or a signal asks, and at the last step; then the stop
if a signal came.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from stn_jax.errors import RunStopped
from stn_jax.runtime import checkpoint as ckpt
from stn_jax.runtime import events, metrics, stopping
from stn_jax.train import config as config_lib
from stn_jax.train.state import NonFiniteLossError, restore, write_config

__all__ = ["Context", "Every", "Saver", "check_finite", "log_train", "stopped", "train"]


@dataclasses.dataclass
class Every:
  """An action of the loop: ``fn(ctx, step, state)`` every ``every`` steps and at the last.

  Attributes:
    every: the interval in steps.
    fn: the action; it returns True when ``state`` is the best so far, which the loop then
      saves as the best checkpoint too (anything else: no such claim).
    at_start: also run before the first step of a run that starts from step 0.
  """
  every: int
  fn: Callable[["Context", int, Any], Optional[bool]]
  at_start: bool = False

  def due(self, step: int, last: bool) -> bool:
    return step % self.every == 0 or last


@dataclasses.dataclass
class Context:
  """What the actions and ``finish`` of a run may use.

  Attributes:
    config: the run's config.
    workdir: the run's directory.
    writer: the run's :class:`stn_jax.runtime.metrics.MetricWriter` (writes on process 0).
    record: what the run keeps across restarts (e.g. the best validation error), saved
      with every checkpoint and restored with it.
    checkpoints: the run's :class:`stn_jax.runtime.checkpoint.Checkpoints`.
    is_main: whether this is process 0, which writes the files.
  """
  config: Any
  workdir: str
  writer: Any
  record: dict
  checkpoints: Any
  is_main: bool


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

  Before a save, the losses of the steps not yet logged (``pending``) and the parameters
  are checked, so no checkpoint, latest or best, holds a diverged state; the ``record``
  saved with it holds what the run keeps across restarts and how far ``metrics.jsonl``
  was written; the wall-clock save interval restarts.
  """

  def __init__(self, checkpoints, writer, guard, data=None):
    self.checkpoints, self.writer, self.guard, self.data = checkpoints, writer, guard, data

  def __call__(self, step, state, pending, record, *, best=False):
    if pending:
      check_finite(step, jax.device_get(pending), self.checkpoints)
    if not bool(jax.device_get(_finite(state.params))):
      raise NonFiniteLossError(
          f"The parameters became NaN or Inf at step {step} (the loss was still finite). The "
          f"run stopped and {_kept(self.checkpoints)}. Lower the learning rate or check the "
          "data.")
    record = {**record, "metrics_bytes": self.writer.offset()}
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


def train(config, workdir: str, state, step_fn: Callable, *, finish: Callable,
          actions=(), data=None, record=None, shown=("loss",), point="step",
          start_time=None) -> dict:
  """Trains ``state`` with ``step_fn`` to ``config.num_steps`` in ``workdir``, resuming a
  run found there, and returns (and, on process 0, writes) ``results.json``.

  Args:
    config: the run's config (``num_steps``, ``log_every``, ``checkpoint_every``,
      ``checkpoint_minutes``, ``keep_checkpoints``, ``batch_size``, ``tensorboard``).
    workdir: the run's directory.
    state: the initial :class:`stn_jax.train.state.TrainState`, replaced by the newest
      intact checkpoint's if there is one.
    step_fn: ``step_fn(state) -> (state, device metrics)``, one training step; the metrics
      hold at least ``loss``.
    finish: ``finish(ctx, step, state, check_stop) -> results`` after the last step
      (``check_stop()`` raises :class:`RunStopped` if a signal came meanwhile).
    actions: :class:`Every` actions, run in this order.
    data: the training iterator (``get_state``/``set_state``), saved with checkpoints.
    record: the keys and initial values of :attr:`Context.record`.
    shown: the metrics on the console line.
    point: the name of the point announced after each step.
    start_time: when the run's session started (default: now), for the results' wall time.

  Raises:
    stn_jax.errors.RunStopped: SIGINT or SIGTERM stopped the run, after saving a checkpoint.
    stn_jax.errors.ConfigError: the workdir holds another run.
    stn_jax.errors.CheckpointError: a checkpoint could not be written or none could be read.
    NonFiniteLossError: the loss or the parameters became NaN or Inf.
  """
  start_time = time.time() if start_time is None else start_time
  checkpoints = ckpt.Checkpoints(workdir, keep=config.keep_checkpoints,
                                 identity=config_lib.run_identity(config),
                                 exclude=config_lib.NOT_IDENTITY)
  try:
    state, resumed = restore(checkpoints, state, workdir)
    record = dict(record or {})
    if resumed is not None:
      if data is not None and resumed.data_state:
        data.set_state(resumed.data_state)
      record.update({k: resumed.record.get(k) for k in record})
    with checkpoints.disk():
      is_main = jax.process_index() == 0
      if is_main:
        write_config(config, workdir)
      writer = metrics.MetricWriter(
          workdir, enabled=is_main, tensorboard=config.tensorboard,
          resume_step=None if resumed is None else resumed.step,
          resume_bytes=None if resumed is None else resumed.record.get("metrics_bytes"))
      try:
        ctx = Context(config, workdir, writer, record, checkpoints, is_main)
        results = _loop(ctx, state, step_fn, finish, actions, data, shown, point)
        results["wall_seconds_this_session"] = time.time() - start_time
        checkpoints.wait()
        results = ckpt.json_safe(results)
        if is_main:
          path = os.path.join(workdir, "results.json")
          with open(path, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2, sort_keys=True)
          logging.info("Results: %s", path)
        return results
      finally:
        writer.close()
  finally:
    checkpoints.close()


def _loop(ctx, state, step_fn, finish, actions, data, shown, point):
  config, checkpoints, writer = ctx.config, ctx.checkpoints, ctx.writer
  first = step = int(jax.device_get(state.step))
  progress = metrics.Progress(first, config.num_steps, config.batch_size, enabled=ctx.is_main)
  if first == 0:
    for action in actions:
      if action.at_start:
        action.fn(ctx, 0, state)
  pending = []  # the device metrics since the last log, fetched together
  with stopping.Guard(config.checkpoint_minutes) as guard:
    save = Saver(checkpoints, writer, guard, data)
    if step < config.num_steps:
      logging.info("Compiling the training step (the first step waits for XLA; a minute or "
                   "more on a CPU).")
      compile_start = time.time()
    while step < config.num_steps:
      state, m = step_fn(state)
      if step == first:
        jax.block_until_ready(m)
        logging.info("Compiled and ran the first step in %.0f s.", time.time() - compile_start)
      pending.append(m)
      step += 1
      events.point(point, step)
      state = events.after_step(step, state)
      last = step == config.num_steps
      logged_now = step % config.log_every == 0 or last
      if logged_now:
        log_train(step, pending, checkpoints, writer, progress, shown)
        pending = []
      best = False
      for action in actions:
        if action.due(step, last):
          best = action.fn(ctx, step, state) is True or best
      signum, timed = guard.poll(sync=logged_now)
      if best or timed or signum or step % config.checkpoint_every == 0 or last:
        save(step, state, pending, ctx.record, best=best)
      if signum:
        raise stopped(guard, signum, step, checkpoints)

    def check_stop():
      signum, _ = guard.poll(sync=True)
      if signum:  # the last checkpoint is saved: a restart finishes again
        raise stopped(guard, signum, step, checkpoints)

    return finish(ctx, step, state, check_stop)
