"""MNIST through TFDS, for machines that can download it.

``StnMnist`` (TFDS name ``stn_mnist``) fetches the four IDX files that TFDS's own
``mnist`` builder fetches, checks them with the same reader as
:func:`stn_jax.datasets.mnist.load_mnist`, and stores uint8 arrays in ArrayRecord
files. TFDS's ``mnist`` stores PNG-encoded images, and encoding those needs
TensorFlow; this builder does not. Given a manual directory holding the IDX
files, it reads those instead of downloading.

Prepare once (or let ``load_mnist(..., source='tfds')`` do it on first use):

  python -m stn_jax.datasets.prepare mnist [--data_dir=DIR]
"""

from __future__ import annotations

import logging
import os
import pathlib
import socket
import threading
import urllib.parse
import urllib.request

import numpy as np
import tensorflow_datasets as tfds

from stn_jax.datasets import mnist_idx, prepared

__all__ = ["StnMnist", "URL", "check_download_host", "load"]

# Where TFDS's own mnist builder downloads from.
URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class StnMnist(tfds.core.GeneratorBasedBuilder):
  """MNIST as uint8 arrays: ``image`` (28, 28) and ``label`` in 0..9."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Optional: a directory holding the four MNIST IDX files (train-images-idx3-ubyte.gz, "
      "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, or "
      "any names load_mnist accepts). Without it the files are downloaded.")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description="MNIST digits as uint8 arrays (no TensorFlow needed to prepare or read).",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(28, 28), dtype=np.uint8),
            "label": tfds.features.Tensor(shape=(), dtype=np.int64),
            # TFDS stores examples in a hashed order; this restores the IDX order.
            "index": tfds.features.Tensor(shape=(), dtype=np.int64),
        }),
        supervised_keys=("image", "label"),
        homepage="http://yann.lecun.com/exdb/mnist/",
    )

  def _split_generators(self, dl_manager):
    manual = _manual_dir(dl_manager)
    if manual is not None:
      logging.info("stn_mnist: reading the IDX files in %s", manual)
      return {split: self._generate_examples(mnist_idx.load_idx(split, manual))
              for split in _FILES}
    check_download_host()  # seconds, where TFDS alone would retry for minutes
    paths = dl_manager.download({f"{split}_{kind}": URL + name
                                 for split, names in _FILES.items()
                                 for kind, name in zip(("images", "labels"), names)})
    # Downloads keep hashed names without the .gz suffix, so they are read as gzip by content.
    return {split: self._generate_examples(_read_gz_pair(paths[f"{split}_images"],
                                                         paths[f"{split}_labels"]))
            for split in _FILES}

  def _generate_examples(self, arrays):
    images, labels = arrays
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": image, "label": np.int64(label), "index": np.int64(i)}


def _manual_dir(dl_manager):
  try:
    manual = dl_manager.manual_dir
  except AssertionError:  # TFDS asserts when no manual directory was given
    return None
  if manual is None or not os.path.isdir(manual):
    return None
  return pathlib.Path(manual)


def _connect(host, port, timeout):
  """Opens and closes a TCP connection to ``host:port``; raises OSError if it cannot."""
  outcome = []

  def attempt():
    try:
      socket.create_connection((host, port), timeout=timeout).close()
      outcome.append(None)
    except OSError as e:
      outcome.append(e)

  # The name lookup inside has no timeout of its own; the thread bounds it.
  thread = threading.Thread(target=attempt, daemon=True)
  thread.start()
  thread.join(2 * timeout)
  if not outcome:
    raise TimeoutError(f"no answer within {2 * timeout:.0f} s")
  if outcome[0] is not None:
    raise outcome[0]


def check_download_host(url: str = URL, *, timeout: float = 5.0, data_dir=None) -> None:
  """Raises ``MnistNotFoundError`` within seconds unless the download host (or the
  proxy that the environment names for it) accepts a connection.

  Without this, TFDS retries a host it cannot reach for minutes (urllib3's backoff
  over ten retries: about 200 s) before it fails, leaving ``.tmp`` folders behind.

  Args:
    url: where the files are downloaded from.
    timeout: seconds for the name lookup and for the connection, each.
    data_dir: where the prepared dataset was looked for, for the message.
  """
  parts = urllib.parse.urlsplit(url)
  host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
  proxy = urllib.request.getproxies().get(parts.scheme)
  via = ""
  if proxy and not urllib.request.proxy_bypass(host):
    proxy_parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    via = f" through the proxy {proxy_parts.hostname}:{proxy_parts.port or 80}"
    host, port = proxy_parts.hostname, proxy_parts.port or 80
  what = ("" if data_dir is None else
          f"MNIST is not prepared under {os.path.abspath(os.fspath(data_dir))!r}, and ")
  try:
    _connect(host, port, timeout)
  except OSError as e:
    raise mnist_idx.MnistNotFoundError(
        f"{what}TFDS could not download MNIST: {parts.hostname} cannot be reached{via} ({e}). "
        f"Without internet, point {mnist_idx.ENV_VAR} at a directory of the four MNIST IDX files "
        "(or give --config.data.mnist_dir=DIR with --config.data.source=idx), or prepare the "
        "dataset where there is internet and copy it over (python -m stn_jax.datasets.prepare "
        "mnist --data_dir=DIR).") from None


def _read_gz_pair(images_path, labels_path):
  """``read_idx_pair`` for downloads whose names lost the ``.gz`` suffix."""
  import tempfile  # pylint: disable=import-outside-toplevel
  with tempfile.TemporaryDirectory() as tmp:
    links = []
    for path, name in ((images_path, "images.gz"), (labels_path, "labels.gz")):
      link = pathlib.Path(tmp) / name
      link.symlink_to(os.path.abspath(os.fspath(path)))
      links.append(link)
    return mnist_idx.read_idx_pair(*links)


def load(split: str, *, data_dir=None, download: bool = True):
  """Images and labels of one MNIST split from the prepared ``stn_mnist`` dataset.

  Args:
    split: 'train' or 'test'.
    data_dir: where prepared datasets live (``$STN_TFDS_DIR``, else ``data/tfds``).
    download: prepare the dataset (downloading MNIST) when it is not prepared yet.

  Returns:
    ``(images, labels)`` as :func:`stn_jax.datasets.mnist.load_mnist` returns them:
    ``(N, 28, 28)`` uint8 and ``(N,)`` uint8, in the order of the IDX files.
  """
  try:
    source = prepared.data_source("mnist", split, data_dir=data_dir)
  except prepared.DatasetNotPreparedError:
    if not download:
      raise
    # Before TFDS writes anything in data_dir.
    check_download_host(data_dir=prepared.resolve_data_dir(data_dir))
    try:
      prepared.prepare("mnist", data_dir=data_dir)
    except Exception as e:  # a failed download shows up as many different errors
      raise mnist_idx.MnistNotFoundError(
          f"MNIST is not prepared under {os.path.abspath(prepared.resolve_data_dir(data_dir))!r} "
          f"and TFDS could not download it ({type(e).__name__}: {e}). On a machine without "
          f"internet, point {mnist_idx.ENV_VAR} at a directory of the four IDX files and use the "
          "default source 'idx' instead.") from e
    source = prepared.data_source("mnist", split, data_dir=data_dir)
  records = source.__getitems__(range(len(source)))
  order = np.argsort([r["index"] for r in records])
  images = np.stack([records[i]["image"] for i in order]).astype(np.uint8)
  labels = np.array([records[i]["label"] for i in order], dtype=np.uint8)
  return images, labels
