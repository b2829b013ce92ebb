"""Keeps Orbax's, TensorStore's and TensorBoard's background noise out of a run's log,
and names the operating system's reason for a failed write.

Orbax logs every step of every save at INFO; a failed read or write (a damaged checkpoint,
a full disk) leaves its threads, event loop and abandoned coroutines printing tracebacks
that say nothing the run's own one-line sentence does not. :func:`quiet` installs the
filters and hooks once per process; :func:`checkpoint_failure_told` and
:func:`disk_full_told` are called by :mod:`stn_jax.runtime.checkpoint` once it has told
the user, after which the repeats are dropped.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
import threading
import warnings

__all__ = ["FULL", "checkpoint_failure_told", "disk_full", "disk_full_told", "quiet",
           "reason"]

FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
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


def disk_full(error) -> bool:
  """Whether ``error`` is a full disk, quota or read-only file system."""
  return _os_errno(error) in FULL


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
  if not disk_full(error):
    return False
  if not _full_disk_reported:
    from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
    absl_logging.warning("A background writer (%s) stopped: %s.", where, reason(error))
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


def reason(error) -> str:
  """The operating system's words for ``error`` (e.g. "No space left on device"), found in
  its chain of causes or in TensorStore's message; else its last line."""
  number = _os_errno(error)
  if number is not None:
    return os.strerror(number)
  lines = str(error).strip().splitlines()
  return lines[-1][:300] if lines else type(error).__name__



def checkpoint_failure_told():
  """Records that a failed read or write of a checkpoint has been told to the user."""
  global _checkpoint_failure_told  # pylint: disable=global-statement
  _checkpoint_failure_told = True


def disk_full_told():
  """Records that the user has been told the disk is full."""
  global _full_disk_reported  # pylint: disable=global-statement
  _full_disk_reported = True

