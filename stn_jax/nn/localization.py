"""The paper's localisation networks, as :class:`~stn_jax.nn.LayerStack` specs.

Each function returns a module that maps the transformer's input to features;
:class:`~stn_jax.nn.SpatialTransformer` adds the final regression layer.
"""

from __future__ import annotations

from stn_jax.nn.layers import AvgPool, Conv, Dense, LayerStack, MaxPool

__all__ = [
    "colocalization_localization",
    "conv_localization",
    "fc_localization",
    "svhn_localization",
]


def fc_localization(units=(32, 32, 32), **kw) -> LayerStack:
  """ST-FCN (distorted MNIST, addition): three 32-unit fully connected layers.

  Args:
    units: the hidden layer sizes.
    **kw: passed to :class:`LayerStack` (e.g. ``name``).

  Returns:
    The localisation net.

  >>> [str(l) for l in fc_localization().layers]
  ['fc[32]', 'fc[32]', 'fc[32]']
  """
  return LayerStack(tuple(Dense(u) for u in units), **kw)


def conv_localization(filters: int = 20, kernel: int = 5, units: int = 20, **kw) -> LayerStack:
  """ST-CNN (distorted MNIST): on a 2x average-pooled input, two 20-filter 5x5
  convolutions (no padding) with 2x2 max pooling between, then a 20-unit fc.

  Returns:
    The localisation net.

  >>> [str(l) for l in conv_localization().layers]
  ['avg[2]', 'conv[20,5,1,0]', 'max[2]', 'conv[20,5,1,0]', 'fc[20]']
  """
  return LayerStack((AvgPool(2), Conv(filters, kernel), MaxPool(2), Conv(filters, kernel),
                     Dense(units)), **kw)


def svhn_localization(width: float = 1.0, **kw) -> LayerStack:
  """ST-CNN Single (SVHN): conv[32,5,1,2]-max[2]-conv[32,5,1,2]-fc[32]-fc[32].

  Args:
    width: multiplies every layer's size (1.0: the paper's).
    **kw: passed to :class:`LayerStack`.

  Returns:
    The localisation net.
  """
  w = lambda n: max(1, round(width * n))
  return LayerStack((Conv(w(32), 5, 1, 2), MaxPool(2), Conv(w(32), 5, 1, 2), Dense(w(32)),
                     Dense(w(32))), **kw)


def colocalization_localization(**kw) -> LayerStack:
  """Co-localisation: conv 8 filters 9x9 stride 4 - max[2] - fc[8] - fc[8].

  The final 3-unit layer (attention: s, tx, ty) is the transformer's regressor.

  Returns:
    The localisation net.
  """
  return LayerStack((Conv(8, 9, 4, 0), MaxPool(2), Dense(8), Dense(8)), **kw)
