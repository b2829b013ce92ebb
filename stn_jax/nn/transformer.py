"""Spatial transformer modules: localisation net -> transform parameters -> warp.

Every parameter of a localisation network, including the final regression
layer, lives under a key that starts with ``localization`` (the net itself
under ``localization``, the regression layer under ``localization_out``), so an
optimiser can give them their own learning rate; :func:`localization_mask`
builds the mask.

Each transformer also sows what it did into the ``'intermediates'`` collection
(``theta``: the transform parameters, ``grid``: the sampling grid), so a trainer
can draw it for any model with ``model.apply(..., mutable=['intermediates'])``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stn_jax import ops

__all__ = [
    "MultiStreamTransformer",
    "ParallelSpatialTransformers",
    "SpatialTransformer",
    "SpatialTransformer3D",
    "is_localization_path",
    "localization_mask",
]


def is_localization_path(path: Sequence[str]) -> bool:
  """Whether a parameter path (a sequence of keys) belongs to a localisation net."""
  return any(str(key).startswith("localization") for key in path)


def localization_mask(params) -> Any:
  """A pytree of bools, shaped like ``params``: True for localisation parameters.

  Args:
    params: a Flax parameter tree (nested dicts).

  Returns:
    The mask, e.g. for ``optax.multi_transform`` or ``optax.masked``.
  """
  def key_name(k):
    return getattr(k, "key", getattr(k, "name", k))

  return jax.tree_util.tree_map_with_path(
      lambda path, _: is_localization_path([key_name(k) for k in path]), params)


def _regressor(num_params, bias, dtype, name):
  """The localisation net's last layer, initialised to regress ``bias``."""
  bias = np.asarray(bias, np.float32)
  return nn.Dense(num_params, kernel_init=nn.initializers.zeros,
                  bias_init=lambda *_: jnp.asarray(bias), dtype=dtype, name=name)


def _sample(x, t, theta, grid, out_hw, separable, mode, padding_mode, align_corners,
            antialias=False):
  """The transformer's output: the separable sampler on ``theta``'s axes where
  :func:`stn_jax.ops.use_separable` says so, else the gather on ``grid`` (the grid is
  computed either way: it is sown for pictures and returned)."""
  kw = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners,
            antialias=antialias)
  if ops.use_separable(transform=t, separable=separable):
    xs, ys = t.axes(theta, out_hw, align_corners=align_corners)
    return ops.sample_separable(x, xs, ys, **kw)
  return ops.sample(x, grid, **kw)


def _check_images(x, where):
  if x.ndim != 4:
    raise ValueError(f"{where}: the input must have shape (N, H, W, C), but got shape {x.shape}.")


class SpatialTransformer(nn.Module):
  """One spatial transformer (Jaderberg et al. 2015, section 3).

  A localisation network maps the input to features, a final Dense layer maps
  them to the transform parameters (it starts with a zero kernel and the
  identity as its bias, so the transformer starts as the identity), and the
  input is sampled on the transform's grid.

  Attributes:
    localization: the localisation network. It is called as
      ``localization(u, train=train)`` and must return ``(N, D)`` features
      (e.g. a :class:`~stn_jax.nn.LayerStack` ending in a Dense layer).
    transform: a name for :func:`stn_jax.ops.get_transform` or a
      :class:`stn_jax.ops.Transform` (e.g. a TPS with other control points).
    out_hw: ``(H, W)`` of the output; ``None``: the input's.
    mode, padding_mode, align_corners: as in :func:`stn_jax.ops.sample`.
    init_params: the parameters the regression layer starts at; ``None``: the
      transform's identity.
    separable: sample axis-aligned transforms with the gather-free separable sampler;
      ``None``: the platform's measured default (:func:`stn_jax.ops.use_separable`).
    antialias: filter an output that shrinks the input, as in :func:`stn_jax.ops.sample`
      (default False, the paper's plain bilinear sampling).

  ``__call__(x, *, train=False, localization_input=None)`` returns
  ``(output, {'theta': (N, P), 'grid': (N, H, W, 2)})``. With
  ``localization_input`` the localisation net looks at that instead of ``x``
  (e.g. a downscaled copy), while sampling still reads ``x``.

  >>> import jax
  >>> from stn_jax.nn import Dense, LayerStack
  >>> st = SpatialTransformer(LayerStack((Dense(8),)), transform='attention')
  >>> x = jnp.ones((2, 12, 12, 1))
  >>> (y, aux), _ = st.init_with_output(jax.random.key(0), x)
  >>> y.shape, aux['theta'].shape
  ((2, 12, 12, 1), (2, 3))
  """
  localization: nn.Module
  transform: Union[str, ops.Transform] = "affine"
  out_hw: Optional[tuple[int, int]] = None
  mode: str = "bilinear"
  padding_mode: str = "zeros"
  align_corners: bool = False
  init_params: Optional[Sequence[float]] = None
  separable: Optional[bool] = None
  antialias: Any = False

  @nn.compact
  def __call__(self, x, *, train: bool = False, localization_input=None):
    name = self.name or type(self).__name__
    _check_images(x, name)
    t = ops.get_transform(self.transform)
    out_hw = tuple(self.out_hw) if self.out_hw is not None else tuple(x.shape[1:3])
    bias = t.identity_params if self.init_params is None else self.init_params
    if np.shape(bias) != (t.num_params,):
      raise ValueError(f"{name}: `init_params` must have {t.num_params} values for the "
                       f"'{t.name}' transform, but got shape {np.shape(bias)}.")
    u = x if localization_input is None else localization_input
    features = self.localization(u, train=train)
    if features.ndim != 2 or features.shape[0] != x.shape[0]:
      raise ValueError(f"{name}: the localisation net must return (N, D) features with "
                       f"N = {x.shape[0]}, but returned shape {features.shape}.")
    theta = _regressor(t.num_params, bias, features.dtype, "localization_out")(features)
    theta = theta.astype(x.dtype)
    grid = t.grid(theta, out_hw, align_corners=self.align_corners)
    y = _sample(x, t, theta, grid, out_hw, self.separable, self.mode, self.padding_mode,
                self.align_corners, self.antialias)
    self.sow("intermediates", "theta", theta)
    self.sow("intermediates", "grid", grid)
    return y, {"theta": theta, "grid": grid}


