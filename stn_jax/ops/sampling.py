"""Samplers: read an image at the coordinates of a grid.

Values and gradients follow ``torch.nn.functional.grid_sample`` (the image here
is NHWC, there NCHW), including its sub-gradient choices: at an integer
coordinate the bilinear kernel ``max(0, 1 - |x - m|)`` is differentiated on the
cell ``[floor(x), floor(x) + 1]``, and a coordinate clipped onto the border gets
zero gradient.

Non-finite coordinates, which PyTorch turns into NaN (or worse), are defined
here: a coordinate that is NaN, or infinite after padding, points nowhere; the
sample is 0 and it sends no gradient anywhere. With ``padding_mode='border'``
an infinite coordinate is clipped onto the edge, so it reads the edge (in
every mode); with ``'reflection'`` an infinite one has no reflection and reads 0.

``padding_mode='fill'`` (kornia's name; torch has no such mode) reads ``fill_value``
outside the image. Every kernel's weights sum to one, so it is the zeros sampler
applied to ``image - fill_value``, plus ``fill_value``: values and gradients follow
from the zeros mode's, and a coordinate that points nowhere reads ``fill_value``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from stn_jax.ops import _checks
from stn_jax.ops._dtypes import compute_dtype

__all__ = ["MODES", "PADDING_MODES", "antialias_counts", "sample", "sample_separable"]

MODES = ("bilinear", "nearest", "bicubic")
PADDING_MODES = ("zeros", "border", "reflection", "fill")

_CUBIC_A = -0.75  # PyTorch's (and OpenCV's) bicubic convolution constant.


# 1-D coordinate maths, shared by the general and the separable sampler. -----


def _unnormalize(coord, size: int, align_corners: bool):
  if align_corners:
    return (coord + 1.0) * (0.5 * (size - 1))
  return ((coord + 1.0) * size - 1.0) * 0.5


def _clip_with_border_grad(coord, size: int):
  """Clips to ``[0, size - 1]``; gradient 1 strictly inside, 0 on and beyond the borders."""
  inside = (coord > 0) & (coord < size - 1)
  return jnp.where(inside, coord, jax.lax.stop_gradient(jnp.clip(coord, 0, size - 1)))


def _reflect(coord, size: int, align_corners: bool):
  """Reflects into the image the way PyTorch does, with gradient +1 or -1 per fold."""
  if align_corners:
    lo, span = 0.0, float(size - 1)
  else:
    lo, span = -0.5, float(size)
  c = jax.lax.stop_gradient(coord)
  if span == 0:
    return jnp.zeros_like(coord)
  rel = c - lo
  sign = jnp.where(rel < 0, -1.0, 1.0).astype(c.dtype)
  rel = jnp.abs(rel)
  extra = jnp.fmod(rel, span)
  odd = jnp.fmod(jnp.floor(rel / span), 2.0) == 1
  value = jnp.where(odd, span - extra, extra) + lo
  slope = jnp.where(odd, -sign, sign)
  # Straight-through: the value of `value`, the derivative `slope`.
  return value + slope * (coord - c)


def _pad_coordinate(coord, size: int, padding_mode: str, align_corners: bool):
  if padding_mode == "border":
    return _clip_with_border_grad(coord, size)
  if padding_mode == "reflection":
    return _clip_with_border_grad(_reflect(coord, size, align_corners), size)
  return coord


def _cubic_weights(t):
  """The four bicubic convolution weights for fractional offset ``t`` in [0, 1)."""
  a = _CUBIC_A

  def near(s):  # |s| <= 1
    return ((a + 2.0) * s - (a + 3.0)) * s * s + 1.0

  def far(s):  # 1 < |s| < 2
    return ((a * s - 5.0 * a) * s + 8.0 * a) * s - 4.0 * a

  return far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)


def _taps_1d(coord, size: int, *, mode: str, padding_mode: str, align_corners: bool):
  """Integer tap positions and weights along one axis.

  Args:
    coord: normalised coordinates, any shape ``S``.

  Returns:
    ``(index, weight)``: ``index`` of shape ``S + (K,)``, int32 within ``[0, size)``,
    with K = 1, 2 or 4 taps; ``weight`` a tuple of K arrays of shape ``S``, zero for
    taps that fall outside the image (zeros padding) or belong to a coordinate that
    points nowhere.
  """
  x = _unnormalize(coord, size, align_corners)
  if mode != "bicubic":
    x = _pad_coordinate(x, size, padding_mode, align_corners)
  elif padding_mode == "border":
    # Beyond [-2, size + 1] every tap clips onto the edge and the weights sum
    # to 1, so clipping there changes nothing but lets +-inf read the edge.
    inside = (x >= -2.0) & (x <= size + 1.0)
    x = jnp.where(inside, x, jax.lax.stop_gradient(jnp.clip(x, -2.0, size + 1.0)))
  # Arithmetic on a non-finite coordinate would leak NaN into the gradients
  # even where its weights are masked, so compute with 0 and mask at the end.
  finite = jnp.isfinite(x)
  x = jnp.where(finite, x, 0.0)
  if mode == "bicubic":
    # PyTorch pads each integer tap, not the continuous coordinate.
    x0 = jnp.floor(jax.lax.stop_gradient(x))
    weight = _cubic_weights(x - x0)
    pos = x0[..., None] + jnp.arange(-1.0, 3.0, dtype=x.dtype)
    if padding_mode != "zeros":
      pos = _pad_coordinate(pos, size, padding_mode, align_corners)
      pos = jax.lax.stop_gradient(pos)
  else:
    if mode == "nearest":
      pos = jnp.round(jax.lax.stop_gradient(x))[..., None]  # half to even, as nearbyint
      weight = (jnp.ones_like(x),)
    else:
      x0 = jnp.floor(jax.lax.stop_gradient(x))
      frac = x - x0
      weight = (1.0 - frac, frac)
      pos = jnp.stack([x0, x0 + 1.0], -1)
  valid = (pos >= 0) & (pos <= size - 1) & finite[..., None]
  index = jnp.where(valid, pos, 0).astype(jnp.int32)
  # One array per tap, never stacked: the samplers' derivative rules then take each tap's
  # weight whole, and their transposes build no padded copies of a stacked array.
  weight = tuple(jnp.where(valid[..., k], w, 0.0) for k, w in enumerate(weight))
  return index, weight


# Antialiasing: the mean over each output pixel's footprint. ---------------------


def antialias_counts(antialias, in_hw, out_hw) -> tuple[int, int]:
  """Sub-samples per output pixel along ``(y, x)`` for the samplers' ``antialias``.

  Args:
    antialias: ``False``: plain sampling. ``True``: the source pixels per output pixel of
      a grid that spans the whole image, ``ceil(H / Ho)`` and ``ceil(W / Wo)`` (1 where
      the warp does not shrink). An int ``m`` or a pair ``(my, mx)``: that many.
    in_hw: ``(H, W)`` of the image.
    out_hw: ``(Ho, Wo)`` of the grid.

  Returns:
    ``(my, mx)``, each at least 1; ``(1, 1)`` is plain sampling.

  >>> antialias_counts(True, (448, 448), (224, 224)), antialias_counts(3, (8, 8), (8, 8))
  ((2, 2), (3, 3))
  """
  if isinstance(antialias, (bool, np.bool_)):
    if not antialias:
      return 1, 1
    return tuple(max(1, -(-int(i) // int(o))) for i, o in zip(in_hw, out_hw))
  counts = antialias if isinstance(antialias, (tuple, list)) else (antialias, antialias)
  if (len(counts) != 2 or not all(isinstance(m, (int, np.integer)) and not isinstance(m, bool)
                                  and m >= 1 for m in counts)):
    raise ValueError(
        f"`antialias` must be True, False, a number of sub-samples per output pixel (an int "
        f">= 1) or a pair of them (along y, x), but got {antialias!r}.")
  return int(counts[0]), int(counts[1])


def _subsample_offsets(m: int, dtype):
  """Midpoints of ``m`` equal parts of ``[-1/2, 1/2]``: where, in units of the output's
  pixel, each sub-sample lies from the pixel's centre."""
  return jnp.asarray((np.arange(m) + 0.5) / m - 0.5, dtype)


