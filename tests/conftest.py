"""Shared fixtures: float64 for exact comparisons, and the three ways every op is called."""

import jax
import pytest


@pytest.fixture
def x64():
  """Runs the test with 64-bit floats, for comparisons to 1e-10."""
  with jax.enable_x64(True):
    yield


def _vmapped(fn):
  """Splits the batch of every array argument in two and vmaps over the halves.

  The function then sees batches of N/2 inside vmap, so a batching bug (an
  index that mixes images, a wrong axis) changes the result.
  """
  def call(*arrays):
    halves = [a.reshape((2, a.shape[0] // 2) + a.shape[1:]) for a in arrays]
    out = jax.vmap(fn)(*halves)
    return jax.tree.map(lambda o: o.reshape((-1,) + o.shape[2:]), out)
  return call


TRANSFORMATIONS = {
    "plain": lambda fn: fn,
    "jit": jax.jit,
    "vmap": _vmapped,
}


@pytest.fixture(params=sorted(TRANSFORMATIONS))
def transformed(request):
  """``transformed(fn)`` is ``fn`` called plainly, under ``jax.jit`` or under ``jax.vmap``.

  ``fn`` takes arrays whose first axis is an even batch and returns arrays (or
  a tuple of arrays) with the same batch first.
  """
  return TRANSFORMATIONS[request.param]
