"""CUB-200-2011: the TFDS builder on a tiny archive in the official layout, and the crops."""

import io
import os
import re
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tensorflow_datasets")
pytest.importorskip("array_record")

from stn_jax.datasets import cub, prepare, prepared  # pylint: disable=wrong-import-position
from cub_files import CLASSES, IMAGES, ROOT, _official_files, _pack, _path


@pytest.fixture(scope="module")
def files():
  return _official_files()


@pytest.fixture(scope="module")
def manual(tmp_path_factory, files):
  d = tmp_path_factory.mktemp("cub_manual")
  _pack(d / cub.ARCHIVE, files)
  return d


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, manual):
  d = tmp_path_factory.mktemp("cub_tfds")
  prepared.prepare("cub", data_dir=d, manual_dir=manual)
  return d


def _records(split, data_dir):
  source = cub.load(split, data_dir=data_dir)
  return {int(r["image_id"]): r for r in (source[i] for i in range(len(source)))}


def test_prepare_stores_what_the_archive_holds(data_dir, files):
  seen = set()
  for split, flag in (("train", 1), ("test", 0)):
    records = _records(split, data_dir)
    expected = [i for i, image in enumerate(IMAGES, start=1) if image[3] == flag]
    assert sorted(records) == expected
    for image_id, r in records.items():
      class_id, width, height, _, _ = IMAGES[image_id - 1]
      assert int(r["label"]) == class_id - 1
      assert (int(r["height"]), int(r["width"])) == (height, width)
      assert r["bbox"].dtype == np.float32
      np.testing.assert_array_equal(r["bbox"], [image_id, 2.5, width - image_id - 3, 20.0])
      assert r["image"] == files[f"{ROOT}/images/{_path(image_id)}"]
      seen.add(image_id)
  assert seen == set(range(1, len(IMAGES) + 1))
  names = cub.load("test", data_dir=data_dir).dataset_info.features["label"].names
  assert names == CLASSES
  assert "tensorflow" not in sys.modules


def test_decode_gives_rgb_for_a_greyscale_jpeg(data_dir):
  grey = _records("train", data_dir)[4]
  pixels = cub.decode(grey["image"], name="grey")
  assert pixels.dtype == np.uint8 and pixels.shape == (29, 41, 3) and pixels.flags.writeable
  assert np.array_equal(pixels[..., 0], pixels[..., 1])
  assert np.array_equal(pixels[..., 0], pixels[..., 2])
  with Image.open(io.BytesIO(grey["image"])) as image:
    assert image.mode == "L"


def test_an_extracted_folder_prepares_the_same_records(tmp_path, manual, data_dir):
  folder_manual = tmp_path / "manual"
  folder_manual.mkdir()
  with tarfile.open(manual / cub.ARCHIVE) as tar:
    tar.extractall(folder_manual, filter="data")
  prepared.prepare("cub", data_dir=tmp_path / "tfds", manual_dir=folder_manual)
  for split in ("train", "test"):
    ours, theirs = _records(split, tmp_path / "tfds"), _records(split, data_dir)
    assert sorted(ours) == sorted(theirs)
    for image_id, r in ours.items():
      for key in ("image", "label", "height", "width"):
        assert r[key] == theirs[image_id][key]
      np.testing.assert_array_equal(r["bbox"], theirs[image_id]["bbox"])


def test_batches_from_prepared_records(data_dir):
  records = [r for _, r in sorted(_records("train", data_dir).items())][:3]
  batch = cub.train_batch(records, np.random.default_rng(0), size=224)
  assert batch["image"].shape == (3, 224, 224, 3) and batch["image"].dtype == np.float32
  assert batch["label"].dtype == np.int32
  np.testing.assert_array_equal(batch["label"], [int(r["label"]) for r in records])
  assert 0 <= batch["image"].min() and batch["image"].max() <= 1 and batch["image"].max() > 0.5
  big = cub.train_batch(records[:1], np.random.default_rng(0), size=448)
  assert big["image"].shape == (1, 448, 448, 3)
  batch = cub.eval_batch(records[:2])
  assert batch["image"].shape == (2, 10, 224, 224, 3) and batch["image"].dtype == np.float32
  assert 0 <= batch["image"].min() and batch["image"].max() <= 1
  np.testing.assert_array_equal(batch["label"], [int(r["label"]) for r in records[:2]])
  with pytest.raises(ValueError, match="at least one record"):
    cub.eval_batch([])


