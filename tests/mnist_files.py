"""Small MNIST files in the real IDX format (gzipped or not), for the tests that read MNIST
without the real data."""

import gzip
import pathlib
import struct

import numpy as np


def idx_bytes(array, *, magic=None, count=None) -> bytes:
  """The IDX encoding of a uint8 array; ``magic``/``count`` override the header to corrupt it."""
  array = np.asarray(array, np.uint8)
  magic = {3: 2051, 1: 2049}[array.ndim] if magic is None else magic
  shape = list(array.shape)
  if count is not None:
    shape[0] = count
  return struct.pack(f">{1 + array.ndim}I", magic, *shape) + array.tobytes()


def write_idx(path, array, **header) -> pathlib.Path:
  """Writes ``array`` as an IDX file, gzipped when the name ends in .gz."""
  data = idx_bytes(array, **header)
  path.write_bytes(gzip.compress(data, compresslevel=1) if path.name.endswith(".gz") else data)
  return path


def make_split(n, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
  images[0, 0, 0], images[0, 0, 1] = 0, 255  # both ends of the range round-trip
  labels = (np.arange(n) + seed) % 10  # every digit once n >= 10
  return images, labels.astype(np.uint8)


def write_split(directory, name, images, labels, *, gz=(True, True)):
  """Writes ``<name>-images-idx3-ubyte[.gz]`` and its labels; ``name`` is e.g. 'train-first5'."""
  directory.mkdir(parents=True, exist_ok=True)
  ipath = write_idx(directory / f"{name}-images-idx3-ubyte{'.gz' if gz[0] else ''}", images)
  lpath = write_idx(directory / f"{name}-labels-idx1-ubyte{'.gz' if gz[1] else ''}", labels)
  return ipath, lpath
