"""CUB-200-2011 birds: a TFDS builder, and the paper's crops (supplement 1.5).

``StnCub`` (TFDS name ``stn_cub``) reads the official archive
``CUB_200_2011.tgz`` from a manual directory, or its extracted
``CUB_200_2011/`` folder, and writes ArrayRecord files without TensorFlow.
Each example holds:

- ``image``: the JPEG bytes exactly as stored in the archive (not re-encoded);
- ``label``: the class, ``class_id - 1`` in ``0..199``, a ``ClassLabel`` whose
  names are the lines of ``classes.txt`` (``'001.Black_footed_Albatross'``, ...);
- ``image_id``: the id of ``images.txt``;
- ``bbox``: float32 ``[x, y, width, height]`` of the bird, in pixels;
- ``height`` and ``width`` of the image, read by decoding it with Pillow, which
  also checks at preparation time that every image can be decoded.

The splits ``'train'`` and ``'test'`` (5994 and 5794 images) follow
``train_test_split.txt``. Prepare once:

  python -m stn_jax.datasets.prepare cub --manual_dir=DIR [--data_dir=DIR]

The rest of the module turns records into network inputs with NumPy and Pillow,
following supplement 1.5. For training, "random sampling (224x224 from 256xS
and 448x448 from 512xS where S is the largest image side) and horizontal
flipping": the image is rescaled, aspect kept, so that its shorter side is
``base = size * 8 / 7`` (256 or 512) and its longer side is then S; a
``size x size`` window is taken at a uniformly random position and mirrored
with probability 1/2. For evaluation, the four corner windows and the centre
window of the same rescaled image, and the mirror image of each: 10 crops
whose softmax outputs are averaged.

Why the shorter side: in "256xS" one side is 256 and the other is S, the
largest side, so 256 is the smaller one; had the largest side been scaled to
256, S would be 256 and the image would need padding, which the paper never
mentions; and the ImageNet network it starts from was trained on images
"resized so that the smallest side is 256". ``pad=True`` selects the other
reading: the longer side becomes ``base`` and the shorter side is zero-padded
to a ``base x base`` square, so that the whole bird is always in the picture.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import pathlib
import tarfile
import zlib

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, UnidentifiedImageError

from stn_jax.datasets import prepared

__all__ = [
    "ARCHIVE",
    "FOLDER",
    "NUM_CLASSES",
    "StnCub",
    "decode",
    "eval_batch",
    "eval_crops",
    "load",
    "rescale",
    "to_float",
    "train_batch",
    "train_crop",
]

ARCHIVE = "CUB_200_2011.tgz"
FOLDER = "CUB_200_2011"
NUM_CLASSES = 200
HOMEPAGE = "https://www.vision.caltech.edu/datasets/cub_200_2011/"
_COMMAND = "python -m stn_jax.datasets.prepare cub --manual_dir=DIR"
_IMAGES_DIR = "images"
# Metadata file -> (number of fields on each line after the id, what they are).
_TABLES = {
    "images.txt": (1, "<image_id> <path under images/>"),
    "train_test_split.txt": (1, "<image_id> <1 for train, 0 for test>"),
    "image_class_labels.txt": (1, "<image_id> <class_id>"),
    "bounding_boxes.txt": (4, "<image_id> <x> <y> <width> <height>"),
    "classes.txt": (1, "<class_id> <class name>"),
}
_PIL_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def _why(error: Exception) -> str:
  # Pillow's own message for unknown formats names only the BytesIO object.
  if isinstance(error, UnidentifiedImageError):
    return "its bytes are in no image format Pillow knows"
  return f"{type(error).__name__}: {error}"


class StnCub(tfds.core.GeneratorBasedBuilder):
  """CUB-200-2011 as stored JPEG bytes, labels, boxes and sizes (no TensorFlow needed)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Download {ARCHIVE} (about 1.1 GB) from the Caltech-UCSD Birds-200-2011 page, "
      f"{HOMEPAGE}, and put it in the manual directory; the extracted {FOLDER}/ folder "
      "is accepted there too. Then run: " + _COMMAND)

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "Caltech-UCSD Birds-200-2011: 11788 photographs of 200 bird species, split "
            "5994 train / 5794 test, with one bounding box each. Images are the archive's "
            "JPEG bytes, decoded at read time."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(), dtype=np.object_),
            # The names come from classes.txt when the dataset is prepared.
            "label": tfds.features.ClassLabel(),
            "image_id": tfds.features.Tensor(shape=(), dtype=np.int64),
            "bbox": tfds.features.Tensor(shape=(4,), dtype=np.float32),
            "height": tfds.features.Tensor(shape=(), dtype=np.int64),
            "width": tfds.features.Tensor(shape=(), dtype=np.int64),
        }),
        supervised_keys=("image", "label"),
        homepage=HOMEPAGE,
    )

  def _split_generators(self, dl_manager):
    source = _open_source(_manual_dir(dl_manager))
    table = _read_metadata(source)
    self.info.features["label"].names = table.class_names
    return {split: self._generate_examples(source, records)
            for split, records in table.splits.items()}

  def _generate_examples(self, source, records):
    by_path = {r.path: r for r in records}
    for path, data in source.images(by_path):
      record = by_path[path]
      height, width = _image_size(data, source.describe_image(path))
      yield record.image_id, {
          "image": data,
          "label": record.label,
          "image_id": np.int64(record.image_id),
          "bbox": np.asarray(record.bbox, np.float32),
          "height": np.int64(height),
          "width": np.int64(width),
      }


