"""Flax Linen modules built on :mod:`stn_jax.ops`: spatial transformers and the
layer stacks the paper's networks are made of."""

from stn_jax.nn.layers import AvgPool, Conv, Dense, LayerStack, MaxPool, output_hw
from stn_jax.nn.localization import (colocalization_localization, conv_localization,
                                     fc_localization, svhn_localization)
from stn_jax.nn.transformer import (MultiStreamTransformer, ParallelSpatialTransformers,
                                    SpatialTransformer, SpatialTransformer3D,
                                    is_localization_path,
                                    localization_mask)

__all__ = [
    "AvgPool",
    "Conv",
    "Dense",
    "LayerStack",
    "MaxPool",
    "MultiStreamTransformer",
    "ParallelSpatialTransformers",
    "SpatialTransformer",
    "SpatialTransformer3D",
    "colocalization_localization",
    "conv_localization",
    "fc_localization",
    "is_localization_path",
    "localization_mask",
    "output_hw",
    "svhn_localization",
]
