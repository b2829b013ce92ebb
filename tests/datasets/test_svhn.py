"""SVHN format 1 builder: a small fixture in the real file format, prepared and read back.

The fixture (``svhn_files``) follows the official tarballs: ``<split>/N.png`` and a MATLAB
v7.3 ``<split>/digitStruct.mat``. Each union box is painted red on blue, so the crops show
where it went.
"""

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets")
pytest.importorskip("array_record")

from stn_jax.datasets import prepare as prepare_cli  # noqa: E402 (after the skips above)
from stn_jax.datasets import prepared  # noqa: E402 (after the skips above)
from stn_jax.datasets import svhn  # noqa: E402 (after the skips above)
from svhn_files import (  # noqa: E402 (after the skips above)
    TEST, TINY, TRAIN, digit_struct_bytes, make_manual_dir, split_files, union, write_tarball)


def expected_labels(digits):
  labels = [d[4] % 10 for d in digits]
  return labels + [svhn.NO_DIGIT] * (svhn.MAX_DIGITS - len(labels))


@pytest.fixture(scope="module")
def prepared_64(tmp_path_factory):
  root = tmp_path_factory.mktemp("svhn")
  manual = make_manual_dir(root / "manual")
  data_dir = root / "tfds"
  prepared.prepare("svhn", config="64", data_dir=data_dir, manual_dir=manual)
  return data_dir


def by_filename(source):
  return {r["filename"].decode(): r for r in (source[i] for i in range(len(source)))}


def test_splits_and_dropped_count(prepared_64):
  builder = prepared.make_builder("svhn", "64", prepared_64)  # a fresh one, read from disk
  assert builder.is_prepared()
  assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == {
      "train": 5, "test": 3}
  assert builder.info.metadata["dropped_over_5_digits"] == {"train": 1, "test": 0}


def test_examples_as_drawn(prepared_64):
  for split, spec in (("train", TRAIN), ("test", TEST)):
    records = by_filename(svhn.load(split, data_dir=prepared_64))
    kept = {n: s for n, s in spec.items() if len(s[2]) <= svhn.MAX_DIGITS}
    assert sorted(records) == sorted(f"{split}/{n}" for n in kept)
    for name, (_, _, digits) in kept.items():
      r = records[f"{split}/{name}"]
      assert r["image"].shape == (64, 64, 3) and r["image"].dtype == np.uint8
      assert r["label"].dtype == np.int64
      assert r["label"].tolist() == expected_labels(digits)
      assert int(r["length"]) == len(digits)
      assert int(r["image_id"]) == int(name.split(".")[0])
      assert r["box"].dtype == np.float32
      np.testing.assert_allclose(r["box"], union(digits))


def red_fraction(pixels):
  return np.mean(pixels[..., 0].astype(int) > pixels[..., 2].astype(int))


def expected_red_span(lo, hi, extent, size=64):
  """Where the box side [lo, hi] (red where it is inside the image) lands in the crop."""
  centre, half = (lo + hi) / 2, svhn.ENLARGE * (hi - lo) / 2
  c0, c1 = max(centre - half, 0), min(centre + half, extent)
  red0, red1 = max(lo, 0), min(hi, extent)
  return size * (red0 - c0) / (c1 - c0), size * (red1 - c0) / (c1 - c0)


@pytest.mark.parametrize("name", ["1.png", "2.png", "5.png", "6.png"])
def test_crop_geometry(prepared_64, name):
  width, height, digits = TRAIN[name]
  image = by_filename(svhn.load("train", data_dir=prepared_64))[f"train/{name}"]["image"]
  left, top, w, h = union(digits)
  x0, x1 = expected_red_span(left, left + w, width)
  y0, y1 = expected_red_span(top, top + h, height)
  if name == "1.png":  # not clipped: the box fills 1/1.3 of each side, centred
    np.testing.assert_allclose([x0, x1], [64 * 0.15 / 1.3, 64 * 1.15 / 1.3])
    np.testing.assert_allclose([y0, y1], [64 * 0.15 / 1.3, 64 * 1.15 / 1.3])
  # Two pixels off each predicted edge: inside all red, outside all blue.
  inside = image[int(np.ceil(y0)) + 2:int(y1) - 2, int(np.ceil(x0)) + 2:int(x1) - 2]
  assert red_fraction(inside) == 1.0
  outside = np.ones((64, 64), bool)
  rows = slice(max(int(y0) - 2, 0), int(np.ceil(y1)) + 2)
  outside[rows, max(int(x0) - 2, 0):int(np.ceil(x1)) + 2] = False
  assert outside.any()
  assert red_fraction(image[outside]) == 0.0
  # Overall proportion of red, as predicted by the enlargement and the clipping.
  assert red_fraction(image) == pytest.approx((x1 - x0) * (y1 - y0) / 64**2, abs=0.04)


def test_128_config_and_extra_split(tmp_path):
  manual = make_manual_dir(tmp_path / "manual", train=TINY, test=TINY)
  write_tarball(manual / "extra.tar.gz", "extra", split_files(TEST))
  prepared.prepare("svhn", config="128", data_dir=tmp_path / "tfds", manual_dir=manual)
  extra = svhn.load("extra", size=128, data_dir=tmp_path / "tfds")
  assert len(extra) == len(TEST)
  assert extra[0]["image"].shape == (128, 128, 3)
  # Only the 128 config is prepared: the 64 one says how to prepare it.
  with pytest.raises(prepared.DatasetNotPreparedError, match="prepare svhn"):
    svhn.load("train", size=64, data_dir=tmp_path / "tfds")


