"""CUB-200-2011 images: decoding the stored JPEG bytes, and the paper's crops (supplement 1.5).

These turn records of ``stn_jax.datasets.cub.load`` into network inputs with
NumPy and Pillow, and are importable from ``stn_jax.datasets.cub``. For
training, "random sampling (224x224 from 256xS and 448x448 from 512xS where S
is the largest image side) and horizontal flipping": the image is rescaled,
aspect kept, so that its shorter side is ``base = size * 8 / 7`` (256 or 512)
and its longer side is then S; a ``size x size`` window is taken at a uniformly
random position and mirrored with probability 1/2. For evaluation, the four
corner windows and the centre window of the same rescaled image, and the mirror
image of each: 10 crops whose softmax outputs are averaged.

Why the shorter side: in "256xS" one side is 256 and the other is S, the
largest side, so 256 is the smaller one; had the largest side been scaled to
256, S would be 256 and the image would need padding, which the paper never
mentions; and the ImageNet network it starts from was trained on images
"resized so that the smallest side is 256". ``pad=True`` selects the other
reading: the longer side becomes ``base`` and the shorter side is zero-padded
to a ``base x base`` square, so that the whole bird is always in the picture.

The builder's check that every image decodes (``_image_size``) is here too, so
that preparing and reading judge an image's bytes by the same rules.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "decode",
    "eval_batch",
    "eval_crops",
    "rescale",
    "to_float",
    "train_batch",
    "train_crop",
]

_PIL_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def _why(error: Exception) -> str:
  # Pillow's own message for unknown formats names only the BytesIO object.
  if isinstance(error, UnidentifiedImageError):
    return "its bytes are in no image format Pillow knows"
  return f"{type(error).__name__}: {error}"


def _image_size(data: bytes, name: str) -> tuple[int, int]:
  """``(height, width)`` of an encoded image, decoding all of it to be sure it can be."""
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()
      width, height = image.size
  except _PIL_ERRORS as e:
    raise ValueError(f"The image {name} cannot be decoded ({_why(e)}).") from None
  return height, width


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
