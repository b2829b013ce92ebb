"""Datasets that are prepared once into ArrayRecord files with a TFDS builder.

SVHN, CUB-200-2011 and (where it can download) MNIST are turned into
ArrayRecord files by our own TFDS builders, which store uint8 arrays or encoded
bytes so that TensorFlow is never needed. Reading goes through
``tfds.data_source``-style random access, which grain consumes directly.

Where the prepared files live, in this order:

1. the ``data_dir`` argument;
2. the environment variable ``STN_TFDS_DIR``;
3. ``data/tfds`` under the current directory.

Each builder is registered here by a short name so that
``python -m stn_jax.datasets.prepare NAME`` can build it, and so that the
"not prepared" error can print exactly that command.
"""

from __future__ import annotations

import importlib
import os
import shlex

from stn_jax.errors import DataError

ENV_VAR = "STN_TFDS_DIR"
DEFAULT_DIR = os.path.join("data", "tfds")

# Short name -> (module, builder class, what the manual directory must hold).
BUILDERS = {
    "svhn": ("stn_jax.datasets.svhn", "StnSvhn",
             "train.tar.gz, test.tar.gz and extra.tar.gz from the SVHN site (format 1)"),
    "cub": ("stn_jax.datasets.cub", "StnCub",
            "CUB_200_2011.tgz from the Caltech-UCSD Birds-200-2011 site"),
    "mnist": ("stn_jax.datasets.mnist_tfds", "StnMnist",
              "nothing (it downloads), or the four MNIST IDX files"),
}


class DatasetNotPreparedError(DataError, FileNotFoundError):
  """A prepared dataset is not where it was looked for; the message says how to make it.

  A ``DataError`` (``python -m stn_jax.main`` prints it as one line) and a
  ``FileNotFoundError``.
  """


def import_tfds():
  """Imports ``tensorflow_datasets`` or says which package to install."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError(
        "Preparing or reading SVHN, CUB or TFDS MNIST needs the packages "
        "tensorflow-datasets and array_record (TensorFlow itself is not needed): "
        "pip install tensorflow-datasets array_record") from e
  return tfds


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> str:
  """The directory of prepared datasets: argument, then ``$STN_TFDS_DIR``, then ``data/tfds``."""
  if data_dir is not None:
    return os.fspath(data_dir)
  return os.environ.get(ENV_VAR) or DEFAULT_DIR


def builder_class(name: str):
  """The builder class registered under ``name`` (imported on first use)."""
  if name not in BUILDERS:
    raise ValueError(f"Unknown prepared dataset {name!r}; known: {sorted(BUILDERS)}.")
  module, cls, _ = BUILDERS[name]
  return getattr(importlib.import_module(module), cls)


def prepare_command(name: str, config: str | None = None,
                    data_dir: str | None = None) -> str:
  """The shell command that prepares ``name`` (and ``config``) into ``data_dir``."""
  args = ["python", "-m", "stn_jax.datasets.prepare", name]
  if config is not None:
    args.append(f"--config={config}")
  if name != "mnist":
    args.append(f"--manual_dir=DIR_WITH_{name.upper()}_ARCHIVES")
  if data_dir is not None:
    args.append(f"--data_dir={data_dir}")
  return shlex.join(args)


def make_builder(name: str, config: str | None = None, data_dir=None):
  """An instance of the builder for ``name``/``config`` rooted at the resolved data dir."""
  cls = builder_class(name)
  kwargs = {"data_dir": resolve_data_dir(data_dir), "file_format": "array_record"}
  if config is not None:
    names = [c.name for c in (cls.BUILDER_CONFIGS or [])]
    if config not in names:
      raise ValueError(f"Unknown config {config!r} for dataset {name!r}; known: {names}.")
    kwargs["config"] = config
  return cls(**kwargs)


def prepare(name: str, *, config: str | None = None, data_dir=None,
            manual_dir=None) -> str:
  """Builds the ArrayRecord files for ``name``; returns the directory they are in.

  Args:
    name: a key of ``BUILDERS``: 'svhn', 'cub' or 'mnist'.
    config: the builder config (e.g. '64' or '128' for SVHN); ``None`` for the default.
    data_dir: where prepared datasets live (see the module docstring).
    manual_dir: the directory holding the official archives, for builders that
      cannot download.

  Returns:
    The directory of the prepared version.
  """
  tfds = import_tfds()
  builder = make_builder(name, config, data_dir)
  if manual_dir is not None and not os.path.isdir(manual_dir):
    raise FileNotFoundError(
        f"The manual directory {os.path.abspath(manual_dir)!r} for {name!r} does not exist; "
        f"it should hold {BUILDERS[name][2]}. Then run:\n  "
        + prepare_command(name, config,
                          None if data_dir is None else resolve_data_dir(data_dir)))
  download_config = tfds.download.DownloadConfig(
      manual_dir=None if manual_dir is None else os.fspath(manual_dir))
  builder.download_and_prepare(download_config=download_config,
                               file_format="array_record")
  return os.fspath(builder.data_dir)


def data_source(name: str, split: str, *, config: str | None = None, data_dir=None):
  """Random-access source of one prepared split (``len`` and ``[i]`` give dicts of arrays).

  Raises:
    DatasetNotPreparedError: the split has not been prepared under the data dir;
      the message holds the command that prepares it.
  """
  import_tfds()
  builder = make_builder(name, config, data_dir)
  if not builder.is_prepared():
    root = resolve_data_dir(data_dir)
    _, _, needs = BUILDERS[name]
    raise DatasetNotPreparedError(
        f"The {name!r} dataset{'' if config is None else f' (config {config!r})'} "
        f"is not prepared under {os.path.abspath(root)!r} (looked for "
        f"{os.fspath(builder.data_dir)!r}). Prepare it once with:\n  "
        f"{prepare_command(name, config, None if data_dir is None else root)}\n"
        f"where the manual directory holds {needs}. Or point {ENV_VAR} (or "
        f"data_dir) at a directory where it was already prepared.")
  splits = builder.info.splits
  if split not in splits:
    raise ValueError(f"Dataset {name!r} has no split {split!r}; it has {sorted(splits)}.")
  return builder.as_data_source(split=split)
