"""A 2-D convolution whose gradients are computed the cheapest of several ways.

XLA computes the gradient of a convolution with respect to its input as a
convolution of the zero-padded output gradient with the flipped kernel: a
convolution over the input's ``H x W`` positions, most of whose taps meet the
padding's zeros when the output is much smaller than the input. Its cost is
``(H_in W_in) / (H_out W_out)`` times the forward's: 2.6x for the ST-CNN's 9x9
layer on 21x21 and 49x for its 7x7 layer on a 7x7 map (1x1 output), where XLA's
input gradient took 16x PyTorch's time on this project's CPU.

Three other ways: "col2im" does only the forward's multiplications (for each kernel
offset ``(i, j)``, the output gradient times that offset's ``(C_out, C_in)``
matrix, added into the input gradient's window at ``(i, j)``); "rows" takes XLA's
input gradient of each kernel row alone, padded along W only; "fft" computes both
the input and the kernel gradient of a stride-1 convolution through 2-D FFTs, one
small complex matrix product per frequency instead of a sum over the kernel's
taps, which pays from 7x7 kernels on. On a CPU, :func:`conv` takes the way
:func:`input_grad_method` names for the shapes; on other platforms XLA's. The
forward is always XLA's own, the kernel gradient too unless the way is "fft", and
the results are the same up to float rounding.

``conv`` has ``lax.conv_general_dilated``'s signature, so it plugs into
``flax.linen.Conv(conv_general_dilated=conv)``; cases other than a plain NHWC
convolution (dilation, groups, negative padding) go to ``lax`` unchanged.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["conv", "input_grad_method"]

_DIMS = ("NHWC", "HWIO", "NHWC")


def _plain(x, w, strides, padding):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_DIMS)


# Above this size of the col2im's (N, H_out, W_out, kh, kw, C_in) buffer, writing and
# reading it back costs more than the rows method's wasted multiplications.
_COLS_BYTES = 32 << 20
_FEW_CHANNELS = 8
# From this kernel size on, products per frequency beat sums over the taps (measured:
# 7x7 layers 1.5-2.3x faster than the best other way; 5x5 and 3x3 ones slower).
_FFT_KERNEL = 7


def input_grad_method(x_shape, w_shape, strides, padding, itemsize=4) -> str:
  """How :func:`conv` computes, on a CPU, the input gradient of a convolution of an NHWC
  input of ``x_shape`` with an HWIO kernel of ``w_shape``: ``"col2im"``, ``"rows"``,
  ``"fft"`` or XLA's own (``"xla"``). Fixed by the shapes alone, so that a run and its resumption
  compute the same thing.

  The rule is what the measurement in ``benchmarks/conv_grad.py`` found on the
  project's CPU (docs/performance.md): XLA's way is slow when it multiplies mostly
  padding (the input has at least twice the output's positions) and whenever the
  input has few channels (under 8). With few channels col2im is fastest for stride 1
  and the rows method (one XLA input gradient per kernel row, padded along W only)
  for larger strides; with many, col2im while its buffer of contributions stays small
  (up to 32 MiB; always for a 1x1 output, where it is one matrix product), beyond it
  ``"fft"`` for stride-1 kernels of 7x7 and more and rows for the others. ``"fft"``
  alone also replaces XLA's kernel gradient.
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
  if strides == (1, 1) and min(kh, kw) >= _FFT_KERNEL and cols > _COLS_BYTES:
    return "fft"
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
  row_pad = ((0, 0), (pl, pr))
  for i in range(kh):
    _, vjp = jax.vjp(lambda v, i=i: _plain(v, w[i:i + 1], (1, sw), row_pad),
                     jnp.zeros((n, ho, wd, cin), g.dtype))
    piece, = vjp(g)  # (N, Ho, W, Cin): row i of every window
    piece = lax.pad(piece, jnp.zeros((), g.dtype),
                    ((0, 0, 0), (i, hp - i - (ho - 1) * sh - 1, sh - 1), (0, 0, 0), (0, 0, 0)))
    total = piece if total is None else total + piece
  return total[:, pt:pt + h]


def _fast_size(n: int) -> int:
  """The least size >= n whose only prime factors are 2, 3 and 5 (a quick FFT length)."""
  while True:
    m = n
    for p in (2, 3, 5):
      while m % p == 0:
        m //= p
    if m == 1:
      return n
    n += 1


def _fft_sizes(x_shape, padding):
  # A circular convolution of these sizes gives the wanted part of the linear one
  # without wrap-around: the padded input gradient's support ends at H + pt + pb, and
  # only [pt, pt + H) is wanted, so H + max(pt, pb) positions suffice (likewise for the
  # kernel gradient's shifts in [-pt, kh - pt)).
  (pt, pb), (pl, pr) = padding
  return _fast_size(x_shape[1] + max(pt, pb)), _fast_size(x_shape[2] + max(pl, pr))


def _kernel_spectrum(w, fh, fw):
  """The kernel's 2-D real DFT at size (fh, fw), as (fh * (fw // 2 + 1), C_out, C_in):
  one matrix product with the DFT's (frequency, tap) matrix, cheaper than an FFT of
  C_in * C_out mostly-zero planes."""
  kh, kw, cin, cout = w.shape
  fr = fw // 2 + 1
  u, v, i, j = np.ix_(np.arange(fh), np.arange(fr), np.arange(kh), np.arange(kw))
  angle = -2 * np.pi * (u * i / fh + v * j / fw)                     # (fh, fr, kh, kw)
  basis = np.stack([np.cos(angle), np.sin(angle)]).reshape(2 * fh * fr, kh * kw)
  taps = jnp.swapaxes(w, 2, 3).reshape(kh * kw, cout * cin)
  spectrum = jnp.dot(jnp.asarray(basis, w.dtype), taps).reshape(2, fh * fr, cout, cin)
  return lax.complex(spectrum[0], spectrum[1])


def _kernel_from_spectrum(spectrum, kh, kw, fh, fw, pt, pl, dtype):
  """The kernel gradient from the circular cross-correlation's half spectrum
  (fh * (fw // 2 + 1), C_in, C_out): its inverse DFT at the kh x kw shifts
  ``(i - pt, j - pl)`` only, as one matrix product."""
  fr = fw // 2 + 1
  _, cin, cout = spectrum.shape
  s, t, u, v = np.ix_(np.arange(kh) - pt, np.arange(kw) - pl, np.arange(fh), np.arange(fr))
  angle = 2 * np.pi * (u * s / fh + v * t / fw)                      # (kh, kw, fh, fr)
  # A real signal's half spectrum counts twice, except the columns that are their own mirror.
  weight = np.full(fr, 2.0)
  weight[0] = 1.0
  if fw % 2 == 0:
    weight[-1] = 1.0
  weight = weight / (fh * fw)
  basis = np.concatenate([(weight * np.cos(angle)).reshape(kh * kw, fh * fr),
                          (-weight * np.sin(angle)).reshape(kh * kw, fh * fr)], axis=1)
  parts = jnp.concatenate([jnp.real(spectrum), jnp.imag(spectrum)]).reshape(
      2 * fh * fr, cin * cout)
  return jnp.dot(jnp.asarray(basis, dtype), parts).reshape(kh, kw, cin, cout)


def _fft_grads(x, w, g, padding):
  """Both gradients of a stride-1 convolution through 2-D FFTs: the input gradient is the
  output gradient's linear convolution with the kernel, the kernel gradient the input's
  cross-correlation with the output gradient; each is a product per frequency (a batch
  of (N, C_out) x (C_out, C_in) and (C_in, N) x (N, C_out) complex matrix products)
  instead of a sum over the kernel's taps."""
  n, h, wd, cin = x.shape
  kh, kw, _, cout = w.shape
  (pt, _), (pl, _) = padding
  fh, fw = _fft_sizes(x.shape, padding)
  freqs = fh * (fw // 2 + 1)
  by_freq = lambda a: a.transpose(2, 3, 0, 1).reshape(freqs, n, a.shape[1])
  g_hat = by_freq(jnp.fft.rfft2(g.transpose(0, 3, 1, 2), s=(fh, fw)))           # (F, N, C_out)
  x_hat = by_freq(jnp.fft.rfft2(x.transpose(0, 3, 1, 2), s=(fh, fw)))           # (F, N, C_in)
  batched = lambda a, b, ca, cb: lax.dot_general(a, b, (((ca,), (cb,)), ((0,), (0,))))
  dx_hat = batched(g_hat, _kernel_spectrum(w, fh, fw), 2, 1)                     # (F, N, C_in)
  dx_hat = dx_hat.reshape(fh, fw // 2 + 1, n, cin).transpose(2, 3, 0, 1)
  dx = jnp.fft.irfft2(dx_hat, s=(fh, fw))[:, :, pt:pt + h, pl:pl + wd].transpose(0, 2, 3, 1)
  dw_hat = batched(x_hat, jnp.conj(g_hat), 1, 1)                                 # (F, C_in, C_out)
  dw = _kernel_from_spectrum(dw_hat, kh, kw, fh, fw, pt, pl, w.dtype)
  return dx.astype(x.dtype), dw


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, w, strides, padding):
  return _plain(x, w, strides, padding)


def _conv_fwd(x, w, strides, padding):
  return _plain(x, w, strides, padding), (x, w)


def _conv_bwd(strides, padding, residuals, g):
  x, w = residuals
  method = input_grad_method(x.shape, w.shape, strides, padding, jnp.dtype(g.dtype).itemsize)

  def xla_kernel_grad(x, g):
    return jax.vjp(lambda k: _plain(x, k, strides, padding), w)[1](g)[0]

  def xla_way(g, w):
    _, input_vjp = jax.vjp(lambda v: _plain(v, w, strides, padding), x)
    return input_vjp(g)[0]

  if method == "fft":
    return lax.platform_dependent(
        x, w, g, cpu=lambda x, w, g: _fft_grads(x, w, g, padding),
        default=lambda x, w, g: (xla_way(g, w), xla_kernel_grad(x, g)))
  dw = xla_kernel_grad(x, g)
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
  """``lax.conv_general_dilated``, with the gradients of :func:`input_grad_method`."""
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
