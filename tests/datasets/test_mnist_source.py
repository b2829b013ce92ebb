"""MNIST from IDX files: small files written here in the real format, and the
real files where ``STN_MNIST_DIR`` names them (CI points it at the shared data)."""

import gzip
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from stn_jax.datasets import MnistNotFoundError, load_mnist, split_train_validation
from stn_jax.datasets.mnist import find_mnist_dir
from mnist_files import idx_bytes, make_split, write_idx, write_split

ENV = "STN_MNIST_DIR"
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
  """Every test starts without STN_MNIST_DIR; the real-data test reads it first."""
  monkeypatch.delenv(ENV, raising=False)


# The real-data test needs the value from before `no_env` removes it.
REAL_DIR = os.environ.get(ENV)


@pytest.mark.parametrize("gz", [(True, True), (False, False), (True, False), (False, True)],
                         ids=["gz", "plain", "gz-images", "gz-labels"])
def test_round_trip_official_names(tmp_path, gz):
  train, test = make_split(13, seed=1), make_split(11, seed=2)
  write_split(tmp_path, "train", *train, gz=gz)
  write_split(tmp_path, "t10k", *test, gz=gz)
  for split, (want_images, want_labels) in (("train", train), ("test", test)):
    images, labels = load_mnist(split, tmp_path)
    assert images.dtype == np.uint8 and labels.dtype == np.uint8
    assert images.shape == want_images.shape and labels.shape == want_labels.shape
    np.testing.assert_array_equal(images, want_images)
    np.testing.assert_array_equal(labels, want_labels)


def test_data_dir_accepts_str_and_arrays_are_writable(tmp_path):
  write_split(tmp_path, "t10k", *make_split(3))
  images, labels = load_mnist("test", str(tmp_path))
  images[0, 0, 0] = 1  # raises on a read-only view of the file's bytes
  labels[0] = 1


def test_subset_name_found(tmp_path):
  train = make_split(7, seed=3)
  write_split(tmp_path, "train-first7", *train)
  write_split(tmp_path, "t10k", *make_split(4))
  images, labels = load_mnist("train", tmp_path)
  np.testing.assert_array_equal(images, train[0])
  np.testing.assert_array_equal(labels, train[1])


def test_subset_name_found_for_test_split_too(tmp_path):
  test = make_split(5, seed=4)
  write_split(tmp_path, "t10k-first5", *test, gz=(False, True))
  np.testing.assert_array_equal(load_mnist("test", tmp_path)[1], test[1])


def test_official_names_win_over_a_subset(tmp_path):
  official, subset = make_split(6, seed=5), make_split(4, seed=6)
  write_split(tmp_path, "train", *official)
  write_split(tmp_path, "train-first4", *subset)
  np.testing.assert_array_equal(load_mnist("train", tmp_path)[0], official[0])


def test_uncompressed_file_wins_when_both_exist(tmp_path):
  # `gunzip -k` leaves both; reading the plain one skips the decompression.
  plain, packed = make_split(4, seed=11), make_split(4, seed=12)
  write_split(tmp_path, "t10k", *plain, gz=(False, False))
  write_split(tmp_path, "t10k", *packed, gz=(True, True))
  np.testing.assert_array_equal(load_mnist("test", tmp_path)[0], plain[0])


def test_subset_labels_must_match_the_images_middle_part(tmp_path):
  images, labels = make_split(4)
  write_idx(tmp_path / "train-first4-images-idx3-ubyte.gz", images)
  write_idx(tmp_path / "train-other-labels-idx1-ubyte.gz", labels)
  with pytest.raises(MnistNotFoundError, match="train-first4-labels-idx1-ubyte"):
    load_mnist("train", tmp_path)


def test_two_subset_candidates_are_an_error_listing_both(tmp_path):
  write_split(tmp_path, "train-first4", *make_split(4))
  write_split(tmp_path, "train-last4", *make_split(4))
  with pytest.raises(ValueError, match="2 candidate") as info:
    load_mnist("train", tmp_path)
  assert "train-first4-images-idx3-ubyte" in str(info.value)
  assert "train-last4-images-idx3-ubyte" in str(info.value)


def test_env_var_is_honoured(tmp_path, monkeypatch):
  test = make_split(5, seed=7)
  write_split(tmp_path / "env", "t10k", *test)
  monkeypatch.setenv(ENV, str(tmp_path / "env"))
  assert find_mnist_dir() == tmp_path / "env"
  np.testing.assert_array_equal(load_mnist("test")[0], test[0])