def _local_step(coords, axis: int):
  """The step of ``coords`` from one output point to the next along ``axis``: central
  differences, one-sided at the ends; 0 along an axis of one point, and 0 where a
  neighbour is not finite (so a coordinate that points nowhere filters no other point)."""
  if coords.shape[axis] < 2:
    return jnp.zeros_like(coords)
  step = jnp.gradient(coords, axis=axis)
  return jnp.where(jnp.isfinite(step), step, 0.0)


def _footprint_grid(grid, my: int, mx: int):
  """grid (N, Ho, Wo, 2) -> (N, Ho, Wo * my * mx, 2): each point's ``my x mx``
  sub-samples, spread evenly over the parallelogram that the grid's local steps along
  the output's rows and columns span around it (the output pixel's footprint)."""
  n, ho, wo, _ = grid.shape
  step_y = _local_step(grid, 1)[:, :, :, None, None, :]
  step_x = _local_step(grid, 2)[:, :, :, None, None, :]
  uy = _subsample_offsets(my, grid.dtype)[:, None, None]
  ux = _subsample_offsets(mx, grid.dtype)[None, :, None]
  points = grid[:, :, :, None, None, :] + uy * step_y + ux * step_x
  return points.reshape(n, ho, wo * my * mx, 2)


# The general sampler. --------------------------------------------------------


