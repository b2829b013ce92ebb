"""Orbax checkpoints of a run: the latest few, and the best by validation error.

``workdir/checkpoints/<step>/`` holds three items: ``state`` (parameters,
batch statistics, optimiser state, step and RNG key), ``data`` (the training
iterator's state, so a resumed run reads on from where it stopped) and ``meta``
(the run's identity, see :func:`run_identity`, and its ``record``: the best
validation error so far and how far ``metrics.jsonl`` had been written).
``workdir/best/<step>/`` keeps the one checkpoint with the lowest validation
error. Saves are asynchronous; :meth:`Checkpoints.close` waits for them.

What keeps a run resumable whatever stops it:

- A best checkpoint is only written after the regular checkpoint of the same
  step, so ``best/`` never runs ahead of ``checkpoints/``; on resume, best
  checkpoints of later steps than the one resumed (left by a run stopped
  between its two saves, or after a damaged checkpoint was set aside) are
  removed, since the resumed run recomputes them.
- :meth:`Checkpoints.resume` tries the checkpoints newest first. One that cannot
  be read, or holds parameters that are not finite, is moved to
  ``workdir/damaged/`` (never deleted) with a one-line warning, and the next
  older one is tried; if none is left, :class:`CheckpointError` says what to do.
- A write that fails (a full disk) raises :class:`CheckpointError` naming the
  directory and the last complete checkpoint.

Every process takes part in saving the (replicated) state. The data item is
written by process 0: all processes consume the same number of batches of
their own shards, so their iterator positions are the same.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp

from stn_jax.errors import CheckpointError, ConfigError
from stn_jax.runtime import events, quiet

__all__ = ["Checkpoints", "Resumed", "check_workdir", "json_safe", "params_from",
           "run_identity"]


def json_safe(tree):
  """``tree`` with arrays as lists and anything else JSON cannot hold as strings."""
  return json.loads(json.dumps(tree, default=lambda o: o.tolist() if hasattr(o, "tolist")
                               else str(o)))


def _flatten(tree, prefix=""):
  out = {}
  for k, v in tree.items():
    name = f"{prefix}{k}"
    if isinstance(v, dict) and v:
      out.update(_flatten(v, name + "."))
    else:
      out[name] = v
  return out


def run_identity(config, exclude) -> dict:
  """The settings that fix a run's trajectory: every field of ``config`` (a ConfigDict or
  a dict, flattened to dotted names) but those in ``exclude`` (the config schema's
  :data:`stn_jax.train.config.NOT_IDENTITY`), at the top or in a sub-config: with
  ``data.mnist_dir`` excluded, so is ``encoder.data.mnist_dir``.

  >>> run_identity({"seed": 1, "data": {"mnist_dir": "a"}, "encoder": {"data": {
  ...     "mnist_dir": "b", "seed": 2}}}, exclude={"data.mnist_dir"})
  {'encoder.data.seed': 2, 'seed': 1}
  """
  tree = config if isinstance(config, dict) else config.to_dict()
  flat = _flatten(json_safe(tree))

  def excluded(name):
    parts = name.split(".")
    return any(".".join(parts[i:]) in exclude for i in range(len(parts)))

  return {k: v for k, v in sorted(flat.items()) if not excluded(k)}


def _supplemented(found: dict, workdir: str, exclude) -> dict:
  """A checkpoint's identity, completed from ``workdir/config.json`` (written when the run
  started) where it predates full identities (it had model, task and input alone)."""
  if "seed" in found:
    return found
  try:
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
      return {**run_identity(json.load(f), exclude), **_flatten(found)}
  except (OSError, ValueError):
    return found


def check_workdir(config, workdir: str, exclude):
  """Raises :class:`ConfigError` if ``workdir`` holds checkpoints of a run with other
  settings than ``config`` (see :func:`run_identity`, ``exclude`` as there); what the
  trainer checks before it resumes, for a caller deciding whether a finished run there is
  the one it wants."""
  root = os.path.join(workdir, "checkpoints")
  steps = sorted((int(n) for n in os.listdir(root) if n.isdigit()), reverse=True) if (
      os.path.isdir(root)) else []
  for step in steps:
    try:
      with open(os.path.join(root, str(step), "meta", "metadata"), encoding="utf-8") as f:
        found = json.load(f)["identity"]
    except (OSError, ValueError, KeyError, TypeError):
      continue  # damaged: the trainer would set it aside and look further
    _refuse_other(_supplemented(found, workdir, exclude), run_identity(config, exclude),
                  workdir)
    return


def _refuse_other(found, here, workdir):
  diff = _differences(found, here)
  if diff:
    raise ConfigError(
        f"The workdir {os.path.abspath(workdir)!r} holds checkpoints of another run: "
        f"{'; '.join(diff)}. Use a new --workdir, or the same settings to resume that run.")


def _differences(found: dict, here: dict) -> list[str]:
  # A field only one side has (a checkpoint of an older version) cannot be compared.
  found, here = _flatten(found), _flatten(here)
  return [f"{k}: {found[k]!r} there, {here[k]!r} here"
          for k in sorted(set(found) & set(here)) if found[k] != here[k]]


class Resumed:
  """What :meth:`Checkpoints.resume` found: ``step``, ``state``, ``data_state`` and the
  ``record`` saved with them."""

  def __init__(self, step, state, data_state, record):
    self.step, self.state, self.data_state, self.record = step, state, data_state, record


def _all_finite(tree) -> bool:
  return all(bool(np.all(np.isfinite(np.asarray(x))))
             for x in jax.tree_util.tree_leaves(tree)
             if np.issubdtype(np.asarray(x).dtype, np.inexact))


class Checkpoints:
  """The run's checkpoint managers.

  Args:
    workdir: the run's directory.
    keep: how many of the latest checkpoints to keep (at least 1).
    identity: what must match for a checkpoint to be resumed (:func:`run_identity`).
    exclude: the config fields outside a run's identity, for checkpoints whose identity
      is completed from the run's ``config.json``.
  """

  def __init__(self, workdir: str, *, keep: int, identity: dict, exclude):
    if keep < 1:
      raise ConfigError(f"keep_checkpoints must be at least 1 (the checkpoint a run resumes "
                        f"from), got {keep}.")
    self.workdir = os.path.abspath(workdir)
    self.identity = json_safe(identity)
    self.exclude = frozenset(exclude)
    self.dirs = {"latest": os.path.join(self.workdir, "checkpoints"),
                 "best": os.path.join(self.workdir, "best")}

    def manager(name, max_to_keep):
      return ocp.CheckpointManager(
          self.dirs[name],
          options=ocp.CheckpointManagerOptions(
              max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True,
              # Both managers can save the same step; across processes Orbax names its
              # barriers after the step, so each manager needs its own prefix.
              multiprocessing_options=ocp.options.MultiprocessingOptions(
                  barrier_sync_key_prefix=name)),
          item_names=("state", "data", "meta"))

    self.latest = manager("latest", keep)
    # Only improvements are saved here, so the newest is the best.
    self.best = manager("best", 1)
    self._saving = None  # the step whose asynchronous save may still be under way

  # -- resuming ----------------------------------------------------------------------------

  def resume(self, abstract_state):
    """The newest intact checkpoint, restored like ``abstract_state``, or None if there is
    none.

    Raises:
      ConfigError: the checkpoints belong to a run with other settings.
      CheckpointError: there were checkpoints, and none could be read (they are moved to
        ``workdir/damaged/``).
    """
    damaged = []
    for step in sorted(self.latest.all_steps(), reverse=True):
      try:
        meta = self.latest.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))["meta"]
        found = meta["identity"]
      except Exception as e:  # pylint: disable=broad-except  # any damage, any library
        damaged.append(self._set_aside("latest", step, e))
        continue
      _refuse_other(_supplemented(found, self.workdir, self.exclude), self.identity,
                    self.workdir)
      try:
        out = self.latest.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        if not _all_finite(out["state"]):
          raise ValueError("its parameters are not all finite")
      except Exception as e:  # pylint: disable=broad-except
        damaged.append(self._set_aside("latest", step, e))
        continue
      self._drop_best_after(step)
      return Resumed(step, out["state"], out["data"], meta.get("record") or {})
    if damaged:
      raise CheckpointError(
          f"No checkpoint in {self.dirs['latest']} could be read: step(s) "
          f"{', '.join(str(s) for s in damaged)} were damaged and moved to "
          f"{os.path.join(self.workdir, 'damaged')}. Run the same command again to start "
          "from step 0 in this workdir, or use a new --workdir.")
    self._drop_best_after(-1)
    return None

  def _move(self, name, step, folder) -> str:
    """Moves ``name``'s checkpoint ``step`` into ``workdir/folder/``; returns where to."""
    dst_dir = os.path.join(self.workdir, folder)
    dst = base = os.path.join(dst_dir, f"{os.path.basename(self.dirs[name])}_{step}")
    k = 1
    while os.path.exists(dst):
      k += 1
      dst = f"{base}.{k}"
    if jax.process_index() == 0:
      os.makedirs(dst_dir, exist_ok=True)
      shutil.move(os.path.join(self.dirs[name], str(step)), dst)
    getattr(self, name).reload()
    return dst

  def _set_aside(self, name, step, error) -> int:
    """Moves ``name``'s ``step`` to ``workdir/damaged/`` and says so; returns ``step``."""
    quiet.checkpoint_failure_told()
    reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(
        error).__name__
    logging.warning("The checkpoint of step %d could not be read (%s); moved it to %s.",
                    step, reason, self._move(name, step, "damaged"))
    return step

  def _drop_best_after(self, step):
    """Best checkpoints later than the resumed ``step`` (-1: none) are the future of this
    run, which computes them again: removed. Without any checkpoint to resume, nothing
    vouches that they belong to this run: moved to ``workdir/previous/``."""
    for s in self.best.all_steps():
      if s <= step:
        continue
      if step >= 0:
        logging.info("Removing best/%d: the resumed run computes step %d again.", s, s)
        if jax.process_index() == 0:
          shutil.rmtree(os.path.join(self.dirs["best"], str(s)))
      else:
        logging.warning("Starting from step 0 with no checkpoint to resume, but best/%d was "
                        "there; moved it to %s.", s, self._move("best", s, "previous"))
    self.best.reload()

  # -- saving ------------------------------------------------------------------------------

  def _args(self, state, data_state, record):
    return ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(json_safe(data_state)),
        meta=ocp.args.JsonSave(json_safe({"identity": self.identity, "record": record})))

  def save(self, step: int, state, data_state, record: dict, *, best: bool = False):
    """Saves ``step`` (and, with ``best``, also as the best checkpoint, after it).

    ``record`` is restored with the state (:attr:`Resumed.record`).
    """
    args = self._args(state, data_state, record)
    self.wait()  # a failure of the previous (asynchronous) save is reported as its own
    with self._writing(step):
      self.latest.save(step, args=args, force=True)
      if best:
        events.point("between-saves", step, before=self.latest.wait_until_finished)
        if step in self.best.all_steps():
          self.best.delete(step)
        self.best.save(step, args=args, force=True)
    events.point("saved", step, before=self.wait)

  def latest_step(self):
    """The newest complete checkpoint on disk, or None."""
    return self._last_complete()

  def best_step(self):
    return self.best.latest_step()

  def wait(self):
    """Waits for the asynchronous saves; a failed one raises :class:`CheckpointError`."""
    with self._writing(self._saving):
      self.latest.wait_until_finished()
      self.best.wait_until_finished()

  def close(self):
    with self._writing(self._saving):
      self.latest.close()
      self.best.close()

  @contextlib.contextmanager
  def _writing(self, step):
    """Turns a failed write of ``step`` into :meth:`write_failure`'s sentence."""
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except  # OSError, or TensorStore's own
      raise self.write_failure(e, step) from e
    self._saving = step

  @contextlib.contextmanager
  def disk(self):
    """Around a loop: a full disk (or quota, or read-only file system) met while writing
    anything in the workdir becomes :meth:`write_failure`'s sentence."""
    try:
      yield
    except OSError as e:
      if e.errno not in quiet.FULL:
        raise
      raise self.write_failure(e) from e

  def write_failure(self, error, step=None) -> CheckpointError:
    """The sentence for a write in the workdir that failed (a full disk, a read-only
    directory): what failed, and the last complete checkpoint to resume from."""
    last = self._last_complete(exclude=step)
    kept = (f"the last complete checkpoint is step {last}" if last is not None
            else "no complete checkpoint was saved yet")
    reason = quiet.reason(error)
    quiet.checkpoint_failure_told()
    if quiet.disk_full(error):
      quiet.disk_full_told()
    what = f"the checkpoint of step {step}" if step is not None else "the run's records"
    return CheckpointError(
        f"Could not write {what} in {self.workdir} ({reason}); {kept}. Free space (or fix the "
        "directory) and run the same command to resume from it.")

  def _last_complete(self, exclude=None):
    root = self.dirs["latest"]
    steps = [int(n) for n in os.listdir(root) if n.isdigit()] if os.path.isdir(root) else []
    done = [s for s in steps if s != exclude and os.path.exists(
        os.path.join(root, str(s), "_CHECKPOINT_METADATA"))]
    return max(done) if done else None


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
