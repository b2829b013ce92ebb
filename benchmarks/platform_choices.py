"""Which of stn_jax's platform-dependent choices (measured on the project's CPU) are on where.

    python benchmarks/platform_choices.py [--platforms cpu,gpu,tpu]

The choices:

- ``compiler_options``: the trainer's XLA options (``stn_jax.runtime.xla.compiler_options``:
  convolutions kept out of YNNPACK fusions); ``None`` off the CPU.
- ``keep_freed_memory``: glibc's ``mallopt`` so that freed buffers are reused
  (``stn_jax.runtime.xla.keep_freed_memory``); False off the CPU. It is lru-cached and
  really calls ``mallopt``, so for ``'cpu'`` it is called in a throwaway subprocess.
- ``conv_input_grad``: the convolution's input gradient (``stn_jax.nn.conv``):
  ``input_grad_method`` picks col2im, rows or FFT by the shapes alone, and
  ``lax.platform_dependent`` in ``_conv_bwd`` applies that pick on the CPU only, XLA's own
  gradient elsewhere. Checked here, not read: the gradient of three probe layers (one per
  way) is exported with ``jax.export`` for the platform (no device of it needed) and its
  StableHLO says which way it took.
- ``max_pool_grad``: ``stn_jax.nn.pooling.max_pool``'s gradient: elementwise on the CPU,
  XLA's ``select_and_scatter`` elsewhere (``lax.platform_dependent``); checked the same way.
- ``separable_sampler``: ``stn_jax.ops.use_separable`` for an axis-aligned transform with
  no explicit choice: on the platforms of ``stn_jax.ops.SEPARABLE_PLATFORMS`` only (TPU).

``choices(platform)`` returns them as ``{name: (value, one-line reason)}``; run as a
script it prints a markdown table per platform (default: JAX's default backend).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
from jax import export

# The platform names of jax.export (and lax.platform_dependent) for JAX's backend names.
EXPORT_PLATFORMS = {"cpu": "cpu", "gpu": "cuda", "cuda": "cuda", "rocm": "rocm", "tpu": "tpu"}

# One probe layer per way of stn_jax.nn.conv.input_grad_method on the CPU:
# name -> (NHWC input shape, HWIO kernel shape, strides).
CONV_PROBES = {
    "col2im": ((8, 7, 7, 32), (7, 7, 32, 64), (1, 1)),      # 1x1 output (the ST-CNN's 7x7)
    "rows": ((8, 28, 28, 1), (5, 5, 1, 16), (2, 2)),        # few channels, stride 2
    "fft": ((64, 60, 60, 32), (7, 7, 32, 32), (1, 1)),      # 7x7, contributions > 32 MiB
}
_DIMS = ("NHWC", "HWIO", "NHWC")


def export_platform(platform: str) -> str:
  try:
    return EXPORT_PLATFORMS[platform]
  except KeyError:
    raise ValueError(f"unknown platform {platform!r}; known: {sorted(EXPORT_PLATFORMS)}") from None


def _lowered(fn, platform, *shapes):
  """The StableHLO text of ``jax.jit(fn)`` exported for ``platform`` (abstract shapes only)."""
  specs = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
  exported = export.export(jax.jit(fn), platforms=[export_platform(platform)])(*specs)
  return exported.mlir_module()


def _count(op, text):
  return len(re.findall(rf"stablehlo\.{op}\b", text))


def conv_grad_way(platform: str, x_shape, w_shape, strides) -> str:
  """Which way the input gradient of ``stn_jax.nn.conv.conv`` is computed when lowered for
  ``platform``, read off the StableHLO of the gradient of a sum of squares: ``"fft"`` (FFTs),
  ``"col2im"`` (a dot_general, no input-gradient convolution), ``"rows"`` (one convolution
  per kernel row) or ``"xla"`` (forward, kernel and input gradient: three convolutions)."""
  from stn_jax.nn import conv  # pylint: disable=import-outside-toplevel

  def loss(x, w):
    return jnp.sum(conv.conv(x, w, strides, "VALID", dimension_numbers=_DIMS) ** 2)

  text = _lowered(jax.grad(loss, argnums=(0, 1)), platform, x_shape, w_shape)
  convolutions = _count("convolution", text)
  if _count("fft", text):
    return "fft"
  if _count("dot_general", text):
    return "col2im"
  if convolutions > 3:
    return "rows"
  return "xla" if convolutions == 3 else f"unknown ({convolutions} convolutions)"


def pool_grad_way(platform: str) -> str:
  """``"elementwise"`` or ``"select_and_scatter"`` (XLA's): the gradient of
  ``stn_jax.nn.pooling.max_pool`` lowered for ``platform``."""
  from stn_jax.nn import pooling  # pylint: disable=import-outside-toplevel

  text = _lowered(jax.grad(lambda x: jnp.sum(pooling.max_pool(x, 2) ** 2)), platform,
                  (8, 34, 34, 16))
  return "select_and_scatter" if _count("select_and_scatter", text) else "elementwise"


def keep_freed_memory(platform: str) -> bool:
  """``stn_jax.runtime.xla.keep_freed_memory(platform)``; for the CPU in a throwaway
  subprocess (it calls glibc's mallopt and caches its answer)."""
  from stn_jax.runtime import xla  # pylint: disable=import-outside-toplevel
  if platform != "cpu":  # returns before any mallopt
    return xla.keep_freed_memory(platform)
  code = f"from stn_jax.runtime import xla; print(xla.keep_freed_memory({platform!r}))"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  return out.stdout.strip().splitlines()[-1] == "True"


def choices(platform: str) -> dict:
  """``{name: (value, one-line reason)}`` of the platform-dependent choices on ``platform``
  (``'cpu'``, ``'gpu'``, ``'tpu'``)."""
  from stn_jax import ops  # pylint: disable=import-outside-toplevel
  from stn_jax.nn import conv  # pylint: disable=import-outside-toplevel
  from stn_jax.runtime import xla  # pylint: disable=import-outside-toplevel

  export_platform(platform)
  on_cpu = platform == "cpu"
  options = xla.compiler_options(platform)
  rule = {name: conv.input_grad_method(x, w, s, ((0, 0), (0, 0)))
          for name, (x, w, s) in CONV_PROBES.items()}
  ways = {name: conv_grad_way(platform, *probe) for name, probe in CONV_PROBES.items()}
  shown = ", ".join(f"{name} layer: {way}" for name, way in ways.items())
  separable = ops.use_separable(transform="attention", platform=platform)
  return {
      "compiler_options": (
          options,
          "YNNPACK fusions without convolutions (runtime/xla.py, measured on the CPU)"
          if options else "XLA's defaults (the YNNPACK option is CPU-only: runtime/xla.py)"),
      "keep_freed_memory": (
          keep_freed_memory(platform),
          "glibc mallopt: no mmap, no trim, freed buffers reused (CPU under glibc only)"
          if on_cpu else "off: runtime/xla.py applies mallopt on the CPU only"),
      "conv_input_grad": (
          shown,
          f"the shape rule's pick (input_grad_method: {', '.join(rule.values())}) applies on "
          "the CPU only (lax.platform_dependent in nn/conv.py _conv_bwd); exported StableHLO"
          if on_cpu else "XLA's own gradient: nn/conv.py applies its CPU rule through "
          "lax.platform_dependent(cpu=..., default=XLA's); exported StableHLO"),
      "max_pool_grad": (
          pool_grad_way(platform),
          "nn/pooling.py: elementwise gradient on the CPU (lax.platform_dependent), "
          "XLA's select_and_scatter elsewhere; exported StableHLO"),
      "separable_sampler": (
          separable,
          f"ops.use_separable: axis-aligned transforms take the separable sampler on "
          f"SEPARABLE_PLATFORMS={tuple(ops.SEPARABLE_PLATFORMS)} only, the gather elsewhere"),
  }


def table(platforms) -> list:
  lines = ["| platform | choice | value | why |", "|---|---|---|---|"]
  for platform in platforms:
    for name, (value, reason) in choices(platform).items():
      lines.append(f"| {platform} | {name} | `{value}` | {reason} |")
  return lines


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--platforms", help="comma-separated, of cpu,gpu,tpu "
                                          "(default: JAX's default backend)")
  args = parser.parse_args(argv)
  platforms = [p for p in (args.platforms or jax.default_backend()).split(",") if p]
  platforms = list(dict.fromkeys(platforms))  # in order, once each
  print("\n".join(table(platforms)))


if __name__ == "__main__":
  main()
