"""The CUB-200-2011 task (paper section 4.3, supplement 1.5) for the trainer.

Data. The prepared ``stn_cub`` dataset (``python -m stn_jax.datasets.prepare
cub --manual_dir=DIR``), read from ``config.data.data_dir`` (``None``:
``$STN_TFDS_DIR``, then ``data/tfds``). The paper has no validation set (its
hyper-parameters were "estimated by cross-validation on the training set"), so
``config.data.num_validation`` images of the official train split, chosen with
``config.data.split_seed``, are held out as ``validation`` and the network
trains on the rest; ``test`` is the official test split, for final numbers only.

Training crops are made on the host by the grain pipeline, seeded by
``config.seed``: the image rescaled so that its shorter side is ``8/7`` of the
input size, a random ``S x S`` window, mirrored with probability 1/2
(:func:`stn_jax.datasets.cub.train_crop`). They travel as uint8 and become
float32 on the device (:meth:`Cub.device_batch`). Evaluation takes the 10 crops
of :func:`stn_jax.datasets.cub.eval_crops` (four corners, centre, and their
mirror images) and averages the network's softmax over them
(:meth:`Cub.eval_forward`).

Input normalisation. The network sees ``(x * data.pixel_scale - data.mean) /
data.std`` per channel, with ``x`` the RGB pixels in [0, 1], the channels
reversed first when ``data.bgr``. The defaults (scale 1, mean 0, std 1, RGB)
give the project's [0, 1] images. ImageNet weights need the preprocessing they
were trained with: e.g. the Caffe BN-Inception expects ``pixel_scale=255``,
``bgr=True``, ``mean=(104, 117, 128)`` (in BGR order), ``std=(1, 1, 1)``.

Pretrained weights. The paper starts from an ImageNet-pretrained
BN-Inception; none is available offline. ``config.pretrained`` names a ``.npz``
in the format of :mod:`stn_jax.models.inception_bn`; it is copied into every
BN-Inception of the model (each stream and the localisation net) when the
trainer initialises it. ``None`` (the default) trains from random
initialisation, says so in the log as a warning and records
``"pretrained": null`` in ``results.json``.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from stn_jax import models
from stn_jax.datasets import cub, pipeline, prepared
from stn_jax.models.cub import CUBNet, load_pretrained
from stn_jax import tasks

__all__ = ["MODELS", "Cub", "PretrainedCUBNet", "average_crops"]

# The networks this task trains (stn_jax.models.cub).
MODELS = ("cub_cnn", "2xst_cnn", "4xst_cnn")
NUM_CROPS = 10


class PretrainedCUBNet(CUBNet):
  """A :class:`~stn_jax.models.cub.CUBNet` whose ``init`` loads ImageNet BN-Inception weights.

  ``init`` initialises the model as usual, then copies the checkpoint at
  ``pretrained`` into every BN-Inception backbone with
  :func:`stn_jax.models.cub.load_pretrained`; the classifier and the
  localisation head keep their initialisation (the regressor still starts at
  the tiling). Under ``jax.jit`` the weights enter as constants and XLA drops
  the random draws they replace.
  """
  pretrained: str = ""

  def init(self, rngs, *args, **kwargs):
    variables = super().init(rngs, *args, **kwargs)
    return load_pretrained(self, variables, self.pretrained)


def average_crops(logits):
  """The log of the mean softmax over the crops of each image.

  Args:
    logits: ``(B, K, C)``, the network's outputs on ``K`` crops of each of ``B`` images.

  Returns:
    ``(B, C)`` log-probabilities: a softmax of them gives the averaged
    posteriors back, so a cross entropy treats them as logits.

  >>> p = jnp.array([[[0.5, 0.5], [0.9, 0.1]]])  # one image, two crops
  >>> np.exp(np.float64(average_crops(jnp.log(p)))).round(4).tolist()
  [[0.7, 0.3]]
  """
  if logits.ndim != 3:
    raise ValueError(f"average_crops expects (images, crops, classes) logits, got shape "
                     f"{logits.shape}.")
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  return jax.nn.logsumexp(log_probs, axis=1) - np.log(logits.shape[1]).astype(np.float32)


def _name(record) -> str:
  return f"the CUB image with image_id {int(record['image_id'])}"


def _train_example(record, rng, *, size, pad):
  image = cub.decode(record["image"], name=_name(record))
  return {"image": cub.train_crop(image, rng, size=size, pad=pad),
          "label": np.int32(record["label"])}


def _eval_crops(record, *, size, pad):
  return cub.eval_crops(cub.decode(record["image"], name=_name(record)), size=size, pad=pad)


def _three(name, value):
  try:
    values = tuple(float(v) for v in (value if np.ndim(value) else [value] * 3))
  except (TypeError, ValueError):
    values = ()
  if len(values) != 3 or not all(np.isfinite(values)):
    raise ValueError(f"data.{name} must be three finite numbers (one per channel), got "
                     f"{value!r}.")
  return np.asarray(values, np.float32)


@tasks.register("cub")
class Cub(tasks.Task):
  """Fine-grained bird classification; see the module docstring."""

  def __init__(self, config):
    super().__init__(config)
    d = config.data
    if config.model not in MODELS:
      raise ValueError(f"The cub task trains the CUB networks ({', '.join(MODELS)}); "
                       f"config.model is {config.model!r}.")
    self._model = models.get_model(config.model, **config.model_kwargs.to_dict())
    self.image_size = int(self._model.input_size)
    self.input_shape = (self.image_size, self.image_size, 3)
    self._normalisation = self._check_normalisation(d)
    self.pretrained = self._check_pretrained(config.get("pretrained"))
    # Opening the splits fails here, before anything compiles, when CUB is not prepared.
    self._sources = self._splits()
    if self.pretrained is None:
      logging.warning(
          "NO PRETRAINED WEIGHTS: config.pretrained is None, so the CUB networks start from "
          "random initialisation. The paper starts from an ImageNet-pretrained BN-Inception; "
          "expect far lower accuracy than its Table 3. Give --config.pretrained=FILE.npz "
          "(format: stn_jax/models/inception_bn.py) to start from ImageNet weights.")
    else:
      logging.info("BN-Inception backbones start from %s; data.pixel_scale, mean, std and bgr "
                   "must match the preprocessing those weights were trained with.",
                   self.pretrained)

  # ------------------------------------------------------------------ checks and data

  @staticmethod
  def _check_normalisation(d):
    scale = float(d.pixel_scale)
    if not (np.isfinite(scale) and scale > 0):
      raise ValueError(f"data.pixel_scale must be a positive number, got {d.pixel_scale!r}.")
    mean, std = _three("mean", d.mean), _three("std", d.std)
    if not (std > 0).all():
      raise ValueError(f"data.std must be positive in every channel, got {d.std!r}.")
    return scale, mean, std, bool(d.bgr)

  @staticmethod
  def _check_pretrained(path):
    if path is None:
      return None
    path = os.fspath(path)
    if not os.path.isfile(path):
      raise FileNotFoundError(
          f"config.pretrained={path!r} is not a file. It should be a BN-Inception .npz in the "
          "format of stn_jax/models/inception_bn.py; leave it unset (None) to train from "
          "random initialisation.")
    return path

  def _splits(self):
    d = self.config.data
    root = prepared.resolve_data_dir(d.data_dir)
    train = cub.load("train", data_dir=root)
    test = cub.load("test", data_dir=root)
    if not 1 <= d.num_validation < len(train):
      raise ValueError(f"data.num_validation must be between 1 and {len(train) - 1} (the "
                       f"prepared train split has {len(train)} images), got "
                       f"{d.num_validation}.")
    return pipeline.holdout_splits(train, test, num_validation=d.num_validation,
                                   seed=d.split_seed, num_train=d.num_train,
                                   num_eval=d.num_eval)

  def normalise(self, images):
    """uint8 (or [0, 1] float) RGB pixels -> the network's float32 input (module docstring).

    Works on NumPy and JAX arrays alike.
    """
    scale, mean, std, bgr = self._normalisation
    x = images.astype(jnp.float32)
    if images.dtype == jnp.uint8:
      x = x / 255.0
    if bgr:
      x = x[..., ::-1]
    if scale != 1.0:
      x = x * scale
    if mean.any() or (std != 1).any():
      x = (x - mean) / std
    return x

  # ------------------------------------------------------------------ task protocol

  def model(self):
    if self.pretrained is None:
      return self._model
    m = self._model
    return PretrainedCUBNet(m.input_size, m.transformers, m.width, m.num_classes,
                            pretrained=self.pretrained)

  def train_iterator(self, process_index, process_count):
    c = self.config
    example = functools.partial(_train_example, size=self.image_size, pad=bool(c.data.pad))
    return pipeline.source_train_iterator(
        self._sources["train"], global_batch=c.batch_size, seed=c.seed,
        random_transform=example, process_index=process_index, process_count=process_count,
        num_threads=c.data.read_threads)

  def device_batch(self, batch, key):
    del key  # the crops are drawn on the host
    return self.normalise(batch["image"]), batch["label"]

  def eval_batches(self, name, batch_size, process_index, process_count):
    if name not in self._sources or name == "train":
      raise ValueError(f"Unknown CUB evaluation set {name!r}; known: {self.eval_sets()}.")
    crops = functools.partial(_eval_crops, size=self.image_size, pad=bool(self.config.data.pad))
    threads = max(1, int(self.config.data.read_threads))

    def batches():
      # Pillow decodes and resizes without the GIL, so threads speed up the 10-crop sets.
      with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        def transform(records):
          return {"image": np.stack(list(pool.map(crops, records))),
                  "label": np.array([int(r["label"]) for r in records], np.int32)}
        yield from pipeline.source_eval_batches(
            self._sources[name], transform=transform, batch_size=batch_size,
            process_index=process_index, process_count=process_count)

    return batches()

  def eval_forward(self, forward, images):
    """Log of the softmax averaged over each image's crops (supplement 1.5).

    Args:
      forward: the network in evaluation mode, ``(N, S, S, 3) -> (N, classes)`` logits.
      images: ``(B, K, S, S, 3)`` crops (uint8, as :meth:`eval_batches` gives them).

    Returns:
      ``(B, classes)`` log-probabilities, which :meth:`losses` takes as logits.
    """
    if images.ndim != 5 or tuple(images.shape[2:]) != self.input_shape:
      raise ValueError(f"CUB evaluation expects crops of shape (B, crops, "
                       f"{', '.join(map(str, self.input_shape))}), got {images.shape}.")
    b, k = images.shape[:2]
    logits = forward(self.normalise(images.reshape((b * k,) + self.input_shape)))
    return average_crops(logits.reshape(b, k, -1))

  def picture_inputs(self, images):
    """The centre crops of evaluation images, as the network sees them (for pictures)."""
    return np.asarray(self.normalise(np.asarray(images)[:, 4]))

  def describe(self):
    d = self.config.data
    sizes = {k: len(v) for k, v in self._sources.items()}
    return {"dataset": f"cub_200_2011_{self.image_size}px", "examples": sizes,
            "pretrained": self.pretrained, "eval_crops": NUM_CROPS,
            "validation_split": (f"{d.num_validation} images of the official train split, "
                                 f"held out with split_seed {d.split_seed}")}
