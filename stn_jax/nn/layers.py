"""Layer stacks written in the paper's notation, with shape checks before XLA.

The paper describes networks as ``conv[48,5,1,2]-max[2]-fc[3072]``. The specs
here say the same thing in Python: ``(Conv(48, 5, 1, 2), MaxPool(2),
Dense(3072))``, and :class:`LayerStack` runs them with a ReLU after every
weight layer. Before any layer runs, the spatial sizes are worked out from the
static input shape, and a layer whose output would be empty raises a
``ValueError`` that names the layer and the input size.

Pooling uses "ceil mode": a window that hangs over the bottom/right edge still
produces an output (the missing pixels are ignored). With it, the paper's
distorted-MNIST CNN fits a 21x21 input, which it must after the ST's 2x
average pooling on RTS (see docs/paper_notes.md).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence, Union

import flax.linen as nn
import jax.numpy as jnp

from stn_jax.nn.conv import conv
from stn_jax.nn.pooling import ceil_pads, max_pool

__all__ = ["AvgPool", "Conv", "Dense", "LayerStack", "MaxPool", "apply_pool", "output_hw"]


@dataclasses.dataclass(frozen=True)
class Conv:
  """``conv[features, kernel, stride, padding]``: a square convolution."""
  features: int
  kernel: int
  stride: int = 1
  padding: int = 0

  def __str__(self):
    return f"conv[{self.features},{self.kernel},{self.stride},{self.padding}]"


@dataclasses.dataclass(frozen=True)
class _Pool:
  window: int
  tag = ""

  def __str__(self):
    return f"{self.tag}[{self.window}]"


class MaxPool(_Pool):
  """``max[window]``: max pooling with stride ``window`` (ceil mode)."""
  tag = "max"


class AvgPool(_Pool):
  """``avg[window]``: average pooling with stride ``window`` (ceil mode)."""
  tag = "avg"


@dataclasses.dataclass(frozen=True)
class Dense:
  """``fc[features]``: a fully connected layer; flattens a feature map first."""
  features: int

  def __str__(self):
    return f"fc[{self.features}]"


Layer = Union[Conv, MaxPool, AvgPool, Dense]


def _layer_out(layer: Layer, hw: tuple[int, int]) -> tuple[int, int]:
  if isinstance(layer, Conv):
    return tuple((s + 2 * layer.padding - layer.kernel) // layer.stride + 1 for s in hw)
  if isinstance(layer, _Pool):
    return tuple(math.ceil(s / layer.window) for s in hw)
  raise TypeError(f"No spatial output for {layer!r}.")


def output_hw(layers: Sequence[Layer], input_hw, *, where: str = "LayerStack") -> tuple[int, int]:
  """Spatial size after the convolution and pooling layers of ``layers``.

  Stops at the first :class:`Dense` layer.

  Args:
    layers: the layer specs.
    input_hw: ``(H, W)`` of the input.
    where: the name of the network, for the error message.

  Returns:
    ``(H, W)`` of the feature map that reaches the first Dense layer (or the end).

  Raises:
    ValueError: a layer would get or produce an empty feature map.

  >>> output_hw((Conv(8, 9), MaxPool(2), Conv(8, 7), MaxPool(2)), (28, 28))
  (2, 2)
  """
  hw = tuple(int(s) for s in input_hw)
  for i, layer in enumerate(layers):
    if isinstance(layer, Dense):
      break
    out = _layer_out(layer, hw)
    if min(out) < 1:
      raise ValueError(
          f"{where}: layer {i} ({layer}) gets a {hw[0]}x{hw[1]} feature map from a "
          f"{input_hw[0]}x{input_hw[1]} input and would produce an empty one; use a larger "
          "input or smaller kernels/strides.")
    hw = out
  return hw


def apply_pool(x, layer):
  """Applies a :class:`MaxPool` or :class:`AvgPool` spec to ``(N, H, W, C)``."""
  window = (layer.window, layer.window)
  if isinstance(layer, MaxPool):
    return max_pool(x, layer.window)
  # Ceil mode, averaging over the pixels that exist, not over the padding.
  return nn.avg_pool(x, window, strides=window, padding=ceil_pads(x.shape, layer.window),
                     count_include_pad=False)


class LayerStack(nn.Module):
  """Runs a sequence of layer specs; ReLU after every weight layer.

  Attributes:
    layers: the specs, e.g. ``(Conv(20, 5), MaxPool(2), Conv(20, 5), Dense(20))``.
    relu_last: apply the ReLU after the last layer too (``True`` for hidden
      stacks such as localisation nets; ``False`` when the last layer gives logits).
    dropout: dropout rate applied after the activation of each weight layer
      whose index is not in ``no_dropout`` (and never after the last layer).
    no_dropout: indices (into ``layers``) of weight layers without dropout.
    dtype: computation dtype of the weight layers (``None``: the input's).

  ``__call__(x, *, train=False, return_hidden=False)`` takes ``(N, H, W, C)``
  (or ``(N, D)`` when the stack starts with a Dense layer) and returns the last
  layer's output; with ``return_hidden`` it returns ``(output, hidden)`` where
  ``hidden`` lists the input of every weight layer after the first (the hidden
  layers' outputs, after activation and pooling). Weight layers are named
  ``conv_<i>`` and ``fc_<i>`` by their index in ``layers``.

  >>> import jax
  >>> net = LayerStack((Conv(4, 3), MaxPool(2), Dense(5)), relu_last=False)
  >>> y, _ = net.init_with_output(jax.random.key(0), jnp.zeros((2, 9, 9, 1)))
  >>> y.shape
  (2, 5)
  """
  layers: Sequence[Layer]
  relu_last: bool = True
  dropout: float = 0.0
  no_dropout: Sequence[int] = ()
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, x, *, train: bool = False, return_hidden: bool = False):
    name = self.name or type(self).__name__
    if x.ndim == 4:
      output_hw(self.layers, x.shape[1:3], where=name)
    elif x.ndim != 2 or not self.layers or not isinstance(self.layers[0], Dense):
      raise ValueError(f"{name}: the input must have shape (N, H, W, C), or (N, D) for a stack "
                       f"that starts with a Dense layer, but got shape {x.shape}.")
    last = len(self.layers) - 1
    hidden, seen_weight = [], False
    for i, layer in enumerate(self.layers):
      weight = isinstance(layer, (Conv, Dense))
      if weight and seen_weight:
        hidden.append(x)
      seen_weight |= weight
      if isinstance(layer, Conv):
        pad = ((layer.padding, layer.padding),) * 2
        x = nn.Conv(layer.features, (layer.kernel, layer.kernel), strides=layer.stride,
                    padding=pad, dtype=self.dtype, conv_general_dilated=conv,
                    name=f"conv_{i}")(x)
      elif isinstance(layer, Dense):
        x = x.reshape(x.shape[0], -1)
        x = nn.Dense(layer.features, dtype=self.dtype, name=f"fc_{i}")(x)
      elif isinstance(layer, _Pool):
        x = apply_pool(x, layer)
      else:
        raise TypeError(f"{name}: unknown layer spec {layer!r} at index {i}.")
      if weight and (i < last or self.relu_last):
        x = nn.relu(x)
        if self.dropout > 0 and i < last and i not in self.no_dropout:
          x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return (x, hidden) if return_hidden else x