# ------------------------------------------------------------------ reading the archive


def _manual_dir(dl_manager) -> pathlib.Path:
  """The manual directory, or a FileNotFoundError that says what to put there."""
  try:
    return pathlib.Path(dl_manager.manual_dir)
  except AssertionError:
    # TFDS asserts when the directory is missing or empty; the path it checked is
    # only kept privately, and naming it is most of what makes the error useful.
    path = getattr(dl_manager, "_manual_dir", None)
    where = "(none was given)" if path is None else os.path.abspath(os.fspath(path))
    raise FileNotFoundError(
        f"CUB-200-2011 needs {ARCHIVE} (or its extracted {FOLDER}/ folder) in a manual "
        f"directory, but the manual directory {where} does not exist or is empty. Download "
        f"{ARCHIVE} from {HOMEPAGE} into a directory DIR and run: {_COMMAND}") from None


def _open_source(manual_dir: pathlib.Path):
  """The extracted folder if there is one (it reads faster), else the archive."""
  folder = manual_dir / FOLDER
  if folder.is_dir():
    return _Folder(folder)
  archive = manual_dir / ARCHIVE
  if archive.is_file():
    return _Archive(archive)
  present = sorted(p.name for p in manual_dir.iterdir())
  listing = ", ".join(present[:20]) + (", ..." if len(present) > 20 else "")
  raise FileNotFoundError(
      f"CUB-200-2011: expected {ARCHIVE} (or an extracted {FOLDER}/ folder) in the manual "
      f"directory {manual_dir.absolute()}, which holds: {listing or 'nothing'}. Download "
      f"{ARCHIVE} from {HOMEPAGE} into a directory DIR and run: {_COMMAND}")


class _Folder:
  """An extracted ``CUB_200_2011/`` folder."""

  def __init__(self, root: pathlib.Path):
    self.root = root

  def describe(self) -> str:
    return str(self.root.absolute())

  def describe_image(self, path: str) -> str:
    return str((self.root / _IMAGES_DIR / path).absolute())

  def metadata(self) -> dict[str, tuple[str, bytes]]:
    """Metadata file name -> (its description for errors, its bytes)."""
    out = {}
    for name in _TABLES:
      path = self.root / name
      if not path.is_file():
        raise ValueError(f"The CUB-200-2011 metadata file {path.absolute()} is missing; "
                         f"the folder {self.describe()} must hold {', '.join(_TABLES)}.")
      out[name] = (str(path.absolute()), path.read_bytes())
    return out

  def images(self, wanted):
    """``(path, bytes)`` of each path in ``wanted`` (relative to ``images/``)."""
    for path in sorted(wanted):
      file = self.root / _IMAGES_DIR / path
      if not file.is_file():
        raise ValueError(f"The image {file.absolute()}, listed in images.txt, is missing.")
      yield path, file.read_bytes()


