"""MNIST's original IDX files: found, read and checked with NumPy only.

The directory is the ``data_dir`` argument, else the ``STN_MNIST_DIR``
environment variable, else ``data/mnist`` under the current working directory.
It holds the IDX files of the MNIST database (LeCun, Cortes, Burges), each
either gzip-compressed (``.gz``) or not:

- ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte``, or a subset
  saved as ``train<middle>-images-idx3-ubyte`` with the labels file of the same
  middle part (for instance ``train-first22699-images-idx3-ubyte.gz``);
- ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (the test split).

Files are checked, not trusted: a wrong magic number, a header that promises
more or fewer bytes than the file holds, broken gzip data, image and label
counts that differ, labels outside 0-9 or images other than 28x28 raise a
:class:`stn_jax.errors.DataError` (a ``ValueError``) that names the file.

This module imports NumPy and the standard library only, so that reading data
never starts JAX or TensorFlow.
"""

from __future__ import annotations

import gzip
import os
import pathlib
import struct
import zlib

import numpy as np

from stn_jax.errors import DataError

__all__ = [
    "ENV_VAR",
    "MnistNotFoundError",
    "check_split",
    "find_mnist_dir",
    "load_idx",
    "read_idx_pair",
]

ENV_VAR = "STN_MNIST_DIR"
_DEFAULT_DIR = pathlib.Path("data") / "mnist"
_PREFIXES = {"train": "train", "test": "t10k"}
_IMAGES_SUFFIX = "-images-idx3-ubyte"
_LABELS_SUFFIX = "-labels-idx1-ubyte"
_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
_SIDE = 28
_NUM_CLASSES = 10
_OFFICIAL_FILES = tuple(f"{p}{s}" for p in ("train", "t10k")
                        for s in (_IMAGES_SUFFIX, _LABELS_SUFFIX))
_REPLACE = " Replace it with an intact copy (data/README.md says where to get one)."


class MnistNotFoundError(DataError, FileNotFoundError):
  """The MNIST directory or one of its IDX files does not exist.

  The message names the directory searched, the files expected there and
  how to point the loader at the data. It is a ``DataError``, which
  ``python -m stn_jax.main`` reports as one line, and a ``FileNotFoundError``.

  >>> issubclass(MnistNotFoundError, FileNotFoundError)
  True
  """


def _expected_and_fix() -> str:
  return (f"Expected there: {', '.join(_OFFICIAL_FILES)}, each gzipped (.gz) or not; a training "
          f"subset may be named train<part>{_IMAGES_SUFFIX} with train<part>{_LABELS_SUFFIX}. "
          f"To fix: set {ENV_VAR}=/path/to/dir, a directory holding these four IDX files, "
          "or give --config.data.mnist_dir=/path/to/dir (in Python, load_mnist's data_dir=...), "
          f"or put them in {_DEFAULT_DIR.as_posix()}/ under the current working directory, or "
          "download MNIST through TFDS with --config.data.source=tfds (see data/README.md).")


def _describe(path: pathlib.Path) -> str:
  # A relative path means little in an error read elsewhere; show where it points.
  return str(path) if path.is_absolute() else f"{path.absolute()} ({path} in the current directory)"


def _resolve_dir(data_dir) -> tuple[pathlib.Path, str]:
  """``find_mnist_dir``, plus where the directory came from, for error messages."""
  if data_dir is not None:
    path, source = pathlib.Path(data_dir), "from data_dir"
  elif os.environ.get(ENV_VAR):
    path, source = pathlib.Path(os.environ[ENV_VAR]), f"from {ENV_VAR}"
  else:
    path, source = _DEFAULT_DIR, f"the default: neither data_dir nor {ENV_VAR} was set"
  path = path.expanduser()
  if not path.is_dir():
    what = "is not a directory" if path.exists() else "does not exist"
    raise MnistNotFoundError(
        f"MNIST directory {_describe(path)} {what}; it is {source}. {_expected_and_fix()}")
  return path, source


