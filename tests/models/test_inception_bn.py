"""BN-Inception backbone: the table's shapes and size, real forward/backward at a tiny
width, BatchNorm statistics, the paddings, checkpoints, and input errors.

The network has 69 convolutions, so compiling it dominates the cost on a CPU. To keep
the file fast, full-width checks go through ``jax.eval_shape``; the tiny network's
variables are filled with NumPy (compiling Flax's initialisers for 69 kernels takes
longer than everything else here); and the few real computations are compiled once
each, without XLA's slow backend optimisations, then reused.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stn_jax.models import inception_bn
from stn_jax.models.inception_bn import InceptionBN, load_backbone, num_features, save_backbone

TINY = 0.125  # every filter count divided by 8
BATCH = (4, 64, 64, 3)
MODULES = ["inception_3a", "inception_3b", "inception_3c", "inception_4a", "inception_4b",
           "inception_4c", "inception_4d", "inception_4e", "inception_5a", "inception_5b"]
# Values are checked here, not speed: these settings of the CPU backend cut compiling
# the tiny network's training step from about 20 s to about 4 s on 2 cores.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True,
                "xla_cpu_use_fusion_emitters": False}


def _compile(fn, *example_args):
  lowered = jax.jit(fn).lower(*example_args)
  try:
    return lowered.compile(compiler_options=FAST_COMPILE)
  except jax.errors.JaxRuntimeError as error:  # another XLA may not know these options
    if "compile option" not in str(error):
      raise
    return lowered.compile()


def _abstract_init(model, shape):
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)


def _abstract_apply(model, variables, shape, **kwargs):
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  return jax.eval_shape(lambda v, x: model.apply(v, x, train=False, **kwargs), variables, x)


def _random_variables(model, shape, seed):
  """He-normal kernels, BN affine parameters near (1, 0), running statistics (0, 1)."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      value = rng.normal(size=leaf.shape) * np.sqrt(2.0 / np.prod(leaf.shape[:-1]))
    elif name == "scale":
      value = 1.0 + 0.1 * rng.normal(size=leaf.shape)
    elif name == "bias":
      value = 0.1 * rng.normal(size=leaf.shape)
    else:
      value = np.full(leaf.shape, {"mean": 0.0, "var": 1.0}[name])
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, _abstract_init(model, shape))


def _count(tree):
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree)))


# --- Full width, shapes only. ---

@pytest.fixture(scope="module")
def full():
  model = InceptionBN()
  return model, _abstract_init(model, (2, 224, 224, 3))


def test_full_width_shapes_and_parameter_count(full):
  model, variables = full
  assert _abstract_apply(model, variables, (2, 224, 224, 3)).shape == (2, 1024)
  assert _abstract_apply(model, variables, (2, 224, 224, 3), pool=False).shape == (2, 7, 7, 1024)
  n_params = _count(variables["params"])
  print(f"BN-Inception parameters at width 1.0: {n_params:,}")
  # 10,240,192 conv weights + 20,032 BN scales and biases; a 1000-way fc would add 1,025,000.
  assert n_params == 10_260_224
  assert _count(variables["batch_stats"]) == 20_032  # a mean and a variance per BN channel
  assert num_features(1.0) == 1024
  assert len(jax.tree_util.tree_leaves(variables)) == 69 * 5  # 69 conv+BN layers


def test_every_module_has_the_tables_output_shape(full):
  model, variables = full
  x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  _, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False, capture_intermediates=True), variables, x)
  shapes = {name: state["intermediates"][name]["__call__"][0].shape[1:]
            for name in ["conv1", "conv2_reduce", "conv2"] + MODULES}
  assert shapes == {
      "conv1": (112, 112, 64), "conv2_reduce": (56, 56, 64), "conv2": (56, 56, 192),
      "inception_3a": (28, 28, 256), "inception_3b": (28, 28, 320), "inception_3c": (14, 14, 576),
      "inception_4a": (14, 14, 576), "inception_4b": (14, 14, 576), "inception_4c": (14, 14, 608),
      "inception_4d": (14, 14, 608), "inception_4e": (7, 7, 1056), "inception_5a": (7, 7, 1024),
      "inception_5b": (7, 7, 1024)}
  assert [n for _, n in inception_bn._layer_sizes(224)] == [
      112, 56, 56, 56, 28, 28, 28, 14, 14, 14, 14, 14, 7, 7, 7]