class _Archive:
  """The official ``CUB_200_2011.tgz``, read in streaming passes.

  A gzip stream cannot seek, so random access would decompress the archive
  again for every member; reading members in stored order, once for the
  metadata and once per split, decompresses it three times in all.
  """

  def __init__(self, path: pathlib.Path):
    self.path = path

  def describe(self) -> str:
    return str(self.path.absolute())

  def describe_image(self, path: str) -> str:
    return f"{FOLDER}/{_IMAGES_DIR}/{path} in {self.describe()}"

  def _members(self):
    """``(name, member file)`` of each regular file, ``./`` stripped from names."""
    try:
      with tarfile.open(self.path, mode="r|gz") as tar:
        for member in tar:
          if member.isfile():
            name = member.name[2:] if member.name.startswith("./") else member.name
            yield name, tar.extractfile(member)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
      raise ValueError(f"{self.describe()} is not a valid gzip-compressed tar archive, or it "
                       f"is truncated ({type(e).__name__}: {e}). Download {ARCHIVE} again "
                       f"from {HOMEPAGE}.") from None

  def _read(self, file) -> bytes:
    # Truncation inside a member shows up here, outside _members's try.
    try:
      return file.read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
      raise ValueError(f"{self.describe()} is truncated or corrupt ({type(e).__name__}: {e}). "
                       f"Download {ARCHIVE} again from {HOMEPAGE}.") from None

  def metadata(self) -> dict[str, tuple[str, bytes]]:
    """Metadata file name -> (its description for errors, its bytes)."""
    wanted = {f"{FOLDER}/{name}": name for name in _TABLES}
    out = {}
    members = self._members()
    for member, file in members:
      if member in wanted:
        out[wanted[member]] = (f"{member} in {self.describe()}", self._read(file))
        if len(out) == len(wanted):
          members.close()
          break
    missing = [m for m, name in wanted.items() if name not in out]
    if missing:
      raise ValueError(f"{self.describe()} holds no {', '.join(missing)}; the official "
                       f"{ARCHIVE} holds {', '.join(wanted)}.")
    return out

  def images(self, wanted):
    """``(path, bytes)`` of each path in ``wanted`` (relative to ``images/``), in stored order."""
    prefix = f"{FOLDER}/{_IMAGES_DIR}/"
    seen = set()
    for member, file in self._members():
      path = member[len(prefix):]
      if member.startswith(prefix) and path in wanted and path not in seen:
        seen.add(path)
        yield path, self._read(file)
    missing = sorted(set(wanted) - seen)
    if missing:
      listed = ", ".join(prefix + m for m in missing[:3]) + (", ..." if len(missing) > 3 else "")
      raise ValueError(f"{len(missing)} image(s) listed in images.txt are missing from "
                       f"{self.describe()}: {listed}.")


@dataclasses.dataclass(frozen=True)
class _Record:
  image_id: int
  path: str
  label: int
  bbox: tuple[float, float, float, float]


@dataclasses.dataclass(frozen=True)
class _Metadata:
  class_names: list[str]
  splits: dict[str, list[_Record]]


def _parse_table(name: str, where: str, data: bytes) -> dict[int, tuple[int, list[str]]]:
  """``{id: (line number, fields after the id)}`` of one metadata file, each line checked."""
  num_fields, layout = _TABLES[name]
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    raise ValueError(f"{where} is not UTF-8 text ({e}).") from None
  rows = {}
  for number, line in enumerate(text.splitlines(), start=1):
    if not line.strip():
      continue
    fields = line.split()
    problem = None
    if len(fields) != 1 + num_fields:
      problem = f"expected {1 + num_fields} fields, {layout}"
    elif not (fields[0].isascii() and fields[0].isdigit()) or int(fields[0]) < 1:
      problem = f"the id {fields[0]!r} is not a positive integer"
    elif int(fields[0]) in rows:
      problem = f"the id {fields[0]} is also on line {rows[int(fields[0])][0]}"
    if problem:
      raise ValueError(f"{where}, line {number}, is malformed: {problem}; the line is {line!r}.")
    rows[int(fields[0])] = (number, fields[1:])
  if not rows:
    raise ValueError(f"{where} is empty; each line should read {layout}.")
  return rows


