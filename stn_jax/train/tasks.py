"""What differs between the experiments: data, on-device preparation, loss and errors.

A task gives the trainer:

- ``model()``: the Flax module, and ``input_shape`` for its initialisation;
- ``train_iterator(process_index, process_count)``: host batches of numpy
  arrays (a grain iterator, or a wrapper of one, with ``get_state``/``set_state``);
- ``device_batch(batch, key)``: inside the jitted step, on the global batch,
  makes the network's input and labels (the paper's distortions are drawn here,
  fresh every step);
- ``losses(outputs, labels)``: per-example loss and error (0 or 1); training
  minimises the mean loss, evaluation sums both over the unmasked examples;
- ``eval_sets()``: names of the held-out sets, and ``eval_batches(name, ...)``
  for each: fixed, padded, masked batches;
- ``describe()``: what the data was, for logs and ``results.json``;
- optionally ``eval_forward(forward, images)``: the evaluation outputs, given
  ``forward`` (the network in evaluation mode); e.g. CUB averages 10 crops.
  Without it, evaluation uses ``forward(images)``.

Tasks other than distorted MNIST live in their own modules, imported when
``make_task`` first needs them (``_LAZY``).
"""

from __future__ import annotations

import functools
import importlib
import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax

from stn_jax import models
from stn_jax.datasets import distortions, load_mnist, pipeline, split_train_validation
from stn_jax.errors import ConfigError

__all__ = ["TASKS", "DistortedMnist", "MnistAddition", "make_task"]

# The input each distortion produces (None: plain 28x28 MNIST).
_SHAPES = {None: (28, 28, 1), "R": (28, 28, 1), "RTS": (42, 42, 1), "P": (28, 28, 1),
           "E": (28, 28, 1), "TC": (60, 60, 1)}


def _softmax_errors(logits, labels):
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return loss, (jnp.argmax(logits, -1) != labels).astype(jnp.float32)


@functools.lru_cache(maxsize=4)
def _mnist(source, data_dir, num_validation, split_seed):
  """(train, validation, test) digit arrays, read once per process."""
  images, labels = load_mnist("train", data_dir, source=source)
  if num_validation >= len(images):
    raise ConfigError(f"data.num_validation ({num_validation}) leaves no training digits: the "
                      f"MNIST training files hold {len(images)}. Give a smaller "
                      "--config.data.num_validation.")
  train_idx, val_idx = split_train_validation(len(images), num_validation, seed=split_seed)
  test_images, test_labels = load_mnist("test", data_dir, source=source)
  return ((images[train_idx], labels[train_idx]), (images[val_idx], labels[val_idx]),
          (test_images, test_labels))


class DistortedMnist:
  """Classification of distorted MNIST digits (R, RTS, P, E, TC, or none).

  Training digits are distorted on the device with a key from the step, so
  every step sees fresh distortions. The validation and test sets are
  distorted once with fixed seeds (``data.validation_seed``, ``data.test_seed``):
  the same config evaluates on the same images.
  """

  def __init__(self, config):
    self.config = config
    d = config.data
    if d.distortion not in _SHAPES:
      raise ConfigError(f"Unknown distortion {d.distortion!r}; known: "
                        f"{[k for k in _SHAPES if k]} or None for plain MNIST. Choose it with "
                        "the config's variant (e.g. distorted_mnist.py:rts,st_cnn).")
    self.distortion = d.distortion
    self.input_shape = _SHAPES[d.distortion]
    self._cache = {}

  def _digits(self):
    d = self.config.data
    train, val, test = _mnist(d.source, d.mnist_dir, d.num_validation, d.split_seed)
    if d.num_train is not None:
      train = (train[0][:d.num_train], train[1][:d.num_train])
    if d.num_eval is not None:
      val, test = ((a[:d.num_eval], b[:d.num_eval]) for a, b in (val, test))
    return {"train": train, "validation": val, "test": test}

  def model(self):
    return models.get_model(self.config.model, input_shape=self.input_shape,
                            **self.config.model_kwargs.to_dict())

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

  def losses(self, logits, labels):
    return _softmax_errors(logits, labels)

  def eval_sets(self):
    return ("validation", "test")

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

  def eval_batches(self, name, batch_size, process_index, process_count):
    images, labels = self._fixed(name)
    return pipeline.eval_batches(images, labels, batch_size=batch_size,
                                 process_index=process_index, process_count=process_count)

  def describe(self):
    d = self.config.data
    sizes = {k: len(v[1]) for k, v in self._digits().items()}
    return {"dataset": f"mnist_{d.distortion or 'plain'}", "mnist_source": d.source,
            "examples": sizes}


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


class MnistAddition(DistortedMnist):
  """MNIST addition (supplementary 1.1): two digits, each under its own RTS, one per
  channel of a 42x42x2 input; the label is their sum (19 classes, 0-18).

  Training pairs are the consecutive digits of each process's shuffled stream,
  distorted on the device every step. An evaluation set pairs every digit of
  the split with a partner chosen by a seeded permutation, then distorts both
  with keys from the same seed: the set has as many pairs as the split digits.
  """

  NUM_CLASSES = 19

  def __init__(self, config):  # pylint: disable=super-init-not-called
    self.config = config
    self.distortion = "addition"
    self.input_shape = (42, 42, 2)
    self._cache = {}

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
    return {"dataset": "mnist_addition", "mnist_source": self.config.data.source,
            "examples": sizes}


TASKS = {"distorted_mnist": DistortedMnist, "mnist_addition": MnistAddition}
# Task name -> (module, class), imported on first use.
_LAZY = {"cub": ("stn_jax.train.cub_task", "Cub"),
         "svhn": ("stn_jax.train.svhn_task", "Svhn")}


def make_task(config):
  """The task named by ``config.task``."""
  if config.task not in TASKS and config.task in _LAZY:
    module, name = _LAZY[config.task]
    TASKS[config.task] = getattr(importlib.import_module(module), name)
  if config.task not in TASKS:
    raise ConfigError(f"Unknown task {config.task!r}; known: {sorted({*TASKS, *_LAZY})}.")
  return TASKS[config.task](config)
