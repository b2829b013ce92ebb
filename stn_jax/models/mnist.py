"""The distorted-MNIST, MNIST-addition and co-localisation networks (supplement 1.1-1.3).

FCNs have two hidden fully connected layers; CNNs are conv 9x9 - max 2 -
conv 7x7 - max 2 - classifier (no padding). The ST models put the transformer
first. On inputs larger than 28x28 (RTS 42x42, TC 60x60, addition 42x42) they
average-pool its output by 2. Unless a width is given, the hidden width is
solved so that the whole model has ``param_budget`` parameters (the paper's
"around 400k" for every network of an experiment); docs/models.md tables the
results.
"""

from __future__ import annotations

import functools
from typing import Optional, Union

import flax.linen as nn
import jax.numpy as jnp

from stn_jax import ops
from stn_jax.models.registry import check_input, register, solve_width
from stn_jax.nn import (AvgPool, Conv, Dense, LayerStack, MaxPool, ParallelSpatialTransformers,
                        SpatialTransformer, colocalization_localization, conv_localization,
                        fc_localization)
from stn_jax.nn.layers import apply_pool, output_hw

__all__ = ["Classifier", "Colocalizer", "Encoder"]

PARAM_BUDGET = 400_000


class Classifier(nn.Module):
  """An optional spatial transformer (or several in parallel), then a classifier.

  Attributes:
    classifier: the classification stack (its last layer gives the logits).
    input_shape: ``(H, W, C)`` the model is built for; other inputs are refused.
    transformer: a :class:`SpatialTransformer` or
      :class:`ParallelSpatialTransformers`, or ``None``.
    pool_after_st: average-pooling window applied to the transformer's output (1: none).

  ``__call__(x, *, train=False)`` returns logits ``(N, num_classes)``.
  """
  classifier: LayerStack
  input_shape: tuple[int, int, int]
  transformer: Optional[nn.Module] = None
  pool_after_st: int = 1

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    check_input(x, self.input_shape, type(self).__name__)
    if self.transformer is not None:
      x, _ = self.transformer(x, train=train)
      if self.pool_after_st > 1:
        x = apply_pool(x, AvgPool(self.pool_after_st))
    return self.classifier(x, train=train)


class Encoder(nn.Module):
  """The co-localisation encoder e(): a trained MNIST ``cnn``'s two hidden layers
  and logits, flattened and concatenated.

  Its parameter tree is the ``cnn`` model's, so a trained ``cnn``'s variables
  apply to it unchanged.

  ``__call__(x, *, train=False)`` returns ``(N, D)`` descriptors.
  """
  classifier: LayerStack
  input_shape: tuple[int, int, int]

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    check_input(x, self.input_shape, type(self).__name__)
    logits, hidden = self.classifier(x, train=train, return_hidden=True)
    parts = [h.reshape(h.shape[0], -1) for h in hidden] + [logits]
    return jnp.concatenate(parts, -1)


class Colocalizer(nn.Module):
  """The co-localisation localiser: an attention transformer that crops one
  ``out_hw`` window from each image.

  ``__call__(x, *, train=False)`` returns ``(crops, {'theta', 'grid'})``; theta
  ``(s, tx, ty)`` is the predicted box: centre ``(tx, ty)`` and half-size ``s``
  in normalised coordinates.
  """
  input_shape: tuple[int, int, int] = (84, 84, 1)
  out_hw: tuple[int, int] = (28, 28)

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    check_input(x, self.input_shape, type(self).__name__)
    st = SpatialTransformer(colocalization_localization(parent=None), "attention", self.out_hw,
                            name="transformer")
    return st(x, train=train)


def _fcn_layers(hidden, num_classes):
  return (Dense(hidden), Dense(hidden), Dense(num_classes))


def _cnn_layers(filters, num_classes):
  return (Conv(filters, 9), MaxPool(2), Conv(filters, 7), MaxPool(2), Dense(num_classes))


def _pool_window(input_shape, pool_after_st):
  if pool_after_st is None:
    pool_after_st = input_shape[0] > 28 or input_shape[1] > 28
  return 2 if pool_after_st else 1


def _make(kind, input_shape, num_classes, transform, num_st, pool, width):
  """Builds one of the MNIST-family classifiers with hidden width ``width``."""
  layers = _fcn_layers if kind == "fcn" else _cnn_layers
  classifier = LayerStack(layers(width, num_classes), relu_last=False)
  if num_st == 0:
    return Classifier(classifier, input_shape)
  if kind == "fcn":
    locs = [fc_localization() for _ in range(num_st)]
  else:
    locs = [conv_localization() for _ in range(num_st)]
  if num_st == 1:
    st = SpatialTransformer(locs[0], transform)
  else:
    st = ParallelSpatialTransformers(locs, transform)
  return Classifier(classifier, input_shape, st, pool)


