"""When a training loop saves besides its step interval: on SIGINT or SIGTERM, and every
``checkpoint_minutes`` of wall-clock time.

A loop asks :meth:`Guard.poll` after each step. On one process the answer
comes from this process's flag and clock at every step. On several, every
process must save at the same step (the save is collective), so they agree only
at steps every process polls with ``sync=True`` (the loops pass their log
steps): a signal seen by any process counts, and process 0's clock decides.
"""

from __future__ import annotations

import signal
import threading
import time

import numpy as np

__all__ = ["Guard"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Guard:
  """Context manager: catches SIGINT/SIGTERM while a loop runs, and keeps its save clock.

  The first SIGINT or SIGTERM is only recorded, so that the loop can save and
  stop; a second SIGINT interrupts at once (Python's KeyboardInterrupt).
  Handlers can only be installed from the main thread; elsewhere (a notebook's
  worker thread) signals keep their usual meaning.

  Args:
    minutes: the wall-clock interval between saves (None or <= 0: none).
  """

  def __init__(self, minutes):
    self.seconds = float(minutes) * 60 if minutes and minutes > 0 else None
    self.signum = 0
    self._previous = {}
    self.restart_clock()

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for s in _SIGNALS:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous.clear()
    return False

  def _handle(self, signum, frame):
    del frame
    if not self.signum:
      self.signum = signum
    if signum == signal.SIGINT:  # a second Ctrl-C is not polite any more
      signal.signal(signal.SIGINT, signal.default_int_handler)

  def restart_clock(self):
    """Called after every save: the next timed save is ``minutes`` from now."""
    self._deadline = None if self.seconds is None else time.monotonic() + self.seconds

  def poll(self, *, sync: bool):
    """``(signum, timed)``: the signal to stop for (0: none), and whether a timed save is due.

    Args:
      sync: True at the steps where all processes poll together (ignored on one process).
    """
    timed = self._deadline is not None and time.monotonic() >= self._deadline
    import jax  # pylint: disable=import-outside-toplevel
    if jax.process_count() == 1:
      return self.signum, timed
    if not sync:
      return 0, False
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    flags = np.asarray(multihost_utils.process_allgather(
        np.array([self.signum, int(timed)], np.int32)))
    signum = int(flags[:, 0].max())
    return signum, bool(flags[0, 1])

  @staticmethod
  def name(signum: int) -> str:
    return signal.Signals(signum).name
