"""Reading the official CUB-200-2011 files for the ``stn_cub`` builder.

The builder (``stn_jax.datasets.cub.StnCub``) reads either the archive
``CUB_200_2011.tgz`` or its extracted ``CUB_200_2011/`` folder, whichever the
manual directory holds. Both are read through the same two calls, ``metadata()``
and ``images(wanted)``, so that the builder does not care which it has; this
module holds those two readers and the parsing of the five metadata tables
(``images.txt``, ``train_test_split.txt``, ``image_class_labels.txt``,
``bounding_boxes.txt``, ``classes.txt``), every line checked and checked against
the other tables, so that a damaged download fails at preparation with a message
that names the file and the line.

It needs only the standard library: TensorFlow Datasets stays in
``stn_jax.datasets.cub``, and Pillow in ``stn_jax.datasets.cub_images``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import tarfile
import zlib

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