def test_explicit_data_dir_wins_over_env_var(tmp_path, monkeypatch):
  from_env, from_arg = make_split(5, seed=8), make_split(6, seed=9)
  write_split(tmp_path / "env", "t10k", *from_env)
  write_split(tmp_path / "arg", "t10k", *from_arg)
  monkeypatch.setenv(ENV, str(tmp_path / "env"))
  np.testing.assert_array_equal(load_mnist("test", tmp_path / "arg")[0], from_arg[0])
  monkeypatch.setenv(ENV, str(tmp_path / "missing"))  # a broken variable is not even looked at
  np.testing.assert_array_equal(load_mnist("test", tmp_path / "arg")[0], from_arg[0])


@pytest.mark.parametrize("env_value", [None, ""], ids=["unset", "empty"])
def test_default_is_data_mnist_under_the_working_directory(tmp_path, monkeypatch, env_value):
  test = make_split(5, seed=10)
  write_split(tmp_path / "data" / "mnist", "t10k", *test)
  monkeypatch.chdir(tmp_path)
  if env_value is not None:
    monkeypatch.setenv(ENV, env_value)
  assert find_mnist_dir().resolve() == (tmp_path / "data" / "mnist").resolve()
  np.testing.assert_array_equal(load_mnist("test")[0], test[0])


def _assert_helpful(message, directory):
  assert str(directory) in message
  assert "t10k-images-idx3-ubyte" in message
  assert f"{ENV}=" in message
  assert "data_dir" in message and "data/mnist/" in message
  # The command line's own fields, not only the Python argument.
  assert "--config.data.mnist_dir=" in message and "--config.data.source=tfds" in message


def test_auto_reads_idx_files_when_named_or_found_and_else_downloads(tmp_path, monkeypatch):
  from stn_jax.datasets import mnist, mnist_tfds  # pylint: disable=import-outside-toplevel
  downloads = []
  monkeypatch.setattr(mnist_tfds, "load", lambda split, data_dir=None: downloads.append(
      (split, data_dir)) or make_split(3, seed=11))
  monkeypatch.chdir(tmp_path)
  monkeypatch.delenv(ENV, raising=False)
  # Nothing named, no data/mnist here: TFDS, with its own default directory.
  assert mnist.resolve_source("auto") == "tfds"
  np.testing.assert_array_equal(load_mnist("test", source="auto")[0], make_split(3, seed=11)[0])
  assert downloads == [("test", None)]
  # A directory named by the variable or the argument, or data/mnist: IDX files, even a
  # missing one (a name given is an intent, not something to download around).
  monkeypatch.setenv(ENV, str(tmp_path / "missing"))
  assert mnist.resolve_source("auto") == "idx"
  with pytest.raises(MnistNotFoundError):
    load_mnist("test", source="auto")
  monkeypatch.delenv(ENV)
  assert mnist.resolve_source("auto", tmp_path) == "idx"
  test = make_split(5, seed=12)
  write_split(tmp_path / "data" / "mnist", "t10k", *test)
  assert mnist.resolve_source("auto") == "idx"
  np.testing.assert_array_equal(load_mnist("test", source="auto")[0], test[0])
  assert len(downloads) == 1 and mnist.resolve_source("tfds") == "tfds"
  with pytest.raises(ValueError, match="source must be one of auto, idx, tfds"):
    mnist.resolve_source("web")


def test_missing_directory(tmp_path, monkeypatch):
  missing = tmp_path / "nowhere"
  with pytest.raises(MnistNotFoundError) as info:
    load_mnist("test", missing)
  assert isinstance(info.value, FileNotFoundError)
  assert "does not exist" in str(info.value)
  _assert_helpful(str(info.value), missing)
  monkeypatch.setenv(ENV, str(missing))
  with pytest.raises(MnistNotFoundError, match=f"{re.escape(str(missing))}.*from {ENV}"):
    find_mnist_dir()


def test_missing_directory_relative_path_is_shown_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(MnistNotFoundError) as info:
    load_mnist("train")
  _assert_helpful(str(info.value), tmp_path / "data" / "mnist")


def test_data_dir_that_is_a_file(tmp_path):
  (tmp_path / "file").write_text("")
  with pytest.raises(MnistNotFoundError, match="is not a directory"):
    find_mnist_dir(tmp_path / "file")


