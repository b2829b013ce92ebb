"""How many scatter instructions the optimised HLO of a jitted function holds, compiled as
the trainer and the benchmarks compile it.

The suite's fast-compile flags (conftest.py) turn XLA's CPU fusion emitters off, and XLA then
expands every scatter into a loop, which a count of ``scatter(`` would miss; the function is
therefore compiled with them on (a per-compilation option overrides the flag).
"""

import jax


def scatters(fn, *args) -> int:
  options = {"xla_cpu_use_fusion_emitters": True} if jax.default_backend() == "cpu" else None
  text = jax.jit(fn, compiler_options=options).lower(*args).compile().as_text()
  return sum(" scatter(" in line for line in text.splitlines())
