"""MNIST: a split from its IDX files or through TFDS, and the validation split.

The IDX files are found and read by :mod:`stn_jax.datasets.mnist_idx` (the directory is
the ``data_dir`` argument, else the ``STN_MNIST_DIR`` environment variable, else
``data/mnist`` under the current working directory; every file is checked), and through
TFDS by :mod:`stn_jax.datasets.mnist_tfds`, which builds its dataset from the same
files; this module picks between them.

This module imports NumPy and the standard library only (TFDS only when asked for), so
that reading data never starts JAX or TensorFlow.
"""

from __future__ import annotations

import operator
import os

import numpy as np

from stn_jax.datasets import mnist_idx
from stn_jax.datasets.mnist_idx import ENV_VAR, MnistNotFoundError, find_mnist_dir, read_idx_pair

__all__ = [
    "ENV_VAR",
    "MnistNotFoundError",
    "find_mnist_dir",
    "load_mnist",
    "read_idx_pair",
    "split_train_validation",
]


def load_mnist(split: str, data_dir: str | os.PathLike | None = None, *,
               source: str = "idx") -> tuple[np.ndarray, np.ndarray]:
  """Images and labels of one MNIST split.

  Args:
    split: ``'train'`` or ``'test'`` (the t10k files). Carve a validation set
      out of ``'train'`` with ``split_train_validation``.
    data_dir: with ``source='idx'``, the directory of the IDX files (if None,
      as :func:`find_mnist_dir`); with ``source='tfds'``, the directory of prepared
      datasets (if None, ``$STN_TFDS_DIR``, else ``data/tfds``).
    source: ``'idx'`` reads local IDX files; ``'tfds'`` reads the ``stn_mnist``
      TFDS dataset, downloading and preparing it on first use
      (:mod:`stn_jax.datasets.mnist_tfds`; needs tensorflow-datasets, not
      TensorFlow); ``'auto'`` the first when IDX files are named or in ``data/mnist``,
      else the second (:func:`resolve_source`).

  Returns:
    ``(images, labels)``: ``(N, 28, 28)`` uint8 pixels in ``0..255`` (0 is
    background) and ``(N,)`` uint8 labels in ``0..9``, in file order.

  Raises:
    MnistNotFoundError: the directory, or a file of the split, is missing.
    ValueError: ``split`` is unknown, two candidate training subsets are in
      the directory, or a file is corrupt (the message names it).

  With the files in place:

  >>> images, labels = load_mnist("test")  # doctest: +SKIP
  >>> images.shape, images.dtype, labels[:3]  # doctest: +SKIP
  ((10000, 28, 28), dtype('uint8'), array([7, 2, 1], dtype=uint8))

  There is no validation split on file:

  >>> load_mnist("validation")  # doctest: +ELLIPSIS
  Traceback (most recent call last):
  ...
  ValueError: split must be 'train' or 'test', got 'validation'. For a validation set, ...
  """
  mnist_idx.check_split(split)
  source = resolve_source(source, data_dir)
  if source == "tfds":
    from stn_jax.datasets import mnist_tfds  # pylint: disable=import-outside-toplevel
    return mnist_tfds.load(split, data_dir=data_dir)
  return mnist_idx.load_idx(split, data_dir)


SOURCES = ("auto", "idx", "tfds")


def resolve_source(source: str, data_dir=None) -> str:
  """``'idx'`` or ``'tfds'``: what ``source`` reads. ``'auto'`` is ``'idx'`` when a directory
  is named (``data_dir``, ``$STN_MNIST_DIR``) or ``data/mnist`` exists under the working
  directory, and ``'tfds'`` (a download on first use) when none is.

  >>> resolve_source("tfds")
  'tfds'
  """
  if source not in SOURCES:
    raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}.")
  if source != "auto":
    return source
  named = data_dir is not None or bool(os.environ.get(mnist_idx.ENV_VAR))
  default = mnist_idx._DEFAULT_DIR  # pylint: disable=protected-access
  return "idx" if named or default.is_dir() else "tfds"


def split_train_validation(num_examples: int, num_validation: int,
                           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """A seeded random split of ``range(num_examples)`` into training and validation indices.

  The order comes from the raw output of NumPy's PCG64 bit generator, whose
  stream is fixed across NumPy versions (``Generator.permutation`` is not
  promised to be), so a seed gives the same split on every machine.

  Args:
    num_examples: size of the set to split.
    num_validation: how many indices go to validation, in ``[0, num_examples]``.
    seed: non-negative integer; each seed gives a different split.

  Returns:
    ``(train_idx, val_idx)``: int64 arrays of ``num_examples - num_validation``
    and ``num_validation`` indices, disjoint, together a permutation of
    ``range(num_examples)``, each in random order.

  Raises:
    ValueError: a size is negative, ``num_validation > num_examples``, or
      ``seed`` is negative.

  >>> train_idx, val_idx = split_train_validation(10, 3, seed=0)
  >>> len(train_idx), len(val_idx)
  (7, 3)
  >>> sorted(train_idx.tolist() + val_idx.tolist()) == list(range(10))
  True
  """
  num_examples = operator.index(num_examples)
  num_validation = operator.index(num_validation)
  seed = operator.index(seed)
  if num_examples < 0:
    raise ValueError(f"num_examples must be non-negative, got {num_examples}.")
  if not 0 <= num_validation <= num_examples:
    raise ValueError(f"num_validation must be between 0 and num_examples ({num_examples}), "
                     f"got {num_validation}.")
  if seed < 0:
    raise ValueError(f"seed must be a non-negative integer, got {seed}.")
  keys = np.random.PCG64(seed).random_raw(num_examples)
  order = np.argsort(keys, kind="stable").astype(np.int64)
  return order[num_validation:], order[:num_validation]