def test_variable_names_are_the_documented_ones(full):
  _, variables = full
  params, stats = variables["params"], variables["batch_stats"]
  assert set(params) == set(stats) == {"conv1", "conv2_reduce", "conv2", *MODULES}
  assert set(params["inception_3a"]) == {"1x1", "3x3_reduce", "3x3", "double_3x3_reduce",
                                         "double_3x3_1", "double_3x3_2", "pool_proj"}
  assert set(params["inception_3c"]) == set(params["inception_4e"]) == {
      "3x3_reduce", "3x3", "double_3x3_reduce", "double_3x3_1", "double_3x3_2"}
  assert set(params["conv1"]) == {"conv", "bn"}
  assert set(params["conv1"]["conv"]) == {"kernel"}  # no conv bias
  assert set(params["conv1"]["bn"]) == {"scale", "bias"}
  assert set(stats["conv1"]["bn"]) == {"mean", "var"}
  assert params["conv1"]["conv"]["kernel"].shape == (7, 7, 3, 64)
  assert params["inception_4e"]["double_3x3_2"]["conv"]["kernel"].shape == (3, 3, 256, 256)
  assert params["inception_5b"]["pool_proj"]["conv"]["kernel"].shape == (1, 1, 1024, 128)
  assert stats["inception_5b"]["pool_proj"]["bn"]["var"].shape == (128,)


@pytest.mark.parametrize("shape,out_hw", [
    ((1, 448, 448, 3), (14, 14)),  # the bird experiment's input size
    ((1, 1, 1, 3), (1, 1)),
    ((1, 33, 65, 1), (2, 3)),  # odd sizes: the stride-2 branches still agree
    ((1, 100, 37, 5), (4, 2)),
])
def test_any_size_gives_a_ceil_32_map(shape, out_hw):
  model = InceptionBN(width=TINY)
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  out, _ = jax.eval_shape(
      lambda x: model.init_with_output(jax.random.key(0), x, train=False, pool=False), x)
  assert out.shape == (1, *out_hw, num_features(TINY)) == (1, *out_hw, 128)


def test_tiny_width_and_dtype():
  variables = _abstract_init(InceptionBN(width=TINY), (1, 64, 64, 3))
  n_params = _count(variables["params"])
  print(f"BN-Inception parameters at width {TINY}: {n_params:,}")
  assert n_params == 163_536
  assert variables["params"]["conv2"]["conv"]["kernel"].shape == (3, 3, 8, 24)  # 64/8, 192/8
  model = InceptionBN(width=TINY, dtype=jnp.bfloat16)
  variables = _abstract_init(model, (1, 64, 64, 3))
  assert _abstract_apply(model, variables, (1, 64, 64, 3)).dtype == jnp.bfloat16
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(variables))


# --- Real computation at a tiny width. ---

@pytest.fixture(scope="module")
def tiny():
  """The model, variables, a batch, and compiled eval and train steps.

  ``evaluate(variables, x) -> (descriptor, map)``;
  ``train(params, batch_stats, x) -> (descriptor, new batch_stats, grads)``, the
  gradients of a random linear read-out's mean square.
  """
  model = InceptionBN(width=TINY, bn_momentum=0.9)
  variables = _random_variables(model, BATCH, seed=0)
  rng = np.random.default_rng(1)  # NumPy: eager jax.random would compile its kernels
  x = jnp.asarray(rng.normal(size=BATCH), jnp.float32)
  readout = jnp.asarray(rng.normal(size=num_features(TINY)), jnp.float32)

  def evaluate(variables, x):
    return (model.apply(variables, x, train=False),
            model.apply(variables, x, train=False, pool=False))

  def train(params, batch_stats, x):
    def loss(params):
      out, updates = model.apply({"params": params, "batch_stats": batch_stats}, x,
                                 train=True, mutable=["batch_stats"])
      # A random read-out: a plain sum of BN outputs has degenerate gradients.
      return jnp.mean((out @ readout) ** 2), (out, updates["batch_stats"])
    grads, (out, new_stats) = jax.grad(loss, has_aux=True)(params)
    return out, new_stats, grads

  evaluate = _compile(evaluate, variables, x)
  train = _compile(train, variables["params"], variables["batch_stats"], x)
  return model, variables, x, evaluate, train