def test_missing_files(tmp_path):
  write_split(tmp_path, "train", *make_split(3))  # the test split is absent
  with pytest.raises(MnistNotFoundError) as info:
    load_mnist("test", tmp_path)
  message = str(info.value)
  _assert_helpful(message, tmp_path)
  assert "train-images-idx3-ubyte.gz" in message  # what the directory does hold
  assert info.value.__context__ is None


def test_missing_labels_file(tmp_path):
  images, _ = make_split(3)
  write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
  with pytest.raises(MnistNotFoundError, match="not its labels file t10k-labels-idx1") as info:
    load_mnist("test", tmp_path)
  _assert_helpful(str(info.value), tmp_path)


def test_unknown_split(tmp_path):
  with pytest.raises(ValueError, match=r"split must be 'train' or 'test', got 'validation'"):
    load_mnist("validation", tmp_path)


# Each case writes a good test split, then replaces one file; (name, maker, expected message).
def _wrong_magic(d, images, labels):
  return write_idx(d / "t10k-images-idx3-ubyte.gz", images, magic=2049)


def _wrong_labels_magic(d, images, labels):
  return write_idx(d / "t10k-labels-idx1-ubyte.gz", labels, magic=2051)


def _gzip_bytes_without_gz_suffix(d, images, labels):
  (d / "t10k-images-idx3-ubyte.gz").unlink()
  path = d / "t10k-images-idx3-ubyte"
  path.write_bytes(gzip.compress(idx_bytes(images)))
  return path


def _truncated(d, images, labels):
  path = d / "t10k-images-idx3-ubyte.gz"
  path.write_bytes(gzip.compress(idx_bytes(images)[:-100]))
  return path


def _truncated_plain(d, images, labels):
  (d / "t10k-labels-idx1-ubyte.gz").unlink()
  path = d / "t10k-labels-idx1-ubyte"
  path.write_bytes(idx_bytes(labels)[:-1])
  return path


def _truncated_header(d, images, labels):
  path = d / "t10k-images-idx3-ubyte.gz"
  path.write_bytes(gzip.compress(idx_bytes(images)[:10]))
  return path


def _count_too_small(d, images, labels):
  # Catches a header count rewritten to fewer items than the file holds.
  return write_idx(d / "t10k-images-idx3-ubyte.gz", images, count=len(images) - 1)


def _not_gzip(d, images, labels):
  path = d / "t10k-images-idx3-ubyte.gz"
  path.write_bytes(b"<html>404 Not Found</html>")
  return path


def _cut_gzip_stream(d, images, labels):
  path = d / "t10k-labels-idx1-ubyte.gz"
  path.write_bytes(gzip.compress(idx_bytes(labels))[:-12])
  return path


def _count_mismatch(d, images, labels):
  return write_idx(d / "t10k-labels-idx1-ubyte.gz", labels[:-1])


def _label_out_of_range(d, images, labels):
  bad = labels.copy()
  bad[2] = 10
  return write_idx(d / "t10k-labels-idx1-ubyte.gz", bad)


def _wrong_image_size(d, images, labels):
  return write_idx(d / "t10k-images-idx3-ubyte.gz", np.zeros((len(images), 32, 32), np.uint8))


@pytest.mark.parametrize("corrupt,match", [
    (_wrong_magic, r"magic number 2049 \(0x00000801\), expected 2051"),
    (_wrong_labels_magic, r"magic number 2051 \(0x00000803\), expected 2049"),
    (_gzip_bytes_without_gz_suffix, r"magic number .* look gzip-compressed"),
    (_truncated, r"is truncated: its header promises 5 items"),
    (_truncated_plain, r"is truncated: its header promises 5 items"),
    (_truncated_header, r"is truncated: 10 bytes, fewer than the 16-byte IDX header"),
    (_count_too_small, r"has trailing bytes"),
    (_not_gzip, r"is not a valid gzip file"),
    (_cut_gzip_stream, r"is not a valid gzip file"),
    (_count_mismatch, r"5 images but .* 4 labels"),
    (_label_out_of_range, r"1 labels outside 0-9, the first 10 at index 2"),
    (_wrong_image_size, r"holds 32x32 images; MNIST images are 28x28"),
], ids=lambda v: v.__name__.strip("_") if callable(v) else None)
def test_corrupt_files_raise_value_error_naming_the_file(tmp_path, corrupt, match):
  images, labels = make_split(5)
  write_split(tmp_path, "t10k", images, labels)
  load_mnist("test", tmp_path)  # good before the damage
  path = corrupt(tmp_path, images, labels)
  with pytest.raises(ValueError, match=match) as info:
    load_mnist("test", tmp_path)
  assert str(path) in str(info.value)
  assert not isinstance(info.value, MnistNotFoundError)
  # The message is the whole story: no chained traceback from inside gzip or zlib.
  assert info.value.__cause__ is None
  assert info.value.__context__ is None or info.value.__suppress_context__