def _check_sample_args(image, grid, mode, padding_mode, *, dims: int = 2, name: str = "image",
                       modes=MODES):
  """The sampler's argument checks, for 2-D images or (``dims=3``) volumes; returns the
  shapes of ``image`` and ``grid``."""
  _checks.check_choice(mode, "mode", modes)
  _checks.check_choice(padding_mode, "padding_mode", PADDING_MODES)
  axes = ("D", "H", "W")[3 - dims:]
  image_form = f"(..., {', '.join(axes)}, C)"
  grid_form = f"(..., {', '.join(a + 'o' for a in axes)}, {dims})"
  ishape = _checks.check_min_rank(image, name, dims + 1, image_form)
  gshape = _checks.check_trailing(grid, "grid", (dims,), grid_form)
  _checks.check_min_rank(grid, "grid", dims + 1, grid_form)
  _checks.check_floating(image, name)
  _checks.check_floating(grid, "grid")
  batch = ishape[:-(dims + 1)]
  if batch != gshape[:-(dims + 1)]:
    raise ValueError(
        f"`{name}` and `grid` must have the same leading (batch) dimensions, but `{name}` has "
        f"shape {ishape} (batch {batch}) and `grid` has shape {gshape} (batch "
        f"{gshape[:-(dims + 1)]}); broadcast one of them first, e.g. with jnp.broadcast_to.")
  if min(ishape[-(dims + 1):-1]) < 1:
    sizes = "height and width" if dims == 2 else "depth, height and width"
    raise ValueError(f"`{name}` must have non-empty {sizes}, but got shape {ishape}.")
  return ishape, gshape


def _gather_tap(image, iy, ix, a: int, b: int, width: int):
  """Values (N, P, C) of tap (a, b): row iy[..., a], column ix[..., b] of the flat image."""
  index = iy[..., a] * width + ix[..., b]
  return jnp.take_along_axis(image, index[..., None], axis=1, mode="promise_in_bounds"), index


def _tap_sum(image, iy, ix, wy, wx, width):
  """sum_ab wy[a] wx[b] image[n, iy[..., a] * width + ix[..., b]].

  image (N, H*W, C); iy, ix (N, P, K); wy, wx K arrays (N, P) -> (N, P, C). One
  gather per tap: XLA on CPU fuses a single K*K-wide gather with its index
  arithmetic into a loop several times slower.
  """
  k = iy.shape[-1]
  out = 0.0
  for a in range(k):
    for b in range(k):
      tap, _ = _gather_tap(image, iy, ix, a, b, width)
      out = out + (wy[a] * wx[b])[..., None] * tap.astype(wy[a].dtype)
  return out


