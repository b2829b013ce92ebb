"""Datasets for the paper's experiments.

- MNIST from its IDX files (``stn_jax.datasets.mnist``), or through TFDS where
  it can download (``load_mnist(..., source='tfds')``);
- SVHN multi-digit and CUB-200-2011, prepared once into ArrayRecord files by our
  own TFDS builders (``python -m stn_jax.datasets.prepare``; see
  ``stn_jax.datasets.prepared`` and ``data/README.md``);
- the paper's distortions (``distortions``), the offline SVHN stand-in
  (``mnist_numbers``) and the grain pipelines (``pipeline``).

Importing this package pulls in NumPy and the standard library only; JAX,
TensorFlow Datasets and grain stay out until a loader needs them.
"""

from stn_jax.datasets.mnist import load_mnist, split_train_validation, MnistNotFoundError
from stn_jax.datasets.prepared import DatasetNotPreparedError

__all__ = ["DatasetNotPreparedError", "MnistNotFoundError", "load_mnist",
           "split_train_validation"]