# ------------------------------------------------------------------ errors


def test_unprepared_data_dir_says_how_to_prepare(tmp_path):
  with pytest.raises(prepared.DatasetNotPreparedError,
                     match=re.escape("python -m stn_jax.datasets.prepare cub")):
    prepared.data_source("cub", "train", data_dir=tmp_path)
  with pytest.raises(prepared.DatasetNotPreparedError):
    cub.load("test", data_dir=tmp_path)


def _assert_manual_dir_error(message, directory):
  assert cub.ARCHIVE in message
  assert os.path.abspath(directory) in message
  assert "python -m stn_jax.datasets.prepare cub --manual_dir=DIR" in message


@pytest.mark.parametrize("layout", ["missing", "empty", "other files"])
def test_manual_dir_without_the_archive(tmp_path, layout):
  manual = tmp_path / "manual"
  if layout != "missing":
    manual.mkdir()
  if layout == "other files":
    (manual / "CUB_200_2011.zip").write_bytes(b"x")
  with pytest.raises(FileNotFoundError) as info:
    prepared.prepare("cub", data_dir=tmp_path / "tfds", manual_dir=manual)
  _assert_manual_dir_error(str(info.value), manual)
  if layout == "other files":
    assert "CUB_200_2011.zip" in str(info.value)


def test_cli_reports_a_missing_manual_dir(tmp_path, capsys, monkeypatch):
  monkeypatch.chdir(tmp_path)
  missing = tmp_path / "nowhere"
  code = prepare.main(["cub", "--manual_dir", str(missing), "--data_dir", str(tmp_path / "tfds")])
  assert code == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ")
  _assert_manual_dir_error(err, missing)


def _replace(name, data):
  return lambda files: {**files, name: data}


def _without(name):
  return lambda files: {k: v for k, v in files.items() if k != name}


def _edit_line(name, number, line):
  def edit(files):
    lines = files[name].decode().splitlines()
    lines[number - 1] = line
    return {**files, name: ("\n".join(lines) + "\n").encode()}
  return edit


FIRST_IMAGE = f"{ROOT}/images/{_path(1)}"