def _tap_sum_wide(image, iy, ix, wy, wx, width):
  """:func:`_tap_sum` as one gather of all K*K taps. It is linear in ``image`` and
  serves its tangent: transposed (reverse mode), it is one scatter-add of every tap
  into the image's gradient, where the per-tap form would give K*K of them."""
  n, p, k = iy.shape
  index = (iy[..., :, None] * width + ix[..., None, :]).reshape(n, p * k * k)
  weight = (jnp.stack(wy, -1)[..., :, None] * jnp.stack(wx, -1)[..., None, :]).reshape(
      n, p * k * k)
  taps = jnp.take_along_axis(image, index[..., None], axis=1, mode="promise_in_bounds")
  out = weight[..., None] * taps.astype(weight.dtype)
  return out.reshape(n, p, k * k, -1).sum(2)


def _weight_tangent(image, iy, ix, wy, wx, d_wy, d_wx, width):
  """The tangent of :func:`_tap_sum` along its weights:
  ``sum_ab (d_wy[a] wx[b] + wy[a] d_wx[b]) tap_ab``. Each tap's weight and tangent is an
  array of its own, so the transpose is, per tap, one product with the cotangent summed
  over channels, as a hand-written VJP would compute it."""
  k = iy.shape[-1]
  out = 0.0
  for a in range(k):
    for b in range(k):
      tap, _ = _gather_tap(image, iy, ix, a, b, width)
      w = d_wy[a] * wx[b] + wy[a] * d_wx[b]
      out = out + w[..., None] * tap.astype(w.dtype)
  return out


@functools.partial(jax.custom_jvp, nondiff_argnums=(5,))
def _weighted_gather(image, iy, ix, wy, wx, width):
  """:func:`_tap_sum`, differentiable in forward and reverse mode at any order.

  Its JVP is written out so that reverse mode (JAX transposes the JVP) is faster than
  the hand-written VJP it replaced (docs/performance.md): the image's tangent goes
  through :func:`_tap_sum_wide` (one scatter-add when transposed), and the weights'
  tangent, :func:`_weight_tangent`, takes each tap's weight as an array of its own. The
  backward pass keeps the K*K gathered taps, (N, P, C) each, from the forward pass;
  gathering them again (``jax.checkpoint``) was measured 25% slower on the MNIST case.
  """
  return _tap_sum(image, iy, ix, wy, wx, width)


@functools.partial(_weighted_gather.defjvp, symbolic_zeros=True)
def _weighted_gather_jvp(width, primals, tangents):
  image, iy, ix, wy, wx = primals
  d_image, _, _, d_wy, d_wx = tangents
  out = _tap_sum(image, iy, ix, wy, wx, width)
  zero = jax.custom_derivatives.SymbolicZero
  parts = []
  if not isinstance(d_image, zero):
    parts.append(_tap_sum_wide(d_image, iy, ix, wy, wx, width))
  d_wy = tuple(None if isinstance(t, zero) else t for t in d_wy)
  d_wx = tuple(None if isinstance(t, zero) else t for t in d_wx)
  if any(t is not None for t in d_wy + d_wx):
    d_wy = tuple(jnp.zeros_like(w) if t is None else t for w, t in zip(wy, d_wy))
    d_wx = tuple(jnp.zeros_like(w) if t is None else t for w, t in zip(wx, d_wx))
    parts.append(_weight_tangent(image, iy, ix, wy, wx, d_wy, d_wx, width))
  tangent = functools.reduce(jnp.add, parts) if parts else jnp.zeros_like(out)
  return out, tangent.astype(out.dtype)


@functools.partial(jax.jit, static_argnames=("mode", "padding_mode", "align_corners"))
def _sample_flat(image, grid, *, mode, padding_mode, align_corners):
  """image (N, H, W, C), grid (N, Ho, Wo, 2) -> (N, Ho, Wo, C)."""
  n, h, w, c = image.shape
  _, ho, wo, _ = grid.shape
  g = grid.astype(compute_dtype(grid.dtype)).reshape(n, ho * wo, 2)
  kw = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners)
  ix, wx = _taps_1d(g[..., 0], w, **kw)  # (N, P, K), K x (N, P)
  iy, wy = _taps_1d(g[..., 1], h, **kw)
  out = _weighted_gather(image.reshape(n, h * w, c), iy, ix, wy, wx, w)
  return out.reshape(n, ho, wo, c).astype(image.dtype)


