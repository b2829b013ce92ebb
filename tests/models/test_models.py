"""stn_jax.models: every registered network builds, runs forward and backward,
starts its transformers at the identity, and has the documented size."""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stn_jax import models, ops
from stn_jax.models import cub, summary

KEY = jax.random.key(0)

# (name, options): small widths where the paper's are large; every registered
# model appears at least once (checked below).
CASES = [
    ("fcn", dict(input_shape=(28, 28, 1), hidden=16)),
    ("cnn", dict(input_shape=(42, 42, 1), filters=4)),
    ("st_fcn", dict(input_shape=(42, 42, 1), hidden=16, transform="affine")),
    ("st_fcn", dict(input_shape=(28, 28, 1), hidden=16, transform="projective")),
    ("st_cnn", dict(input_shape=(42, 42, 1), filters=4, transform="tps")),
    ("st_cnn", dict(input_shape=(60, 60, 1), filters=4, transform="affine")),
    ("st_cnn", dict(input_shape=(28, 28, 1), filters=4, transform="projective")),
    ("2xst_fcn", dict(hidden=16)),
    ("colocalizer", {}),
    ("coloc_encoder", dict(filters=4)),
    ("svhn_cnn", dict(width=1 / 32)),
    ("st_cnn_single", dict(width=1 / 32)),
    ("st_cnn_multi", dict(width=1 / 32)),
    ("st_cnn_multi", dict(width=1 / 32, input_shape=(128, 128, 3))),
    ("cub_cnn", dict(width=1 / 16)),
    ("2xst_cnn", dict(width=1 / 16, input_size=448)),
    ("4xst_cnn", dict(width=1 / 16, input_size=224)),
]


def _input_shape(name, options):
  model = models.get_model(name, **options)
  return model, tuple(options.get("input_shape", model.input_shape))


def test_every_registered_model_is_exercised():
  assert {name for name, _ in CASES} == set(models.MODELS)


# BN-Inception's ~70 convolutions each compile their own initialiser on the
# CPU, ~12 s in all; the CUB models are initialised for real (and shown to
# start at the tiling) in test_transformers_start_at_identity. Here they get
# random variables of the right shapes, which is all forward/backward needs.
BN_INCEPTION_MODELS = ("cub_cnn", "2xst_cnn", "4xst_cnn")