BROKEN = {
    "no bounding boxes": (_without(f"{ROOT}/bounding_boxes.txt"),
                          [f"{ROOT}/bounding_boxes.txt", cub.ARCHIVE]),
    "short line": (_edit_line(f"{ROOT}/image_class_labels.txt", 3, "3"),
                   ["image_class_labels.txt", "line 3"]),
    "bad id": (_edit_line(f"{ROOT}/images.txt", 2, "two x.jpg"), ["images.txt", "line 2"]),
    "repeated id": (_edit_line(f"{ROOT}/train_test_split.txt", 5, "4 1"),
                    ["train_test_split.txt", "line 5", "also on line 4"]),
    "unknown class": (_edit_line(f"{ROOT}/image_class_labels.txt", 6, "6 4"),
                      ["image_class_labels.txt", "line 6"]),
    "bad split flag": (_edit_line(f"{ROOT}/train_test_split.txt", 7, "7 2"),
                       ["train_test_split.txt", "line 7"]),
    "bad box": (_edit_line(f"{ROOT}/bounding_boxes.txt", 8, "8 1.0 2.0 nan 4.0"),
                ["bounding_boxes.txt", "line 8"]),
    "ids differ": (_edit_line(f"{ROOT}/bounding_boxes.txt", 9, "10 1.0 2.0 3.0 4.0"),
                   ["bounding_boxes.txt", "images.txt", "lacks 1 ids 9", "1 extra ids 10"]),
    "image missing": (_without(FIRST_IMAGE), [FIRST_IMAGE, "missing"]),
    "image not decodable": (_replace(FIRST_IMAGE, b"\xff\xd8 not really a JPEG"),
                            [FIRST_IMAGE, "cannot be decoded", "no image format"]),
    "image truncated": (lambda files: _replace(FIRST_IMAGE, files[FIRST_IMAGE][:300])(files),
                        [FIRST_IMAGE, "cannot be decoded"]),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_archive_is_named(tmp_path, files, case):
  edit, expected = BROKEN[case]
  manual = tmp_path / "manual"
  manual.mkdir()
  _pack(manual / cub.ARCHIVE, edit(files))
  with pytest.raises(ValueError) as info:
    prepared.prepare("cub", data_dir=tmp_path / "tfds", manual_dir=manual)
  for part in expected:
    assert part in str(info.value)
  assert not cub.StnCub(data_dir=tmp_path / "tfds").is_prepared()


def test_broken_extracted_folder_names_the_file(tmp_path, manual):
  folder_manual = tmp_path / "manual"
  with tarfile.open(manual / cub.ARCHIVE) as tar:
    tar.extractall(folder_manual, filter="data")
  (folder_manual / FIRST_IMAGE).unlink()
  with pytest.raises(ValueError, match=re.escape(str(folder_manual / FIRST_IMAGE))):
    prepared.prepare("cub", data_dir=tmp_path / "tfds", manual_dir=folder_manual)
  (folder_manual / ROOT / "classes.txt").unlink()
  with pytest.raises(ValueError, match=re.escape(str(folder_manual / ROOT / "classes.txt"))):
    prepared.prepare("cub", data_dir=tmp_path / "tfds", manual_dir=folder_manual)


@pytest.mark.parametrize("damage", ["not gzip", "truncated"])
def test_damaged_archive_is_named(tmp_path, manual, damage):
  good = (manual / cub.ARCHIVE).read_bytes()
  broken_manual = tmp_path / "manual"
  broken_manual.mkdir()
  archive = broken_manual / cub.ARCHIVE
  archive.write_bytes(b"this is not a tar archive" * 40 if damage == "not gzip"
                      else good[:len(good) // 2])
  with pytest.raises(ValueError, match=re.escape(str(archive))):
    prepared.prepare("cub", data_dir=tmp_path / "tfds", manual_dir=broken_manual)


def test_decode_names_undecodable_bytes():
  with pytest.raises(ValueError, match="record 7"):
    cub.decode(b"GIF89a but no more", name="record 7")


def test_decode_converts_cmyk_and_palette_to_rgb():
  for mode, fmt in (("CMYK", "JPEG"), ("P", "PNG")):
    out = io.BytesIO()
    Image.new(mode, (5, 4)).save(out, format=fmt)
    pixels = cub.decode(out.getvalue())
    assert pixels.shape == (4, 5, 3) and pixels.dtype == np.uint8


# ------------------------------------------------------------------ crops


def _coordinates(height, width):
  """An image whose pixels spell their own (y, x), so a window is known by its corner."""
  y, x = np.mgrid[:height, :width]
  return np.stack([y & 255, x & 255, (y >> 8) * 16 + (x >> 8)], axis=-1).astype(np.uint8)


def _windows(picture, crop):
  """Every ``(top, left, mirrored)`` at which ``crop`` is a window of ``picture``."""
  size = crop.shape[0]
  height, width = picture.shape[:2]
  found = set()
  rows, cols = height - size + 1, width - size + 1
  for mirrored, window in ((False, crop), (True, crop[:, ::-1])):
    # Probing a few pixels first leaves few candidates, even in zero bands.
    hits = np.ones((rows, cols), bool)
    for dy, dx in ((0, 0), (0, size - 1), (size - 1, 0), (size - 1, size - 1), (size // 2,) * 2):
      hits &= np.all(picture[dy:dy + rows, dx:dx + cols] == window[dy, dx], axis=-1)
    for top, left in np.argwhere(hits):
      if np.array_equal(picture[top:top + size, left:left + size], window):
        found.add((int(top), int(left), mirrored))
  return found


def test_rescale_sets_the_shorter_side_and_keeps_the_aspect():
  tall = np.full((100, 50, 3), 200, np.uint8)
  assert cub.rescale(tall, 256).shape == (512, 256, 3)
  assert cub.rescale(tall.transpose(1, 0, 2), 256).shape == (256, 512, 3)
  assert cub.rescale(np.zeros((37, 91, 3), np.uint8), 256).shape == (256, 630, 3)
  assert np.all(cub.rescale(tall, 512) == 200) and cub.rescale(tall, 512).flags.writeable
  coords = _coordinates(256, 300)
  np.testing.assert_array_equal(cub.rescale(coords, 256), coords)


def test_rescale_with_padding_centres_the_image_between_zero_bands():
  tall = np.full((100, 50, 3), 200, np.uint8)
  out = cub.rescale(tall, 256, pad=True)
  assert out.shape == (256, 256, 3) and out.dtype == np.uint8
  assert np.all(out[:, 64:192] == 200)
  assert not out[:, :64].any() and not out[:, 192:].any()
  wide = cub.rescale(tall.transpose(1, 0, 2), 512, pad=True)
  assert np.all(wide[128:384] == 200) and not wide[:128].any() and not wide[384:].any()


@pytest.mark.parametrize("size,pad,shape", [(224, False, (256, 300)), (448, False, (600, 512)),
                                            (224, True, (256, 200)), (224, False, (70, 45))])
def test_train_crop_is_a_window_of_the_rescaled_image(size, pad, shape):
  image = _coordinates(*shape)
  picture = cub.rescale(image, size * 8 // 7, pad=pad)
  offsets, mirrored = set(), set()
  for seed in range(12):
    crop = cub.train_crop(image, np.random.default_rng(seed), size=size, pad=pad)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    windows = _windows(picture, crop)
    assert windows, f"seed {seed}: the crop is no window of the rescaled image"
    if len(windows) == 1:
      (top, left, flip), = windows
      offsets.add((top, left))
      mirrored.add(flip)
  assert mirrored == {False, True}
  assert len(offsets) > 3


def test_train_crop_repeats_with_the_seed():
  image = _coordinates(80, 120)
  first = cub.train_crop(image, np.random.default_rng(5))
  np.testing.assert_array_equal(first, cub.train_crop(image, np.random.default_rng(5)))


@pytest.mark.parametrize("size,pad,shape", [(224, False, (256, 300)), (224, True, (90, 41)),
                                            (448, False, (77, 50))])
def test_eval_crops_are_corners_centre_and_mirrors(size, pad, shape):
  image = _coordinates(*shape)
  picture = cub.rescale(image, size * 8 // 7, pad=pad)
  height, width = picture.shape[:2]
  b, r = height - size, width - size
  expected = [picture[:size, :size], picture[:size, r:], picture[b:, :size], picture[b:, r:],
              picture[b // 2:b // 2 + size, r // 2:r // 2 + size]]
  expected += [e[:, ::-1] for e in expected]
  crops = cub.eval_crops(image, size=size, pad=pad)
  assert crops.shape == (10, size, size, 3) and crops.dtype == np.uint8
  np.testing.assert_array_equal(crops, np.stack(expected))


def test_to_float_spans_zero_to_one():
  out = cub.to_float(np.arange(256, dtype=np.uint8))
  assert out.dtype == np.float32 and out[0] == 0 and out[-1] == 1


def test_bad_sizes_and_images_are_refused():
  image = np.zeros((40, 40, 3), np.uint8)
  with pytest.raises(ValueError, match="multiple of 7"):
    cub.train_crop(image, np.random.default_rng(0), size=200)
  with pytest.raises(ValueError, match="multiple of 7"):
    cub.eval_crops(image, size=0)
  with pytest.raises(ValueError, match=r"uint8 \(height, width, 3\)"):
    cub.rescale(np.zeros((40, 40), np.uint8), 256)
  with pytest.raises(ValueError, match=r"uint8 \(height, width, 3\)"):
    cub.rescale(image.astype(np.float32), 256)
