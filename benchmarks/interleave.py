"""Interleaved timing of several implementations in one process (the project's rule).

A *call* is ``call(k)``: run ``k`` steps and wait for them. ``interleaved`` gives
each call the same rounds, the order reversed every round, so that a change in
the machine's load falls on all of them alike.
"""

import statistics
import time

import jax

__all__ = ["calls_per_round", "interleaved", "jax_repeat", "ratio_stats", "torch_repeat"]


def interleaved(calls, rounds, k):
  """``{name: [seconds per call of each round]}``: ``rounds`` rounds of ``k`` calls of each,
  the order reversed every round."""
  names = list(calls)
  times = {name: [] for name in names}
  for r in range(rounds):
    for name in (names if r % 2 == 0 else names[::-1]):
      start = time.perf_counter()
      calls[name](k)
      times[name].append((time.perf_counter() - start) / k)
  return times


def calls_per_round(calls, round_seconds):
  """K such that k calls of the slowest take about ``round_seconds`` (at least 1)."""
  slowest = 0.0
  for call in calls.values():
    start = time.perf_counter()
    call(1)
    slowest = max(slowest, time.perf_counter() - start)
  return max(1, round(round_seconds / max(slowest, 1e-6)))


def jax_repeat(fn, *args):
  """``call(k)``: ``k`` calls of the jitted ``fn`` dispatched, then waited for."""
  args = jax.device_put(args)  # numpy arguments would be copied in at every call

  def call(k):
    jax.block_until_ready([fn(*args) for _ in range(k)])
  return call


def torch_repeat(fn):
  def call(k):
    for _ in range(k):
      fn()
  return call


def ratio_stats(times, reference_times):
  """(median, min, max) over the rounds of the speed of ``times``'s implementation relative
  to the reference's: ``reference / time`` per round (> 1: faster than the reference)."""
  ratios = [r / t for t, r in zip(times, reference_times)]
  return statistics.median(ratios), min(ratios), max(ratios)