class ParallelSpatialTransformers(nn.Module):
  """Several transformers with their own localisation nets on the same input.

  Their outputs are concatenated on the channel axis, in order: with two
  transformers on a 2-channel input, channels 0-1 come from the first and 2-3
  from the second (the paper's 2xST-FCN for MNIST addition).

  Attributes:
    localizations: one localisation net per transformer.
    transform, out_hw, mode, padding_mode, align_corners, separable, antialias: as in
      :class:`SpatialTransformer`, shared by all.

  ``__call__(x, *, train=False)`` returns ``(output, [aux of each transformer])``.
  The transformers are the submodules ``st_0``, ``st_1``, ...
  """
  localizations: Sequence[nn.Module]
  transform: Union[str, ops.Transform] = "affine"
  out_hw: Optional[tuple[int, int]] = None
  mode: str = "bilinear"
  padding_mode: str = "zeros"
  align_corners: bool = False
  separable: Optional[bool] = None
  antialias: Any = False

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    if not self.localizations:
      raise ValueError("ParallelSpatialTransformers needs at least one localisation net.")
    outs, auxs = [], []
    for i, loc in enumerate(self.localizations):
      # An unbound copy, so that each net lives inside its own transformer
      # (st_<i>/localization) rather than beside them.
      st = SpatialTransformer(loc.clone(parent=None), self.transform, self.out_hw, self.mode,
                              self.padding_mode, self.align_corners,
                              separable=self.separable, antialias=self.antialias,
                              name=f"st_{i}")
      y, aux = st(x, train=train)
      outs.append(y)
      auxs.append(aux)
    return jnp.concatenate(outs, axis=-1), auxs


