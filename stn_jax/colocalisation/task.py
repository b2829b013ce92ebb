"""The co-localisation task (supplementary section 1.2): its data, its settings and the
trainer that runs it.

The task trains no classifier: its trainer (:mod:`stn_jax.colocalisation.trainer`) runs
the paper's SGD on eq. (1) through the one loop, or, with ``optimizer='search'``, the
search of :mod:`stn_jax.colocalisation.searcher`. What every config has (counts, rates,
seeds, paths) is checked by :func:`stn_jax.train.validate.check_config`, which calls
:meth:`Colocalisation.check_config` for the rest.
"""

from __future__ import annotations

import math

import numpy as np

from stn_jax import tasks
from stn_jax.colocalisation import search
from stn_jax.datasets import distortions, load_mnist
from stn_jax.errors import ConfigError

__all__ = ["DESCRIPTOR_LAYERS", "DISTORTIONS", "ENCODER_HW", "OPTIMIZERS", "RANDOM_CROPS",
           "Colocalisation", "dataset"]

DISTORTIONS = ("T", "TC")
RANDOM_CROPS = ("digit", "same_scale")
OPTIMIZERS = ("sgd", "search")
DESCRIPTOR_LAYERS = ("all", "late", "logits")
ENCODER_HW = (28, 28)  # the encoder's input: an MNIST digit


@tasks.register("colocalisation")
class Colocalisation(tasks.Task):
  """Co-localisation: no classifier, no held-out sets; its trainer is its own.

  The loop runs on JAX's default device, so no batch is shared between devices; the
  encoder, when it is trained here, is checked as a classifier task of its own (its
  config, ``encoder``, is checked by :func:`stn_jax.train.validate.check_config`).
  """

  trainer = "colocalisation"

  @classmethod
  def check_config(cls, config, num_devices=None) -> None:
    del num_devices  # one device
    _check(config)


def _check(config):
  if config.model != "colocalizer":
    raise ConfigError(f"Co-localisation trains the 'colocalizer' model, not {config.model!r}.")
  d = config.data
  if d.distortion not in DISTORTIONS:
    raise ConfigError(f"data.distortion must be one of {', '.join(DISTORTIONS)} (translated, "
                      f"or translated and cluttered); got {d.distortion!r}.")
  if d.digit_class not in range(10):
    raise ConfigError(f"data.digit_class must be a digit class 0-9, got {d.digit_class!r}; "
                      "choose it with the variant, e.g. colocalisation.py:t,3.")
  if d.size < 2:
    raise ConfigError(f"data.size must be at least 2 (the loss compares pairs of images), got "
                      f"{d.size}.")
  if config.random_crop not in RANDOM_CROPS:
    raise ConfigError(f"random_crop must be one of {', '.join(RANDOM_CROPS)}, got "
                      f"{config.random_crop!r}.")
  if config.init_scale is not None and not (math.isfinite(config.init_scale)
                                            and config.init_scale > 0):
    raise ConfigError(f"init_scale must be a positive number (or None), got {config.init_scale}.")
  if not (math.isfinite(config.margin) and config.margin >= 0):
    raise ConfigError(f"The margin must be a finite number >= 0, got {config.margin}.")
  if config.optimizer not in OPTIMIZERS:
    raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got "
                      f"{config.optimizer!r}.")
  if config.optimizer == "search":
    _check_search(config.search)
  out_hw = tuple(config.model_kwargs.to_dict().get("out_hw", ENCODER_HW))
  if out_hw != ENCODER_HW:
    raise ConfigError(f"model_kwargs.out_hw must be the encoder's input size {ENCODER_HW}, "
                      f"got {out_hw}.")


def _check_search(s):
  scales = list(s.scales)
  if not scales or not all(math.isfinite(x) and x > 0 for x in scales) or 1.0 not in scales:
    raise ConfigError(f"search.scales must be positive numbers, 1.0 (the identity, where the "
                      f"search starts) among them; got {scales}.")
  if s.positions < 1 or s.positions % 2 == 0:
    raise ConfigError(f"search.positions must be odd (the centre is on the grid), got "
                      f"{s.positions}.")
  for name in ("rounds", "random_crops"):
    if s[name] < 1:
      raise ConfigError(f"search.{name} must be at least 1, got {s[name]}.")
  if s.refine_rounds < 0:
    raise ConfigError(f"search.refine_rounds must be 0 or more, got {s.refine_rounds}.")
  if s.moves not in search.MOVES:
    raise ConfigError(f"search.moves must be one of {', '.join(search.MOVES)}, got "
                      f"{s.moves!r}.")
  if s.prefer_smaller and s.moves != "sequential":
    raise ConfigError("search.prefer_smaller needs search.moves='sequential' (best response "
                      "has no order between boxes of equal loss).")
  if not (math.isfinite(s.confidence_weight) and s.confidence_weight >= 0):
    raise ConfigError(f"search.confidence_weight must be a finite number >= 0, got "
                      f"{s.confidence_weight}.")
  if s.confidence_weight > 0 and s.moves != "sequential":
    raise ConfigError("search.confidence_weight needs search.moves='sequential' (best "
                      "response has no cost of a box on its own).")
  if s.layers not in DESCRIPTOR_LAYERS:
    raise ConfigError(f"search.layers must be one of {', '.join(DESCRIPTOR_LAYERS)}, got "
                      f"{s.layers!r}.")


def dataset(config):
  """``(images, boxes)``: the co-localisation set of ``config.data`` (its class, T or TC, its
  size and seed), drawn from MNIST's training digits."""
  d = config.data
  digits, labels = load_mnist("train", d.mnist_dir, source=d.source)
  images, boxes = distortions.colocalization_set(
      digits.astype(np.float32) / 255.0, labels, d.digit_class, clutter=d.distortion == "TC",
      seed=d.seed, size=d.size)
  return images, boxes


