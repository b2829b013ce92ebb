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
stay with YNNPACK: without its reductions (``--variants trainer,dots_only``) the
FCN steps were 4-21% slower and the others within noise, though the samplers'
few-channel sums gain (docs/performance.md). Nothing changes on GPUs and TPUs.

If this jaxlib does not know the option (an older XLA, or a newer one that
renamed it), no options are given, rather than failing every compilation.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import re
import sys
from typing import Optional

import jax
import numpy as np

__all__ = ["compiler_options", "keep_freed_memory", "ynn_convolutions"]

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


# glibc's mallopt parameters.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


@functools.lru_cache(maxsize=None)
def keep_freed_memory(platform: Optional[str] = None) -> bool:
  """On a CPU under glibc, lets the process reuse the memory of freed buffers.

  XLA's CPU executable takes its temporary buffers from ``malloc`` at every call. glibc
  serves a large request with a fresh ``mmap`` and unmaps it when it is freed (its mmap
  threshold cannot be raised past 32 MiB at run time), and gives the top of its heap
  back to the system past a trim threshold: either way every step faults its buffers'
  pages in anew. On the ST-FCN at TC, batch 256 (its temporaries pass 32 MiB), that was
  half of the sampler's time and the step ran at 0.6x PyTorch's speed. This turns off
  glibc's use of ``mmap`` and its trimming (``mallopt(M_MMAP_MAX, 0)``, ``M_TRIM_THRESHOLD``
  out of reach), so freed memory is reused from the heap; the process keeps its peak
  memory instead of returning it. Measured in docs/performance.md ("Freed memory kept").

  Called by the trainer and the co-localisation loop; does nothing (returns False) off
  the CPU, off Linux, or where ``mallopt`` cannot be found.
  """
  platform = jax.default_backend() if platform is None else platform
  if platform != "cpu" or not sys.platform.startswith("linux"):
    return False
  try:
    mallopt = ctypes.CDLL("libc.so.6").mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  return bool(mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
