"""A tiny CUB-200-2011 archive in the official layout (9 JPEGs of 3 classes, the text
files, the folders a real tarball has), for the builder's and the task's tests."""

import io
import tarfile

import numpy as np
from PIL import Image

CLASSES = ["001.Red_bird", "002.Blue_bird", "003.Grey_bird"]
# (class_id, width, height, is_train, greyscale); image ids are 1.. in this order.
IMAGES = [
    (1, 60, 40, 1, False), (1, 33, 70, 0, False), (1, 50, 50, 1, False),
    (2, 41, 29, 1, True), (2, 64, 48, 1, False), (2, 20, 90, 0, False),
    (3, 70, 33, 0, False), (3, 45, 45, 1, False), (3, 38, 52, 1, False),
]
ROOT = "CUB_200_2011"


def _jpeg(width, height, grey, seed):
  rng = np.random.default_rng(seed)
  pixels = rng.integers(0, 256, (height, width) if grey else (height, width, 3), dtype=np.uint8)
  out = io.BytesIO()
  Image.fromarray(pixels).save(out, format="JPEG", quality=90)
  return out.getvalue()


def _lines(rows):
  return "".join(" ".join(map(str, row)) + "\n" for row in rows).encode()


def _path(image_id):
  """Where image ``image_id`` lies under images/, named the way the real archive names files."""
  folder = CLASSES[IMAGES[image_id - 1][0] - 1]
  return f"{folder}/{folder[4:]}_{image_id:04d}_{100 + image_id}.jpg"


def _official_files():
  """Member name -> bytes, as in CUB_200_2011.tgz, images first as the worst case for a stream."""
  images, paths, labels, split, boxes = {}, [], [], [], []
  for image_id, (class_id, width, height, is_train, grey) in enumerate(IMAGES, start=1):
    path = _path(image_id)
    images[f"{ROOT}/images/{path}"] = _jpeg(width, height, grey, image_id)
    paths.append((image_id, path))
    labels.append((image_id, class_id))
    split.append((image_id, is_train))
    boxes.append((image_id, f"{image_id}.0", "2.5", f"{width - image_id - 3}.0", "20.0"))
  files = dict(images)
  files.update({
      f"{ROOT}/images.txt": _lines(paths),
      f"{ROOT}/train_test_split.txt": _lines(split),
      f"{ROOT}/image_class_labels.txt": _lines(labels),
      f"{ROOT}/classes.txt": _lines(enumerate(CLASSES, start=1)),
      f"{ROOT}/bounding_boxes.txt": _lines(boxes),
      f"{ROOT}/README": b"Caltech-UCSD Birds-200-2011 (fixture)\n",
      f"{ROOT}/parts/parts.txt": b"1 back\n",
      f"{ROOT}/attributes/certainties.txt": b"1 not visible\n",
      "attributes.txt": b"1 has_bill_shape::curved\n",
  })
  return files


def _pack(path, files):
  """Writes ``files`` as a gzip-compressed tar, with the directory entries a real one has."""
  dirs = sorted({name.rsplit("/", i)[0] for name in files for i in range(1, name.count("/") + 1)})
  with tarfile.open(path, "w:gz") as tar:
    for d in dirs:
      info = tarfile.TarInfo(d)
      info.type, info.mode = tarfile.DIRTYPE, 0o755
      tar.addfile(info)
    for name, data in files.items():
      info = tarfile.TarInfo(name)
      info.size, info.mode = len(data), 0o644
      tar.addfile(info, io.BytesIO(data))
  return path
