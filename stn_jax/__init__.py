"""stn_jax: Spatial Transformer Networks in JAX.

The top-level package stays light on purpose: ``import stn_jax.ops`` must pull in
jax and numpy only, so nothing heavier (flax, tfds, grain, orbax) is imported here.
"""

__version__ = "0.1.0"