def test_tiny_forward_in_eval_and_train_mode(tiny):
  model, variables, x, evaluate, train = tiny
  out_eval, fmap = evaluate(variables, x)
  out_train, _, _ = train(variables["params"], variables["batch_stats"], x)
  assert out_eval.shape == out_train.shape == (4, 128)
  assert fmap.shape == (4, 2, 2, 128)
  assert np.isfinite(out_eval).all() and np.isfinite(out_train).all()
  assert (out_eval >= 0).all() and np.abs(out_eval).max() > 0  # a mean of ReLU outputs
  np.testing.assert_allclose(fmap.mean(axis=(1, 2)), out_eval, rtol=1e-5, atol=1e-6)
  # Batch statistics, not the running (0, 1), normalise in training.
  assert not np.allclose(out_eval, out_train, atol=1e-3)
  # Changing the other images leaves image 0 alone in eval mode, not in training mode.
  other = np.array(x)
  other[1:] = np.random.default_rng(3).normal(size=other[1:].shape)
  np.testing.assert_allclose(evaluate(variables, other)[0][0], out_eval[0], rtol=1e-5, atol=1e-6)
  assert not np.allclose(train(variables["params"], variables["batch_stats"], other)[0][0],
                         out_train[0], atol=1e-3)


def test_tiny_train_step_updates_batch_stats(tiny):
  model, variables, x, _, train = tiny
  _, new_stats, _ = train(variables["params"], variables["batch_stats"], x)
  changed = jax.tree_util.tree_map(lambda old, new: not np.allclose(old, new),
                                   variables["batch_stats"], new_stats)
  assert len(jax.tree_util.tree_leaves(changed)) == 69 * 2
  assert all(jax.tree_util.tree_leaves(changed))  # every BN layer's mean and variance moved
  # conv1's statistics move by (1 - momentum) towards the batch's, computed independently
  # here with conv1's documented padding (3) and stride (2).
  kernel = variables["params"]["conv1"]["conv"]["kernel"]
  y = jax.lax.conv_general_dilated(x, kernel, (2, 2), ((3, 3), (3, 3)),
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  assert y.shape == (4, 32, 32, 8)
  stats = new_stats["conv1"]["bn"]
  np.testing.assert_allclose(stats["mean"], 0.1 * y.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * y.var(axis=(0, 1, 2)), rtol=1e-4)


def test_tiny_backward_is_finite_and_reaches_every_parameter(tiny):
  _, variables, x, _, train = tiny
  _, _, grads = train(variables["params"], variables["batch_stats"], x)
  leaves = jax.tree_util.tree_leaves_with_path(grads)
  assert len(leaves) == 69 * 3
  for path, leaf in leaves:
    assert leaf.shape == _get(variables["params"], path).shape
    assert np.isfinite(leaf).all(), jax.tree_util.keystr(path)
    assert np.abs(leaf).max() > 0, jax.tree_util.keystr(path)


def _get(tree, path):
  for key in path:
    tree = tree[key.key]
  return tree


def test_448_input_through_eval_shape_with_real_variables(tiny):
  model, variables, _, _, _ = tiny
  out = _abstract_apply(model, variables, (2, 448, 448, 3), pool=False)
  assert out.shape == (2, 14, 14, 128)


@pytest.mark.parametrize("stride", [1, 2])
def test_branches_are_concatenated_in_the_tables_order(stride):
  # Distinct branch widths make every branch's channel slice unambiguous; pretrained
  # weights of the next layer depend on this order.
  b1x1, proj = (2, 5) if stride == 1 else (0, 0)
  module = inception_bn.InceptionModule(b1x1, (2, 3), (2, 4), "avg" if stride == 1 else "max",
                                        proj, stride)
  x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 5, 5, 3)), jnp.float32)
  variables = _random_variables(module, x.shape, seed=4)
  run = _compile(lambda v, x: module.apply(v, x, train=False, capture_intermediates=True),
                 variables, x)
  out, state = run(variables, x)
  branch = lambda name: state["intermediates"][name]["__call__"][0]
  pooled = inception_bn._pool(x, "max", 2)  # the stride-2 modules pass the pool through
  parts = ([branch("1x1"), branch("3x3"), branch("double_3x3_2"), branch("pool_proj")]
           if stride == 1 else [branch("3x3"), branch("double_3x3_2"), pooled])
  assert out.shape == ((2, 5, 5, 14) if stride == 1 else (2, 3, 3, 10))
  np.testing.assert_array_equal(out, jnp.concatenate(parts, axis=-1))


