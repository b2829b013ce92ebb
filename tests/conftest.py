"""Shared fixtures: float64 for exact comparisons, the three ways every op is called, and
small digit-like MNIST files for the trainer's tests."""

import sys

import jax
import numpy as np
import pytest

from mnist_files import write_split


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


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory):
  """Digit-like IDX files: a bright square whose position depends on the label."""
  d = tmp_path_factory.mktemp("mnist")
  for name, n, seed in (("train", 256, 0), ("t10k", 64, 1)):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = np.zeros((n, 28, 28), np.uint8)
    for i, label in enumerate(labels):
      r, c = 4 + 2 * (label // 5) * 5, 4 + 4 * (label % 5)
      images[i, r:r + 6, c:c + 4] = 255
    write_split(d, name, images, labels)
  return d


class _NoTensorFlow:
  """A meta-path finder under which any ``import tensorflow`` fails."""

  def find_spec(self, name, path=None, target=None):
    del path, target
    if name == "tensorflow" or name.startswith("tensorflow."):
      raise ImportError(f"test: {name} must not be imported")


@pytest.fixture
def no_tensorflow(monkeypatch):
  """Makes TensorFlow unimportable for the test, whether or not it is installed.

  (A None entry in sys.modules would do that too, but TFDS reads any entry there
  as "TF is loaded".)
  """
  monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
  monkeypatch.setattr(sys, "meta_path", [_NoTensorFlow(), *sys.meta_path])
  # etils (under TFDS) asks once whether TensorFlow is installed, by looking for it, which
  # the finder above makes raise; this variable tells it to use no TensorFlow without asking.
  monkeypatch.setenv("EPATH_USE_TF", "false")
