"""Orbax checkpoints of a run: the latest few, and the best by validation error.

``workdir/checkpoints/<step>/`` holds three items: ``state`` (parameters,
batch statistics, optimiser state, step and RNG key), ``data`` (the training
iterator's state, so a resumed run reads on from where it stopped) and ``meta``
(what model the run trains, so a workdir of another model is refused).
``workdir/best/<step>/`` keeps the one checkpoint with the lowest validation
error. Saves are asynchronous; :meth:`Checkpoints.close` waits for them.

Every process takes part in saving the (replicated) state. The data item is
written by process 0: all processes consume the same number of batches of
their own shards, so their iterator positions are the same.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

__all__ = ["Checkpoints", "json_safe", "params_from"]


def json_safe(tree):
  """``tree`` with arrays as lists and anything else JSON cannot hold as strings."""
  return json.loads(json.dumps(tree, default=lambda o: o.tolist() if hasattr(o, "tolist")
                               else str(o)))


class Checkpoints:
  """The run's checkpoint managers.

  Args:
    workdir: the run's directory.
    keep: how many of the latest checkpoints to keep.
    identity: what must match for a checkpoint to be resumed (model, task, input).
  """

  def __init__(self, workdir: str, *, keep: int, identity: dict):
    self.identity = json_safe(identity)
    self.latest = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, "checkpoints")),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True,
            # Both managers can save the same step; across processes Orbax names its
            # barriers after the step, so each manager needs its own prefix.
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix="latest")),
        item_names=("state", "data", "meta"))
    self.best = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, "best")),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, best_fn=lambda m: m["validation_error"],
            best_mode="min", multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix="best")),
        item_names=("state", "data", "meta"))

  def check_identity(self):
    """Refuses a workdir whose checkpoints belong to another model or task."""
    step = self.latest.latest_step()
    if step is None:
      return
    found = self.latest.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    found = found["meta"]["identity"]
    if found != self.identity:
      diff = {k: (found.get(k), self.identity.get(k))
              for k in sorted(set(found) | set(self.identity)) if found.get(k) != self.identity.get(k)}
      raise ValueError(
          f"The workdir {os.path.dirname(str(self.latest.directory))!r} holds checkpoints of "
          f"another run: {', '.join(f'{k}: {a!r} there, {b!r} here' for k, (a, b) in diff.items())}. "
          "Use a new --workdir, or the same settings to resume that run.")

  def _args(self, state, data_state):
    return ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(json_safe(data_state)),
        meta=ocp.args.JsonSave({"identity": self.identity}))

  def save(self, step: int, state, data_state):
    self.latest.save(step, args=self._args(state, data_state), force=True)

  def save_best(self, step: int, state, data_state, validation_error: float):
    self.best.save(step, args=self._args(state, data_state),
                   metrics={"validation_error": float(validation_error)}, force=True)

  def latest_step(self):
    return self.latest.latest_step()

  def best_step(self):
    return self.best.best_step()

  def restore(self, step: int, abstract_state):
    """``(state, data_state)`` of checkpoint ``step``, shaped and sharded like ``abstract_state``."""
    out = self.latest.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    return out["state"], out["data"]

  def wait(self):
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self):
    self.latest.close()
    self.best.close()


def params_from(path: str):
  """The parameters (and batch statistics) of another run, for ``init_from``.

  Args:
    path: a run's workdir (its latest checkpoint is used), its ``checkpoints``
      or ``best`` folder, or one step's folder.

  Returns:
    ``(params, batch_stats)`` as NumPy trees.
  """
  path = os.path.abspath(path)
  for sub in ("checkpoints", ""):
    root = os.path.join(path, sub) if sub else path
    if os.path.isdir(root) and any(n.isdigit() for n in os.listdir(root)):
      steps = sorted(int(n) for n in os.listdir(root) if n.isdigit())
      path = os.path.join(root, str(steps[-1]))
      break
  state_dir = os.path.join(path, "state")
  if not os.path.isdir(state_dir):
    raise FileNotFoundError(
        f"init_from={path!r} is not a checkpoint: expected a run's workdir, its checkpoints "
        f"folder or one step's folder, with a 'state' item inside.")
  tree = ocp.StandardCheckpointer().restore(state_dir)
  to_np = lambda t: jax.tree_util.tree_map(np.asarray, t)  # noqa: E731
  return to_np(tree["params"]), to_np(tree.get("batch_stats", {}))
