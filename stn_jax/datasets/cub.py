"""CUB-200-2011 birds: the TFDS builder ``stn_cub``, its reader, and the paper's crops.

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

and read a split with :func:`load`. This is the module to import: the reading
and checking of the official files lives in ``stn_jax.datasets.cub_files``, and
the decoding and the crops of supplement 1.5 (:func:`decode`, :func:`rescale`,
:func:`train_crop`, :func:`eval_crops`, :func:`to_float`, :func:`train_batch`,
:func:`eval_batch`, whose module docstring says how the paper's crops are
read) in ``stn_jax.datasets.cub_images``; both are importable from here. The
builder stays in this module because TFDS records a builder's module in every
prepared ``dataset_info.json``.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from stn_jax.datasets import prepared
from stn_jax.datasets.cub_files import (ARCHIVE, FOLDER, HOMEPAGE, NUM_CLASSES, _COMMAND,
                                        _manual_dir, _open_source, _read_metadata)
from stn_jax.datasets.cub_images import (_image_size, decode, eval_batch, eval_crops, rescale,
                                         to_float, train_batch, train_crop)

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
