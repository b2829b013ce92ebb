"""Distorted MNIST (R, RTS, P, E, TC or plain digits), and the base of every MNIST task.

The MNIST tasks (this one and :mod:`stn_jax.tasks.mnist_addition`) read the digits with
:func:`stn_jax.datasets.load_mnist` (IDX files or TFDS), split a validation set off the
training digits, draw the paper's distortions on the device at every training step and
distort the validation and test sets once, with fixed seeds.
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from stn_jax.datasets.mnist import resolve_source
from stn_jax import models
from stn_jax.datasets import distortions, load_mnist, pipeline, split_train_validation
from stn_jax.errors import ConfigError
from stn_jax import tasks

__all__ = ["DistortedMnist", "MnistTask", "mnist_digits"]

# The input each distortion produces (None: plain 28x28 MNIST).
_SHAPES = {None: (28, 28, 1), "R": (28, 28, 1), "RTS": (42, 42, 1), "P": (28, 28, 1),
           "E": (28, 28, 1), "TC": (60, 60, 1)}


@functools.lru_cache(maxsize=4)
def mnist_digits(source, data_dir, num_validation, split_seed):
  """``(train, validation, test)`` MNIST ``(images, labels)`` pairs, the validation digits
  split off the training files by ``split_seed``; read once per process."""
  images, labels = load_mnist("train", data_dir, source=source)
  if num_validation >= len(images):
    raise ConfigError(f"data.num_validation ({num_validation}) leaves no training digits: the "
                      f"MNIST training files hold {len(images)}. Give a smaller "
                      "--config.data.num_validation.")
  train_idx, val_idx = split_train_validation(len(images), num_validation, seed=split_seed)
  test_images, test_labels = load_mnist("test", data_dir, source=source)
  return ((images[train_idx], labels[train_idx]), (images[val_idx], labels[val_idx]),
          (test_images, test_labels))


class MnistTask(tasks.Task):
  """What the MNIST tasks share: the digits of ``config.data`` (train, validation and test,
  read once), the model, and the evaluation batches of the sets that ``_fixed`` makes."""

  def __init__(self, config, distortion, input_shape):
    super().__init__(config)
    self.distortion = distortion
    self.input_shape = input_shape
    self._cache = {}

  def _digits(self):
    d = self.config.data
    train, val, test = mnist_digits(d.source, d.mnist_dir, d.num_validation, d.split_seed)
    if d.num_train is not None:
      train = (train[0][:d.num_train], train[1][:d.num_train])
    if d.num_eval is not None:
      val, test = ((a[:d.num_eval], b[:d.num_eval]) for a, b in (val, test))
    return {"train": train, "validation": val, "test": test}

  def model(self):
    return models.get_model(self.config.model, input_shape=self.input_shape,
                            **self.config.model_kwargs.to_dict())

  def _fixed(self, name):
    """The evaluation set ``name``: ``(images, labels)``, made once."""
    raise NotImplementedError

  def eval_batches(self, name, batch_size, process_index, process_count):
    images, labels = self._fixed(name)
    return pipeline.eval_batches(images, labels, batch_size=batch_size,
                                 process_index=process_index, process_count=process_count)


@tasks.register("distorted_mnist")
class DistortedMnist(MnistTask):
  """Classification of distorted MNIST digits (R, RTS, P, E, TC, or none).

  Training digits are distorted on the device with a key from the step, so
  every step sees fresh distortions. The validation and test sets are
  distorted once with fixed seeds (``data.validation_seed``, ``data.test_seed``):
  the same config evaluates on the same images.
  """

  def __init__(self, config):
    d = config.data
    if d.distortion not in _SHAPES:
      raise ConfigError(f"Unknown distortion {d.distortion!r}; known: "
                        f"{[k for k in _SHAPES if k]} or None for plain MNIST. Choose it with "
                        "the config's variant (e.g. distorted_mnist.py:rts,st_cnn).")
    super().__init__(config, d.distortion, _SHAPES[d.distortion])

  def train_iterator(self, process_index, process_count):
    images, labels = self._digits()["train"]
    return pipeline.train_iterator(images, labels, global_batch=self.config.batch_size,
                                   seed=self.config.seed, process_index=process_index,
                                   process_count=process_count)

  def device_batch(self, batch, key):
    if self.distortion is None:
      return batch["image"], batch["label"]
    images, _ = distortions.distort_batch(self.distortion, key, batch["image"][..., 0])
    return images, batch["label"]

  def _fixed(self, name):
    if name not in self._cache:
      images, labels = self._digits()[name]
      seed = self.config.data[f"{name}_seed"]
      if self.distortion is None:
        images = (images.astype(np.float32) / 255.0)[..., None]
      else:
        logging.info("Distorting the %s set (%d digits, %s, seed %d).", name, len(images),
                     self.distortion, seed)
        images, _ = distortions.fixed_set(self.distortion, images.astype(np.float32) / 255.0,
                                          seed)
      self._cache[name] = (images, labels)
    return self._cache[name]

  def describe(self):
    d = self.config.data
    sizes = {k: len(v[1]) for k, v in self._digits().items()}
    return {"dataset": f"mnist_{d.distortion or 'plain'}",
            "mnist_source": resolve_source(d.source, d.mnist_dir),
            "examples": sizes}
