"""The SVHN multi-digit task (paper section 4.2, supplementary 1.4), real or offline.

``config.data.dataset`` picks the data:

- ``'svhn'``: the real SVHN crops prepared by ``stn_jax.datasets.svhn`` (64 or
  128 px, ``config.data.size``). Training reads ``train`` plus ``extra`` when
  ``config.data.use_extra`` (as the paper's references [1, 2] do), less a
  seeded validation set of ``config.data.num_validation`` (5k, supplementary
  1.4); ``test`` is the official test split, for final numbers only.
- ``'mnist_numbers'``: the offline stand-in made of MNIST digits
  (``stn_jax.datasets.mnist_numbers``). It is NOT SVHN: it is named
  ``mnist_numbers`` in logs and results, and its numbers say nothing about
  SVHN. Training images are composed on the device every step from a fresh
  pool of training digits; validation and test images are composed once, with
  fixed seeds, from the validation and test digits.

The loss is the sum of the five per-position cross entropies (position ``j``
of a number with fewer digits has the label 10, "no digit"); the error is the
sequence error: a number counts as wrong unless all five positions are right.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax

from stn_jax.datasets.mnist import resolve_source
from stn_jax import models
from stn_jax.datasets import mnist_numbers, pipeline
from stn_jax.datasets.prepared import DatasetNotPreparedError
from stn_jax import tasks
from stn_jax.tasks import distorted_mnist as mnist_task

__all__ = ["DATASETS", "Svhn", "sequence_losses"]

DATASETS = ("svhn", mnist_numbers.NAME)
_SIZES = (64, 128)


def sequence_losses(logits, labels):
  """Per-number loss (summed over positions) and sequence error (0 or 1).

  Args:
    logits: ``(B, 5, 11)``.
    labels: ``(B, 5)`` integers in [0, 10].

  >>> logits = jnp.log(jnp.array([[[0.5, 0.5], [1.0, 1e-9]]]))  # 1 number, 2 positions
  >>> loss, error = sequence_losses(logits, jnp.array([[0, 0]]))
  >>> round(float(loss[0]), 4), float(error[0])  # -log(0.5) - log(1); argmax ties -> 0
  (0.6931, 0.0)
  >>> float(sequence_losses(logits, jnp.array([[0, 1]]))[1][0])  # one position wrong
  1.0
  """
  per_position = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  wrong = jnp.any(jnp.argmax(logits, -1) != labels, axis=-1)
  return per_position.sum(-1), wrong.astype(jnp.float32)


def _svhn_module():
  # Imports TFDS; only the real dataset needs it.
  from stn_jax.datasets import svhn  # pylint: disable=import-outside-toplevel
  return svhn


def _record_arrays(record):
  return {"image": np.asarray(record["image"], np.uint8),
          "label": np.asarray(record["label"], np.int32)}


@tasks.register("svhn")
class Svhn(tasks.Task):
  """SVHN multi-digit recognition; see the module docstring."""

  def __init__(self, config):
    super().__init__(config)
    d = config.data
    if d.dataset not in DATASETS:
      raise ValueError(f"Unknown SVHN dataset {d.dataset!r}; known: {', '.join(DATASETS)} "
                       "(mnist_numbers is the offline stand-in, not SVHN).")
    if d.size not in _SIZES:
      raise ValueError(f"data.size must be one of {_SIZES}, got {d.size!r}.")
    self.input_shape = (d.size, d.size, 3)
    self._cache = {}
    if d.dataset == "svhn":
      self._splits = self._svhn_splits()  # fails here, before anything compiles
    else:
      logging.warning("Training on %s, the offline stand-in made of MNIST digits. It is NOT "
                      "SVHN; its numbers say nothing about SVHN.", mnist_numbers.NAME)
      self._splits = None

  # ------------------------------------------------------------------ data

  def _svhn_splits(self):
    d = self.config.data
    svhn = _svhn_module()
    try:
      train = svhn.load("train", size=d.size, data_dir=d.data_dir)
      test = svhn.load("test", size=d.size, data_dir=d.data_dir)
      pool = train
      if d.use_extra:
        try:
          extra = svhn.load("extra", size=d.size, data_dir=d.data_dir)
        except ValueError:
          raise ValueError(
              "data.use_extra is set but the prepared SVHN has no 'extra' split: put "
              "extra.tar.gz in the manual directory and prepare again, or train on 'train' "
              "alone with --config.data.use_extra=False.") from None
        pool = pipeline.Concat([train, extra])
    except DatasetNotPreparedError as e:
      raise DatasetNotPreparedError(
          f"{e} Or, without SVHN, run the offline stand-in (MNIST-numbers, not SVHN) with "
          "the ':offline' variant of the svhn_* configs.") from None
    if d.num_validation >= len(pool):
      raise ValueError(f"data.num_validation ({d.num_validation}) must be smaller than the "
                       f"{len(pool)} training numbers.")
    return pipeline.holdout_splits(pool, test, num_validation=d.num_validation,
                                   seed=d.split_seed, num_train=d.num_train,
                                   num_eval=d.num_eval)

  def _digits(self):
    # The digit pools of the offline stand-in, split as distorted MNIST's.
    d = self.config.data
    train, val, test = mnist_task.mnist_digits(d.source, d.mnist_dir, d.num_validation,
                                               d.split_seed)
    if d.num_train is not None:
      train = (train[0][:d.num_train], train[1][:d.num_train])
    return {"train": train, "validation": val, "test": test}

  def _fixed_numbers(self, name):
    if name not in self._cache:
      d = self.config.data
      digits, labels = self._digits()[name]
      n = len(digits) if d.num_eval is None else d.num_eval
      seed = d[f"{name}_seed"]
      logging.info("Composing the %s %s set (%d numbers from %d digits, seed %d).",
                   mnist_numbers.NAME, name, n, len(digits), seed)
      pool = jnp.asarray(digits, jnp.float32) / 255.0
      key = jax.random.key(seed)
      images, numbers = [], []
      for j, start in enumerate(range(0, n, 500)):
        out = mnist_numbers.number_batch(jax.random.fold_in(key, j), pool, labels,
                                         min(500, n - start), d.size)
        images.append(np.asarray(out[0]))
        numbers.append(np.asarray(out[1], np.int32))
      self._cache[name] = (np.concatenate(images), np.concatenate(numbers))
    return self._cache[name]

  # ------------------------------------------------------------------ task protocol

  def model(self):
    return models.get_model(self.config.model, input_shape=self.input_shape,
                            **self.config.model_kwargs.to_dict())

  def train_iterator(self, process_index, process_count):
    c = self.config
    if self._splits is not None:
      return pipeline.source_train_iterator(
          self._splits["train"], global_batch=c.batch_size, seed=c.seed,
          transform=_record_arrays, process_index=process_index, process_count=process_count)
    images, labels = self._digits()["train"]
    # Each number takes up to five digits: a pool of 5 per image, fresh every step.
    return pipeline.train_iterator(images, labels, global_batch=mnist_numbers.MAX_DIGITS
                                   * c.batch_size, seed=c.seed, process_index=process_index,
                                   process_count=process_count)

  def device_batch(self, batch, key):
    if self._splits is not None:
      return batch["image"].astype(jnp.float32) / 255.0, batch["label"]
    images, labels, _ = mnist_numbers.number_batch(
        key, batch["image"][..., 0], batch["label"], self.config.batch_size,
        self.config.data.size)
    return images, labels

  def losses(self, logits, labels):
    return sequence_losses(logits, labels)

  def eval_batches(self, name, batch_size, process_index, process_count):
    if self._splits is not None:
      return pipeline.source_eval_batches(
          self._splits[name], transform=_svhn_module().to_batch, batch_size=batch_size,
          process_index=process_index, process_count=process_count)
    images, labels = self._fixed_numbers(name)
    return pipeline.eval_batches(images, labels, batch_size=batch_size,
                                 process_index=process_index, process_count=process_count)

  def describe(self):
    d = self.config.data
    if self._splits is not None:
      sizes = {k: len(v) for k, v in self._splits.items()}
      return {"dataset": f"svhn_{d.size}px", "svhn_extra": bool(d.use_extra),
              "examples": sizes}
    sizes = {"train_digits": len(self._digits()["train"][1])}
    sizes.update({k: len(self._fixed_numbers(k)[1]) for k in self.eval_sets()})
    return {"dataset": f"{mnist_numbers.NAME}_{d.size}px",
            "mnist_source": resolve_source(d.source, d.mnist_dir),
            "note": "NOT SVHN: an offline stand-in made of MNIST digits; its numbers say "
                    "nothing about SVHN",
            "examples": sizes}
