"""Pure-JAX spatial transformer ops: grid generators, transforms and samplers.

Importing this package pulls in jax and numpy only.

>>> from stn_jax import ops
>>> import jax.numpy as jnp
>>> images = jnp.zeros((2, 28, 28, 1))
>>> theta = jnp.tile(jnp.array([1.0, 0, 0, 0, 1, 0]), (2, 1))
>>> ops.warp(images, theta, (28, 28)).shape
(2, 28, 28, 1)
"""

from stn_jax.ops.crops import CROP_METHODS, crop_and_resize
from stn_jax.ops.grids import (affine_grid, attention_grid, base_coordinates,
                               default_control_points, identity_grid, projective_grid,
                               tps_grid, tps_transform, tps_transform_points,
                               tps_warp_points)
from stn_jax.ops.pixel import (get_perspective_transform, invert_affine, normalized_to_pixel,
                               pixel_to_normalized, rotation_matrix, warp_affine,
                               warp_perspective)
from stn_jax.ops.sampling import MODES, PADDING_MODES, antialias_counts, sample, sample_separable
from stn_jax.ops.volumes import MODES_3D, affine_grid_3d, sample_3d, warp_3d
from stn_jax.ops.transforms import (SEPARABLE_PLATFORMS, TRANSFORMS, Transform, get_transform,
                                    use_separable, warp)

__all__ = [
    "CROP_METHODS",
    "MODES",
    "MODES_3D",
    "PADDING_MODES",
    "SEPARABLE_PLATFORMS",
    "TRANSFORMS",
    "Transform",
    "affine_grid",
    "affine_grid_3d",
    "antialias_counts",
    "attention_grid",
    "base_coordinates",
    "crop_and_resize",
    "default_control_points",
    "get_perspective_transform",
    "get_transform",
    "identity_grid",
    "invert_affine",
    "normalized_to_pixel",
    "pixel_to_normalized",
    "projective_grid",
    "rotation_matrix",
    "sample",
    "sample_3d",
    "sample_separable",
    "tps_grid",
    "tps_transform",
    "tps_transform_points",
    "tps_warp_points",
    "use_separable",
    "warp",
    "warp_3d",
    "warp_affine",
    "warp_perspective",
]
