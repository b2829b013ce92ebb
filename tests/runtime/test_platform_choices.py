"""The choices measured on the project's CPU stay on the CPU: the trainer's XLA options,
glibc's mallopt, the convolution's and the max pool's own gradients; and the separable
sampler is the TPU's default only. The gradients are checked on what they lower to for each
platform (``jax.export``, which needs no device of that platform), through
benchmarks/platform_choices.py, which the device check prints."""
# pylint: disable=protected-access

import sys

import pytest

from experiment_configs import REPO
from stn_jax import ops
from stn_jax.nn import conv
from stn_jax.runtime import xla

sys.path.insert(0, str(REPO / "benchmarks"))
import platform_choices  # noqa: E402  pylint: disable=wrong-import-position

OTHERS = ("gpu", "tpu")


def test_the_trainers_xla_options_are_for_the_cpu_only():
  assert xla.compiler_options("cpu") == xla._CPU
  for platform in OTHERS:
    assert xla.compiler_options(platform) is None


def test_freed_memory_is_kept_on_the_cpu_only():
  for platform in OTHERS:  # returns before calling mallopt: safe in this process
    assert xla.keep_freed_memory(platform) is False
  if sys.platform.startswith("linux"):  # in a subprocess: it really calls mallopt
    assert platform_choices.keep_freed_memory("cpu") is True


def test_the_probe_layers_are_the_ones_the_rule_sends_each_way():
  for name, (x, w, strides) in platform_choices.CONV_PROBES.items():
    assert conv.input_grad_method(x, w, strides, ((0, 0), (0, 0))) == name


@pytest.mark.parametrize("platform", ["cpu", *OTHERS])
def test_the_convolutions_own_gradients_lower_on_the_cpu_only(platform):
  for name, probe in platform_choices.CONV_PROBES.items():
    way = platform_choices.conv_grad_way(platform, *probe)
    assert way == (name if platform == "cpu" else "xla"), (platform, name)


@pytest.mark.parametrize("platform", ["cpu", *OTHERS])
def test_the_max_pools_own_gradient_lowers_on_the_cpu_only(platform):
  expected = "elementwise" if platform == "cpu" else "select_and_scatter"
  assert platform_choices.pool_grad_way(platform) == expected


def test_the_separable_sampler_is_the_tpus_default_only():
  assert ops.SEPARABLE_PLATFORMS == ("tpu",)
  for platform in ("cpu", "gpu"):
    assert ops.use_separable(transform="attention", platform=platform) is False
  assert ops.use_separable(transform="attention", platform="tpu") is True
  assert ops.use_separable(transform="affine", platform="tpu") is False  # not axis-aligned
  assert ops.use_separable(transform="attention", separable=True, platform="gpu") is True


def test_the_table_names_every_choice_with_a_reason():
  got = platform_choices.choices("gpu")
  assert set(got) == {"compiler_options", "keep_freed_memory", "conv_input_grad",
                      "max_pool_grad", "separable_sampler"}
  assert got["compiler_options"][0] is None and got["separable_sampler"][0] is False
  assert all(isinstance(reason, str) and reason for _, reason in got.values())
  lines = platform_choices.table(["gpu"])
  assert lines[0].startswith("| platform |") and len(lines) == 2 + len(got)
  with pytest.raises(ValueError, match="unknown platform"):
    platform_choices.choices("metal")
