"""The CUB-200-2011 networks (paper section 4.3, supplement 1.5).

``cub_cnn``: BN-Inception (1024-d descriptor) and a 200-way classifier.
``2xst_cnn`` / ``4xst_cnn``: one localisation net, shared by N attention
transformers, predicts the centres ``(x, y)`` of N crops whose scale is fixed
at 0.5; each 224x224 crop goes through its own BN-Inception stream, and the N
descriptors, concatenated, go to the 200-way classifier. The localisation net
is a BN-Inception without its last pool (7x7x1024 at 224px), then a 1x1 conv to
128 channels, fc 128, and fc 2N (the transformer's regressor). At 448px the
localisation net sees the image through a fixed 2x average-pooling layer, so
its input is still 224x224, while the crops are sampled from the full 448px image.

Pretrained ImageNet weights cannot be downloaded here: :func:`load_pretrained`
copies one BN-Inception checkpoint (format in
:mod:`stn_jax.models.inception_bn`) into every backbone of a model.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from stn_jax.models.inception_bn import InceptionBN, load_backbone
from stn_jax.models.registry import register
from stn_jax.nn import AvgPool, MultiStreamTransformer
from stn_jax.nn.conv import conv
from stn_jax.nn.layers import apply_pool

__all__ = ["CUBNet", "LocalizationTrunk", "backbone_prefixes", "load_pretrained", "tiling"]

CROP = 224
SCALE = 0.5


def tiling(num_transformers: int) -> np.ndarray:
  """The crop centres ``(x, y)`` the localisation net starts at.

  Four crops of half the image's size tile it exactly (its quadrants). Two
  crops cannot tile the whole image at this scale: they start side by side, on
  the left and right halves of the central band (docs/paper_notes.md).
  """
  if num_transformers == 4:
    return np.array([[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]], np.float32)
  if num_transformers == 2:
    return np.array([[-0.5, 0.0], [0.5, 0.0]], np.float32)
  raise ValueError(f"Crop tiling is defined for 2 or 4 transformers, got {num_transformers}.")


class LocalizationTrunk(nn.Module):
  """BN-Inception without its last pool, 1x1 conv to 128, fc 128 (ReLU after each)."""
  width: float = 1.0

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    x = InceptionBN(self.width, name="backbone")(x, train=train, pool=False)
    x = nn.relu(nn.Conv(128, (1, 1), conv_general_dilated=conv, name="reduce")(x))
    return nn.relu(nn.Dense(128, name="fc")(x.reshape(x.shape[0], -1)))


class CUBNet(nn.Module):
  """BN-Inception classifier with 0 (plain CNN), 2 or 4 attention streams.

  Attributes:
    input_size: 224 or 448 (the image the crops are sampled from).
    transformers: 0, 2 or 4.
    width: the BN-Inception width multiplier (1.0: the paper's).
    num_classes: 200.

  ``__call__(x, *, train=False)`` returns logits ``(N, num_classes)``; with
  ``train=True`` apply with ``mutable=['batch_stats']``.
  """
  input_size: int = 224
  transformers: int = 0
  width: float = 1.0
  num_classes: int = 200

  @property
  def input_shape(self) -> tuple[int, int, int]:
    return (self.input_size, self.input_size, 3)

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    where = type(self).__name__
    size = self.input_size
    if x.ndim != 4 or x.shape[1:3] != (size, size):
      raise ValueError(f"{where}: expected input of shape (N, {size}, {size}, C), "
                       f"but got shape {x.shape}.")
    if self.transformers == 0:
      features = InceptionBN(self.width, name="stream_0")(x, train=train)
    else:
      loc_input = x if size == CROP else apply_pool(x, AvgPool(size // CROP))
      st = MultiStreamTransformer(LocalizationTrunk(self.width, parent=None),
                                  self.transformers, fixed_scale=SCALE,
                                  init_params=tiling(self.transformers), out_hw=(CROP, CROP),
                                  name="transformer")
      crops, _ = st(x, train=train, localization_input=loc_input)
      features = jnp.concatenate(
          [InceptionBN(self.width, name=f"stream_{i}")(c, train=train)
           for i, c in enumerate(crops)], -1)
    return nn.Dense(self.num_classes, name="classifier")(features)


def backbone_prefixes(model: CUBNet) -> list[tuple[str, ...]]:
  """Where the BN-Inception backbones live in ``model``'s variables."""
  prefixes = [(f"stream_{i}",) for i in range(max(1, model.transformers))]
  if model.transformers:
    prefixes.append(("transformer", "localization", "backbone"))
  return prefixes


def load_pretrained(model: CUBNet, variables, path):
  """Copies the BN-Inception checkpoint at ``path`` into every backbone of ``model``.

  Args:
    model: the :class:`CUBNet` the variables belong to.
    variables: its variables (``params`` and ``batch_stats``).
    path: a ``.npz`` file in the format of :mod:`stn_jax.models.inception_bn`.

  Returns:
    New variables; the classifier, the localisation head and the regressor are
    unchanged (the regressor still starts at the tiling).
  """
  for prefix in backbone_prefixes(model):
    variables = load_backbone(variables, path, prefix=prefix)
  return variables


def _check(input_size):
  if input_size not in (224, 448):
    raise ValueError(f"`input_size` must be 224 or 448 (the paper's settings), got {input_size}.")
  return int(input_size)


@register("cub_cnn")
def cub_cnn(input_size: int = 224, width: float = 1.0, num_classes: int = 200) -> CUBNet:
  """The CNN baseline: BN-Inception and a 200-way classifier."""
  return CUBNet(_check(input_size), 0, float(width), int(num_classes))


@register("2xst_cnn")
def two_st_cnn(input_size: int = 448, width: float = 1.0, num_classes: int = 200) -> CUBNet:
  """2xST-CNN: two attention streams."""
  return CUBNet(_check(input_size), 2, float(width), int(num_classes))


@register("4xst_cnn")
def four_st_cnn(input_size: int = 448, width: float = 1.0, num_classes: int = 200) -> CUBNet:
  """4xST-CNN: four attention streams."""
  return CUBNet(_check(input_size), 4, float(width), int(num_classes))
