"""MNIST addition (supplementary 1.1): the sum of two digits, each under its own RTS."""

from __future__ import annotations

import logging

import jax
import numpy as np

from stn_jax.datasets.mnist import resolve_source
from stn_jax import models
from stn_jax.datasets import distortions, pipeline
from stn_jax import tasks
from stn_jax.tasks import distorted_mnist as mnist_task

__all__ = ["MnistAddition"]


class _Grouped:
  """Regroups each host batch of ``k * b`` digits into ``b`` rows of ``k`` digits.

  Keeps the wrapped grain iterator's ``get_state``/``set_state``, so a run
  resumes with the same groups.
  """

  def __init__(self, iterator, k):
    self._it, self._k = iterator, k

  def __iter__(self):
    return self

  def __next__(self):
    batch = next(self._it)
    return {key: v.reshape(v.shape[0] // self._k, self._k, *v.shape[1:])
            for key, v in batch.items()}

  def get_state(self):
    return self._it.get_state()

  def set_state(self, state):
    self._it.set_state(state)


@tasks.register("mnist_addition")
class MnistAddition(mnist_task.MnistTask):
  """MNIST addition (supplementary 1.1): two digits, each under its own RTS, one per
  channel of a 42x42x2 input; the label is their sum (19 classes, 0-18).

  Training pairs are the consecutive digits of each process's shuffled stream,
  distorted on the device every step. An evaluation set pairs every digit of
  the split with a partner chosen by a seeded permutation, then distorts both
  with keys from the same seed: the set has as many pairs as the split digits.
  """

  NUM_CLASSES = 19
  examples_per_input = 2  # a pair of digits

  def __init__(self, config):
    super().__init__(config, "addition", (42, 42, 2))

  def model(self):
    kwargs = {"num_classes": self.NUM_CLASSES, **self.config.model_kwargs.to_dict()}
    return models.get_model(self.config.model, input_shape=self.input_shape, **kwargs)

  def train_iterator(self, process_index, process_count):
    images, labels = self._digits()["train"]
    digits = pipeline.train_iterator(images, labels, global_batch=2 * self.config.batch_size,
                                     seed=self.config.seed, process_index=process_index,
                                     process_count=process_count)
    return _Grouped(digits, 2)

  def device_batch(self, batch, key):
    digits = batch["image"][..., 0]  # (B, 2, 28, 28)
    images, _ = distortions.addition_batch(key, digits[:, 0], digits[:, 1])
    return images, batch["label"].sum(axis=1)

  def _fixed(self, name):
    if name not in self._cache:
      images, labels = self._digits()[name]
      seed = self.config.data[f"{name}_seed"]
      partner = np.random.default_rng(seed).permutation(len(images))
      digits = images.astype(np.float32) / 255.0
      key = jax.random.key(seed)
      parts = []
      logging.info("Making the %s addition set (%d pairs, seed %d).", name, len(images), seed)
      for j, start in enumerate(range(0, len(images), 1000)):
        a = digits[start:start + 1000]
        b = digits[partner[start:start + 1000]]
        parts.append(np.asarray(distortions.addition_batch(jax.random.fold_in(key, j), a, b)[0]))
      self._cache[name] = (np.concatenate(parts), (labels + labels[partner]).astype(np.int32))
    return self._cache[name]

  def describe(self):
    sizes = {k: len(v[1]) for k, v in self._digits().items()}
    d = self.config.data
    return {"dataset": "mnist_addition", "mnist_source": resolve_source(d.source, d.mnist_dir),
            "examples": sizes}
