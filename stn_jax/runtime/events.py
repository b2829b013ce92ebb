"""Named points of a run where code from outside the loop may act: the seam for tests.

The loop and the checkpoints announce where they are (:func:`point`, e.g. ``"step"``
after each training step, ``"saved"`` once a checkpoint is on disk) and offer the state
after each step for replacement (:func:`after_step`). Nothing listens unless a hook is
installed, so a run without hooks pays one empty-list check per point.

Hooks come from :func:`install`, or from the modules named in ``$STN_HOOKS`` (comma
separated, each with an ``install()`` function), imported once by :func:`load_hooks`
when an entry point starts: that is how the fault tests reach a training process they
start as a subprocess (``tests/fault_hooks.py`` kills it at a chosen point).
"""

from __future__ import annotations

import importlib
import os
from typing import Callable

__all__ = ["after_step", "install", "load_hooks", "point", "uninstall"]

_POINT_HOOKS: list[Callable] = []
_STEP_HOOKS: list[Callable] = []
_LOADED = set()


def install(*, at_point: Callable | None = None, after_each_step: Callable | None = None):
  """Adds hooks: ``at_point(name, step, before)`` at every :func:`point` and
  ``after_each_step(step, state) -> state`` after every training step."""
  if at_point is not None:
    _POINT_HOOKS.append(at_point)
  if after_each_step is not None:
    _STEP_HOOKS.append(after_each_step)


def uninstall():
  """Removes every hook."""
  _POINT_HOOKS.clear()
  _STEP_HOOKS.clear()


def load_hooks():
  """Imports the modules named in ``$STN_HOOKS`` and calls their ``install()``, once each."""
  for name in filter(None, (n.strip() for n in os.environ.get("STN_HOOKS", "").split(","))):
    if name not in _LOADED:
      _LOADED.add(name)
      importlib.import_module(name).install()


def point(name: str, step: int, before: Callable | None = None):
  """Announces that the run reached ``name`` at ``step``.

  Args:
    name: the point (``step``, ``colocalisation-step``, ``between-saves``, ``saved``).
    step: the run's step there.
    before: what a hook that stops the process must call first (e.g. wait for an
      asynchronous save), so that the point means what it says.
  """
  for hook in _POINT_HOOKS:
    hook(name, step, before)


def after_step(step: int, state):
  """``state`` after training step ``step``, as the hooks leave it (unchanged without)."""
  for hook in _STEP_HOOKS:
    state = hook(step, state)
  return state
