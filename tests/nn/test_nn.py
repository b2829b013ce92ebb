"""stn_jax.nn: layer stacks, spatial transformers, their initialisation and naming."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stn_jax import nn as stnn
from stn_jax import ops

KEY = jax.random.key(0)


def _image(shape=(3, 12, 16, 2), seed=0):
  return jax.random.uniform(jax.random.key(seed), shape)


# LayerStack -----------------------------------------------------------------


def test_layer_stack_ceil_pooling_and_average_over_existing_pixels():
  x = jnp.arange(25.0).reshape(1, 5, 5, 1)
  net = stnn.LayerStack((stnn.AvgPool(2),))
  y = net.apply({}, x)
  assert y.shape == (1, 3, 3, 1)
  # The last window of the last row holds one real pixel, x[4, 4] = 24.
  assert float(y[0, 2, 2, 0]) == 24.0
  assert float(y[0, 0, 0, 0]) == np.mean([0, 1, 5, 6])
  assert float(y[0, 0, 2, 0]) == np.mean([4, 9])
  ymax = stnn.LayerStack((stnn.MaxPool(2),)).apply({}, x)
  assert float(ymax[0, 2, 0, 0]) == 21.0


def test_layer_stack_relu_dropout_and_hidden():
  net = stnn.LayerStack((stnn.Conv(4, 3), stnn.MaxPool(2), stnn.Dense(6), stnn.Dense(3)),
                        relu_last=False, dropout=0.5, no_dropout=(0,))
  x = _image((2, 9, 9, 1))
  variables = net.init(KEY, x)
  assert set(variables["params"]) == {"conv_0", "fc_2", "fc_3"}
  out, hidden = net.apply(variables, x, return_hidden=True)
  assert [h.shape for h in hidden] == [(2, 4, 4, 4), (2, 6)]
  assert bool(jnp.all(hidden[0] >= 0)) and bool(jnp.all(hidden[1] >= 0))  # after ReLU
  assert bool(jnp.any(out < 0))  # logits: no ReLU on the last layer
  # Dropout acts on fc_2's output only in training, and needs the RNG.
  a = net.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
  b = net.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(net.apply(variables, x), net.apply(variables, x))


def test_layer_stack_empty_layer_names_layer_and_input_size():
  net = stnn.LayerStack((stnn.Conv(4, 9), stnn.MaxPool(2), stnn.Conv(4, 7)), name="cnn")
  with pytest.raises(ValueError,
                     match=r"cnn: layer 2 \(conv\[4,7,1,0\]\) gets a 4x4 .* 16x16 input"):
    net.init(KEY, jnp.zeros((1, 16, 16, 1)))
  with pytest.raises(ValueError, match=r"shape \(N, H, W, C\)"):
    net.init(KEY, jnp.zeros((16, 16, 1)))


# SpatialTransformer ---------------------------------------------------------


TRANSFORMS = ["affine", "attention", "translation", "rotation_scale_translation",
              "projective", "tps"]


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_transformer_starts_at_identity(transform):
  x = _image()
  st = stnn.SpatialTransformer(stnn.fc_localization((8,)), transform)
  (y, aux), variables = st.init_with_output(KEY, x)
  t = ops.get_transform(transform)
  np.testing.assert_allclose(aux["theta"], np.tile(t.identity_params, (3, 1)), atol=1e-7)
  np.testing.assert_allclose(aux["grid"], np.broadcast_to(ops.identity_grid((12, 16)),
                                                          (3, 12, 16, 2)), atol=1e-5)
  # Bilinear at the pixel centres (align_corners=False) gives the input back.
  np.testing.assert_allclose(y, x, atol=1e-5)
  head = variables["params"]["localization_out"]
  assert not np.any(head["kernel"]) and head["bias"].shape == (t.num_params,)


def test_transformer_learns_through_the_regressor_and_warps_with_theta():
  x = _image()
  st = stnn.SpatialTransformer(stnn.fc_localization((8,)), "affine", out_hw=(6, 5))
  variables = st.init(KEY, x)
  params = jax.tree_util.tree_map(lambda p: p, variables["params"])
  params["localization_out"]["bias"] = jnp.array([0.5, 0.2, 0.1, -0.1, 0.7, 0.3])
  (y, aux) = st.apply({"params": params}, x)
  expected = ops.warp(x, aux["theta"], (6, 5))
  np.testing.assert_allclose(y, expected, rtol=1e-6)
  assert y.shape == (3, 6, 5, 2)

  def loss(p):
    return jnp.sum(st.apply({"params": p}, x)[0] * jnp.arange(2.0))

  grads = jax.grad(loss)(variables["params"])
  assert np.abs(grads["localization_out"]["kernel"]).sum() > 0
  assert np.abs(grads["localization_out"]["bias"]).sum() > 0


def test_localization_input_is_what_the_net_sees():
  x = _image((2, 12, 12, 1))
  small = x[:, ::2, ::2]
  st = stnn.SpatialTransformer(stnn.fc_localization((4,)), "attention")
  variables = st.init(KEY, x, localization_input=small)
  # The first fc layer was built for the 6x6 input.
  assert variables["params"]["localization"]["fc_0"]["kernel"].shape == (36, 4)
  y, _ = st.apply(variables, x, localization_input=small)
  assert y.shape == x.shape


def test_transformer_sows_theta_and_grid():
  x = _image()
  st = stnn.SpatialTransformer(stnn.fc_localization((4,)), "attention")
  variables = st.init(KEY, x)
  _, state = st.apply(variables, x, mutable=["intermediates"])
  inter = state["intermediates"]
  assert inter["theta"][0].shape == (3, 3) and inter["grid"][0].shape == (3, 12, 16, 2)


def test_transformer_errors():
  x = _image()
  st = stnn.SpatialTransformer(stnn.fc_localization((4,)), "affine", init_params=(1.0, 0.0))
  with pytest.raises(ValueError, match=r"`init_params` must have 6 values"):
    st.init(KEY, x)
  with pytest.raises(ValueError, match=r"shape \(N, H, W, C\)"):
    stnn.SpatialTransformer(stnn.fc_localization((4,))).init(KEY, x[0])
  with pytest.raises(ValueError, match="Unknown transform 'afine'"):
    stnn.SpatialTransformer(stnn.fc_localization((4,)), "afine").init(KEY, x)


def test_localization_mask_marks_exactly_the_localization_parameters():
  x = _image()
  model = stnn.ParallelSpatialTransformers([stnn.fc_localization((4,)),
                                            stnn.fc_localization((5,))], "affine")
  params = model.init(KEY, x)["params"]
  mask = stnn.localization_mask(params)
  flat = jax.tree_util.tree_flatten_with_path(mask)[0]
  marked = {"/".join(k.key for k in path) for path, m in flat if m}
  assert marked == {f"st_{i}/{part}" for i in (0, 1) for part in (
      "localization/fc_0/kernel", "localization/fc_0/bias",
      "localization_out/kernel", "localization_out/bias")}
  assert not stnn.is_localization_path(["classifier", "fc_0", "kernel"])


# Several transformers ---------------------------------------------------------


def test_parallel_transformers_concatenate_in_order():
  x = _image((2, 10, 10, 2))
  model = stnn.ParallelSpatialTransformers([stnn.fc_localization((4,)),
                                            stnn.fc_localization((4,))], "translation")
  variables = model.init(KEY, x)
  params = jax.tree_util.tree_map(lambda p: p, variables["params"])
  params["st_1"]["localization_out"]["bias"] = jnp.array([0.4, -0.2])
  y, auxs = model.apply({"params": params}, x)
  assert y.shape == (2, 10, 10, 4) and len(auxs) == 2
  np.testing.assert_allclose(y[..., :2], x, atol=1e-5)  # the first: still the identity
  shifted = ops.warp(x, jnp.tile(jnp.array([0.4, -0.2]), (2, 1)), (10, 10),
                     transform="translation")
  np.testing.assert_allclose(y[..., 2:], shifted, atol=1e-6)


def test_multi_stream_fixed_scale_and_tiling_init():
  x = _image((2, 16, 16, 3))
  tiles = [[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]]
  model = stnn.MultiStreamTransformer(stnn.fc_localization((4,)), 4, fixed_scale=0.5,
                                      init_params=tiles, out_hw=(8, 8))
  (outs, aux), variables = model.init_with_output(KEY, x)
  assert variables["params"]["localization_out"]["bias"].shape == (8,)
  assert aux["theta"].shape == (2, 4, 3) and aux["grid"].shape == (2, 4, 8, 8, 2)
  np.testing.assert_allclose(aux["theta"][0], [[0.5, *t] for t in tiles])
  # Scale 0.5 at the quadrant centres, 8x8 out of 16x16: each stream reads
  # exactly the pixels of one quadrant.
  for i, (r, c) in enumerate([(0, 0), (0, 8), (8, 0), (8, 8)]):
    np.testing.assert_allclose(outs[i], x[:, r:r + 8, c:c + 8], atol=1e-5)
  with pytest.raises(ValueError, match=r"`init_params` must have shape \(4, 2\)"):
    stnn.MultiStreamTransformer(stnn.fc_localization((4,)), 4, fixed_scale=0.5,
                                init_params=[[0.0, 0.0]]).init(KEY, x)


def test_the_separable_sampler_in_the_modules_gives_the_gathers_output_and_gradients():
  x = _image((2, 16, 16, 3))
  tiles = [[-0.3, -0.45], [0.5, 0.2]]
  kw = dict(fixed_scale=0.6, init_params=tiles, out_hw=(8, 8))
  gather = stnn.MultiStreamTransformer(stnn.fc_localization((4,)), 2, separable=False, **kw)
  separable = stnn.MultiStreamTransformer(stnn.fc_localization((4,)), 2, separable=True, **kw)
  params = gather.init(KEY, x)["params"]
  # Move the regressor off its start so that the localisation net's output matters.
  params["localization_out"]["kernel"] = 0.05 * jax.random.normal(
      KEY, params["localization_out"]["kernel"].shape)

  def loss(p, model):
    outs, _ = model.apply({"params": p}, x)
    return sum(jnp.sum(o * (i + 1) * x[:, :8, :8]) for i, o in enumerate(outs))
  for a, b in zip(gather.apply({"params": params}, x)[0],
                  separable.apply({"params": params}, x)[0]):
    np.testing.assert_allclose(a, b, atol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(jax.grad(loss)(params, gather)),
                  jax.tree_util.tree_leaves(jax.grad(loss)(params, separable))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  st = stnn.SpatialTransformer(stnn.fc_localization((4,)), transform="attention",
                               separable=True)
  y, aux = st.init_with_output(KEY, x)[0]
  np.testing.assert_allclose(y, ops.sample(x, aux["grid"]), atol=1e-5)
  with pytest.raises(ValueError, match="separable=True needs an axis-aligned transform"):
    stnn.SpatialTransformer(stnn.fc_localization((4,)), transform="affine",
                            separable=True).init(KEY, x)
  # The default, by platform: the separable sampler on TPU only (docs/performance.md).
  assert ops.use_separable(transform="attention", platform="tpu")
  assert not ops.use_separable(transform="attention", platform="cpu")
  assert not ops.use_separable(transform="affine", platform="tpu")