def _field_error(where: str, image_id: int, row: tuple[int, list[str]],
                 expected: str) -> ValueError:
  number, fields = row
  line = " ".join([str(image_id), *fields])
  return ValueError(f"{where}, line {number}, is malformed: {line!r} is not {expected}.")


def _read_metadata(source) -> _Metadata:
  """The class names and the records of each split, checked against each other."""
  files = source.metadata()
  tables = {name: _parse_table(name, *files[name]) for name in _TABLES}
  where = {name: files[name][0] for name in _TABLES}

  classes = {i: fields[0] for i, (_, fields) in tables["classes.txt"].items()}
  if sorted(classes) != list(range(1, len(classes) + 1)) or len(classes) > NUM_CLASSES:
    raise ValueError(f"{where['classes.txt']} must number its classes 1..N with N at most "
                     f"{NUM_CLASSES}; it has ids {min(classes)}..{max(classes)} on "
                     f"{len(classes)} lines.")
  class_names = [classes[i] for i in range(1, len(classes) + 1)]
  if len(set(class_names)) != len(class_names):
    raise ValueError(f"{where['classes.txt']} names a class twice.")

  ids = set(tables["images.txt"])
  for name in ("train_test_split.txt", "image_class_labels.txt", "bounding_boxes.txt"):
    others = set(tables[name])
    if others != ids:
      lacking, extra = sorted(ids - others), sorted(others - ids)
      detail = "; ".join(
          f"{what} ids {', '.join(map(str, found[:5]))}{', ...' if len(found) > 5 else ''}"
          for what, found in ((f"it lacks {len(lacking)}", lacking),
                              (f"it has {len(extra)} extra", extra)) if found)
      raise ValueError(f"{where[name]} does not list the same image ids as "
                       f"{where['images.txt']}: {detail}.")

  paths = [tables["images.txt"][i][1][0] for i in sorted(ids)]
  if len(set(paths)) != len(paths):
    raise ValueError(f"{where['images.txt']} lists an image path twice.")

  splits = {"train": [], "test": []}
  for image_id in sorted(ids):
    row = tables["train_test_split.txt"][image_id]
    flag = row[1][0]
    if flag not in ("0", "1"):
      raise _field_error(where["train_test_split.txt"], image_id, row, "<image_id> <1 or 0>")
    row = tables["image_class_labels.txt"][image_id]
    class_id = row[1][0]
    if not (class_id.isascii() and class_id.isdigit()) or int(class_id) not in classes:
      raise _field_error(where["image_class_labels.txt"], image_id, row,
                         f"<image_id> <class_id> with a class_id of classes.txt, 1..{len(classes)}")
    row = tables["bounding_boxes.txt"][image_id]
    try:
      bbox = tuple(float(v) for v in row[1])
    except ValueError:
      bbox = None
    if bbox is None or not all(map(math.isfinite, bbox)) or bbox[2] <= 0 or bbox[3] <= 0:
      raise _field_error(where["bounding_boxes.txt"], image_id, row,
                         "<image_id> <x> <y> <width> <height>, finite, with positive width "
                         "and height")
    splits["train" if flag == "1" else "test"].append(
        _Record(image_id, tables["images.txt"][image_id][1][0], int(class_id) - 1, bbox))
  for split, records in splits.items():
    if not records:
      raise ValueError(f"{where['train_test_split.txt']} puts no image in the {split} split.")
  return _Metadata(class_names, splits)


def _image_size(data: bytes, name: str) -> tuple[int, int]:
  """``(height, width)`` of an encoded image, decoding all of it to be sure it can be."""
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()
      width, height = image.size
  except _PIL_ERRORS as e:
    raise ValueError(f"The image {name} cannot be decoded ({_why(e)}).") from None
  return height, width