def test_to_batch_of_loaded_records(prepared_64):
  source = svhn.load("test", data_dir=prepared_64)
  batch = svhn.to_batch([source[i] for i in range(len(source))])
  assert batch["image"].shape == (3, 64, 64, 3) and batch["image"].dtype == np.float32
  assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
  assert batch["label"].dtype == np.int32
  assert sorted(batch["label"].tolist()) == sorted(expected_labels(d) for _, _, d in TEST.values())


def test_load_rejects_unknown_size_and_split(prepared_64):
  with pytest.raises(ValueError, match="64, 128"):
    svhn.load("train", size=32, data_dir=prepared_64)
  with pytest.raises(ValueError, match="no split 'extra'"):
    svhn.load("extra", data_dir=prepared_64)


def test_reading_works_with_tensorflow_unimportable(prepared_64, no_tensorflow):
  assert len(svhn.load("train", data_dir=prepared_64)) == 5


# ----------------------------------------------------------------- missing and broken data


def prepare_fails(manual, tmp_path, error=ValueError):
  with pytest.raises(error) as info:
    prepared.prepare("svhn", data_dir=tmp_path / "tfds", manual_dir=manual)
  return str(info.value)


def test_missing_manual_dir_names_files_and_command(tmp_path):
  message = prepare_fails(tmp_path / "nowhere", tmp_path, FileNotFoundError)
  assert "nowhere" in message
  assert "python -m stn_jax.datasets.prepare svhn" in message


def test_missing_test_tarball_is_named(tmp_path):
  manual = make_manual_dir(tmp_path / "manual", train=TINY, test=TINY)
  (manual / "test.tar.gz").unlink()
  message = prepare_fails(manual, tmp_path, FileNotFoundError)
  assert "test.tar.gz not found" in message and str(manual) in message
  assert "python -m stn_jax.datasets.prepare svhn" in message


def test_prepare_cli_reports_a_sentence(tmp_path, capsys):
  code = prepare_cli.main(["svhn", f"--manual_dir={tmp_path / 'nowhere'}",
                           f"--data_dir={tmp_path / 'tfds'}"])
  assert code == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and "Traceback" not in err


def test_truncated_tarball_is_named(tmp_path):
  manual = make_manual_dir(tmp_path / "manual", train=TINY, test=TINY)
  path = manual / "train.tar.gz"
  path.write_bytes(path.read_bytes()[:-200])
  message = prepare_fails(manual, tmp_path)
  assert str(path) in message and "truncated or corrupt" in message


def test_matlab_v5_file_is_named(tmp_path):
  files = split_files(TINY, mat=b"MATLAB 5.0 MAT-file, Platform: PCWIN" + bytes(200))
  manual = make_manual_dir(tmp_path / "manual", train=TINY, test=TINY, replace={"train": files})
  message = prepare_fails(manual, tmp_path)
  assert "train/digitStruct.mat in " in message and "v7.3" in message


def test_missing_digit_struct_is_named(tmp_path):
  files = split_files(TINY)
  del files["digitStruct.mat"]
  manual = make_manual_dir(tmp_path / "manual", train=TINY, test=TINY, replace={"test": files})
  message = prepare_fails(manual, tmp_path)
  assert "holds no test/digitStruct.mat" in message


def test_listed_image_missing_from_tarball_is_named(tmp_path):
  files = split_files(TINY)
  del files["1.png"]
  manual = make_manual_dir(tmp_path / "manual", train=TINY, test=TINY, replace={"train": files})
  assert "train/1.png, listed in train/digitStruct.mat" in prepare_fails(manual, tmp_path)


def test_corrupt_png_is_named(tmp_path):
  files = split_files(TINY)
  files["1.png"] = files["1.png"][:40]
  manual = make_manual_dir(tmp_path / "manual", train=TINY, test=TINY, replace={"train": files})
  message = prepare_fails(manual, tmp_path)
  assert "train/1.png in " in message and "cannot be decoded" in message


@pytest.mark.parametrize("box,match", [((5, 5, 0, 10, 3), "positive width"),
                                       ((500, 5, 10, 10, 3), "outside the 30x20 image")])
def test_bad_box_is_named(tmp_path, box, match):
  spec = {"1.png": (30, 20, [box])}
  manual = make_manual_dir(tmp_path / "manual", train=TINY, test=TINY,
                           replace={"train": split_files(TINY, mat=digit_struct_bytes(
                               [("1.png", spec["1.png"][2])]))})
  message = prepare_fails(manual, tmp_path)
  assert "train/1.png" in message and match in message


def test_bad_label_is_named(tmp_path):
  mat = digit_struct_bytes([("1.png", [(5, 5, 10, 10, 11)])])
  manual = make_manual_dir(tmp_path / "manual", train=TINY, test=TINY,
                           replace={"train": split_files(TINY, mat=mat)})
  message = prepare_fails(manual, tmp_path)
  assert "train/digitStruct.mat" in message and "SVHN labels are 1-10" in message


def test_read_digit_struct_inline_and_referenced_fields():
  entries = svhn.read_digit_struct(digit_struct_bytes(
      [("1.png", [(1, 2, 3, 4, 10)]), ("2.png", [(1, 2, 3, 4, 5), (6, 7, 8, 9, 6)])]))
  assert [e[0] for e in entries] == ["1.png", "2.png"]
  np.testing.assert_array_equal(entries[0][1], [[1, 2, 3, 4]])
  np.testing.assert_array_equal(entries[0][2], [10])
  np.testing.assert_array_equal(entries[1][1], [[1, 2, 3, 4], [6, 7, 8, 9]])
  np.testing.assert_array_equal(entries[1][2], [5, 6])