def find_mnist_dir(data_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """The directory to read MNIST from.

  Args:
    data_dir: the directory; if None, the ``STN_MNIST_DIR`` environment
      variable, and if that is unset or empty, ``data/mnist`` relative to the
      current working directory.

  Returns:
    The directory as a ``pathlib.Path`` (``~`` expanded, otherwise as given).

  Raises:
    MnistNotFoundError: the chosen directory does not exist or is not a
      directory.

  >>> import tempfile
  >>> with tempfile.TemporaryDirectory() as d:
  ...   find_mnist_dir(d) == pathlib.Path(d)
  True
  """
  return _resolve_dir(data_dir)[0]


def _gz_or_plain(directory: pathlib.Path, name: str) -> pathlib.Path | None:
  # Uncompressed first: `gunzip -k` leaves both, and they hold the same bytes.
  for candidate in (name, name + ".gz"):
    if (directory / candidate).is_file():
      return directory / candidate
  return None


def _find_files(directory: pathlib.Path, source: str,
                split: str) -> tuple[pathlib.Path, pathlib.Path]:
  """Images and labels files of ``split`` in ``directory``; see the module docstring."""
  prefix = _PREFIXES[split]
  middle = ""
  images = _gz_or_plain(directory, prefix + _IMAGES_SUFFIX)
  if images is None:
    # Subsets such as train-first22699-...: the middle part pairs images with labels.
    middles = set()
    for p in directory.glob(f"{prefix}*{_IMAGES_SUFFIX}*"):
      for suffix in (_IMAGES_SUFFIX, _IMAGES_SUFFIX + ".gz"):
        if p.is_file() and p.name.endswith(suffix):
          middles.add(p.name[len(prefix):-len(suffix)])
    if len(middles) > 1:
      found = ", ".join(sorted(f"{prefix}{m}{_IMAGES_SUFFIX}[.gz]" for m in middles))
      raise DataError(
          f"Found {len(middles)} candidate MNIST {split} image files in {directory}: {found}. "
          "Keep exactly one (with its labels file), or put the others in another directory.")
    if middles:
      middle = middles.pop()
      images = _gz_or_plain(directory, f"{prefix}{middle}{_IMAGES_SUFFIX}")
  labels_name = f"{prefix}{middle}{_LABELS_SUFFIX}"
  labels = _gz_or_plain(directory, labels_name)
  if images is None or labels is None:
    missing = (f"no {split} images file: expected {prefix}{_IMAGES_SUFFIX}[.gz] "
               f"or one {prefix}*{_IMAGES_SUFFIX}[.gz]" if images is None else
               f"images file {images.name} found, but not its labels file {labels_name}[.gz]")
    present = sorted(p.name for p in directory.iterdir())
    listing = ", ".join(present[:20]) + (", ..." if len(present) > 20 else "") or "nothing"
    raise MnistNotFoundError(
        f"MNIST {split} split not found in directory {_describe(directory)} ({source}): "
        f"{missing}. The directory holds: {listing}. {_expected_and_fix()}")
  return images, labels


def _read_bytes(path: pathlib.Path) -> bytes:
  raw = path.read_bytes()
  if path.name.endswith(".gz"):
    try:
      return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
      # `from None`: the gzip internals say nothing that the message does not.
      raise DataError(f"{path} is not a valid gzip file (truncated or corrupt): {e}."
                      f"{_REPLACE}") from None
  return raw


def _parse_idx(path: pathlib.Path, data: bytes, magic: int, ndim: int) -> np.ndarray:
  """The uint8 array of an IDX file's bytes, after checking its header against its length."""
  header_size = 4 * (1 + ndim)
  if len(data) < header_size:
    raise DataError(f"{path} is truncated: {len(data)} bytes, fewer than the {header_size}-byte "
                    f"IDX header.{_REPLACE}")
  found_magic, *shape = struct.unpack(f">{1 + ndim}I", data[:header_size])
  if found_magic != magic:
    hint = (" The bytes look gzip-compressed: give the file a .gz suffix."
            if data[:2] == b"\x1f\x8b" else _REPLACE)
    raise DataError(f"{path} has magic number {found_magic} (0x{found_magic:08x}), expected "
                    f"{magic} (0x{magic:08x}); it is not an MNIST "
                    f"{'images' if ndim == 3 else 'labels'} IDX file.{hint}")
  if ndim == 3 and tuple(shape[1:]) != (_SIDE, _SIDE):
    raise DataError(f"{path} holds {shape[1]}x{shape[2]} images; MNIST images are "
                    f"{_SIDE}x{_SIDE}.{_REPLACE}")
  expected = header_size + int(np.prod(shape, dtype=np.int64))
  if len(data) != expected:
    problem = "is truncated" if len(data) < expected else "has trailing bytes"
    raise DataError(f"{path} {problem}: its header promises {shape[0]} items, "
                    f"{expected} bytes in all, but the data holds {len(data)} bytes.{_REPLACE}")
  # A copy, so that callers get an ordinary writable array, not a view of `bytes`.
  return np.frombuffer(data, np.uint8, offset=header_size).reshape(shape).copy()


def load_idx(split: str,
             data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Images and labels of the MNIST split ``'train'`` or ``'test'`` (the t10k files) from
  the IDX files in ``data_dir`` (if None, as :func:`find_mnist_dir`): ``(N, 28, 28)`` and
  ``(N,)`` uint8 arrays in file order, checked as the module says.

  Raises:
    MnistNotFoundError: the directory, or a file of the split, is missing.
    ValueError: ``split`` is unknown, two candidate training subsets are in the
      directory, or a file is corrupt (the message names it).
  """
  check_split(split)
  return read_idx_pair(*_find_files(*_resolve_dir(data_dir), split))


def check_split(split: str) -> None:
  """Raises a ValueError unless ``split`` is ``'train'`` or ``'test'``."""
  if split not in _PREFIXES:
    raise ValueError(f"split must be 'train' or 'test', got {split!r}. For a validation set, "
                     "split the 'train' split with split_train_validation.")


def read_idx_pair(images_path: str | os.PathLike,
                  labels_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
  """Images and labels from an IDX images file and its labels file (``.gz`` or plain).

  The files may have any names (a TFDS download keeps them under hashed names);
  a ``.gz`` suffix means gzip. Errors name the file, as in :func:`load_mnist`.
  """
  images_path, labels_path = pathlib.Path(images_path), pathlib.Path(labels_path)
  images = _parse_idx(images_path, _read_bytes(images_path), _IMAGES_MAGIC, ndim=3)
  labels = _parse_idx(labels_path, _read_bytes(labels_path), _LABELS_MAGIC, ndim=1)
  if len(images) != len(labels):
    raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds "
                    f"{len(labels)} labels; the two files must come from the same split. "
                    "Replace them with intact copies (data/README.md says where to get them).")
  bad = np.flatnonzero(labels >= _NUM_CLASSES)
  if bad.size:
    raise DataError(f"{labels_path} has {bad.size} labels outside 0-{_NUM_CLASSES - 1}, the "
                    f"first {labels[bad[0]]} at index {bad[0]}.{_REPLACE}")
  return images, labels