def _fill_value(padding_mode, fill_value, image, channels: int):
  """``fill_value`` as an array that broadcasts against ``(..., C)`` images, or None."""
  if padding_mode != "fill":
    if fill_value is not None:
      raise ValueError(f"`fill_value` is read only with padding_mode='fill', but "
                       f"padding_mode is {padding_mode!r}.")
    return None
  if fill_value is None:
    fill_value = 0.0
  shape = jnp.shape(fill_value)
  if shape not in ((), (1,), (channels,)):
    raise ValueError(f"`fill_value` must be a number or one value per channel, shape "
                     f"({channels},), but got shape {shape}.")
  return jnp.asarray(fill_value, compute_dtype(jnp.result_type(image)))


def sample(image, grid, *, mode: str = "bilinear", padding_mode: str = "zeros",
           align_corners: bool = False, fill_value=None, antialias=False) -> jax.Array:
  """Samples ``image`` at the normalised coordinates of ``grid``.

  The NHWC counterpart of ``torch.nn.functional.grid_sample``, with the same
  values and gradients (with respect to image and grid).

  Args:
    image: ``(..., H, W, C)`` floating-point images.
    grid: ``(..., Ho, Wo, 2)`` normalised ``(x, y)`` source coordinates; the
      leading dimensions must equal those of ``image``.
    mode: ``'bilinear'`` (the paper's kernel), ``'nearest'`` (no gradient with
      respect to the grid) or ``'bicubic'`` (cubic convolution, a = -0.75).
    padding_mode: what lies outside the image: ``'zeros'``, ``'border'`` (the
      edge pixels extend outwards), ``'reflection'`` or ``'fill'`` (``fill_value``).
    align_corners: PyTorch's meaning: ``True`` puts -1 and 1 on the centres of
      the corner pixels, ``False`` on their outer edges.
    fill_value: with ``padding_mode='fill'``, the value outside the image: a number
      or one per channel, shape ``(C,)`` (default 0), an array that may be traced
      and differentiated.
    antialias: filter a warp that shrinks: each output pixel is the mean of ``my x mx``
      samples spread evenly over its footprint in the image, the parallelogram spanned
      by the grid's steps to the neighbouring output points (central differences, so
      any grid, affine or not, is filtered by its local scale). ``True``: ``ceil(H /
      Ho)`` by ``ceil(W / Wo)`` sub-samples (see :func:`antialias_counts`), an int or a
      ``(my, mx)`` pair: that many; ``False`` (default): one sample at the grid point.
      Differentiable in both modes, through the footprint too.

  Returns:
    ``(..., Ho, Wo, C)`` samples, dtype of ``image``. A coordinate that is NaN,
    or infinite after padding, reads 0 (``fill_value`` with ``'fill'``) and sends no
    gradient to the image or the grid.

  >>> image = jnp.arange(4.0).reshape(1, 2, 2, 1)
  >>> grid = jnp.array([[[[0.0, 0.0]]]])  # the centre of the image
  >>> sample(image, grid).ravel().tolist()
  [1.5]
  """
  ishape, gshape = _check_sample_args(image, grid, mode, padding_mode)
  fill = _fill_value(padding_mode, fill_value, image, ishape[-1])
  my, mx = antialias_counts(antialias, ishape[-3:-1], gshape[-3:-1])
  batch = ishape[:-3]
  image = jnp.asarray(image).reshape((-1,) + ishape[-3:])
  grid = jnp.asarray(grid).reshape((-1,) + gshape[-3:])
  n, ho, wo, _ = grid.shape
  dtype = image.dtype
  if (my, mx) != (1, 1):
    grid = _footprint_grid(grid.astype(compute_dtype(grid.dtype)), my, mx)
  if fill is not None:
    image, padding_mode = image - fill, "zeros"
  out = _sample_flat(image, grid, mode=mode, padding_mode=padding_mode,
                     align_corners=bool(align_corners))
  if (my, mx) != (1, 1):
    out = out.reshape(n, ho, wo, my * mx, -1)
    out = jnp.mean(out.astype(compute_dtype(out.dtype)), axis=3)
  if fill is not None:
    out = out + fill
  out = out.astype(dtype)
  return out.reshape(batch + out.shape[1:])