@functools.lru_cache(maxsize=None)
def _solved_width(kind, input_shape, num_classes, transform, num_st, pool, budget):
  build = functools.partial(_make, kind, input_shape, num_classes, transform, num_st, pool)
  return solve_width(build, input_shape, budget)


def _build(kind, input_shape, num_classes, transform, num_st, pool_after_st, width, budget):
  input_shape = tuple(int(s) for s in input_shape)
  if len(input_shape) != 3:
    raise ValueError(f"`input_shape` must be (H, W, C), but got {input_shape}.")
  if isinstance(transform, str):
    ops.get_transform(transform)  # an unknown name fails here, listing the known ones
  pool = _pool_window(input_shape, pool_after_st) if num_st else 1
  # Fail at build time, naming the layer, rather than deep inside init.
  if num_st and kind == "cnn":
    output_hw(conv_localization().layers, input_shape[:2], where="the localisation net")
  classifier_hw = tuple(-(-s // pool) for s in input_shape[:2])
  shown_width = width if width is not None else "width"  # only shown in the message
  output_hw(_cnn_layers(shown_width, num_classes) if kind == "cnn" else (), classifier_hw,
            where=f"the {kind.upper()} classifier")
  if width is None:
    width = _solved_width(kind, input_shape, num_classes, transform, num_st, pool, budget)
  return _make(kind, input_shape, num_classes, transform, num_st, pool, int(width))


Transform = Union[str, ops.Transform]


@register("fcn")
def fcn(input_shape=(28, 28, 1), num_classes: int = 10, hidden: Optional[int] = None,
        param_budget: int = PARAM_BUDGET) -> Classifier:
  """FCN: two hidden fully connected layers of ``hidden`` units (None: solved for the budget)."""
  return _build("fcn", input_shape, num_classes, None, 0, None, hidden, param_budget)


@register("cnn")
def cnn(input_shape=(28, 28, 1), num_classes: int = 10, filters: Optional[int] = None,
        param_budget: int = PARAM_BUDGET) -> Classifier:
  """CNN: conv 9x9 - max 2 - conv 7x7 - max 2 - classifier, ``filters`` per conv."""
  return _build("cnn", input_shape, num_classes, None, 0, None, filters, param_budget)


@register("st_fcn")
def st_fcn(input_shape=(28, 28, 1), num_classes: int = 10, transform: Transform = "affine",
           hidden: Optional[int] = None, pool_after_st: Optional[bool] = None,
           param_budget: int = PARAM_BUDGET) -> Classifier:
  """ST-FCN: a transformer with a 32-32-32 fully connected localisation net, then the FCN."""
  return _build("fcn", input_shape, num_classes, transform, 1, pool_after_st, hidden,
                param_budget)


@register("st_cnn")
def st_cnn(input_shape=(28, 28, 1), num_classes: int = 10, transform: Transform = "affine",
           filters: Optional[int] = None, pool_after_st: Optional[bool] = None,
           param_budget: int = PARAM_BUDGET) -> Classifier:
  """ST-CNN: a transformer with the conv localisation net, then the CNN."""
  return _build("cnn", input_shape, num_classes, transform, 1, pool_after_st, filters,
                param_budget)


@register("2xst_fcn")
def two_st_fcn(input_shape=(42, 42, 2), num_classes: int = 19, transform: Transform = "tps",
               hidden: Optional[int] = None, pool_after_st: Optional[bool] = None,
               param_budget: int = PARAM_BUDGET) -> Classifier:
  """2xST-FCN (MNIST addition): two transformers on the whole input, their
  outputs concatenated on channels (2 x C channels), then the FCN."""
  return _build("fcn", input_shape, num_classes, transform, 2, pool_after_st, hidden,
                param_budget)


@register("colocalizer")
def colocalizer(input_shape=(84, 84, 1), out_hw=(28, 28)) -> Colocalizer:
  """The co-localisation localiser (attention transformer)."""
  return Colocalizer(tuple(input_shape), tuple(out_hw))


@register("coloc_encoder")
def coloc_encoder(input_shape=(28, 28, 1), num_classes: int = 10,
                  filters: Optional[int] = None, param_budget: int = PARAM_BUDGET) -> Encoder:
  """The encoder e() over a ``cnn`` built with the same options."""
  model = cnn(input_shape, num_classes, filters, param_budget)
  return Encoder(model.classifier, model.input_shape)
