"""MNIST through TFDS (``source='tfds'``): prepared from a manual directory, from
a (simulated) download, and the errors when it can be neither."""

import shutil
import socket
import time

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets")
import tensorflow_datasets as tfds  # noqa: E402

from stn_jax.datasets import MnistNotFoundError, load_mnist, prepared  # noqa: E402
from stn_jax.datasets import prepare as prepare_cli  # noqa: E402
from stn_jax.datasets import mnist_tfds  # noqa: E402
from mnist_files import make_split, write_split  # noqa: E402


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("idx")
  write_split(d, "train", *make_split(37, seed=1))
  write_split(d, "t10k", *make_split(12, seed=2))
  return d


@pytest.fixture(scope="module")
def from_manual(idx_dir, tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  prepared.prepare("mnist", data_dir=data_dir, manual_dir=idx_dir)
  return data_dir


@pytest.mark.parametrize("split", ["train", "test"])
def test_manual_dir_gives_the_idx_arrays_in_file_order(idx_dir, from_manual, split):
  images, labels = load_mnist(split, from_manual, source="tfds")
  want_images, want_labels = load_mnist(split, idx_dir)
  assert images.dtype == np.uint8 and labels.dtype == np.uint8
  np.testing.assert_array_equal(images, want_images)
  np.testing.assert_array_equal(labels, want_labels)


def test_preparing_and_reading_work_with_tensorflow_unimportable(idx_dir, tmp_path,
                                                                no_tensorflow):
  prepared.prepare("mnist", data_dir=tmp_path, manual_dir=idx_dir)
  np.testing.assert_array_equal(load_mnist("test", tmp_path, source="tfds")[1],
                                load_mnist("test", idx_dir)[1])


def test_env_var_names_the_prepared_dir(from_manual, idx_dir, monkeypatch):
  monkeypatch.setenv(prepared.ENV_VAR, str(from_manual))
  np.testing.assert_array_equal(load_mnist("test", source="tfds")[1],
                                load_mnist("test", idx_dir)[1])


def test_download_fetches_the_four_tfds_urls(idx_dir, tmp_path, monkeypatch):
  requested = []

  def fake_download(self, urls):
    # Downloads land under hashed names without the .gz suffix; mimic that.
    out = {}
    for key, url in urls.items():
      requested.append(url)
      name = url.rsplit("/", 1)[-1]
      local = idx_dir / name
      if not local.exists():  # the fixture names the test split t10k too
        raise AssertionError(f"unexpected url {url}")
      out[key] = shutil.copy(local, tmp_path / f"hashed_{key}")
    return out

  monkeypatch.setattr(tfds.download.DownloadManager, "download", fake_download)
  # The simulated download needs no network: nor does the check that the host answers.
  monkeypatch.setattr(mnist_tfds, "check_download_host", lambda **_: None)
  images, labels = load_mnist("train", tmp_path / "tfds", source="tfds")
  assert sorted(requested) == sorted(
      mnist_tfds.URL + f"{p}-{k}-idx{n}-ubyte.gz"
      for p in ("train", "t10k") for k, n in (("images", 3), ("labels", 1)))
  np.testing.assert_array_equal(labels, load_mnist("train", idx_dir)[1])
  assert images.shape == (37, 28, 28)


def test_failed_download_says_what_to_do_instead(tmp_path, monkeypatch):
  def no_network(self, urls):
    raise ConnectionError("no route to host")

  monkeypatch.setattr(tfds.download.DownloadManager, "download", no_network)
  monkeypatch.setattr(mnist_tfds, "check_download_host", lambda **_: None)  # the host answers
  with pytest.raises(MnistNotFoundError, match="could not download.*STN_MNIST_DIR"):
    load_mnist("test", tmp_path, source="tfds")


def _closed_port():
  with socket.socket() as s:  # a port nothing listens on: connections are refused at once
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_an_unreachable_host_fails_in_seconds_and_writes_nothing(tmp_path, monkeypatch):
  # No test may need the network: the host is made unreachable whether or not it is.
  def no_dns(*args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

  monkeypatch.setattr(socket, "getaddrinfo", no_dns)
  for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
    monkeypatch.delenv(name, raising=False)
  start = time.monotonic()
  with pytest.raises(MnistNotFoundError, match="not prepared under .*storage.googleapis.com "
                     "cannot be reached.*STN_MNIST_DIR"):
    load_mnist("train", tmp_path / "tfds", source="tfds")
  assert time.monotonic() - start < 5
  assert not (tmp_path / "tfds").exists()  # no .tmp folders, nothing at all


def test_the_check_goes_through_the_proxy_the_environment_names(monkeypatch):
  port = _closed_port()
  monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
  monkeypatch.delenv("https_proxy", raising=False)
  monkeypatch.delenv("NO_PROXY", raising=False)
  monkeypatch.delenv("no_proxy", raising=False)
  with pytest.raises(MnistNotFoundError, match=f"through the proxy 127.0.0.1:{port}"):
    mnist_tfds.check_download_host(timeout=2)
  with socket.socket() as server:  # a host that answers passes
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{server.getsockname()[1]}")
    mnist_tfds.check_download_host(timeout=2)


def test_not_prepared_without_download_gives_the_prepare_command(tmp_path):
  with pytest.raises(prepared.DatasetNotPreparedError,
                     match="python -m stn_jax.datasets.prepare mnist"):
    mnist_tfds.load("test", data_dir=tmp_path, download=False)


def test_unknown_source(tmp_path):
  with pytest.raises(ValueError, match="source must be one of auto, idx, tfds"):
    load_mnist("test", tmp_path, source="hub")


def test_prepare_names_a_missing_manual_dir(tmp_path, capsys):
  missing = tmp_path / "nowhere"
  assert prepare_cli.main(["mnist", f"--manual_dir={missing}",
                           f"--data_dir={tmp_path}"]) == 2
  err = capsys.readouterr().err
  assert str(missing) in err and "does not exist" in err


def test_unknown_dataset_and_config(tmp_path):
  with pytest.raises(ValueError, match="known: \\['cub', 'mnist', 'svhn'\\]"):
    prepared.data_source("imagenet", "train", data_dir=tmp_path)
  with pytest.raises(ValueError, match="Unknown config '32' for dataset 'mnist'"):
    prepared.data_source("mnist", "train", config="32", data_dir=tmp_path)


def test_unknown_split(from_manual):
  with pytest.raises(ValueError, match="no split 'validation'.*\\['test', 'train'\\]"):
    prepared.data_source("mnist", "validation", data_dir=from_manual)
