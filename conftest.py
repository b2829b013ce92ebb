"""Settings for the whole test session (tests/ and the doctests in stn_jax/).

The tests compile hundreds of small XLA programs and run each once or twice,
so compile time dominates them. On the CPU, XLA's LLVM optimisation passes
made compiling a BN-Inception or SVHN step take tens of seconds; without them
it takes about a second (measured on an SVHN model at width 1/32: the grad
step's compile went from 17.4 s to 0.9 s). Every assertion of the suite holds
with and without these flags. They are appended to any XLA_FLAGS already set,
before JAX starts its backend.
"""

import os

_FAST_COMPILE = ("--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
                 "--xla_cpu_use_fusion_emitters=false")
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE}".strip()
