"""Reading SVHN format 1's official tarballs, and cutting each house number out of its image.

What ``stn_jax.datasets.svhn.StnSvhn`` needs from the files of the SVHN site:

- ``read_digit_struct``: the digit boxes and labels of a ``digitStruct.mat``
  (MATLAB v7.3, i.e. HDF5), read with h5py's low-level calls;
- ``crop_box`` and ``_crop``: the union box enlarged by ``ENLARGE``, clipped
  to the image and resized with Pillow (steps 1 and 2 of the
  ``stn_jax.datasets.svhn`` docstring);
- ``_scan_tarball``: one pass over a tarball that checks it and reads its
  annotations before any image is decoded, keeping the numbers of at most
  ``MAX_DIGITS`` digits with labels padded by ``NO_DIGIT`` (step 3).

h5py and Pillow are imported only when a file is read, and TensorFlow Datasets
not at all, so that reading prepared files needs neither.
"""

from __future__ import annotations

import io
import math
import os
import tarfile
import zlib

import numpy as np

NO_DIGIT = 10
MAX_DIGITS = 5
ENLARGE = 1.3

_MAT_NAME = "digitStruct.mat"
_BOX_FIELDS = ("left", "top", "width", "height")
_HOMEPAGE = "http://ufldl.stanford.edu/housenumbers/"


# ----------------------------------------------------------------- digitStruct.mat


def read_digit_struct(data: bytes,
                      where: str = _MAT_NAME) -> list[tuple[str, np.ndarray, np.ndarray]]:
  """Parses the bytes of an SVHN ``digitStruct.mat`` (MATLAB v7.3, i.e. HDF5).

  The file holds ``/digitStruct/name`` and ``/digitStruct/bbox``, two ``(N, 1)``
  arrays of object references. A name refers to a ``uint16`` array of
  character codes; a bbox to a group of ``height``, ``label``, ``left``,
  ``top`` and ``width``, each a ``(1, 1)`` number for a one-digit house number
  or a ``(k, 1)`` array of references to ``(1, 1)`` numbers for ``k`` digits.

  Args:
    data: the whole file.
    where: how to name the file in error messages.

  Returns:
    One ``(name, boxes, labels)`` per image, in file order: ``boxes`` is a
    ``(k, 4)`` float64 array of ``[left, top, width, height]`` per digit,
    ``labels`` a ``(k,)`` int64 array of SVHN labels (1-10, 10 for the digit
    0), both in the file's order, which is left to right.

  Raises:
    ValueError: the data is not HDF5, lacks ``/digitStruct``, or an entry is
      malformed; the message names ``where``.
  """
  # h5py is only needed to prepare, not to read prepared files.
  import h5py  # pylint: disable=import-outside-toplevel
  try:
    # A file image is parsed in memory, with no temporary file and no Python
    # callbacks per read as a file object would need.
    file_id = h5py.h5f.open_file_image(data)
  except (OSError, ValueError, TypeError) as e:
    hint = (" It looks like a MATLAB v5 MAT-file: SVHN's is v7.3 (HDF5)."
            if data[:10] == b"MATLAB 5.0" else "")
    raise ValueError(f"{where} is not an HDF5 file (MATLAB v7.3), so it cannot be SVHN's "
                     f"digit annotations.{hint} ({e})") from None
  with h5py.File(file_id, "r") as f:
    group = f.get("digitStruct")
    if not isinstance(group, h5py.Group) or not {"name", "bbox"} <= set(group.keys()):
      raise ValueError(f"{where} is HDF5 but has no group /digitStruct with datasets 'name' "
                       "and 'bbox'; it is not SVHN format 1's digitStruct.mat.")
    try:
      if not all(_is_ref(group[key].id) for key in ("name", "bbox")):
        raise TypeError("they hold no references")
      names, bboxes = (_read(group[key].id, "ref").ravel() for key in ("name", "bbox"))
    except (TypeError, ValueError, OSError) as e:
      raise ValueError(f"{where}: /digitStruct/name and /digitStruct/bbox must be arrays of "
                       f"object references: {e}") from None
    if len(names) != len(bboxes):
      raise ValueError(f"{where} has {len(names)} names but {len(bboxes)} bboxes in "
                       "/digitStruct; they must pair up.")
    entries = []
    for i, (name_ref, bbox_ref) in enumerate(zip(names, bboxes)):
      try:
        entries.append(_read_entry(f.id, name_ref, bbox_ref))
      except (KeyError, ValueError, TypeError, OSError) as e:
        raise ValueError(f"{where}: entry {i} of /digitStruct is malformed: {e}") from None
  return entries


# h5py's low-level calls, not Group[...] and Dataset[()]: the high-level objects
# cost about a millisecond per image, several minutes for the 'extra' split.


