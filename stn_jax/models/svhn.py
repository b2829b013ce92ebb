"""The SVHN multi-digit networks (supplement 1.4).

CNN: conv[48,5,1,2]-max[2]-conv[64,5,1,2]-conv[128,5,1,2]-max[2]-conv[192,5,1,2]-
max[2]-conv[192,5,1,2]-fc[3072]-fc[3072]-fc[3072], ReLU after every weight
layer, then five parallel fc[11] heads (one per digit position, class 10 = no
digit). Dropout 0.5 after every weight layer except the first conv, the heads
and the localisation nets. ST-CNN Single puts one affine transformer, with the
localisation net conv[32,5,1,2]-max[2]-conv[32,5,1,2]-fc[32]-fc[32], before the
first conv. ST-CNN Multi puts one before each of the first four convs, each
with an fc[32]-fc[32] localisation net on the feature map it transforms.
``width`` scales every layer's size (1.0: the paper's), so tests can run small ones.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from stn_jax.models.registry import check_input, register
from stn_jax.nn import Conv, Dense, LayerStack, MaxPool, SpatialTransformer, svhn_localization
from stn_jax.nn.conv import conv
from stn_jax.nn.layers import apply_pool

__all__ = ["SVHNNet"]

# (conv spec, followed by max[2]?) for the five convolutions.
_CONVS = ((48, True), (64, False), (128, True), (192, True), (192, False))
_FC = (3072, 3072, 3072)


class SVHNNet(nn.Module):
  """The SVHN CNN with no, one or four spatial transformers.

  Attributes:
    input_shape: ``(H, W, C)``, e.g. ``(64, 64, 3)`` or ``(128, 128, 3)``.
    transformers: 0 (CNN), 1 (ST-CNN Single) or 4 (ST-CNN Multi).
    width: multiplies every layer's size (1.0: the paper's).
    dropout: the dropout rate (0.5 in the paper).
    num_digits: number of digit heads (5).
    num_classes: classes per head (11: ten digits and "no digit").
    transform: the transformers' transform (affine in the paper).

  ``__call__(x, *, train=False)`` returns logits ``(N, num_digits, num_classes)``;
  with ``train=True`` dropout needs a ``'dropout'`` RNG.
  """
  input_shape: tuple[int, int, int] = (64, 64, 3)
  transformers: int = 0
  width: float = 1.0
  dropout: float = 0.5
  num_digits: int = 5
  num_classes: int = 11
  transform: str = "affine"

  def _size(self, n):
    return max(1, round(self.width * n))

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    where = type(self).__name__
    check_input(x, self.input_shape, where)
    if self.transformers not in (0, 1, 4):
      raise ValueError(f"{where}: `transformers` must be 0, 1 or 4, got {self.transformers}.")
    specs = []
    for filters, pool in _CONVS:
      specs.append(Conv(self._size(filters), 5, 1, 2))
      if pool:
        specs.append(MaxPool(2))

    conv_index = 0
    for spec in specs:
      if isinstance(spec, Conv):
        if (self.transformers == 1 and conv_index == 0) or (
            self.transformers == 4 and conv_index < 4):
          if self.transformers == 1:
            loc = svhn_localization(self.width, parent=None)
          else:
            loc = LayerStack((Dense(self._size(32)), Dense(self._size(32))), parent=None)
          # parent=None above: the net belongs to its transformer, not to this module.
          x, _ = SpatialTransformer(loc, self.transform, name=f"st_{conv_index}")(x, train=train)
        x = nn.relu(nn.Conv(spec.features, (5, 5), padding=((2, 2), (2, 2)),
                            conv_general_dilated=conv, name=f"conv_{conv_index}")(x))
        if conv_index > 0:
          x = nn.Dropout(self.dropout, deterministic=not train)(x)
        conv_index += 1
      else:
        x = apply_pool(x, spec)
    x = x.reshape(x.shape[0], -1)
    for j, units in enumerate(_FC):
      x = nn.relu(nn.Dense(self._size(units), name=f"fc_{j}")(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    heads = [nn.Dense(self.num_classes, name=f"head_{d}")(x) for d in range(self.num_digits)]
    return jnp.stack(heads, axis=1)


def _svhn(transformers, input_shape, width, dropout, num_digits, num_classes):
  return SVHNNet(tuple(int(s) for s in input_shape), transformers, float(width), float(dropout),
                 int(num_digits), int(num_classes))


@register("svhn_cnn")
def svhn_cnn(input_shape=(64, 64, 3), width: float = 1.0, dropout: float = 0.5,
             num_digits: int = 5, num_classes: int = 11) -> SVHNNet:
  """The SVHN CNN baseline."""
  return _svhn(0, input_shape, width, dropout, num_digits, num_classes)


@register("st_cnn_single")
def st_cnn_single(input_shape=(64, 64, 3), width: float = 1.0, dropout: float = 0.5,
                  num_digits: int = 5, num_classes: int = 11) -> SVHNNet:
  """ST-CNN Single: one affine transformer before the first conv."""
  return _svhn(1, input_shape, width, dropout, num_digits, num_classes)


@register("st_cnn_multi")
def st_cnn_multi(input_shape=(64, 64, 3), width: float = 1.0, dropout: float = 0.5,
                 num_digits: int = 5, num_classes: int = 11) -> SVHNNet:
  """ST-CNN Multi: an affine transformer before each of the first four convs."""
  return _svhn(4, input_shape, width, dropout, num_digits, num_classes)