def load(split: str, *, data_dir=None):
  """Random-access source of one prepared split (``len`` and ``[i]`` give record dicts).

  Args:
    split: 'train' or 'test'.
    data_dir: where prepared datasets live (``$STN_TFDS_DIR``, else ``data/tfds``).

  Returns:
    The source; each record holds ``image`` (JPEG bytes: see :func:`decode`),
    ``label``, ``image_id``, ``bbox``, ``height`` and ``width``.

  Raises:
    stn_jax.datasets.prepared.DatasetNotPreparedError: ``stn_cub`` is not
      prepared under the data dir; the message holds the command that prepares it.
  """
  return prepared.data_source("cub", split, data_dir=data_dir)


# ------------------------------------------------------------------ preprocessing


def decode(jpeg_bytes, *, name: str | None = None) -> np.ndarray:
  """The RGB pixels of an encoded image.

  Args:
    jpeg_bytes: the encoded image (a record's ``image``); any format Pillow
      reads. Greyscale, CMYK and palette images are converted to RGB.
    name: what to call the image in an error message.

  Returns:
    uint8 ``(height, width, 3)``.

  Raises:
    ValueError: the bytes are not an image Pillow can decode.
  """
  if isinstance(jpeg_bytes, np.ndarray):
    jpeg_bytes = jpeg_bytes.item()
  try:
    with Image.open(io.BytesIO(bytes(jpeg_bytes))) as image:
      rgb = image.convert("RGB")
  except _PIL_ERRORS as e:
    raise ValueError(
        f"Cannot decode {name or 'the image bytes'} as an image ({_why(e)}).") from None
  return np.array(rgb, dtype=np.uint8)


def _check_image(image) -> np.ndarray:
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
    raise ValueError(f"Expected a non-empty uint8 (height, width, 3) image, got "
                     f"{image.dtype} {image.shape}; decode JPEG bytes with decode().")
  return image


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  if image.shape[:2] == (height, width):
    return image.copy()
  # Pillow's bilinear filter widens its support when shrinking, so large photos
  # are averaged down rather than aliased.
  resized = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)
  # np.array, not np.asarray: a view of Pillow's buffer would be read-only.
  return np.array(resized, dtype=np.uint8)


def rescale(image, base: int, *, pad: bool = False) -> np.ndarray:
  """The image resized, aspect kept, to the ``base x S`` picture that crops come from.

  Args:
    image: uint8 ``(height, width, 3)``.
    base: 256 for 224 crops, 512 for 448 crops.
    pad: ``False`` (the paper's "256xS where S is the largest image side"):
      the shorter side becomes ``base`` and the longer ``S >= base``, rounded.
      ``True``: the longer side becomes ``base``, and the shorter is centred
      between zero bands (the extra row or column, if any, goes to the bottom
      or right) to make a ``base x base`` square.

  Returns:
    uint8 ``(base, S, 3)`` or ``(S, base, 3)``; ``(base, base, 3)`` with ``pad``.

  >>> rescale(np.zeros((30, 60, 3), np.uint8), 32).shape
  (32, 64, 3)
  >>> rescale(np.zeros((30, 60, 3), np.uint8), 32, pad=True).shape
  (32, 32, 3)
  """
  image = _check_image(image)
  if base < 1:
    raise ValueError(f"base must be a positive number of pixels, got {base}.")
  height, width = image.shape[:2]
  if not pad:
    short = min(height, width)
    new_h, new_w = (max(base, int(side * base / short + 0.5)) for side in (height, width))
    return _resize(image, new_h, new_w)
  long = max(height, width)
  new_h, new_w = (max(1, min(base, int(side * base / long + 0.5))) for side in (height, width))
  out = np.zeros((base, base, 3), np.uint8)
  top, left = (base - new_h) // 2, (base - new_w) // 2
  out[top:top + new_h, left:left + new_w] = _resize(image, new_h, new_w)
  return out


def _base(size: int) -> int:
  """256 for 224, 512 for 448: the rescaled side that ``size`` crops are taken from."""
  if not isinstance(size, (int, np.integer)) or size < 7 or size % 7:
    raise ValueError(f"The crop size must be a positive multiple of 7 (224 or 448 in the "
                     f"paper), so that the rescaled side size*8/7 is whole; got {size!r}.")
  return int(size) * 8 // 7


