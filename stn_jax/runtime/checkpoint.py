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
import errno
import json
import logging
import os
import re
import shutil
import sys
import threading
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp

from stn_jax.errors import CheckpointError, ConfigError
from stn_jax.train import faults

__all__ = ["Checkpoints", "Resumed", "check_workdir", "json_safe", "params_from", "quiet",
           "run_identity"]

# Config fields that change nothing the run computes on its way: how long it runs (a run may
# be extended), how often it logs, evaluates, draws and saves, how evaluation is batched and
# which fixed sets it scores, where the data lies on disk and how it is read (IDX files or
# TFDS: the same digits). Every other field is part of the
# run's identity: a workdir refuses to resume a run whose identity differs.
NOT_IDENTITY = frozenset({
    "num_steps", "log_every", "eval_every", "checkpoint_every", "checkpoint_minutes",
    "keep_checkpoints", "pictures", "picture_every", "tensorboard", "eval_batch_size",
    "num_shown", "data.num_eval", "data.mnist_dir", "data.data_dir", "data.source",
    "data.validation_seed", "data.test_seed",
})


_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
# Set once a write in the workdir has failed for want of space (or a read-only file system)
# and :meth:`Checkpoints.write_failure` has made its sentence: the same failure met again by
# the writers still running (Orbax's abandoned tasks, TensorBoard's thread and its exit
# handler) adds nothing to it.
_full_disk_reported = False
# Set once a failed read or write of a checkpoint has been told (the disk-full sentence, or
# the warning that a damaged checkpoint was set aside): what Orbax abandoned then (tasks
# whose errors asyncio reports when they are collected, coroutines never awaited) repeats it.
_checkpoint_failure_told = False


def _os_errno(error):
  """The OS error number behind ``error``: the first found in its chain of causes, as an
  OSError's or in TensorStore's message; None if there is none."""
  seen = error
  while seen is not None:
    if isinstance(seen, OSError) and seen.errno:
      return seen.errno
    code = re.search(r"os_error_code='?(\d+)", str(seen))
    if code:
      return int(code.group(1))
    seen = seen.__cause__ or seen.__context__
  return None


def _disk_full(error) -> bool:
  """Whether ``error`` is a full disk, quota or read-only file system."""
  return _os_errno(error) in _FULL


class _QuietOrbax(logging.Filter):
  """Orbax logs every step of every save at INFO, and a failed write (a full disk) as a
  dozen tracebacks from its threads; the run's own lines are what matter, and a failure
  reaches them as an exception (:class:`CheckpointError`). After that failure, asyncio
  reports each of the writes Orbax abandoned ("Task exception was never retrieved")."""

  def filter(self, record):
    if record.levelno >= logging.CRITICAL:
      return True
    if record.name == "asyncio":
      return not _abandoned_by_orbax(record.getMessage())
    return "/orbax/" not in record.pathname


def _abandoned_by_orbax(message: str) -> bool:
  """Whether asyncio's ``message`` reports a task or future Orbax abandoned when one read or
  write of a checkpoint failed: after that failure was told, or naming Orbax or TensorStore."""
  if "never retrieved" not in message:
    return False
  lowered = message.lower()
  return (_checkpoint_failure_told or "/orbax/" in lowered or "tensorstore" in lowered
          or "ocdbt" in lowered)


def _closed_loop(error) -> bool:
  return isinstance(error, RuntimeError) and str(error) == "Event loop is closed"


def _background_disk_full(error, where) -> bool:
  """For a full disk met by a writer in the background (a thread, an exit handler): a
  warning line if the run has not said so yet, else nothing. True if it was handled."""
  if not _disk_full(error):
    return False
  if not _full_disk_reported:
    from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
    absl_logging.warning("A background writer (%s) stopped: %s.", where, _reason(error))
  return True


