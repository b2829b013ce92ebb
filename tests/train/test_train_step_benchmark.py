"""The correctness checks of benchmarks/train_step.py, without its timing.

Its PyTorch twin must have our parameter count, our logits and loss at the
initial weights, and the trainer's losses and parameters over two steps; a twin
that copies the weights wrongly must fail those checks. Narrow networks on
random digits keep this fast. torch is not a test
dependency: without it the module is skipped.
"""

import sys

import jax
import numpy as np
import pytest

from experiment_configs import REPO

pytest.importorskip("torch")
sys.path.insert(0, str(REPO / "benchmarks"))
import train_step as bench  # noqa: E402  pylint: disable=wrong-import-position


def small_config(variant, batch_size=8):
  config = bench.load_config(variant, batch_size)
  with config.unlocked():  # a given width: no search for the parameter budget
    if config.model.endswith("cnn"):
      config.model_kwargs.filters = 6
    else:
      config.model_kwargs.hidden = 24
  return config


@pytest.mark.parametrize("variant", ["rts,st_cnn", "tc,st_fcn"])
def test_twin_matches_the_trainers_step(variant):
  config = small_config(variant)
  case = bench.setup_case(config, ["trainer"], synthetic=True)  # asserts inside
  model = bench.PreDistorted(config).model()
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                             np.zeros((1, *model.input_shape), np.float32)))
  assert case["num_params"] == sum(int(np.prod(p.shape))
                                   for p in jax.tree_util.tree_leaves(shapes["params"]))
  assert case["notes"]["trainer"]["param_rel_diff"] < 1e-3
  case["calls"]["torch"](1)  # the timed calls run
  case["calls"]["jax:trainer"](1)


def test_a_twin_with_the_wrong_flatten_order_fails(monkeypatch):
  class Unpermuted(bench.TorchTwin):
    def load(self, params):  # copies the first Dense's rows in NHWC order, as if NCHW
      self.classifier.flatten_from.clear()
      super().load(params)

  monkeypatch.setattr(bench, "TorchTwin", Unpermuted)
  with pytest.raises(AssertionError, match="logits"):
    bench.setup_case(small_config("rts,cnn"), ["trainer"], synthetic=True)


def test_off_identity_moves_only_the_regressor():
  params = {"classifier": {"fc_0": {"kernel": np.ones((3, 2), np.float32)}},
            "transformer": {"localization": {"fc_0": {"kernel": np.ones((4, 3), np.float32)}},
                            "localization_out": {"kernel": np.zeros((3, 6), np.float32),
                                                 "bias": np.array([1, 0, 0, 0, 1, 0], np.float32)}}}
  moved = bench.off_identity(params)
  assert moved["classifier"] is params["classifier"]
  assert moved["transformer"]["localization"] is params["transformer"]["localization"]
  out = moved["transformer"]["localization_out"]
  assert np.any(out["kernel"] != 0) and np.any(out["bias"] != params["transformer"][
      "localization_out"]["bias"])
  np.testing.assert_allclose(out["bias"], [1, 0, 0, 0, 1, 0], atol=0.05)
  assert bench.off_identity({"classifier": {}}) == {"classifier": {}}