def test_import_pulls_in_numpy_and_stdlib_only():
  code = ("import sys, stn_jax.datasets.mnist, stn_jax.datasets\n"
          "heavy = {'jax', 'jaxlib', 'flax', 'tensorflow', 'tensorflow_datasets', 'torch',\n"
          "         'scipy'}\n"
          "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n")
  path = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
  env = dict(os.environ, PYTHONPATH=path)
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, check=True)
  assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_real_mnist():
  if not REAL_DIR:
    pytest.skip(f"{ENV} is not set; set it to a directory of MNIST IDX files to run this test")
  train_images, train_labels = load_mnist("train", REAL_DIR)
  test_images, test_labels = load_mnist("test", REAL_DIR)
  assert train_images.shape == (22_699, 28, 28) and train_labels.shape == (22_699,)
  assert test_images.shape == (10_000, 28, 28) and test_labels.shape == (10_000,)
  for images, labels in ((train_images, train_labels), (test_images, test_labels)):
    assert images.dtype == np.uint8 and labels.dtype == np.uint8
    assert images.max() == 255 and images.min() == 0
    np.testing.assert_array_equal(np.unique(labels), np.arange(10))
  assert test_labels[0] == 7  # the well-known first t10k digit
  assert train_labels[:5].tolist() == [5, 0, 4, 1, 9]  # and the first training digits


def test_split_is_a_disjoint_cover():
  train_idx, val_idx = split_train_validation(1000, 100, seed=3)
  assert train_idx.shape == (900,) and val_idx.shape == (100,)
  assert train_idx.dtype == np.int64 and val_idx.dtype == np.int64
  assert not set(train_idx.tolist()) & set(val_idx.tolist())
  np.testing.assert_array_equal(np.sort(np.concatenate([train_idx, val_idx])), np.arange(1000))
  # Random, not the last 100 in file order.
  assert not np.array_equal(np.sort(val_idx), np.arange(900, 1000))


def test_split_is_deterministic_per_seed_and_differs_across_seeds():
  a_train, a_val = split_train_validation(500, 50, seed=1)
  b_train, b_val = split_train_validation(500, 50, seed=1)
  np.testing.assert_array_equal(a_train, b_train)
  np.testing.assert_array_equal(a_val, b_val)
  c_train, c_val = split_train_validation(500, 50, seed=2)
  assert set(a_val.tolist()) != set(c_val.tolist())
  assert not np.array_equal(a_train, c_train)


def test_split_is_pinned():
  # Built from PCG64's raw stream, which NumPy keeps fixed across versions: if these numbers
  # change, validation scores from before the change are no longer comparable.
  train_idx, val_idx = split_train_validation(10, 3, seed=0)
  assert val_idx.tolist() == [3, 2, 1]
  assert train_idx.tolist() == [8, 6, 0, 7, 4, 5, 9]


@pytest.mark.parametrize("n,n_val", [(10, 0), (10, 10), (0, 0)])
def test_split_edge_sizes(n, n_val):
  train_idx, val_idx = split_train_validation(n, n_val)
  assert len(train_idx) == n - n_val and len(val_idx) == n_val
  np.testing.assert_array_equal(np.sort(np.concatenate([train_idx, val_idx])), np.arange(n))


@pytest.mark.parametrize("n,n_val,seed,match", [
    (10, 11, 0, r"num_validation must be between 0 and num_examples \(10\), got 11\."),
    (10, -1, 0, r"num_validation must be between 0 and num_examples \(10\), got -1\."),
    (-5, 0, 0, r"num_examples must be non-negative, got -5\."),
    (10, 2, -1, r"seed must be a non-negative integer, got -1\."),
])
def test_split_bad_sizes(n, n_val, seed, match):
  with pytest.raises(ValueError, match=match):
    split_train_validation(n, n_val, seed=seed)