def _filled_variables(model, x):
  shapes = jax.eval_shape(lambda x: model.init(KEY, x), x)
  rng = np.random.default_rng(0)

  def fill(path, s):
    name = path[-1].key
    if name == "var":
      return jnp.ones(s.shape, s.dtype)
    if name == "mean":
      return jnp.zeros(s.shape, s.dtype)
    return jnp.asarray(rng.normal(0, 0.1, s.shape), s.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


# The multi-stream CUB networks take 25-45 s each here (BN-Inception backbones on 448 and 224
# pixel inputs): with -m slow. Their one-stream backbone (cub_cnn) stays in the default run.
_LONG = ("2xst_cnn", "4xst_cnn")


@pytest.mark.parametrize("name,options", [
    pytest.param(n, o, marks=pytest.mark.slow) if n in _LONG else (n, o) for n, o in CASES],
    ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_forward_and_backward(name, options):
  model, shape = _input_shape(name, options)
  x = jax.random.uniform(jax.random.key(1), (2, *shape))
  if name in BN_INCEPTION_MODELS:
    variables = _filled_variables(model, x)
  else:
    variables = model.init(KEY, x)
  rngs = {"dropout": jax.random.key(2)}

  def loss(params):
    if "batch_stats" in variables:
      out, _ = model.apply({**variables, "params": params}, x, train=True, rngs=rngs,
                           mutable=["batch_stats"])
    else:
      out = model.apply({**variables, "params": params}, x, train=True, rngs=rngs)
    out = out[0] if isinstance(out, tuple) else out
    return jnp.sum(out ** 2), out

  grads, out = jax.jit(jax.grad(loss, has_aux=True))(variables["params"])
  leaves = jax.tree_util.tree_leaves(grads)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
  assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0
  expected = {"colocalizer": (2, 28, 28, 1), "svhn_cnn": (2, 5, 11), "st_cnn_single": (2, 5, 11),
              "st_cnn_multi": (2, 5, 11), "2xst_fcn": (2, 19), "cub_cnn": (2, 200),
              "2xst_cnn": (2, 200), "4xst_cnn": (2, 200)}
  if name == "coloc_encoder":
    # Two hidden layers (10x10 and 2x2 maps of 4 filters) and the 10 logits.
    assert out.shape == (2, 4 * 100 + 4 * 4 + 10)
  else:
    assert out.shape == expected.get(name, (2, 10))


# cub_cnn's identity check (15 s) too goes with -m slow.
@pytest.mark.parametrize("name,options", [
    pytest.param(n, o, marks=pytest.mark.slow) if n in _LONG + ("cub_cnn",) else (n, o)
    for n, o in CASES if n not in ("fcn", "cnn", "coloc_encoder", "svhn_cnn")])
def test_transformers_start_at_identity(name, options):
  """At initialisation every transformer's theta is its transform's identity and
  its output is its input resampled on the identity grid."""
  model, shape = _input_shape(name, options)
  x = jax.random.uniform(jax.random.key(1), (2, *shape))
  variables = model.init(KEY, x)
  _, state = model.apply(variables, x, mutable=["intermediates"])
  sown = jax.tree_util.tree_flatten_with_path(state.get("intermediates", {}))[0]
  thetas = [v for path, v in sown if path[-2].key == "theta"]
  grids = [v for path, v in sown if path[-2].key == "grid"]
  if name in ("2xst_cnn", "4xst_cnn"):
    # CUB: one shared transformer whose crops start tiling the image at scale 0.5.
    (theta,) = thetas
    n = int(name[0])
    expected = np.concatenate([np.full((n, 1), 0.5), cub.tiling(n)], -1)
    np.testing.assert_allclose(theta, np.broadcast_to(expected, (2, n, 3)), atol=1e-6)
    return
  if name == "cub_cnn":  # no transformer: it initialises, with BN statistics
    assert not thetas
    assert set(variables["batch_stats"]) == {"stream_0"}
    return
  expected_count = {"st_cnn_multi": 4, "2xst_fcn": 2}.get(name, 1)
  assert len(thetas) == expected_count
  transform = options.get("transform", {"colocalizer": "attention", "2xst_fcn": "tps"}.get(
      name, "affine"))
  identity = ops.get_transform(transform).identity_params
  for theta, grid in zip(thetas, grids):
    np.testing.assert_allclose(theta, np.tile(identity, (2, 1)), atol=1e-6)
    np.testing.assert_allclose(grid[0], ops.identity_grid(grid.shape[1:3]), atol=1e-5)


def test_st_output_is_the_input_at_initialisation():
  model = models.get_model("st_fcn", input_shape=(28, 28, 1), hidden=8)
  x = jax.random.uniform(jax.random.key(1), (2, 28, 28, 1))
  variables = model.init(KEY, x)
  st = model.transformer
  y, _ = st.apply({"params": variables["params"]["transformer"]}, x)
  np.testing.assert_allclose(y, x, atol=1e-5)


def test_two_transformers_feed_four_channels():
  """2xST-FCN: two 2-channel outputs concatenated to 4 channels, pooled to 21x21."""
  model = models.get_model("2xst_fcn", hidden=16)
  params = model.init(KEY, jnp.zeros((1, 42, 42, 2)))["params"]
  assert params["classifier"]["fc_0"]["kernel"].shape == (21 * 21 * 4, 16)
  assert set(params["transformer"]) == {"st_0", "st_1"}
  assert params["transformer"]["st_0"]["localization_out"]["bias"].shape == (32,)
  single = models.get_model("st_fcn", input_shape=(42, 42, 2), num_classes=19, hidden=16,
                            transform="tps")
  params = single.init(KEY, jnp.zeros((1, 42, 42, 2)))["params"]
  assert params["classifier"]["fc_0"]["kernel"].shape == (21 * 21 * 2, 16)


def test_encoder_applies_the_cnn_weights():
  cnn = models.get_model("cnn", input_shape=(28, 28, 1), filters=4)
  encoder = models.get_model("coloc_encoder", filters=4)
  x = jax.random.uniform(jax.random.key(1), (3, 28, 28, 1))
  variables = cnn.init(KEY, x)
  descriptor = encoder.apply(variables, x)
  np.testing.assert_allclose(descriptor[:, -10:], cnn.apply(variables, x), rtol=1e-6)


def test_svhn_multi_places_a_transformer_before_each_of_the_first_four_convs():
  model = models.get_model("st_cnn_multi", width=1 / 32)
  params = model.init(KEY, jnp.zeros((1, 64, 64, 3)))["params"]
  assert {k for k in params if k.startswith("st_")} == {"st_0", "st_1", "st_2", "st_3"}
  # Each localisation net is fc[32]-fc[32] (scaled by the width) on the feature
  # map it transforms: st_1 sees conv_0's pooled 32x32 output.
  assert params["st_1"]["localization"]["fc_0"]["kernel"].shape == (32 * 32 * 2, 1)
  single = models.get_model("st_cnn_single", width=1 / 32)
  params = single.init(KEY, jnp.zeros((1, 64, 64, 3)))["params"]
  assert {k for k in params if k.startswith("st_")} == {"st_0"}
  assert set(params["st_0"]["localization"]) == {"conv_0", "conv_2", "fc_3", "fc_4"}


def test_svhn_dropout_only_in_training():
  model = models.get_model("svhn_cnn", width=1 / 32)
  x = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3))
  variables = model.init(KEY, x)
  np.testing.assert_array_equal(model.apply(variables, x), model.apply(variables, x))
  a = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(3)})
  b = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(4)})
  assert not np.allclose(a, b)


