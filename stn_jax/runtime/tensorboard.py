"""What the run's records need of tensorboardX's writer beyond its public API: whether its
writer threads still run, and how to stop a writer that failed (a full disk) without the
interpreter hanging at exit or its exit handler failing again.

These read tensorboardX's internals (its event writers, their threads and queues) and do
nothing where those differ, so a tensorboardX that changes them costs only the clean stop.
"""

from __future__ import annotations

__all__ = ["abandon", "alive", "release_queues"]


def _event_writers(tb):
  """tensorboardX's event file writers, each with its writer thread (its internals; none
  found where they differ)."""
  for writer in list((getattr(tb, "all_writers", None) or {}).values()):
    events = getattr(writer, "event_writer", None)
    if events is not None and hasattr(events, "_closed"):
      yield events


def alive(tb) -> bool:
  """Whether every open event writer's thread still runs."""
  return all(getattr(events, "_worker", None) is None or events._worker.is_alive()  # pylint: disable=protected-access
             for events in _event_writers(tb) if not events._closed)  # pylint: disable=protected-access


def release_queues(tb):
  """Lets the interpreter exit without waiting on what tensorboardX's queues still hold.

  Each queue is a ``multiprocessing.Queue``, whose feeder thread the interpreter joins at
  exit; with the writer thread dead (a full disk) and more than a pipe's worth (64 KiB, one
  picture) unread, that join never returns. A writer closed in order loses nothing by this:
  its close joins the writer thread after it has read the whole queue."""
  for events in _event_writers(tb):
    queue = getattr(events, "_event_queue", None)
    if queue is not None and hasattr(queue, "cancel_join_thread"):
      queue.cancel_join_thread()


def abandon(tb):
  """Stops a tensorboardX writer that failed (its close, or its writer thread): the thread,
  which would fail again at its next flush (perhaps while the interpreter exits, past any
  hook), and the exit handler that would try to close it again. Uses tensorboardX's
  internals, and does nothing where they differ."""
  release_queues(tb)
  for events in _event_writers(tb):
    events._closed = True  # pylint: disable=protected-access
    worker = getattr(events, "_worker", None)
    if worker is not None and worker.is_alive() and hasattr(worker, "stop"):
      worker.stop()
