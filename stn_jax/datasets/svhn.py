"""SVHN multi-digit ("format 1") prepared into ArrayRecord files without TensorFlow.

The Street View House Numbers dataset (Netzer et al., 2011) in its format 1:
whole house-number photographs with a box and a label per digit. As the paper
does, following Goodfellow et al. (2013), each number becomes one example:

1. the union box of its digit boxes (smallest left and top, largest right and
   bottom edge) is enlarged by 30% in width and in height about its centre;
2. the enlarged box is clipped to the image (never padded), cropped out with
   sub-pixel accuracy and resized to S x S pixels (S = 64 or 128, the builder
   config) with Pillow's bilinear filter, not keeping the aspect ratio;
3. the labels are the digits left to right, 0-9 (SVHN's label 10 is the digit
   0), padded with ``NO_DIGIT`` = 10 to ``MAX_DIGITS`` = 5. Numbers with more
   than five digits are dropped; how many, per split, is in
   ``builder.info.metadata['dropped_over_5_digits']`` and in the log.

The boxes are used as the file gives them, as coordinates of pixel edges with
the origin at the image's top-left corner (MATLAB's one-based pixel centres
would move them by half a pixel, far below the 30% margin). The random 54 x 54
crops of Goodfellow et al. are augmentation, left to the input pipeline.

Prepare once (``train.tar.gz`` and ``test.tar.gz`` are required,
``extra.tar.gz`` is optional and gives the 'extra' split)::

  python -m stn_jax.datasets.prepare svhn --manual_dir=DIR [--config=128]

then read with ``load('train')`` and batch with ``to_batch``, which gives the
format of ``stn_jax.datasets.mnist_numbers``. Preparing reads the tarballs
directly (nothing is extracted to disk), ``digitStruct.mat`` with h5py and the
PNGs with Pillow; neither preparing nor reading imports TensorFlow.
``stn_jax.datasets`` does not import this module.

This module holds the builder ``StnSvhn`` (TFDS name ``stn_svhn``), ``load``
and ``to_batch``; the reading of the tarballs and of ``digitStruct.mat``, and
the crop, are in ``stn_jax.datasets.svhn_files``, whose public names are
importable from here too. The builder stays in this module because TFDS
records a builder's module in every prepared ``dataset_info.json``.
"""

from __future__ import annotations

import logging
import os
import tarfile

import numpy as np

from stn_jax.datasets import prepared
from stn_jax.datasets.svhn_files import (_HOMEPAGE, _TAR_ERRORS, ENLARGE, MAX_DIGITS, NO_DIGIT,
                                         _bad_tarball, _crop, _member_name, _scan_tarball,
                                         crop_box, read_digit_struct)

tfds = prepared.import_tfds()

__all__ = [
    "ENLARGE",
    "MAX_DIGITS",
    "NO_DIGIT",
    "SIZES",
    "StnSvhn",
    "crop_box",
    "load",
    "read_digit_struct",
    "to_batch",
]

SIZES = (64, 128)

_REQUIRED_SPLITS = ("train", "test")
_OPTIONAL_SPLITS = ("extra",)

_log = logging.getLogger(__name__)


def _prepare_hint(manual_dir="DIR") -> str:
  return f"python -m stn_jax.datasets.prepare svhn --manual_dir={manual_dir}"


def _and(names) -> str:
  return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


# ----------------------------------------------------------------- builder


