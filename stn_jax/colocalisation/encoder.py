"""The frozen encoder e() of eq. (1): a ``cnn`` trained on plain MNIST, read as the
``coloc_encoder`` (its three layers' activations as one descriptor), and where it comes
from (``encoder_from``, or trained first in ``workdir/encoder``)."""

from __future__ import annotations

import json
import logging
import os

import jax
import jax.numpy as jnp

from stn_jax import models
from stn_jax.colocalisation.task import ENCODER_HW
from stn_jax.runtime import checkpoint as ckpt
from stn_jax.train import train_and_evaluate

__all__ = ["descriptor_part", "encoder_from_run", "load", "source"]


def descriptor_part(params, layers: str):
  """The slice of the ``coloc_encoder``'s descriptor ([conv block 1, conv block 2, logits],
  each flattened) that ``layers`` names: ``all``, ``late`` (block 2 and the logits) or
  ``logits``, for a ``cnn`` on 28x28 digits (block 2 ends 2x2)."""
  late = 4 * int(params["classifier"]["conv_0"]["kernel"].shape[-1]) + 10
  return {"all": slice(None), "late": slice(-late, None), "logits": slice(-10, None)}[layers]


def _encoder_model(params, where):
  """The ``coloc_encoder`` that ``params`` (a ``cnn``'s) fit, or a ValueError."""
  try:
    conv, fc = params["classifier"]["conv_0"]["kernel"], params["classifier"]["fc_4"]["bias"]
  except (KeyError, TypeError):
    raise ValueError(f"{where} does not hold the parameters of a `cnn` model (e.g. a "
                     "distorted_mnist.py:plain,cnn run), which the encoder needs.") from None
  model = models.get_model("coloc_encoder", input_shape=(*ENCODER_HW, 1),
                           num_classes=int(fc.shape[0]), filters=int(conv.shape[-1]))
  want = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                           jnp.zeros((1, *ENCODER_HW, 1))))["params"]
  same = jax.tree_util.tree_structure(want) == jax.tree_util.tree_structure(params) and all(
      a.shape == b.shape for a, b in zip(jax.tree_util.tree_leaves(want),
                                         jax.tree_util.tree_leaves(params)))
  if not same:
    raise ValueError(f"{where} holds parameters of another model: the encoder needs a `cnn` "
                     f"on 28x28x1 digits.")
  return model


def source(config, workdir) -> dict:
  """Where the encoder comes from, for the checkpoint identity and results.json."""
  if config.encoder_from:
    return {"encoder_from": os.path.abspath(config.encoder_from)}
  return {"encoder_trained_in": os.path.abspath(os.path.join(workdir, "encoder")),
          "encoder_steps": int(config.encoder.num_steps)}


def load(config, info):
  """``(encoder model, its parameters)``, training the encoder first (with the classifier
  trainer, in its own workdir) if ``info`` (from :func:`source`) says so."""
  path = info.get("encoder_from") or info["encoder_trained_in"]
  results = os.path.join(path, "results.json")
  if "encoder_trained_in" in info:
    finished = False
    if os.path.exists(results):
      with open(results, encoding="utf-8") as f:
        finished = json.load(f).get("steps") == config.encoder.num_steps
    if finished:
      logging.info("The encoder in %s is trained already.", path)
    else:
      logging.info("Training the encoder e() (%s, %d steps) in %s.", config.encoder.model,
                   config.encoder.num_steps, path)
      train_and_evaluate(config.encoder, path)
  if os.path.exists(results):
    with open(results, encoding="utf-8") as f:
      info["encoder_test_error"] = json.load(f).get("test_error")
  return encoder_from_run(path)


def encoder_from_run(path: str):
  """``(coloc_encoder model, its parameters)`` from a trained ``cnn`` run (its workdir or
  a checkpoint) at ``path``; a ValueError names what is there instead."""
  params, _ = ckpt.params_from(path)
  return _encoder_model(params, f"The encoder checkpoint {path!r}"), params


