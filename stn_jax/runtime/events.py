"""Test-only fault injection: the process signals itself at a chosen point of a run.

``STN_FAULT=POINT@STEP`` or ``POINT@STEP:SIGNAL`` (``KILL``, the default, ``INT`` or
``TERM``), read when the point is reached. ``STN_FAULT=nan@STEP`` instead makes the
parameters NaN after training step STEP (:func:`poison`), as a diverged run. The points:

- ``step``: right after training step STEP of the trainer (``colocalisation-step``: of
  the co-localisation loop, whose encoder trains first in the trainer);
- ``between-saves``: after the regular checkpoint of STEP is complete on disk, before
  its best checkpoint is written;
- ``saved``: after every checkpoint of STEP is complete on disk.

The tests in ``tests/test_faults.py`` kill real training processes this way, at
points a random kill would rarely hit. Unset, it costs one dictionary look-up.
"""

from __future__ import annotations

import os
import signal

__all__ = ["point", "poison"]


def point(name: str, step: int, before=None):
  """Signals this process if ``STN_FAULT`` names ``name`` at ``step``.

  Args:
    name: the point reached.
    step: the run's step there.
    before: called first (e.g. to wait for an asynchronous save to finish).
  """
  spec = os.environ.get("STN_FAULT")
  if not spec:
    return
  where, _, sig = spec.partition(":")
  want, _, at = where.partition("@")
  if want != name or int(at) != int(step):
    return
  if before is not None:
    before()
  os.kill(os.getpid(), getattr(signal, f"SIG{sig or 'KILL'}"))


def poison(step: int, params):
  """``params``, or all NaN if ``STN_FAULT`` is ``nan@STEP`` for this ``step``."""
  spec = os.environ.get("STN_FAULT")
  if not spec or spec != f"nan@{int(step)}":
    return params
  import jax  # pylint: disable=import-outside-toplevel
  return jax.tree_util.tree_map(lambda p: p * float("nan"), params)
