"""A 2-D convolution whose input gradient is computed the cheaper of two ways.

XLA computes the gradient of a convolution with respect to its input as a
convolution of the zero-padded output gradient with the flipped kernel: a
convolution over the input's ``H x W`` positions, most of whose taps meet the
padding's zeros when the output is much smaller than the input. Its cost is
``(H_in W_in) / (H_out W_out)`` times the forward's: 2.6x for the ST-CNN's 9x9
layer on 21x21 and 49x for its 7x7 layer on a 7x7 map (1x1 output), where XLA's
input gradient took 16x PyTorch's time on this project's CPU.

Two other ways: "col2im" does only the forward's multiplications (for each kernel
offset ``(i, j)``, the output gradient times that offset's ``(C_out, C_in)``
matrix, added into the input gradient's window at ``(i, j)``); "rows" takes XLA's
input gradient of each kernel row alone, padded along W only. On a CPU,
:func:`conv` takes the one :func:`input_grad_method` names for the shapes; on
other platforms XLA's. The forward and the kernel gradient are always XLA's own,
and the results are the same up to float rounding.

``conv`` has ``lax.conv_general_dilated``'s signature, so it plugs into
``flax.linen.Conv(conv_general_dilated=conv)``; cases other than a plain NHWC
convolution (dilation, groups, negative padding) go to ``lax`` unchanged.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["conv", "input_grad_method"]

_DIMS = ("NHWC", "HWIO", "NHWC")


def _plain(x, w, strides, padding):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_DIMS)


# Above this size of the col2im's (N, H_out, W_out, kh, kw, C_in) buffer, writing and
# reading it back costs more than the rows method's wasted multiplications.
_COLS_BYTES = 32 << 20
_FEW_CHANNELS = 8


def input_grad_method(x_shape, w_shape, strides, padding, itemsize=4) -> str:
  """How :func:`conv` computes, on a CPU, the input gradient of a convolution of an NHWC
  input of ``x_shape`` with an HWIO kernel of ``w_shape``: ``"col2im"``, ``"rows"`` or
  XLA's own (``"xla"``). Fixed by the shapes alone, so that a run and its resumption
  compute the same thing.

  The rule is what the measurement in ``benchmarks/conv_grad.py`` found on the
  project's CPU (docs/performance.md): XLA's way is slow when it multiplies mostly
  padding (the input has at least twice the output's positions) and whenever the
  input has few channels (under 8). With few channels col2im is fastest for stride 1
  and the rows method (one XLA input gradient per kernel row, padded along W only)
  for larger strides; with many, col2im while its buffer of contributions stays small
  (up to 32 MiB; always for a 1x1 output, where it is one matrix product), rows beyond.
  """
  (pt, pb), (pl, pr) = padding
  kh, kw, cin = w_shape[0], w_shape[1], w_shape[2]
  ho = (x_shape[1] + pt + pb - kh) // strides[0] + 1
  wo = (x_shape[2] + pl + pr - kw) // strides[1] + 1
  cols = x_shape[0] * ho * wo * kh * kw * cin * itemsize
  if ho * wo == 1:
    return "col2im"
  if cin < _FEW_CHANNELS:
    return "col2im" if strides == (1, 1) else "rows"
  if x_shape[1] * x_shape[2] < 2 * ho * wo:
    return "xla"
  return "col2im" if cols <= _COLS_BYTES else "rows"


def _col2im(g, w, x_shape, strides, padding):
  """The input gradient: for each kernel offset, ``g @ w[i, j].T`` added into its window."""
  n, h, wd, cin = x_shape
  kh, kw = w.shape[:2]
  (pt, pb), (pl, pr) = padding
  hp, wp = h + pt + pb, wd + pl + pr
  ho, wo = g.shape[1:3]
  sh, sw = strides
  # (N, Ho, Wo, kh, kw, Cin): every output position's contribution to its window.
  cols = lax.dot_general(g, w, (((3,), (3,)), ((), ())))
  if ho == 1 and wo == 1:  # one window: the contributions are the gradient
    window = cols.reshape(n, kh, kw, cin)
    total = lax.pad(window, jnp.zeros((), g.dtype),
                    ((0, 0, 0), (0, hp - kh, 0), (0, wp - kw, 0), (0, 0, 0)))
    return total[:, pt:pt + h, pl:pl + wd, :]
  total = None
  for i in range(kh):
    for j in range(kw):
      piece = lax.pad(cols[:, :, :, i, j, :], jnp.zeros((), g.dtype),
                      ((0, 0, 0), (i, hp - i - (ho - 1) * sh - 1, sh - 1),
                       (j, wp - j - (wo - 1) * sw - 1, sw - 1), (0, 0, 0)))
      total = piece if total is None else total + piece
  return total[:, pt:pt + h, pl:pl + wd, :]


def _by_rows(g, w, x_shape, strides, padding):
  """The input gradient as one XLA input gradient per kernel row (a 1 x kw convolution,
  whose zero padding is along W only), each added into its rows."""
  n, h, wd, cin = x_shape
  kh = w.shape[0]
  (pt, pb), (pl, pr) = padding
  hp = h + pt + pb
  ho = g.shape[1]
  sh, sw = strides
  total = None
  for i in range(kh):
    row_pad = ((0, 0), (pl, pr))
    _, vjp = jax.vjp(lambda v, i=i: _plain(v, w[i:i + 1], (1, sw), row_pad),
                     jnp.zeros((n, ho, wd, cin), g.dtype))
    piece, = vjp(g)  # (N, Ho, W, Cin): row i of every window
    piece = lax.pad(piece, jnp.zeros((), g.dtype),
                    ((0, 0, 0), (i, hp - i - (ho - 1) * sh - 1, sh - 1), (0, 0, 0), (0, 0, 0)))
    total = piece if total is None else total + piece
  return total[:, pt:pt + h]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, w, strides, padding):
  return _plain(x, w, strides, padding)


def _conv_fwd(x, w, strides, padding):
  return _plain(x, w, strides, padding), (x, w)


def _conv_bwd(strides, padding, residuals, g):
  x, w = residuals
  _, kernel_vjp = jax.vjp(lambda k: _plain(x, k, strides, padding), w)
  dw, = kernel_vjp(g)

  def xla_way(g, w):
    _, input_vjp = jax.vjp(lambda v: _plain(v, w, strides, padding), x)
    return input_vjp(g)[0]

  method = input_grad_method(x.shape, w.shape, strides, padding, jnp.dtype(g.dtype).itemsize)
  if method == "xla":
    return xla_way(g, w), dw
  own = _col2im if method == "col2im" else _by_rows
  # The measurement behind the rule was made on a CPU; elsewhere XLA's way stays.
  dx = lax.platform_dependent(
      g, w, cpu=lambda g, w: own(g, w, x.shape, strides, padding).astype(x.dtype),
      default=xla_way)
  return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
         dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
         preferred_element_type=None):
  """``lax.conv_general_dilated``, with the input gradient of :func:`input_grad_method`."""
  def fallback():
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, batch_group_count=batch_group_count,
        precision=precision, preferred_element_type=preferred_element_type)

  dims = dimension_numbers
  if isinstance(dims, lax.ConvDimensionNumbers):
    dims = None if dims != lax.conv_dimension_numbers(lhs.shape, rhs.shape, _DIMS) else _DIMS
  if (lhs.ndim != 4 or tuple(dims or ()) != _DIMS or feature_group_count != 1
      or batch_group_count != 1 or precision is not None or preferred_element_type is not None
      or any(d not in (None, 1) for d in tuple(lhs_dilation or ()) + tuple(rhs_dilation or ()))):
    return fallback()
  strides = tuple(int(s) for s in window_strides)
  if isinstance(padding, str):
    pads = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
  else:
    pads = padding
  pads = tuple((int(lo), int(hi)) for lo, hi in pads)
  if any(p < 0 for pair in pads for p in pair):
    return fallback()
  return _conv(lhs, rhs, strides, pads)