def train_crop(image, rng: np.random.Generator, *, size: int = 224,
               pad: bool = False) -> np.ndarray:
  """A training crop: a random ``size x size`` window of the rescaled image, mirrored or not.

  Args:
    image: uint8 ``(height, width, 3)``.
    rng: the generator of the crop's position (row, then column, each uniform
      over every position where the window fits) and of the mirroring (with
      probability 1/2), drawn in that order.
    size: 224 or 448; the image is first rescaled with ``base = size * 8 / 7``.
    pad: as in :func:`rescale`.

  Returns:
    uint8 ``(size, size, 3)``.
  """
  picture = rescale(image, _base(size), pad=pad)
  height, width = picture.shape[:2]
  top = int(rng.integers(0, height - size + 1))
  left = int(rng.integers(0, width - size + 1))
  crop = picture[top:top + size, left:left + size]
  if rng.random() < 0.5:
    crop = crop[:, ::-1]
  return np.ascontiguousarray(crop)


def eval_crops(image, *, size: int = 224, pad: bool = False) -> np.ndarray:
  """The 10 evaluation crops of the rescaled image.

  Args:
    image: uint8 ``(height, width, 3)``.
    size: 224 or 448; the image is first rescaled with ``base = size * 8 / 7``.
    pad: as in :func:`rescale`.

  Returns:
    uint8 ``(10, size, size, 3)``: the top-left, top-right, bottom-left,
    bottom-right and centre windows, then each of those five mirrored left to
    right, in the same order. The centre window starts at
    ``((H - size) // 2, (W - size) // 2)`` of the ``H x W`` rescaled image.
  """
  picture = rescale(image, _base(size), pad=pad)
  height, width = picture.shape[:2]
  bottom, right = height - size, width - size
  corners = [(0, 0), (0, right), (bottom, 0), (bottom, right), (bottom // 2, right // 2)]
  crops = np.stack([picture[y:y + size, x:x + size] for y, x in corners])
  return np.concatenate([crops, crops[:, :, ::-1]])


def to_float(x) -> np.ndarray:
  """uint8 pixels as float32 in ``[0, 1]``.

  >>> to_float(np.array([0, 255], np.uint8))
  array([0., 1.], dtype=float32)
  """
  return np.asarray(x).astype(np.float32) / np.float32(255)


def _name(record) -> str:
  return f"the CUB image with image_id {int(record['image_id'])}" if "image_id" in record else None


def _labels(records) -> np.ndarray:
  return np.array([int(r["label"]) for r in records], dtype=np.int32)


def train_batch(records, rng: np.random.Generator, *, size: int = 224,
                pad: bool = False) -> dict[str, np.ndarray]:
  """A training batch of random crops (see :func:`train_crop`).

  Args:
    records: a non-empty list of records of :func:`load`'s source.
    rng: the generator of every crop and mirroring, used record by record.
    size: 224 or 448.
    pad: as in :func:`rescale`.

  Returns:
    ``{'image': float32 (B, size, size, 3) in [0, 1], 'label': int32 (B,)}``.
  """
  records = list(records)
  if not records:
    raise ValueError("train_batch needs at least one record.")
  _base(size)
  images = np.stack([train_crop(decode(r["image"], name=_name(r)), rng, size=size, pad=pad)
                     for r in records])
  return {"image": to_float(images), "label": _labels(records)}


def eval_batch(records, *, size: int = 224, pad: bool = False) -> dict[str, np.ndarray]:
  """An evaluation batch: the 10 crops of each record (see :func:`eval_crops`).

  Args:
    records: a non-empty list of records of :func:`load`'s source.
    size: 224 or 448.
    pad: as in :func:`rescale`.

  Returns:
    ``{'image': float32 (B, 10, size, size, 3) in [0, 1], 'label': int32 (B,)}``;
    average the model's softmax outputs over the 10 crops of each image.
  """
  records = list(records)
  if not records:
    raise ValueError("eval_batch needs at least one record.")
  _base(size)
  images = np.stack([eval_crops(decode(r["image"], name=_name(r)), size=size, pad=pad)
                     for r in records])
  return {"image": to_float(images), "label": _labels(records)}