def quiet():
  """Keeps Orbax's chatter out of the run's log (once per process).

  Besides its INFO lines: when one read of a damaged checkpoint fails, Orbax
  leaves its event loop while TensorStore still completes the other reads,
  whose callbacks then print "Event loop is closed" tracebacks from their
  threads, and the abandoned reads print their own error again when they are
  collected. They say nothing the one-line warning does not.
  """
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  handler = absl_logging.get_absl_handler()
  if any(isinstance(f, _QuietOrbax) for f in handler.filters):
    return
  handler.addFilter(_QuietOrbax())
  excepthook, unraisablehook = sys.excepthook, sys.unraisablehook

  def quiet_excepthook(kind, error, tb):
    if not _closed_loop(error):
      excepthook(kind, error, tb)

  def quiet_unraisablehook(args):
    # Also the reads Orbax abandoned when one failed: their coroutines, collected unawaited,
    # hold the same error again.
    code = getattr(args.object, "cr_code", None)
    abandoned = code is not None and "/orbax/" in code.co_filename
    if not (_closed_loop(args.exc_value) or abandoned):
      unraisablehook(args)

  sys.excepthook, sys.unraisablehook = quiet_excepthook, quiet_unraisablehook
  # A full disk also stops TensorBoard's writer thread and fails its exit handler's flush;
  # metrics.jsonl has every record, and a resumed run rebuilds TensorBoard's files from it.
  threadhook = threading.excepthook

  def quiet_threadhook(args):
    name = args.thread.name if args.thread is not None else "a thread"
    if not _background_disk_full(args.exc_value, name):
      threadhook(args)

  def quiet_full_unraisablehook(args):
    if not _background_disk_full(args.exc_value, args.err_msg or "an exit handler"):
      quiet_unraisablehook(args)

  threading.excepthook, sys.unraisablehook = quiet_threadhook, quiet_full_unraisablehook
  # Orbax's coroutines abandoned after a failure, collected unawaited, warn once each.
  showwarning = warnings.showwarning

  def quiet_showwarning(message, category, *args, **kwargs):
    if not (_checkpoint_failure_told and issubclass(category, RuntimeWarning)
            and "was never awaited" in str(message)):
      showwarning(message, category, *args, **kwargs)

  warnings.showwarning = quiet_showwarning


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


def run_identity(config) -> dict:
  """The settings that fix a run's trajectory: every field of ``config`` (flattened to
  dotted names) but those in ``NOT_IDENTITY``."""
  tree = config if isinstance(config, dict) else config.to_dict()
  flat = _flatten(json_safe(tree))
  return {k: v for k, v in sorted(flat.items()) if k not in NOT_IDENTITY}


def _supplemented(found: dict, workdir: str) -> dict:
  """A checkpoint's identity, completed from ``workdir/config.json`` (written when the run
  started) where it predates full identities (it had model, task and input alone)."""
  if "seed" in found:
    return found
  try:
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
      return {**run_identity(json.load(f)), **_flatten(found)}
  except (OSError, ValueError):
    return found


def check_workdir(config, workdir: str):
  """Raises :class:`ConfigError` if ``workdir`` holds checkpoints of a run with other
  settings than ``config`` (see :func:`run_identity`); what the trainer checks before it
  resumes, for a caller deciding whether a finished run there is the one it wants."""
  root = os.path.join(workdir, "checkpoints")
  steps = sorted((int(n) for n in os.listdir(root) if n.isdigit()), reverse=True) if (
      os.path.isdir(root)) else []
  for step in steps:
    try:
      with open(os.path.join(root, str(step), "meta", "metadata"), encoding="utf-8") as f:
        found = json.load(f)["identity"]
    except (OSError, ValueError, KeyError, TypeError):
      continue  # damaged: the trainer would set it aside and look further
    _refuse_other(_supplemented(found, workdir), run_identity(config), workdir)
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
  """

  def __init__(self, workdir: str, *, keep: int, identity: dict):
    if keep < 1:
      raise ConfigError(f"keep_checkpoints must be at least 1 (the checkpoint a run resumes "
                        f"from), got {keep}.")
    self.workdir = os.path.abspath(workdir)
    self.identity = json_safe(identity)
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
      _refuse_other(_supplemented(found, self.workdir), self.identity, self.workdir)
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
    global _checkpoint_failure_told  # pylint: disable=global-statement
    _checkpoint_failure_told = True
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
        faults.point("between-saves", step, before=self.latest.wait_until_finished)
        if step in self.best.all_steps():
          self.best.delete(step)
        self.best.save(step, args=args, force=True)
    faults.point("saved", step, before=self.wait)

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
      if e.errno not in _FULL:
        raise
      raise self.write_failure(e) from e

  def write_failure(self, error, step=None) -> CheckpointError:
    """The sentence for a write in the workdir that failed (a full disk, a read-only
    directory): what failed, and the last complete checkpoint to resume from."""
    last = self._last_complete(exclude=step)
    kept = (f"the last complete checkpoint is step {last}" if last is not None
            else "no complete checkpoint was saved yet")
    reason = _reason(error)
    global _full_disk_reported, _checkpoint_failure_told  # pylint: disable=global-statement
    _checkpoint_failure_told = True
    if _disk_full(error):
      _full_disk_reported = True
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


def _reason(error) -> str:
  """The operating system's words for ``error`` (e.g. "No space left on device"), found in
  its chain of causes or in TensorStore's message; else its last line."""
  number = _os_errno(error)
  if number is not None:
    return os.strerror(number)
  lines = str(error).strip().splitlines()
  return lines[-1][:300] if lines else type(error).__name__


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