# --- Padding arithmetic, against hand-written windows. ---

def test_stride_2_max_pool_is_caffes_ceil_mode_at_even_sizes():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 6, 6, 1)), jnp.float32)
  out = np.asarray(inception_bn._pool(x, "max", 2))[0, :, :, 0]
  a = np.asarray(x)[0, :, :, 0]
  # Windows start at 0, 2, 4 with no padding before; the last one is clipped at the edge.
  want = np.array([[a[i:i + 3, j:j + 3].max() for j in (0, 2, 4)] for i in (0, 2, 4)])
  np.testing.assert_array_equal(out, want)


def test_stride_1_avg_pool_counts_the_padding():
  x = jnp.ones((1, 4, 4, 1))
  out = np.asarray(inception_bn._pool(x, "avg", 1))[0, :, :, 0]
  assert out.shape == (4, 4)
  np.testing.assert_allclose(out[0, 0], 4 / 9)
  np.testing.assert_allclose(out[0, 1], 6 / 9)
  np.testing.assert_allclose(out[1, 1], 1.0)


# --- Checkpoints. ---

@pytest.fixture(scope="module")
def trained(tiny):
  """Variables after a training step: batch_stats are not the initial zeros and ones."""
  _, variables, x, _, train = tiny
  _, new_stats, _ = train(variables["params"], variables["batch_stats"], x)
  return {"params": variables["params"], "batch_stats": new_stats}


def test_save_load_round_trip(tiny, trained, tmp_path):
  model, _, x, evaluate, _ = tiny
  path = tmp_path / "backbone.npz"
  save_backbone(trained, path)
  with np.load(path) as data:
    assert "params/conv1/conv/kernel" in data.files
    assert "batch_stats/inception_5b/pool_proj/bn/var" in data.files
    assert len(data.files) == 345
  fresh = _random_variables(model, BATCH, seed=5)
  want = evaluate(trained, x)[0]
  assert not np.allclose(evaluate(fresh, x)[0], want)
  loaded = load_backbone(fresh, path)
  np.testing.assert_array_equal(evaluate(loaded, x)[0], want)
  # The argument is left alone.
  assert not np.array_equal(fresh["params"]["conv1"]["conv"]["kernel"],
                            loaded["params"]["conv1"]["conv"]["kernel"])
  # Abstract variables (no initialisation at all) are enough to load into.
  abstract = _abstract_init(model, BATCH)
  np.testing.assert_array_equal(evaluate(load_backbone(abstract, path), x)[0], want)


class _Birds(nn.Module):
  @nn.compact
  def __call__(self, x, *, train: bool):
    return nn.Dense(3, name="head")(InceptionBN(width=TINY, name="backbone")(x, train=train))


def test_load_into_a_model_that_nests_the_backbone(tiny, trained, tmp_path):
  model, _, x, evaluate, _ = tiny
  path = tmp_path / "backbone.npz"
  save_backbone(trained, path)
  birds = _Birds()
  fresh = _random_variables(birds, BATCH, seed=7)
  loaded = load_backbone(fresh, path, prefix=("backbone",))
  assert loaded["params"]["head"]["kernel"] is fresh["params"]["head"]["kernel"]
  assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(fresh)
  # The backbone's part, run by the bare backbone, gives the saved backbone's features
  # (compiling the larger model too would only add time: its structure is unchanged).
  features = evaluate(trained, x)[0]
  part = {c: loaded[c]["backbone"] for c in ("params", "batch_stats")}
  np.testing.assert_array_equal(evaluate(part, x)[0], features)
  before = {c: fresh[c]["backbone"] for c in ("params", "batch_stats")}
  assert not np.allclose(evaluate(before, x)[0], features)
  assert _abstract_apply(birds, loaded, BATCH).shape == (4, 3)
  # And back: saved from inside the larger model, loaded into a bare backbone.
  nested_path = tmp_path / "nested.npz"
  save_backbone(loaded, nested_path, prefix=("backbone",))
  bare = load_backbone(_random_variables(model, BATCH, seed=8), nested_path)
  np.testing.assert_array_equal(evaluate(bare, x)[0], features)
  with pytest.raises(ValueError, match=r"no 'trunk' under 'params'.*found \['backbone', 'head'\]"):
    load_backbone(fresh, path, prefix=("trunk",))
  with pytest.raises(ValueError, match=r"does not fit.*347 missing key.*batch_stats/backbone/.*"
                                       r"345 unexpected key.*batch_stats/conv1/"):
    load_backbone(fresh, nested_path, prefix=())  # prefix forgotten


