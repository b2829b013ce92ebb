"""stn_jax.nn.conv: the convolution whose input gradient is chosen by shape."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from stn_jax.nn import conv as conv_lib

DIMS = ("NHWC", "HWIO", "NHWC")

# (N, H, W, C_in), (kh, kw, C_in, C_out), strides, padding
CASES = [
    ((2, 7, 7, 5), (7, 7, 5, 4), (1, 1), ((0, 0), (0, 0))),       # 1x1 output
    ((2, 9, 11, 1), (5, 3, 1, 6), (1, 1), ((0, 0), (0, 0))),      # one input channel, not square
    ((3, 9, 9, 4), (5, 5, 4, 3), (1, 1), ((2, 2), (2, 2))),       # SAME
    ((2, 12, 13, 3), (3, 3, 3, 5), (2, 2), ((1, 1), (1, 1))),     # stride 2, padded
    ((2, 15, 14, 4), (4, 3, 4, 2), (2, 3), ((0, 1), (2, 0))),     # uneven strides and padding
    ((1, 10, 10, 2), (3, 3, 2, 2), (3, 3), ((0, 0), (0, 0))),     # stride that skips pixels
]


def _plain(x, w, strides, padding):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=DIMS)


def _data(x_shape, w_shape, strides, padding, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
  w = jnp.asarray(rng.normal(size=w_shape), jnp.float32)
  g = jnp.asarray(rng.normal(size=_plain(x, w, strides, padding).shape), jnp.float32)
  return x, w, g


def _xla_input_grad(x, w, g, strides, padding):
  return jax.vjp(lambda v: _plain(v, w, strides, padding), x)[1](g)[0]


@pytest.mark.parametrize("x_shape,w_shape,strides,padding", CASES)
@pytest.mark.parametrize("method", ["col2im", "rows"])
def test_each_method_is_the_input_gradient(method, x_shape, w_shape, strides, padding):
  x, w, g = _data(x_shape, w_shape, strides, padding)
  own = conv_lib._col2im if method == "col2im" else conv_lib._by_rows  # pylint: disable=protected-access
  got = jax.jit(lambda g, w: own(g, w, x_shape, strides, padding))(g, w)
  want = _xla_input_grad(x, w, g, strides, padding)
  assert got.shape == x.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(jnp.abs(want).max()))


FFT_CASES = CASES[:3] + [
    ((2, 15, 14, 4), (4, 3, 4, 2), (1, 1), ((0, 1), (2, 0))),     # uneven padding
    ((2, 10, 12, 3), (3, 5, 3, 4), (1, 1), ((3, 1), (0, 4))),     # padding beyond the kernel
    ((3, 17, 17, 8), (7, 7, 8, 6), (1, 1), ((0, 0), (0, 0))),     # the CNN's 7x7 layer, small
]


@pytest.mark.parametrize("x_shape,w_shape,strides,padding", FFT_CASES)
def test_the_fft_gives_both_gradients(x_shape, w_shape, strides, padding):
  x, w, g = _data(x_shape, w_shape, strides, padding, seed=4)
  dx, dw = jax.jit(lambda x, w, g: conv_lib._fft_grads(x, w, g, padding))(x, w, g)  # pylint: disable=protected-access
  want_dx, want_dw = jax.vjp(lambda x, w: _plain(x, w, strides, padding), x, w)[1](g)
  assert dx.shape == x.shape and dw.shape == w.shape
  assert dx.dtype == dw.dtype == jnp.float32
  np.testing.assert_allclose(dx, want_dx, rtol=1e-5, atol=1e-5 * float(jnp.abs(want_dx).max()))
  np.testing.assert_allclose(dw, want_dw, rtol=1e-5, atol=1e-5 * float(jnp.abs(want_dw).max()))


def test_a_layer_the_rule_sends_to_the_fft_matches_lax():
  # 7x7 on 17x17 with 8 channels at batch 512: col2im's buffer is over 32 MiB.
  x_shape, w_shape, none = (512, 17, 17, 8), (7, 7, 8, 8), ((0, 0), (0, 0))
  assert conv_lib.input_grad_method(x_shape, w_shape, (1, 1), none) == "fft"
  x, w, g = _data(x_shape, w_shape, (1, 1), none, seed=5)
  loss = lambda f: (lambda x, w: jnp.sum(f(x, w) * g))
  ours = lambda x, w: conv_lib.conv(x, w, (1, 1), none, dimension_numbers=DIMS)
  got = jax.jit(jax.grad(loss(ours), argnums=(0, 1)))(x, w)
  want = jax.grad(loss(lambda x, w: _plain(x, w, (1, 1), none)), argnums=(0, 1))(x, w)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.abs(b).max()))


@pytest.mark.parametrize("x_shape,w_shape,strides,padding", CASES)
def test_conv_and_its_gradients_match_lax(x_shape, w_shape, strides, padding):
  x, w, g = _data(x_shape, w_shape, strides, padding, seed=1)
  ours = lambda x, w: conv_lib.conv(x, w, strides, padding, dimension_numbers=DIMS)
  np.testing.assert_array_equal(jax.jit(ours)(x, w), jax.jit(_plain, static_argnums=(2, 3))(
      x, w, strides, padding))
  loss = lambda f: (lambda x, w: jnp.sum(f(x, w) * g))
  dx, dw = jax.jit(jax.grad(loss(ours), argnums=(0, 1)))(x, w)
  want_dx, want_dw = jax.grad(loss(lambda x, w: _plain(x, w, strides, padding)),
                              argnums=(0, 1))(x, w)
  np.testing.assert_allclose(dx, want_dx, rtol=1e-5, atol=1e-5 * float(jnp.abs(want_dx).max()))
  np.testing.assert_array_equal(dw, want_dw)  # XLA's own kernel gradient


def test_the_methods_are_chosen_by_shape():
  method = conv_lib.input_grad_method
  none, same2 = ((0, 0), (0, 0)), ((2, 2), (2, 2))
  # A 7x7 kernel on a 7x7 map: one output position, one matrix product.
  assert method((64, 7, 7, 87), (7, 7, 87, 87), (1, 1), none) == "col2im"
  # One input channel (the ST-CNN's first layer): XLA's way is slow whatever the padding.
  assert method((64, 21, 21, 1), (9, 9, 1, 87), (1, 1), none) == "col2im"
  assert method((64, 64, 64, 3), (5, 5, 3, 48), (1, 1), same2) == "col2im"
  assert method((16, 224, 224, 3), (7, 7, 3, 64), (2, 2), ((3, 3), (3, 3))) == "rows"
  # SAME padding and many channels: XLA's way multiplies no padding.
  assert method((16, 64, 64, 48), (5, 5, 48, 64), (1, 1), same2) == "xla"
  # Mostly padding, small buffer / big buffer; a 7x7 kernel with a big buffer goes
  # through FFTs (the CNN's 7x7 layer on 17x17 and 26x26, the ST-CNN's on 11x11 at 256).
  assert method((64, 9, 9, 20), (5, 5, 20, 20), (1, 1), none) == "col2im"
  assert method((256, 13, 13, 20), (5, 5, 20, 20), (1, 1), none) == "rows"
  assert method((64, 11, 11, 87), (7, 7, 87, 87), (1, 1), none) == "col2im"
  assert method((64, 17, 17, 86), (7, 7, 86, 86), (1, 1), none) == "fft"
  assert method((64, 26, 26, 86), (7, 7, 86, 86), (1, 1), none) == "fft"
  assert method((256, 11, 11, 87), (7, 7, 87, 87), (1, 1), none) == "fft"
  assert method((64, 17, 17, 86), (7, 7, 86, 86), (2, 2), none) == "rows"


def test_other_convolutions_go_to_lax_unchanged():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(2, 9, 9, 4)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)
  kwargs = dict(rhs_dilation=(2, 2), dimension_numbers=DIMS, feature_group_count=2)
  ours = conv_lib.conv(x, w, (1, 1), "VALID", **kwargs)
  np.testing.assert_array_equal(ours, lax.conv_general_dilated(x, w, (1, 1), "VALID", **kwargs))
  grads = [jax.grad(lambda x, f=f: jnp.sum(f(x, w, (1, 1), "VALID", **kwargs) ** 2))(x)
           for f in (conv_lib.conv, lax.conv_general_dilated)]
  np.testing.assert_array_equal(*grads)


def test_a_flax_conv_with_it_has_the_same_parameters_and_outputs():
  x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 12, 12, 3)), jnp.float32)
  plain = nn.Conv(5, (3, 3), strides=2, padding="SAME")
  ours = nn.Conv(5, (3, 3), strides=2, padding="SAME", conv_general_dilated=conv_lib.conv)
  params = plain.init(jax.random.PRNGKey(0), x)
  assert jax.tree.structure(ours.init(jax.random.PRNGKey(0), x)) == jax.tree.structure(params)
  np.testing.assert_array_equal(ours.apply(params, x), plain.apply(params, x))
  grads = [jax.grad(lambda v, m=m: jnp.sum(m.apply(params, v) ** 2))(x) for m in (ours, plain)]
  np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5, atol=1e-5)
  # Under vmap too (the multi-stream transformers map over streams).
  batched = jax.vmap(lambda v: ours.apply(params, v))(x[None])
  np.testing.assert_array_equal(batched[0], plain.apply(params, x))
