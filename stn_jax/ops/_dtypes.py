"""The ops' dtype rule, shared by the grid generators and the samplers."""

import jax.numpy as jnp


def compute_dtype(dtype):
  """Coordinates are computed in at least float32: bfloat16 cannot hold pixel positions."""
  return jnp.promote_types(dtype, jnp.float32)