class MultiStreamTransformer(nn.Module):
  """One shared localisation net predicting N transforms; N separate outputs.

  The paper's 2x/4xST-CNN for CUB: each transformer crops its own part of the
  image for its own stream. With ``fixed_scale`` set, the transform is the
  attention transform with that scale, and the localisation net predicts only
  ``(tx, ty)`` per transformer.

  Attributes:
    localization: the shared localisation net, returning ``(N, D)`` features.
    num_transformers: how many transforms (and outputs).
    transform: the transform of every stream (ignored with ``fixed_scale``,
      which implies ``'attention'``).
    fixed_scale: the attention scale, fixed; ``None``: learnt.
    init_params: ``(num_transformers, P)`` starting parameters (P = 2 with
      ``fixed_scale``); ``None``: every transformer starts at the identity.
    out_hw, mode, padding_mode, align_corners, separable, antialias: as in
      :class:`SpatialTransformer`.

  ``__call__(x, *, train=False, localization_input=None)`` returns
  ``([output of each transformer], {'theta': (N, T, P_full), 'grid': (N, T, H, W, 2)})``
  where ``theta`` holds the full transform parameters (with the fixed scale).
  """
  localization: nn.Module
  num_transformers: int
  transform: Union[str, ops.Transform] = "attention"
  fixed_scale: Optional[float] = None
  init_params: Optional[Any] = None
  out_hw: Optional[tuple[int, int]] = None
  mode: str = "bilinear"
  padding_mode: str = "zeros"
  align_corners: bool = False
  separable: Optional[bool] = None
  antialias: Any = False

  @nn.compact
  def __call__(self, x, *, train: bool = False, localization_input=None):
    name = self.name or type(self).__name__
    _check_images(x, name)
    if self.num_transformers < 1:
      raise ValueError(f"{name}: `num_transformers` must be >= 1, got {self.num_transformers}.")
    t = ops.get_transform("attention" if self.fixed_scale is not None else self.transform)
    per = 2 if self.fixed_scale is not None else t.num_params
    if self.init_params is None:
      identity = np.asarray(t.identity_params, np.float32)
      init = np.tile(identity[1:] if self.fixed_scale is not None else identity,
                     (self.num_transformers, 1))
    else:
      init = np.asarray(self.init_params, np.float32)
    if init.shape != (self.num_transformers, per):
      raise ValueError(f"{name}: `init_params` must have shape ({self.num_transformers}, {per}), "
                       f"but got shape {init.shape}.")
    out_hw = tuple(self.out_hw) if self.out_hw is not None else tuple(x.shape[1:3])
    u = x if localization_input is None else localization_input
    features = self.localization(u, train=train)
    raw = _regressor(self.num_transformers * per, init.reshape(-1), features.dtype,
                     "localization_out")(features)
    raw = raw.astype(x.dtype).reshape(x.shape[0], self.num_transformers, per)
    if self.fixed_scale is not None:
      scale = jnp.full(raw.shape[:-1] + (1,), self.fixed_scale, raw.dtype)
      theta = jnp.concatenate([scale, raw], -1)
    else:
      theta = raw
    outs, grids = [], []
    for i in range(self.num_transformers):
      grid = t.grid(theta[:, i], out_hw, align_corners=self.align_corners)
      outs.append(_sample(x, t, theta[:, i], grid, out_hw, self.separable, self.mode,
                          self.padding_mode, self.align_corners, self.antialias))
      grids.append(grid)
    grid = jnp.stack(grids, 1)
    self.sow("intermediates", "theta", theta)
    self.sow("intermediates", "grid", grid)
    return outs, {"theta": theta, "grid": grid}


class SpatialTransformer3D(nn.Module):
  """A volumetric spatial transformer: a localisation network, a Dense layer regressing a
  3-D affine ``theta`` (12 numbers, row-major ``(3, 4)``; it starts at the identity), and
  :func:`stn_jax.ops.warp_3d`.

  Attributes:
    localization: the localisation network, called as ``localization(x, train=train)``;
      it must return ``(N, F)`` features.
    out_dhw: ``(D, H, W)`` of the output; ``None``: the input's.
    mode, padding_mode, align_corners: as in :func:`stn_jax.ops.sample_3d`.

  ``__call__(x, *, train=False)`` takes ``(N, D, H, W, C)`` and returns ``(output,
  {'theta': (N, 3, 4), 'grid': (N, D, H, W, 3)})``.

  >>> class Loc(nn.Module):  # any module giving (N, F) features
  ...   @nn.compact
  ...   def __call__(self, x, train=False):
  ...     return nn.relu(nn.Dense(8)(x.reshape(x.shape[0], -1)))
  >>> st = SpatialTransformer3D(Loc(), out_dhw=(4, 4, 4))
  >>> (y, aux), _ = st.init_with_output(jax.random.key(0), jnp.ones((2, 6, 6, 6, 1)))
  >>> y.shape, aux['theta'].shape
  ((2, 4, 4, 4, 1), (2, 3, 4))
  """
  localization: nn.Module
  out_dhw: Optional[tuple[int, int, int]] = None
  mode: str = "bilinear"
  padding_mode: str = "zeros"
  align_corners: bool = False

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    name = self.name or type(self).__name__
    if x.ndim != 5:
      raise ValueError(f"{name}: the input must have shape (N, D, H, W, C), but got shape "
                       f"{x.shape}.")
    out_dhw = tuple(self.out_dhw) if self.out_dhw is not None else tuple(x.shape[1:4])
    features = self.localization(x, train=train)
    if features.ndim != 2 or features.shape[0] != x.shape[0]:
      raise ValueError(f"{name}: the localisation net must return (N, D) features with "
                       f"N = {x.shape[0]}, but returned shape {features.shape}.")
    theta = _regressor(12, np.eye(3, 4).ravel(), features.dtype, "localization_out")(features)
    theta = theta.astype(x.dtype).reshape(-1, 3, 4)
    grid = ops.affine_grid_3d(theta, out_dhw, align_corners=self.align_corners)
    y = ops.sample_3d(x, grid, mode=self.mode, padding_mode=self.padding_mode,
                      align_corners=self.align_corners)
    self.sow("intermediates", "theta", theta)
    self.sow("intermediates", "grid", grid)
    return y, {"theta": theta, "grid": grid}