def _edit_checkpoint(src, dst, edit):
  with np.load(src) as data:
    arrays = {key: data[key] for key in data.files}
  edit(arrays)
  np.savez(dst, **arrays)


@pytest.mark.parametrize("edit,match", [
    (lambda a: a.update({"params/conv2/conv/kernel": np.zeros((3, 3, 8, 25), np.float32)}),
     r"1 shape mismatch\(es\): params/conv2/conv/kernel \(expected \(3, 3, 8, 24\), "
     r"got \(3, 3, 8, 25\)\)"),
    (lambda a: a.pop("batch_stats/inception_4c/3x3/bn/mean"),
     r"expects 345 arrays, the file has 344.*1 missing key\(s\): "
     r"batch_stats/inception_4c/3x3/bn/mean"),
    (lambda a: a.update({"params/inception_3c/1x1/conv/kernel": np.zeros((1, 1, 1, 1))}),
     r"1 unexpected key\(s\): params/inception_3c/1x1/conv/kernel"),
    # 5a and 5b: 7 conv+BN layers of 3 parameter arrays each.
    (lambda a: [a.pop(k) for k in sorted(a) if k.startswith("params/inception_5")],
     r"42 missing key\(s\): params/inception_5a/1x1/bn/bias, .*, \.\.\. \(37 more\)"),
])
def test_a_checkpoint_that_does_not_fit_is_refused(trained, tmp_path, edit, match):
  good, bad = tmp_path / "good.npz", tmp_path / "bad.npz"
  save_backbone(trained, good)
  _edit_checkpoint(good, bad, edit)
  with pytest.raises(ValueError, match=match) as info:
    load_backbone(trained, bad)
  assert str(bad) in str(info.value)


def test_a_missing_or_unreadable_file_is_named(tiny, tmp_path):
  variables = tiny[1]
  missing = tmp_path / "nowhere.npz"
  with pytest.raises(FileNotFoundError, match=str(missing)):
    load_backbone(variables, missing)
  junk = tmp_path / "junk.npz"
  junk.write_text("not a zip file")
  with pytest.raises(ValueError, match=rf"{junk}.*not a readable \.npz"):
    load_backbone(variables, junk)
  with pytest.raises(ValueError, match=r"no 'batch_stats' collection"):
    save_backbone({"params": variables["params"]}, tmp_path / "x.npz")


# --- Input errors, before any layer runs (also under jit). ---

@pytest.mark.parametrize("shape,match", [
    ((64, 64, 3), r"expected an input of shape \(N, H, W, C\), but got shape \(64, 64, 3\)"),
    ((1, 64, 64, 0), r"no channels: shape \(1, 64, 64, 0\)"),
    ((1, 0, 64, 3), r"a 0x64 input is too small: the feature map is empty before conv1 "
                    r"\(needs at least 1x1\)"),
])
def test_bad_input_shapes(shape, match):
  model = InceptionBN(width=TINY)
  variables = _abstract_init(model, (1, 64, 64, 3))
  with pytest.raises(ValueError, match=match):
    _abstract_init(model, shape)
  with pytest.raises(ValueError, match=match):
    jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, jnp.zeros(shape))


def test_too_small_names_the_layer_where_the_map_vanishes(monkeypatch):
  # With the real paddings every input of at least 1x1 goes through (min size 1), so the
  # check is exercised with unpadded ("VALID") pools, under which small maps do vanish.
  assert inception_bn._min_input_size() == 1
  monkeypatch.setattr(inception_bn, "_pool_padding", lambda size, window, stride: (0, 0))
  need = inception_bn._min_input_size()
  assert all(n >= 1 for _, n in inception_bn._layer_sizes(need))
  assert any(n < 1 for _, n in inception_bn._layer_sizes(need - 1))
  # 20 -> conv1 10 -> pool1 4 -> conv2 4 -> pool2 1 -> inception_3a's 3x3 pool: nothing.
  with pytest.raises(ValueError, match=rf"InceptionBN: a 20x400 input is too small: the feature "
                                       rf"map is empty after inception_3a \(needs at least "
                                       rf"{need}x{need}\)"):
    _abstract_init(InceptionBN(width=TINY), (1, 20, 400, 3))