def _read(dataset_id, kind: str = "number") -> np.ndarray:
  """All of a dataset, as float64 numbers, uint16 character codes or h5py references."""
  import h5py  # pylint: disable=import-outside-toplevel
  if kind == "number":
    dtype, mtype = np.float64, h5py.h5t.NATIVE_DOUBLE
  elif kind == "char":
    dtype, mtype = np.uint16, h5py.h5t.NATIVE_UINT16
  else:
    dtype, mtype = h5py.ref_dtype, None  # h5py picks the reference memory type
  out = np.empty(dataset_id.shape, dtype)
  dataset_id.read(h5py.h5s.ALL, h5py.h5s.ALL, out, mtype)
  return out


def _is_ref(dataset_id) -> bool:
  import h5py  # pylint: disable=import-outside-toplevel
  return dataset_id.get_type().get_class() == h5py.h5t.REFERENCE


def _deref_dataset(file_id, ref):
  import h5py  # pylint: disable=import-outside-toplevel
  if not ref:
    raise ValueError("a null object reference")
  obj = h5py.h5r.dereference(ref, file_id)
  if not isinstance(obj, h5py.h5d.DatasetID):
    raise TypeError(f"a reference to a {type(obj).__name__}, where a dataset was expected")
  return obj


def _read_numbers(file_id, group_id, key: str) -> np.ndarray:
  """The numbers of one bbox field: stored inline for one digit, by reference for more."""
  import h5py  # pylint: disable=import-outside-toplevel
  try:
    dataset_id = h5py.h5d.open(group_id, key.encode())
  except KeyError:
    raise KeyError(f"the bbox has no field {key!r}") from None
  if not _is_ref(dataset_id):
    return _read(dataset_id).ravel()
  # One (1, 1) dataset per digit.
  values = [_read(_deref_dataset(file_id, ref)) for ref in _read(dataset_id, "ref").ravel()]
  if any(v.size != 1 for v in values):
    raise ValueError(f"each digit's {key!r} must be one number, found shapes "
                     f"{[v.shape for v in values]}")
  return np.array([v.item() for v in values], np.float64)


def _read_entry(file_id, name_ref, bbox_ref):
  import h5py  # pylint: disable=import-outside-toplevel
  codes = _read(_deref_dataset(file_id, name_ref), "char").ravel()
  name = "".join(chr(int(c)) for c in codes)
  if not bbox_ref:
    raise ValueError(f"the bbox of {name!r} is a null object reference")
  group_id = h5py.h5r.dereference(bbox_ref, file_id)
  if not isinstance(group_id, h5py.h5g.GroupID):
    raise TypeError(f"the bbox of {name!r} is a {type(group_id).__name__}, not a group")
  fields = {key: _read_numbers(file_id, group_id, key) for key in _BOX_FIELDS + ("label",)}
  lengths = {len(v) for v in fields.values()}
  if len(lengths) != 1 or 0 in lengths:
    raise ValueError(f"the bbox fields of {name!r} have different or zero lengths: "
                     f"{ {k: len(v) for k, v in fields.items()} }")
  boxes = np.stack([fields[key] for key in _BOX_FIELDS], axis=1)
  labels = fields["label"]
  if not np.all(np.isin(labels, np.arange(1, 11))):
    raise ValueError(f"{name!r} has labels {labels.tolist()}; SVHN labels are 1-10")
  return name, boxes, labels.astype(np.int64)


# ----------------------------------------------------------------- geometry


def crop_box(union_box, image_size) -> tuple[float, float, float, float]:
  """The region cropped for a union box: enlarged by ``ENLARGE``, clipped to the image.

  Args:
    union_box: ``[left, top, width, height]`` of the digits' union box, in
      pixels of the original image.
    image_size: ``(width, height)`` of the original image.

  Returns:
    ``(x0, y0, x1, y1)``, the edges of the region in pixels, within
    ``[0, width] x [0, height]``.

  Raises:
    ValueError: the box is not finite, has no area, or misses the image.

  >>> crop_box([10, 20, 10, 20], (100, 100))
  (8.5, 17.0, 21.5, 43.0)
  >>> crop_box([0, 0, 10, 10], (100, 100))  # clipped at the left and top
  (0.0, 0.0, 11.5, 11.5)
  """
  left, top, width, height = (float(v) for v in union_box)
  image_w, image_h = image_size
  if not all(math.isfinite(v) for v in (left, top, width, height)):
    raise ValueError(f"the box {[left, top, width, height]} is not finite.")
  if width <= 0 or height <= 0:
    raise ValueError(f"the box {[left, top, width, height]} has width {width} and height "
                     f"{height}; both must be positive.")
  cx, cy = left + width / 2, top + height / 2
  half_w, half_h = ENLARGE * width / 2, ENLARGE * height / 2
  x0, x1 = max(cx - half_w, 0.0), min(cx + half_w, float(image_w))
  y0, y1 = max(cy - half_h, 0.0), min(cy + half_h, float(image_h))
  if x1 - x0 <= 0 or y1 - y0 <= 0:
    raise ValueError(f"the enlarged box {[cx - half_w, cy - half_h, cx + half_w, cy + half_h]} "
                     f"lies outside the {image_w}x{image_h} image.")
  return x0, y0, x1, y1


