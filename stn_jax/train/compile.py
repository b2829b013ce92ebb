"""XLA compiler options for the trainer's jitted steps, chosen per platform.

On the CPU, jaxlib 0.10.2's XLA hands forward and weight-gradient convolutions to
YNNPACK fusions (``__ynn_fusion``) by default: its
``xla_cpu_experimental_ynn_fusion_type`` defaults to INDIVIDUAL_DOT,
INDIVIDUAL_CONVOLUTION and REDUCE (as the ``debug_options`` file written by
``--xla_dump_to`` shows). On the paper's MNIST networks those convolutions are
slower than XLA's own: measured by ``python benchmarks/train_step.py
--variants xla_default,trainer`` on the 2-core development machine, with and
without convolutions in the list (docs/performance.md, "Convolutions out of
YNNPACK"), the CNN's training step is 2.1-3.5x faster without them and the
ST-CNN's 1.06-1.3x; the FCNs compile to the same program. Dots and reductions
stay with YNNPACK. Nothing changes on GPUs and TPUs.

If this jaxlib does not know the option (an older XLA, or a newer one that
renamed it), no options are given, rather than failing every compilation.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Optional

import jax
import numpy as np

__all__ = ["compiler_options", "ynn_convolutions"]

_CPU = {"xla_cpu_experimental_ynn_fusion_type":
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}


@functools.lru_cache(maxsize=None)
def _accepted(platform: str, items: tuple) -> bool:
  """Whether this jaxlib compiles with ``items`` (tried once, on a scalar)."""
  try:
    x = jax.device_put(np.float32(0), jax.local_devices(backend=platform)[0])
    jax.jit(lambda v: v + 1, compiler_options=dict(items)).lower(x).compile()
    return True
  except Exception as e:  # pylint: disable=broad-except  (XLA raises its own error types)
    logging.warning("XLA does not take the compiler options %s (%s); the steps compile "
                    "with its defaults.", dict(items), str(e).splitlines()[0])
    return False


def compiler_options(platform: Optional[str] = None) -> Optional[dict]:
  """The options for ``jax.jit(..., compiler_options=...)`` of the training and evaluation
  steps on ``platform``.

  Args:
    platform: ``'cpu'``, ``'gpu'``, ``'tpu'``, ...; ``None``: JAX's default backend.

  Returns:
    A dict of XLA options, or ``None`` (XLA's defaults).

  >>> compiler_options('tpu') is None
  True
  """
  platform = jax.default_backend() if platform is None else platform
  if platform != "cpu" or not _accepted(platform, tuple(sorted(_CPU.items()))):
    return None
  return dict(_CPU)


def ynn_convolutions(hlo_text: str) -> tuple[int, int]:
  """``(convolutions inside YNNPACK fusions, all convolutions)`` of an optimised HLO module's
  text (``jax.jit(f).lower(...).compile().as_text()``): what the option above changes."""
  ynn = set(re.findall(r"calls=(%[\w.\-]+)[^\n]*__ynn_fusion", hlo_text))
  inside = total = 0
  for name, body in re.findall(r"\n(?:ENTRY )?(%[\w.\-]+) [^\n]*\{\n(.*?)\n\}", hlo_text, re.S):
    n = len(re.findall(r" convolution\(", body))
    total += n
    inside += n if name in ynn else 0
  return inside, total
