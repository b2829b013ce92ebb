"""A small SVHN format 1 fixture in the real file format: ``<split>/N.png`` and a MATLAB
v7.3 ``<split>/digitStruct.mat`` (HDF5 with object references: a one-digit number's box
fields are stored inline, a longer number's as references to one number each), in the
official tarballs. Each union box is painted red on blue, so the crops show where it went.
"""

import io
import itertools
import tarfile

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")
Image = pytest.importorskip("PIL.Image")
# The files are only of use to the TFDS builder: whoever imports them skips where it cannot
# run, as test_svhn does.
pytest.importorskip("tensorflow_datasets")
pytest.importorskip("array_record")

RED, BLUE = (230, 20, 20), (20, 20, 230)

# Name -> (image width, height, [(left, top, width, height, SVHN label), ...]).
TRAIN = {
    # Three digits well inside the image: the crop is not clipped.
    "1.png": (90, 40, [(30, 10, 10, 20, 2), (40, 11, 9, 19, 1), (50, 10, 10, 20, 10)]),
    # One digit touching the left edge: the enlarged box is clipped at x = 0.
    "2.png": (60, 30, [(0, 5, 20, 20, 10)]),
    # Six digits: dropped.
    "3.png": (80, 30, [(5 + 10 * i, 5, 10, 20, 1 + i) for i in range(6)]),
    "4.png": (120, 50, [(10 + 20 * i, 15, 18, 25, 1 + i) for i in range(5)]),
    # A box above the top edge, as some SVHN boxes are.
    "5.png": (50, 40, [(10, -2, 12, 20, 10), (23, 0, 12, 18, 7)]),
    "6.png": (70, 45, [(20, 10, 10, 20, 9), (30, 12, 10, 20, 10), (40, 10, 10, 20, 9)]),
}
TEST = {
    "1.png": (40, 90, [(10, 30, 20, 30, 4)]),
    "2.png": (64, 32, [(8, 4, 20, 24, 5), (28, 4, 20, 24, 6)]),
    "3.png": (33, 47, [(5, 9, 11, 17, 10)]),
}
TINY = {"1.png": (30, 20, [(5, 5, 10, 10, 3)])}


def union(digits):
  d = np.array([x[:4] for x in digits], float)
  left, top = d[:, 0].min(), d[:, 1].min()
  return left, top, (d[:, 0] + d[:, 2]).max() - left, (d[:, 1] + d[:, 3]).max() - top


def png_bytes(width, height, digits):
  image = np.zeros((height, width, 3), np.uint8) + np.array(BLUE, np.uint8)
  left, top, w, h = union(digits)
  image[max(int(top), 0):int(top + h), max(int(left), 0):int(left + w)] = RED
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  return buffer.getvalue()


def digit_struct_bytes(entries):
  """A MATLAB v7.3-style digitStruct.mat for ``entries``: [(name, digits), ...]."""
  buffer = io.BytesIO()
  with h5py.File(buffer, "w", userblock_size=512) as f:
    refs = f.create_group("#refs#")
    counter = itertools.count()

    def stored(data, matlab_class):
      ds = refs.create_dataset(f"r{next(counter)}", data=data)
      ds.attrs["MATLAB_class"] = np.bytes_(matlab_class)
      return ds.ref

    names = np.empty((len(entries), 1), h5py.ref_dtype)
    bboxes = np.empty((len(entries), 1), h5py.ref_dtype)
    for i, (name, digits) in enumerate(entries):
      names[i, 0] = stored(np.array([[ord(c)] for c in name], np.uint16), "char")
      group = refs.create_group(f"b{i}")
      group.attrs["MATLAB_class"] = np.bytes_("struct")
      for j, field in enumerate(("left", "top", "width", "height", "label")):
        values = [float(d[j]) for d in digits]
        if len(values) == 1:
          group.create_dataset(field, data=np.array([values], np.float64))
        else:
          cells = np.empty((len(values), 1), h5py.ref_dtype)
          for k, v in enumerate(values):
            cells[k, 0] = stored(np.array([[v]], np.float64), "double")
          group.create_dataset(field, data=cells)
      bboxes[i, 0] = group.ref
    struct = f.create_group("digitStruct")
    struct.attrs["MATLAB_class"] = np.bytes_("struct")
    struct.create_dataset("name", data=names)
    struct.create_dataset("bbox", data=bboxes)
  data = bytearray(buffer.getvalue())
  header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: fixture HDF5 schema 1.00 ."
  data[:len(header)] = header
  return bytes(data)


def write_tarball(path, split, files):
  with tarfile.open(path, "w:gz") as tar:
    for name, data in files.items():
      info = tarfile.TarInfo(f"{split}/{name}")
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))


def split_files(spec, mat=None):
  files = {name: png_bytes(w, h, digits) for name, (w, h, digits) in spec.items()}
  files["digitStruct.mat"] = mat if mat is not None else digit_struct_bytes(
      [(name, digits) for name, (_, _, digits) in spec.items()])
  files["see_bboxes.m"] = b"% not read\n"
  return files


def make_manual_dir(path, train=TRAIN, test=TEST, replace=None):
  """A manual directory; ``replace`` maps a split to the files its tarball holds instead."""
  path.mkdir(parents=True)
  for split, spec in (("train", train), ("test", test)):
    files = (replace or {}).get(split) or split_files(spec)
    write_tarball(path / f"{split}.tar.gz", split, files)
  return path
