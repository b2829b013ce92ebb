"""The fault-injection hooks of the tests, installed in a training subprocess through
``STN_HOOKS=fault_hooks`` (with ``tests/`` on ``PYTHONPATH``).

``STN_FAULT=POINT@STEP`` or ``POINT@STEP:SIGNAL`` (``KILL``, the default, ``INT`` or
``TERM``): the process signals itself when the run reaches that point of
:mod:`stn_jax.runtime.events`. The points:

- ``step``: right after training step STEP of the classifier trainer
  (``colocalisation-step``: of the co-localisation loop, whose encoder trains first with
  the classifier trainer);
- ``between-saves``: after the regular checkpoint of STEP is complete on disk, before its
  best checkpoint is written;
- ``saved``: after every checkpoint of STEP is complete on disk.

``STN_FAULT=nan@STEP`` instead makes the parameters NaN after training step STEP, as a
diverged run.
"""

import os
import signal

import jax


def _at_point(name, step, before):
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


def _poison(step, state):
  if os.environ.get("STN_FAULT") != f"nan@{int(step)}":
    return state
  return state.replace(params=jax.tree_util.tree_map(lambda p: p * float("nan"), state.params))


def install():
  from stn_jax.runtime import events  # pylint: disable=import-outside-toplevel
  events.install(at_point=_at_point, after_each_step=_poison)
