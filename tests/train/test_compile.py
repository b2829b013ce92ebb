"""The trainer's compiler options (stn_jax.runtime.xla) and trainer.build_train_step:
on the CPU the training step's convolutions stay out of YNNPACK, elsewhere nothing
changes, and an option this jaxlib refuses falls back to XLA's defaults."""


import jax
import ml_collections
import numpy as np
import pytest

from stn_jax.runtime import xla as compile_lib
from stn_jax.train import classifier as trainer
from experiment_configs import load_config


def convolutions(hlo_text):
  """(convolutions inside YNNPACK fusions, all convolutions) of an optimised HLO module."""
  return compile_lib.ynn_convolutions(hlo_text)


def test_options_per_platform():
  assert compile_lib.compiler_options("cpu") == {
      "xla_cpu_experimental_ynn_fusion_type":
      "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}
  for platform in ("gpu", "cuda", "rocm", "tpu"):
    assert compile_lib.compiler_options(platform) is None


def test_an_option_xla_refuses_falls_back_to_its_defaults(monkeypatch, caplog):
  monkeypatch.setattr(compile_lib, "_CPU", {"xla_cpu_experimental_ynn_fusion_type": "NO_SUCH"})
  assert compile_lib.compiler_options("cpu") is None
  assert "does not take the compiler options" in caplog.text


def test_the_cpu_training_step_keeps_convolutions_out_of_ynnpack():
  if jax.default_backend() != "cpu":
    pytest.skip("a CPU-only option")
  config = load_config("distorted_mnist", "rts,st_cnn,smoke")
  train_step, state, make_batch = trainer.build_train_step(config)
  n = config.batch_size
  batch = make_batch({"image": np.random.default_rng(0).uniform(0, 1, (n, 28, 28, 1))
                               .astype(np.float32), "label": np.arange(n, dtype=np.int32) % 10})
  inside, total = convolutions(train_step.lower(state, batch).compile().as_text())
  # At least the four forward convolutions (input gradients may be products: stn_jax.nn.conv).
  assert total >= 4 and inside == 0
  # XLA's own default would put them there: the option is what keeps them out.
  default = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,"
             "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION,LIBRARY_FUSION_TYPE_REDUCE"}
  inside, _ = convolutions(train_step.lower(state, batch).compile(default).as_text())
  assert inside > 0
  # build_train_step gives the trainer's step, ready to run.
  state, metrics = train_step(state, batch)
  assert int(state.step) == 1 and np.isfinite(float(metrics["loss"]))


def test_the_colocalisation_steps_get_the_trainers_options(monkeypatch):
  from stn_jax.colocalisation import trainer as colocalisation  # pylint: disable=import-outside-toplevel
  seen = []
  monkeypatch.setattr(colocalisation.jax, "jit",
                      lambda fn, **kwargs: seen.append(kwargs.get("compiler_options")) or fn)
  monkeypatch.setattr(compile_lib, "compiler_options", lambda platform=None: {"chosen": "here"})
  config = ml_collections.ConfigDict({"batch_size": 4, "margin": 1.0,
                                      "random_crop": "same_scale", "normalize_features": True,
                                      "learn_scale": True})
  colocalisation._make_steps(None, None, None, None, config)  # pylint: disable=protected-access
  assert seen == [{"chosen": "here"}] * 2


def test_freed_memory_is_kept_on_the_cpu_only(monkeypatch):
  calls = []
  monkeypatch.setattr(compile_lib.ctypes, "CDLL", lambda name: type("L", (), {
      "mallopt": _Mallopt(calls)})())
  compile_lib.keep_freed_memory.cache_clear()
  try:
    assert compile_lib.keep_freed_memory("tpu") is False and not calls
    if not compile_lib.sys.platform.startswith("linux"):
      pytest.skip("glibc's mallopt is called on Linux only")
    assert compile_lib.keep_freed_memory("cpu") is True
    assert calls == [(-4, 0), (-1, 2**31 - 1)]  # no mmap, no trimming
  finally:
    compile_lib.keep_freed_memory.cache_clear()


class _Mallopt:
  def __init__(self, calls):
    self.calls, self.argtypes, self.restype = calls, None, None

  def __call__(self, param, value):
    self.calls.append((param, value))
    return 1
