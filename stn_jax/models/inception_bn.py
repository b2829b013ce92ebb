"""Inception with batch normalisation (BN-Inception), the bird experiment's backbone.

The network is the table of Figure 5 in Ioffe & Szegedy, "Batch Normalization"
(ICML 2015), up to and including the global average pool: a 224x224x3 image
becomes a 7x7x1024 map and then a 1024-d descriptor. There is no classifier;
the Spatial Transformer Networks paper (section 4.3) puts its own on top.

Every convolution is conv (no bias) -> BatchNorm -> ReLU. An inception module
concatenates, on the channel axis and in this order, the branches
``[1x1] | [3x3_reduce -> 3x3] | [double_3x3_reduce -> double_3x3_1 ->
double_3x3_2] | [pool -> pool_proj]``; the stride-2 modules (3c, 4e) have no
1x1 branch and pass the pool through without a projection.

Padding. A convolution with a ``k x k`` kernel is padded by ``k // 2`` on every
side (7x7: 3, 3x3: 1, 1x1: 0), as in the Caffe and PyTorch ports of the
ImageNet weights. A pooling window is padded as TensorFlow's ``SAME``: its
output has ``ceil(n / stride)`` positions, with the extra padding at the
bottom/right; max pooling pads with ``-inf``, average pooling (3x3, stride 1,
pad 1) divides by 9 everywhere, counting the padding, as Caffe does. At even
sizes a stride-2 pool is then exactly Caffe's "ceil mode" pool with no
padding, and at every size the stride-2 convolutions and pools of a module
agree (``ceil(n / 2)``), so any input of at least 1x1 goes through:
224 -> 112 (conv1) -> 56 (pool1) -> 28 (pool2) -> 14 (inception_3c) -> 7
(inception_4e). The map before the final pool is ``ceil(H / 32) x ceil(W / 32)``.

Checkpoint format (:func:`save_backbone`, :func:`load_backbone`). One ``.npz``
file (``numpy.savez``) whose keys are the '/'-joined paths of the Flax
variables of an :class:`InceptionBN`, starting with the collection, and whose
values are floating-point arrays (cast to float32 on loading) of exactly these
shapes (``Cin`` and ``Cout`` at width 1.0 follow from the table)::

  params/<layer>/conv/kernel        (kh, kw, Cin, Cout)   no conv bias
  params/<layer>/bn/scale           (Cout,)                BN gamma
  params/<layer>/bn/bias            (Cout,)                BN beta
  batch_stats/<layer>/bn/mean       (Cout,)                running mean
  batch_stats/<layer>/bn/var        (Cout,)                running variance

where ``<layer>`` is ``conv1`` (7x7/2), ``conv2_reduce`` (1x1), ``conv2``
(3x3), or ``inception_<m>/<branch>`` with ``<m>`` in 3a 3b 3c 4a 4b 4c 4d 4e
5a 5b and ``<branch>`` in ``1x1``, ``3x3_reduce``, ``3x3``,
``double_3x3_reduce``, ``double_3x3_1``, ``double_3x3_2``, ``pool_proj``
(3c and 4e have neither ``1x1`` nor ``pool_proj``): 69 convolutions, 345
arrays. These are the layer names of the Caffe BN-Inception (``inception_3a/
double_3x3_1``; ``inception_3a_double_3x3_1`` in its PyTorch port), except
``conv1/7x7_s2``, ``conv2/3x3_reduce`` and ``conv2/3x3``, here ``conv1``,
``conv2_reduce`` and ``conv2``. Converting those weights: a convolution weight
``(Cout, Cin, kh, kw)`` becomes ``kernel`` by ``transpose(2, 3, 1, 0)``; the
normalisation here is ``scale * (x - mean) / sqrt(var + 1e-5) + bias``, so a
source convolution's bias ``b`` (the ports have one) folds into ``mean - b``,
and a source epsilon ``e`` other than 1e-5 (TF-slim's is 1e-3) into ``var + e
- 1e-5``. conv1's input channels mean whatever they meant in training (the
Caffe model: BGR, 0-255, mean-subtracted): that preprocessing is the caller's.

>>> import jax, jax.numpy as jnp
>>> model = InceptionBN(width=0.125)
>>> x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
>>> variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
>>> jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x).shape
(2, 128)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from flax.core import FrozenDict, freeze

from stn_jax.nn.conv import conv

__all__ = ["BN_EPSILON", "InceptionBN", "load_backbone", "num_features", "save_backbone"]

BN_EPSILON = 1e-5  # Caffe's and PyTorch's, so converted weights need no change

COLLECTIONS = ("params", "batch_stats")

# (name, 1x1, (3x3 reduce, 3x3), (double reduce, double 3x3), pool, pool proj, stride);
# 0 means "no such branch". Figure 5 of Ioffe & Szegedy (2015).
_MODULES = (
    ("inception_3a", 64, (64, 64), (64, 96), "avg", 32, 1),
    ("inception_3b", 64, (64, 96), (64, 96), "avg", 64, 1),
    ("inception_3c", 0, (128, 160), (64, 96), "max", 0, 2),
    ("inception_4a", 224, (64, 96), (96, 128), "avg", 128, 1),
    ("inception_4b", 192, (96, 128), (96, 128), "avg", 128, 1),
    ("inception_4c", 160, (128, 160), (128, 160), "avg", 128, 1),
    ("inception_4d", 96, (128, 192), (160, 192), "avg", 128, 1),
    ("inception_4e", 0, (128, 192), (192, 256), "max", 0, 2),
    ("inception_5a", 352, (192, 320), (160, 224), "avg", 128, 1),
    ("inception_5b", 352, (192, 320), (192, 224), "max", 128, 1),
)


def _scaled(width: float, n: int) -> int:
  return max(1, round(width * n))


def num_features(width: float = 1.0) -> int:
  """Channels of :class:`InceptionBN`'s output at ``width``.

  Args:
    width: the model's ``width``.

  Returns:
    The descriptor's length (also the channels of the ``pool=False`` map).

  >>> num_features(), num_features(0.125)
  (1024, 128)
  """
  _, b1, (_, b3), (_, bd), _, proj, _ = _MODULES[-1]
  return sum(_scaled(width, n) for n in (b1, b3, bd, proj))


# --- Spatial sizes, worked out from static shapes before any layer runs. ---

def _conv_padding(kernel: int) -> tuple[int, int]:
  return kernel // 2, kernel // 2


def _pool_padding(size: int, window: int, stride: int) -> tuple[int, int]:
  """TensorFlow's SAME: ``ceil(size / stride)`` outputs, the odd pixel of padding at the end."""
  total = max((-(-size // stride) - 1) * stride + window - size, 0)
  return total // 2, total - total // 2


def _out_size(size: int, window: int, stride: int, padding: tuple[int, int]) -> int:
  return max((size + padding[0] + padding[1] - window) // stride + 1, 0)


def _conv_size(size: int, kernel: int, stride: int = 1) -> int:
  return _out_size(size, kernel, stride, _conv_padding(kernel))


def _pool_size(size: int, window: int = 3, stride: int = 2) -> int:
  return _out_size(size, window, stride, _pool_padding(size, window, stride))


def _layer_sizes(size: int) -> list[tuple[str, int]]:
  """``(layer, output size)`` along one spatial axis, in order, for an input of ``size``.

  An inception module's size is that of its smallest branch, so that a
  disagreement (which the paddings above rule out) would show as emptiness
  rather than pass unnoticed.
  """
  sizes = []

  def add(name, n):
    sizes.append((name, n))
    return n

  n = add("conv1", _conv_size(size, 7, 2))
  n = add("pool1", _pool_size(n))
  n = add("conv2_reduce", _conv_size(n, 1))
  n = add("conv2", _conv_size(n, 3))
  n = add("pool2", _pool_size(n))
  for name, b1, _, _, _, _, stride in _MODULES:
    branches = [_conv_size(_conv_size(n, 1), 3, stride),  # 3x3
                _conv_size(_conv_size(_conv_size(n, 1), 3), 3, stride),  # double 3x3
                _pool_size(n, 3, stride)]
    if b1:
      branches.append(_conv_size(n, 1, stride))
    n = add(name, min(branches))
  return sizes


def _min_input_size() -> int:
  size = 1
  while any(n < 1 for _, n in _layer_sizes(size)):
    size += 1
  return size


def _check_input(shape: Sequence[int]) -> None:
  where = "InceptionBN"
  if len(shape) != 4:
    raise ValueError(f"{where}: expected an input of shape (N, H, W, C), but got shape "
                     f"{tuple(shape)}.")
  _, h, w, c = shape
  if c < 1:
    raise ValueError(f"{where}: the input has no channels: shape {tuple(shape)}.")
  need = _min_input_size()
  too_small = (f"{where}: a {h}x{w} input is too small: the feature map is empty")
  if h < 1 or w < 1:
    raise ValueError(f"{too_small} before conv1 (needs at least {need}x{need}).")
  for (name, nh), (_, nw) in zip(_layer_sizes(h), _layer_sizes(w)):
    if nh < 1 or nw < 1:
      raise ValueError(f"{too_small} after {name} (needs at least {need}x{need}).")


# --- The network. ---

class ConvBN(nn.Module):
  """conv (no bias) -> BatchNorm -> ReLU, with the kernel's ``k // 2`` padding.

  Attributes:
    features: output channels.
    kernel: square kernel size.
    stride: the convolution's stride.
    bn_momentum: BatchNorm's running-average momentum.
    dtype: the computation's dtype (parameters stay float32).
  """
  features: int
  kernel: int
  stride: int = 1
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    pad = _conv_padding(self.kernel)
    x = nn.Conv(self.features, (self.kernel, self.kernel), (self.stride, self.stride),
                padding=(pad, pad), use_bias=False, dtype=self.dtype,
                conv_general_dilated=conv, name="conv")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                     epsilon=BN_EPSILON, dtype=self.dtype, name="bn")(x)
    return nn.relu(x)


def _pool(x, kind: str, stride: int):
  pads = tuple(_pool_padding(n, 3, stride) for n in x.shape[1:3])
  if kind == "max":
    return nn.max_pool(x, (3, 3), (stride, stride), padding=pads)
  return nn.avg_pool(x, (3, 3), (stride, stride), padding=pads, count_include_pad=True)


class InceptionModule(nn.Module):
  """One BN-Inception module; see the module docstring for its branches and names.

  Attributes:
    b1x1: filters of the 1x1 branch (0: no such branch).
    b3x3: ``(reduce, 3x3)`` filters.
    double: ``(reduce, 3x3)`` filters of the double-3x3 branch.
    pool: ``'avg'`` or ``'max'``.
    proj: filters of the projection after the pool (0: the pool passes through).
    stride: 1, or 2 on the last 3x3 of each conv branch and on the pool.
    bn_momentum: BatchNorm's running-average momentum.
    dtype: the computation's dtype.
  """
  b1x1: int
  b3x3: tuple[int, int]
  double: tuple[int, int]
  pool: str
  proj: int
  stride: int = 1
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    def conv(features, kernel, name, stride=1):
      return ConvBN(features, kernel, stride, self.bn_momentum, self.dtype, name=name)

    branches = []
    if self.b1x1:
      branches.append(conv(self.b1x1, 1, "1x1", self.stride)(x, train=train))
    y = conv(self.b3x3[0], 1, "3x3_reduce")(x, train=train)
    branches.append(conv(self.b3x3[1], 3, "3x3", self.stride)(y, train=train))
    y = conv(self.double[0], 1, "double_3x3_reduce")(x, train=train)
    y = conv(self.double[1], 3, "double_3x3_1")(y, train=train)
    branches.append(conv(self.double[1], 3, "double_3x3_2", self.stride)(y, train=train))
    y = _pool(x, self.pool, self.stride)
    if self.proj:
      y = conv(self.proj, 1, "pool_proj")(y, train=train)
    branches.append(y)
    return jnp.concatenate(branches, axis=-1)


class InceptionBN(nn.Module):
  """BN-Inception (Ioffe & Szegedy, 2015) without its classifier.

  Attributes:
    width: multiplies every convolution's filter count, ``max(1, round(width * n))``
      (1.0: the paper's network), so tests can run small ones.
    bn_momentum: BatchNorm's running-average momentum (Flax's meaning: the
      weight of the old average).
    dtype: the computation's dtype; parameters and batch statistics stay float32.

  ``__call__(x, *, train, pool=True)`` takes ``(N, H, W, C)`` images, any
  ``H, W >= 1``, and returns the ``(N, num_features(width))`` descriptor, or
  with ``pool=False`` the ``(N, ceil(H/32), ceil(W/32), num_features(width))``
  map before the global average pool. ``train=True`` normalises with the
  batch's statistics and updates the running ones, so ``apply`` then needs
  ``mutable=['batch_stats']``.

  Compiling ``init`` on a CPU is slow (about 80 s on 2 cores, mostly the
  default threefry random-number kernels; ``jax.random.key(0, impl='rbg')``
  takes about 17 s); loading pretrained weights needs no ``init`` at all, only
  ``jax.eval_shape`` of it (see :func:`load_backbone`).

  >>> import jax, jax.numpy as jnp
  >>> model = InceptionBN(width=0.0625)
  >>> x = jax.ShapeDtypeStruct((1, 100, 60, 3), jnp.float32)
  >>> variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  >>> jax.eval_shape(lambda v, x: model.apply(v, x, train=False, pool=False), variables, x).shape
  (1, 4, 2, 64)
  """
  width: float = 1.0
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool, pool: bool = True):
    _check_input(x.shape)
    size = lambda n: _scaled(self.width, n)

    def conv(features, kernel, name, stride=1):
      return ConvBN(size(features), kernel, stride, self.bn_momentum, self.dtype, name=name)

    x = conv(64, 7, "conv1", stride=2)(x, train=train)
    x = _pool(x, "max", 2)
    x = conv(64, 1, "conv2_reduce")(x, train=train)
    x = conv(192, 3, "conv2")(x, train=train)
    x = _pool(x, "max", 2)
    for name, b1, (r3, c3), (rd, cd), kind, proj, stride in _MODULES:
      x = InceptionModule(size(b1) if b1 else 0, (size(r3), size(c3)), (size(rd), size(cd)),
                          kind, size(proj) if proj else 0, stride, self.bn_momentum,
                          self.dtype, name=name)(x, train=train)
    if not pool:
      return x
    return jnp.mean(x, axis=(1, 2))


# --- Checkpoints. ---

def _flatten(tree, path=()) -> dict[tuple[str, ...], Any]:
  if isinstance(tree, Mapping):
    out = {}
    for key, value in tree.items():
      out.update(_flatten(value, path + (str(key),)))
    return out
  return {path: tree}


def _subtree(variables, collection: str, prefix: tuple[str, ...]):
  if not isinstance(variables, Mapping) or collection not in variables:
    found = sorted(variables) if isinstance(variables, Mapping) else type(variables).__name__
    raise ValueError(f"InceptionBN checkpoint: `variables` has no {collection!r} collection "
                     f"(it has {found}); pass the variables of a model built with "
                     f"InceptionBN, e.g. model.init(...).")
  tree = variables[collection]
  for depth, key in enumerate(prefix):
    if not isinstance(tree, Mapping) or key not in tree:
      where = "/".join((collection,) + prefix[:depth]) or collection
      found = sorted(tree) if isinstance(tree, Mapping) else "an array"
      raise ValueError(f"InceptionBN checkpoint: no {key!r} under {where!r} of `variables` "
                       f"(prefix {prefix}); found {found}.")
    tree = tree[key]
  return tree


def _backbone_leaves(variables, prefix) -> dict[str, Any]:
  """``'collection/path/to/leaf' -> leaf`` for the backbone's params and batch_stats."""
  leaves = {}
  for collection in COLLECTIONS:
    for path, leaf in _flatten(_subtree(variables, collection, prefix)).items():
      leaves["/".join((collection,) + path)] = leaf
  return leaves


def save_backbone(variables, path, *, prefix: Sequence[str] = ()) -> None:
  """Writes an :class:`InceptionBN`'s params and batch_stats to a ``.npz`` file.

  The format is in this module's docstring; the keys do not include
  ``prefix``, so a backbone saved from inside a larger model loads into a bare
  :class:`InceptionBN` and the other way round.

  Args:
    variables: the model's variables (``model.init(...)`` or an updated copy).
    path: the file to write (exactly this name: no ``.npz`` is appended).
    prefix: the keys under which the backbone lives in ``variables``, e.g.
      ``('backbone',)``; ``()`` when ``variables`` are an InceptionBN's own.

  >>> import os, tempfile, jax, jax.numpy as jnp, numpy as np
  >>> model = InceptionBN(width=0.0625)
  >>> x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  >>> shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  >>> variables = jax.tree.map(lambda s: np.full(s.shape, 0.5, s.dtype), shapes)  # stand-in weights
  >>> path = os.path.join(tempfile.mkdtemp(), 'backbone.npz')
  >>> save_backbone(variables, path)
  >>> restored = load_backbone(shapes, path)  # shapes are enough to load into
  >>> float(restored['params']['inception_5b']['pool_proj']['bn']['scale'][0])
  0.5
  """
  prefix = tuple(prefix)
  arrays = {key: np.asarray(leaf) for key, leaf in _backbone_leaves(variables, prefix).items()}
  path = os.fspath(path)
  tmp = path + ".tmp"
  # Written aside and renamed, so an interrupted save never leaves a truncated checkpoint.
  with open(tmp, "wb") as f:
    np.savez(f, **arrays)
  os.replace(tmp, path)


def _listing(items, limit=5) -> str:
  shown = ", ".join(items[:limit])
  return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def load_backbone(variables, path, *, prefix: Sequence[str] = ()) -> dict:
  """A copy of ``variables`` with the backbone's params and batch_stats read from ``path``.

  The file must hold exactly the keys, and arrays of exactly the shapes, that
  the backbone in ``variables`` has (see the module docstring); values are
  cast to the dtypes in ``variables``. Everything outside the backbone (a
  classifier, a localisation network, other collections) is kept as it is.

  Args:
    variables: the variables of an :class:`InceptionBN`, or of a larger model
      that holds one under ``prefix``. Leaves may be arrays or
      ``jax.ShapeDtypeStruct`` (from ``jax.eval_shape(model.init, ...)``), so
      loading needs no random initialisation.
    path: the ``.npz`` file written by :func:`save_backbone` or a converter.
    prefix: the keys under which the backbone lives, e.g. ``('backbone',)``
      for a model whose submodule is named ``backbone``.

  Returns:
    The new variables: plain nested dicts (a ``FrozenDict`` if ``variables``
    was one) holding ``jax.Array`` leaves for the backbone.

  Raises:
    FileNotFoundError: ``path`` does not exist.
    ValueError: ``path`` is not an ``.npz`` file, or its keys or shapes differ
      from the backbone's (the message names the file and the differences).
  """
  prefix = tuple(prefix)
  expected = _backbone_leaves(variables, prefix)
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"InceptionBN checkpoint {path!r} does not exist.")
  try:
    with np.load(path, allow_pickle=False) as data:
      stored = {key: data[key] for key in data.files}
  except (OSError, ValueError) as error:
    raise ValueError(f"InceptionBN checkpoint {path!r} is not a readable .npz file: "
                     f"{error}") from error

  missing = sorted(set(expected) - set(stored))
  unexpected = sorted(set(stored) - set(expected))
  mismatched = [f"{key} (expected {tuple(expected[key].shape)}, got {tuple(stored[key].shape)})"
                for key in sorted(set(expected) & set(stored))
                if tuple(expected[key].shape) != tuple(stored[key].shape)]
  if missing or unexpected or mismatched:
    problems = []
    if missing:
      problems.append(f"{len(missing)} missing key(s): {_listing(missing)}")
    if unexpected:
      problems.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
    if mismatched:
      problems.append(f"{len(mismatched)} shape mismatch(es): {_listing(mismatched)}")
    raise ValueError(f"InceptionBN checkpoint {path!r} does not fit the model "
                     f"(expects {len(expected)} arrays, the file has {len(stored)}): "
                     + "; ".join(problems) + ".")

  was_frozen = isinstance(variables, FrozenDict)
  new = _copy_dicts(variables)
  for key, value in stored.items():
    collection, *rest = key.split("/")
    node = new[collection]
    for part in prefix + tuple(rest[:-1]):
      node = node[part]
    node[rest[-1]] = jnp.asarray(value, dtype=expected[key].dtype)
  return freeze(new) if was_frozen else new


def _copy_dicts(tree):
  """Copies the nested mappings (so the caller's are left alone), not the arrays."""
  if isinstance(tree, Mapping):
    return {key: _copy_dicts(value) for key, value in tree.items()}
  return tree