def test_too_small_inputs_name_the_layer_and_size():
  with pytest.raises(ValueError, match=r"layer 2 \(conv\[4,7,1,0\]\) gets a 4x4 .* 16x16 input"):
    models.get_model("cnn", input_shape=(16, 16, 1), filters=4)
  with pytest.raises(ValueError,
                     match=r"CNN classifier: layer 2 \(conv\[width,7,1,0\]\) gets a 3x3"):
    models.get_model("st_cnn", input_shape=(28, 28, 1), pool_after_st=True)
  # (The SVHN convolutions are padded and its pools keep partial windows, so no
  # input makes one of its layers empty.)
  with pytest.raises(ValueError, match=r"SVHNNet: expected input of shape \(N, 64, 64, 3\)"):
    models.get_model("svhn_cnn", width=1 / 32).init(KEY, jnp.zeros((1, 128, 128, 3)))
  model = models.get_model("fcn", input_shape=(28, 28, 1), hidden=4)
  with pytest.raises(ValueError, match=r"expected input of shape \(N, 28, 28, 1\)"):
    model.init(KEY, jnp.zeros((1, 42, 42, 1)))


def test_registry_errors_list_what_is_known():
  with pytest.raises(ValueError, match=r"Unknown model 'resnet'; known models: .*st_cnn"):
    models.get_model("resnet")
  with pytest.raises(ValueError, match=r"Unknown option\(s\) \['hiden'\] .* accepts: .*hidden"):
    models.get_model("fcn", hiden=3)
  with pytest.raises(ValueError, match="Unknown transform 'affin'"):
    models.get_model("st_fcn", transform="affin")


def test_budget_is_met():
  for name, shape in [("fcn", (28, 28, 1)), ("st_cnn", (60, 60, 1))]:
    model = models.get_model(name, input_shape=shape)
    assert abs(models.count_params(model, shape) - 400_000) < 0.01 * 400_000


@pytest.mark.slow  # 25 s: builds every model of the table
def test_docs_models_table_matches_the_code():
  text = (pathlib.Path(__file__).parents[2] / "docs" / "models.md").read_text()
  table = re.findall(r"^\| (.+?) \| `(\S+)` \| (.*?) \| .*? \| ([\d,]+) \|", text, re.M)
  documented = [(e, n, int(p.replace(",", ""))) for e, n, _, p in table]
  computed = [(e, n, p) for e, _, n, _, p in summary.rows()]
  assert documented == computed, "docs/models.md is stale: python -m stn_jax.models.summary"


def test_cub_pretrained_backbone_goes_into_every_backbone(tmp_path):
  from stn_jax.models import inception_bn

  model = models.get_model("2xst_cnn", input_size=448, width=1 / 16)
  x = jax.ShapeDtypeStruct((1, 448, 448, 3), jnp.float32)
  shapes = jax.eval_shape(lambda x: model.init(KEY, x), x)
  assert cub.backbone_prefixes(model) == [("stream_0",), ("stream_1",),
                                          ("transformer", "localization", "backbone")]
  # A backbone checkpoint with recognisable values.
  backbone = jax.eval_shape(
      lambda x: inception_bn.InceptionBN(1 / 16).init(KEY, x, train=False),
      jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
  counter = iter(range(10**6))
  filled = jax.tree_util.tree_map(lambda s: np.full(s.shape, next(counter), np.float32), backbone)
  path = tmp_path / "inception.npz"
  inception_bn.save_backbone(filled, path)
  loaded = cub.load_pretrained(model, shapes, path)
  for prefix in cub.backbone_prefixes(model):
    sub = loaded["params"]
    for key in prefix:
      sub = sub[key]
    np.testing.assert_array_equal(sub["conv1"]["conv"]["kernel"],
                                  filled["params"]["conv1"]["conv"]["kernel"])
    stats = loaded["batch_stats"]
    for key in prefix:
      stats = stats[key]
    np.testing.assert_array_equal(stats["inception_5b"]["pool_proj"]["bn"]["var"],
                                  filled["batch_stats"]["inception_5b"]["pool_proj"]["bn"]["var"])
  # The heads are left as they were (shape-only here: not replaced by arrays).
  assert isinstance(loaded["params"]["classifier"]["kernel"], jax.ShapeDtypeStruct)
  with pytest.raises(ValueError, match="`input_size` must be 224 or 448"):
    models.get_model("4xst_cnn", input_size=300)


def test_readme_model_example_runs():
  readme = (pathlib.Path(__file__).parents[2] / "README.md").read_text()
  section = readme.split("## A spatial transformer in a Flax model", 1)[1].split("\n## ", 1)[0]
  code = re.findall(r"```python\n(.*?)```", section, re.S)[0]
  namespace = {}
  exec(compile(code, "README.md", "exec"), namespace)
  assert namespace["logits"].shape == (8, 10)
  inter = namespace["state"]["intermediates"]["transformer"]
  np.testing.assert_allclose(inter["theta"][0], np.tile([1.0, 0, 0, 0, 1, 0], (8, 1)))
  mask = namespace["loc_mask"]
  assert mask["transformer"]["localization_out"]["kernel"] is True
  assert mask["classifier"]["conv_0"]["kernel"] is False