# The separable sampler: axis-aligned grids, two matrix products, no gather. --


def _interpolation_matrix(coord, size: int, m: int = 1, **kw):
  """(..., S) coordinates -> (..., S, size) matrix whose rows hold each point's tap weights
  (with ``m`` > 1: the mean of the weights of its ``m`` sub-samples, see :func:`sample`'s
  ``antialias``)."""
  if m > 1:
    coord = coord[..., None] + _subsample_offsets(m, coord.dtype) * _local_step(coord, -1)[
        ..., None]  # (..., S, m)
  index, weight = _taps_1d(coord, size, **kw)
  weight = jnp.stack(weight, -1)
  one_hot = index[..., None] == jnp.arange(size, dtype=jnp.int32)  # (..., S, [m,] K, size)
  matrix = jnp.einsum("...k,...kn->...n", weight, one_hot.astype(weight.dtype))
  return jnp.mean(matrix, axis=-2) if m > 1 else matrix


def sample_separable(image, x, y, *, mode: str = "bilinear", padding_mode: str = "zeros",
                     align_corners: bool = False, fill_value=None, antialias=False) -> jax.Array:
  """Samples ``image`` on the axis-aligned grid spanned by ``x`` and ``y``.

  Equal to ``sample(image, grid)`` with ``grid[..., i, j, :] = (x[..., j],
  y[..., i])`` (the grid of any transform without rotation or shear), but
  computed as ``A_y @ image @ A_x^T`` with two matrix products and no gather,
  which suits accelerators whose gathers are slow (TPUs) and large batches of
  crops.

  Args:
    image: ``(..., H, W, C)`` floating-point images.
    x: ``(..., Wo)`` normalised x coordinate of each output column.
    y: ``(..., Ho)`` normalised y coordinate of each output row.
    mode, padding_mode, align_corners, fill_value, antialias: as in :func:`sample`
      (the footprint of an axis-aligned grid is an axis-aligned box, so each axis's
      interpolation matrix is the mean of its sub-samples' matrices).

  Returns:
    ``(..., Ho, Wo, C)`` samples, dtype of ``image``.

  >>> image = jnp.arange(4.0).reshape(1, 2, 2, 1)
  >>> sample_separable(image, jnp.zeros((1, 1)), jnp.zeros((1, 1))).ravel().tolist()
  [1.5]
  """
  _checks.check_choice(mode, "mode", MODES)
  _checks.check_choice(padding_mode, "padding_mode", PADDING_MODES)
  ishape = _checks.check_min_rank(image, "image", 3, "(..., H, W, C)")
  xshape = _checks.check_min_rank(x, "x", 1, "(..., Wo)")
  yshape = _checks.check_min_rank(y, "y", 1, "(..., Ho)")
  if xshape[:-1] != ishape[:-3] or yshape[:-1] != ishape[:-3]:
    raise ValueError(
        f"`image`, `x` and `y` must have the same leading (batch) dimensions, but got "
        f"image {ishape}, x {xshape} and y {yshape}.")
  for name, arr in (("image", image), ("x", x), ("y", y)):
    _checks.check_floating(arr, name)
  fill = _fill_value(padding_mode, fill_value, image, ishape[-1])
  my, mx = antialias_counts(antialias, ishape[-3:-1], (yshape[-1], xshape[-1]))
  image = jnp.asarray(image)
  ct = compute_dtype(jnp.result_type(x, y))
  if fill is not None:
    padding_mode, fill = "zeros", fill.astype(ct)
    shifted = image.astype(ct) - fill
  else:
    shifted = image.astype(ct)
  kw = dict(mode=mode, padding_mode=padding_mode, align_corners=bool(align_corners))
  ay = _interpolation_matrix(jnp.asarray(y, ct), ishape[-3], m=my, **kw)  # (..., Ho, H)
  ax = _interpolation_matrix(jnp.asarray(x, ct), ishape[-2], m=mx, **kw)  # (..., Wo, W)
  out = jnp.einsum("...ih,...hwc,...jw->...ijc", ay, shifted, ax,
                   precision=jax.lax.Precision.HIGHEST)
  if fill is not None:
    out = out + fill
  return out.astype(image.dtype)
