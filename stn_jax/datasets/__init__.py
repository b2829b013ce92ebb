"""Datasets for the paper's experiments, as NumPy arrays.

Today: MNIST from its IDX files (see ``stn_jax.datasets.mnist`` and
``data/README.md``). Importing this package pulls in NumPy and the standard
library only; JAX, TensorFlow and TFDS stay out until a loader needs them.
"""

from stn_jax.datasets.mnist import load_mnist, split_train_validation, MnistNotFoundError

__all__ = ["MnistNotFoundError", "load_mnist", "split_train_validation"]
