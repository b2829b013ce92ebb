"""Max pooling over non-overlapping windows, with a gradient that is fast on a CPU.

XLA differentiates a max pool (``reduce_window`` with max) into
``select_and_scatter``, which on a CPU took 77 ms for the MNIST CNN's first pool
at batch 64 (2x2 windows on 34x34x86): half of the network's whole backward pass.
For windows that do not overlap, the same gradient is a few elementwise
operations: each window's gradient goes to the first of its elements (in row-major
order) equal to its maximum, as ``select_and_scatter`` does, so the results are
identical. On a CPU :func:`max_pool` computes it that way (4.8 ms against XLA's 35-40 on
the TC ST-CNN's first pool, 22x22x84 at batch 64); on other platforms XLA's own.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["ceil_pads", "max_pool"]


def ceil_pads(shape, window):
  """The bottom/right padding of an ``(N, H, W, C)`` input that makes whole windows (ceil
  mode: a partial window at the edge still counts)."""
  return tuple((0, -s % window) for s in shape[1:3])


def _xla_max_pool(x, window):
  return nn.max_pool(x, (window, window), strides=(window, window),
                     padding=ceil_pads(x.shape, window))


def _windows(x, window):
  """``(N, Ho, k, Wo, k, C)``: the windows of ``x`` (padded with -inf to whole windows)."""
  n, h, w, c = x.shape
  (_, ph), (_, pw) = ceil_pads(x.shape, window)
  if ph or pw:
    x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), constant_values=-jnp.inf)
  return x.reshape(n, (h + ph) // window, window, (w + pw) // window, window, c)


def _first_max_grad(x, y, g, window):
  """The gradient of the pool: ``g`` at the first maximum of each window, zero elsewhere.

  Built in the windows' layout by broadcasting alone (each element's rank in its window,
  the smallest rank among the maxima), with no stacking, which XLA fuses well into what
  consumes it (a bias gradient's sum)."""
  windows = _windows(x, window)
  shape = (1, 1, window, 1, window, 1)
  rank = (lax.broadcasted_iota(jnp.int32, shape, 2) * window
          + lax.broadcasted_iota(jnp.int32, shape, 4))
  at_max = windows == y[:, :, None, :, None, :]
  first = jnp.min(jnp.where(at_max, rank, window * window), axis=(2, 4), keepdims=True)
  dx = jnp.where(rank == first, g[:, :, None, :, None, :], jnp.zeros((), g.dtype))
  n, h, w, c = x.shape
  return dx.reshape(n, windows.shape[1] * window, windows.shape[3] * window, c)[:, :h, :w]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool(x, window):
  return _xla_max_pool(x, window)


def _max_pool_fwd(x, window):
  y = _xla_max_pool(x, window)
  return y, (x, y)


def _max_pool_bwd(window, residuals, g):
  x, y = residuals

  def xla_way(x, g):
    return jax.vjp(lambda v: _xla_max_pool(v, window), x)[1](g)[0]

  return (lax.platform_dependent(x, g, cpu=lambda x, g: _first_max_grad(x, y, g, window),
                                 default=xla_way),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool(x, window: int):
  """Max pool of ``(N, H, W, C)`` over ``window x window`` windows with the same stride,
  in ceil mode (a partial window at the bottom or right edge still counts)."""
  return _max_pool(x, int(window))