class StnSvhn(tfds.core.GeneratorBasedBuilder):
  """SVHN multi-digit crops, S x S x 3 uint8 with five labels; configs '64' and '128'."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Union box enlarged by 30%, clipped, bilinear resize."}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name=str(s), description=f"{s}x{s} crops.") for s in SIZES
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
  Download SVHN format 1 ("Full Numbers") from {_HOMEPAGE}: train.tar.gz and
  test.tar.gz (required) and extra.tar.gz (optional, 1.3 GB; without it there is
  no 'extra' split). Put them, unextracted, in one directory DIR and run
    {_prepare_hint()}
  """

  def _info(self):
    size = int(self.builder_config.name)
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "SVHN format 1: each house number's union digit box, enlarged by 30% about "
            "its centre and clipped to the image, resized to "
            f"{size}x{size} with bilinear interpolation. 'label' holds the digits left "
            f"to right (0-9), padded with {NO_DIGIT}; numbers of more than {MAX_DIGITS} "
            "digits are dropped. 'box' is the union box [left, top, width, height] in the "
            "original image's pixels, before enlargement."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8),
            "label": tfds.features.Tensor(shape=(MAX_DIGITS,), dtype=np.int64),
            "length": tfds.features.Tensor(shape=(), dtype=np.int64),
            "image_id": tfds.features.Tensor(shape=(), dtype=np.int64),
            "filename": tfds.features.Text(),
            "box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
        }),
        # A MetadataDict (not None) is what makes TFDS save metadata.json and
        # read it back when the prepared dataset is opened.
        metadata=tfds.core.MetadataDict(),
        homepage=_HOMEPAGE,
    )

  def _manual_dir(self, dl_manager) -> str:
    try:
      return os.fspath(dl_manager.manual_dir)
    except AssertionError:
      # TFDS says so with an AssertionError; ours names the files and the command.
      # The path is only kept privately, hence the getattr.
      where = getattr(dl_manager, "_manual_dir", None)
      raise FileNotFoundError(
          f"The SVHN manual directory {where} does not exist or is empty (without a "
          "manual_dir, TFDS looks in <data_dir>/downloads/manual). It must hold "
          "the SVHN format 1 tarballs train.tar.gz and test.tar.gz (and optionally "
          f"extra.tar.gz) from {_HOMEPAGE}. Prepare with: {_prepare_hint()}") from None

  def _split_generators(self, dl_manager):
    manual_dir = self._manual_dir(dl_manager)
    paths = {s: os.path.join(manual_dir, f"{s}.tar.gz")
             for s in _REQUIRED_SPLITS + _OPTIONAL_SPLITS}
    missing = [os.path.basename(paths[s]) for s in _REQUIRED_SPLITS
               if not os.path.isfile(paths[s])]
    if missing:
      raise FileNotFoundError(
          f"{_and(missing)} not found in the SVHN manual directory {manual_dir}. It must "
          "hold the SVHN format 1 tarballs train.tar.gz and test.tar.gz (and optionally "
          f"extra.tar.gz) from {_HOMEPAGE}. Prepare with: {_prepare_hint(manual_dir)}")
    splits = list(_REQUIRED_SPLITS)
    if os.path.isfile(paths["extra"]):
      splits.append("extra")
    else:
      _log.warning("%s not found: preparing SVHN without the 'extra' split.", paths["extra"])
    # All tarballs are checked before any image is decoded, so that a broken
    # file fails in seconds rather than after the long splits.
    scanned = {s: _scan_tarball(paths[s], s) for s in splits}
    dropped = {s: d for s, (_, d) in scanned.items()}
    self.info.metadata["dropped_over_5_digits"] = dropped
    for s, (examples, d) in scanned.items():
      _log.info("SVHN %s: %d numbers kept, %d dropped for having more than %d digits.",
                s, len(examples), d, MAX_DIGITS)
    size = int(self.builder_config.name)
    return {s: self._generate_examples(paths[s], examples, size)
            for s, (examples, _) in scanned.items()}

  def _generate_examples(self, path, examples, size):
    # One sequential pass: seeking inside a gzip stream would re-decompress it.
    seen = 0
    try:
      with tarfile.open(path, "r|gz") as tar:
        for member in tar:
          name = _member_name(member)
          if name not in examples:
            continue
          png = tar.extractfile(member).read()
          image_id, union, labels, length = examples[name]
          seen += 1
          yield name, {
              "image": _crop(png, union, size, f"{name} in {path}"),
              "label": labels,
              "length": length,
              "image_id": image_id,
              "filename": name,
              "box": union.astype(np.float32),
          }
    except _TAR_ERRORS as e:
      raise _bad_tarball(path, e) from None
    if seen != len(examples):
      # Only if the file changed since it was scanned.
      raise ValueError(f"{path} changed while it was read: {len(examples) - seen} of its "
                       "images disappeared.")


# ----------------------------------------------------------------- reading


def load(split: str, *, size: int = 64, data_dir=None):
  """The prepared SVHN ``split`` as a random-access source of example dicts.

  Args:
    split: 'train', 'test', or 'extra' where ``extra.tar.gz`` was prepared.
    size: 64 or 128, the side of the crops (the builder config).
    data_dir: where prepared datasets live; see ``stn_jax.datasets.prepared``.

  Returns:
    A source with ``len`` and ``[i]``; each item is a dict of NumPy arrays:
    'image' (S, S, 3) uint8, 'label' (5,) int64, 'length', 'image_id',
    'filename' and 'box'. Batch items with ``to_batch``.

  Raises:
    prepared.DatasetNotPreparedError: the config is not prepared there; the
      message gives the command that prepares it.
    ValueError: ``size`` or ``split`` is unknown.
  """
  if size not in SIZES:
    raise ValueError(f"size must be one of {SIZES}, got {size!r}.")
  return prepared.data_source("svhn", split, config=str(size), data_dir=data_dir)


def to_batch(records) -> dict[str, np.ndarray]:
  """Stacks examples from ``load`` into the format of ``mnist_numbers``.

  Args:
    records: a non-empty sequence of example dicts from ``load``.

  Returns:
    ``{'image': float32 (B, S, S, 3) in [0, 1], 'label': int32 (B, 5)}``, where
    ``label[i, j] == NO_DIGIT`` when number ``i`` has no ``j``-th digit.

  >>> record = {'image': np.full((64, 64, 3), 255, np.uint8),
  ...           'label': np.array([1, 0, 10, 10, 10])}
  >>> batch = to_batch([record, record])
  >>> batch['image'].shape, batch['image'].dtype, float(batch['image'].max())
  ((2, 64, 64, 3), dtype('float32'), 1.0)
  >>> batch['label'][0].tolist(), batch['label'].dtype
  ([1, 0, 10, 10, 10], dtype('int32'))
  """
  records = list(records)
  if not records:
    raise ValueError("to_batch needs at least one record.")
  images = np.stack([np.asarray(r["image"]) for r in records])
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"records' 'image' must be (S, S, 3) uint8 as load gives them, got "
                     f"{images.shape[1:]} {images.dtype}.")
  labels = np.stack([np.asarray(r["label"]) for r in records])
  if labels.shape[1:] != (MAX_DIGITS,):
    raise ValueError(f"records' 'label' must have shape ({MAX_DIGITS},), got {labels.shape[1:]}.")
  return {"image": images.astype(np.float32) / np.float32(255),
          "label": labels.astype(np.int32)}