def _union_box(boxes: np.ndarray) -> np.ndarray:
  """``[left, top, width, height]`` of the smallest box holding all ``boxes``."""
  left, top = boxes[:, 0].min(), boxes[:, 1].min()
  right = (boxes[:, 0] + boxes[:, 2]).max()
  bottom = (boxes[:, 1] + boxes[:, 3]).max()
  return np.array([left, top, right - left, bottom - top], np.float64)


def _crop(png: bytes, union_box, size: int, where: str) -> np.ndarray:
  """The ``(size, size, 3)`` uint8 crop of one image; errors name ``where``."""
  # Pillow is only needed to prepare, not to read prepared files.
  from PIL import Image  # pylint: disable=import-outside-toplevel
  try:
    with Image.open(io.BytesIO(png)) as image:
      image = image.convert("RGB")  # also forces the decode, so errors surface here
  except Image.UnidentifiedImageError:
    # Pillow's own message names a BytesIO object, which helps nobody.
    raise ValueError(f"{where} cannot be decoded: it is not in an image format Pillow "
                     "reads (SVHN's are PNG).") from None
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise ValueError(f"{where} cannot be decoded as an image: {e}") from None
  try:
    box = crop_box(union_box, image.size)
  except ValueError as e:
    raise ValueError(f"{where} has a bad digit box: {e}") from None
  # `box` takes fractional edges, so the crop is not rounded to whole pixels.
  out = image.resize((size, size), Image.Resampling.BILINEAR, box=box)
  return np.asarray(out, np.uint8)


# ----------------------------------------------------------------- tarballs


def _member_name(member: tarfile.TarInfo) -> str:
  name = member.name
  while name.startswith("./"):
    name = name[2:]
  return name


def _bad_tarball(path, e) -> ValueError:
  return ValueError(f"{path} is not a readable gzip-compressed tar archive (truncated or "
                    f"corrupt?): {type(e).__name__}: {e}. Download it again from {_HOMEPAGE}.")


# Everything tarfile and gzip raise on a broken archive.
_TAR_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error)


def _scan_tarball(path: str, split: str):
  """Checks one tarball and reads its annotations, before any image is decoded.

  Returns:
    ``(examples, dropped)``: ``examples`` maps each kept PNG's path in the
    tarball to ``(image_id, union_box, labels)``; ``dropped`` counts the
    numbers with more than ``MAX_DIGITS`` digits.
  """
  mat_path = f"{split}/{_MAT_NAME}"
  try:
    # Listing reads the whole archive, so a truncated one fails here, not midway.
    with tarfile.open(path, "r:gz") as tar:
      members = {_member_name(m): m for m in tar.getmembers() if m.isfile()}
      if mat_path not in members:
        mat = None
      else:
        mat = tar.extractfile(members[mat_path]).read()
  except _TAR_ERRORS as e:
    raise _bad_tarball(path, e) from None
  if mat is None:
    raise ValueError(f"{path} holds no {mat_path}; SVHN format 1 tarballs hold "
                     f"{split}/1.png, {split}/2.png, ... and {mat_path}.")
  where = f"{mat_path} in {path}"
  examples, dropped = {}, 0
  for name, boxes, labels in read_digit_struct(mat, where):
    png = f"{split}/{name}"
    if png not in members:
      raise ValueError(f"{png}, listed in {where}, is missing from {path}.")
    stem = os.path.splitext(name)[0]
    if not stem.isdigit():
      raise ValueError(f"{png}, listed in {where}, is not named <number>.png as SVHN's "
                       "images are.")
    if len(labels) > MAX_DIGITS:
      dropped += 1
      continue
    union = _union_box(boxes)
    if not (np.all(np.isfinite(boxes)) and union[2] > 0 and union[3] > 0):
      raise ValueError(f"{png} has a bad digit box in {where}: the digit boxes "
                       f"{boxes.tolist()} give the union box {union.tolist()} "
                       "([left, top, width, height]), which needs a positive width and height.")
    padded = np.full(MAX_DIGITS, NO_DIGIT, np.int64)
    padded[:len(labels)] = labels % 10  # SVHN's 10 is the digit 0
    examples[png] = (int(stem), union, padded, len(labels))
  return examples, dropped
