"""Co-localisation (supplementary section 1.2): the trainer, which runs the paper's SGD on
eq. (1) through the one loop (:mod:`stn_jax.train.loop`), or the search
(:mod:`stn_jax.colocalisation.searcher`) with ``optimizer='search'``.

The settings are checked in :mod:`stn_jax.colocalisation.task`, the encoder comes from
:mod:`stn_jax.colocalisation.encoder`, the boxes from :mod:`~stn_jax.colocalisation.boxes`
and the loss and its crops from :mod:`~stn_jax.colocalisation.loss`. Every process runs
the same loop on its default device; only process 0 writes the config, metrics, picture
and results.

Given ``N`` images that all show a digit of one class somewhere on an 84x84 canvas
(:func:`stn_jax.datasets.distortions.colocalization_set`), an attention spatial
transformer (the ``colocalizer`` model) learns to crop the digit, with neither labels nor
boxes. It minimises the triplet hinge loss of eq. (1) of the supplement,

  ``max(0, |e(I_n^T) - e(I_m^T)|^2 - |e(I_n^T) - e(I_n^rand)|^2 + alpha)``,

over random pairs ``(n, m != n)``: the crops of two images should be closer to each other
than a crop is to a random patch of its own image, in the space of a frozen encoder e()
(the ``coloc_encoder`` over a ``cnn`` trained on plain MNIST).

The choices the paper leaves open (docs/paper_notes.md, "Co-localisation training"):

- **Encoder:** ``config.encoder_from`` names a trained ``cnn`` run (its workdir or a
  checkpoint). Without it, ``config.encoder`` (``distorted_mnist.py:plain,cnn``) is trained
  first with :func:`stn_jax.train.train_and_evaluate` in ``workdir/encoder`` for
  ``encoder_steps`` steps (an interrupted encoder run resumes; a finished one is reused).
  The encoder is frozen: its parameters are not in the optimised state and pass through
  ``jax.lax.stop_gradient``; the gradient flows through it into the crops, so only the
  localiser learns, as eq. (1) intends.
- **Random crop** ``I_n^rand``: a 28x28 window (the size of the transformer's output and of
  the digit) at a uniform integer position inside the 84x84 image, drawn afresh for every
  pair at every step. ``random_crop='same_scale'`` instead draws windows of the scale the
  transformer predicts for image ``n`` (:func:`same_scale_crops`).
- **Descriptors:** used as they are (``normalize_features=True`` scales them to unit length
  first), and the localiser starts at the identity (``init_scale`` overrides its ``s``).
  docs/paper_notes.md gives what each of these alternatives did in our runs.
- **Batches:** each SGD step draws ``batch_size`` pairs: ``n`` uniform, ``m`` uniform over
  the other ``N - 1`` images; the loss is the mean over the pairs (eq. (1) sums over all
  pairs; the mean is the same direction, scaled).
- **Optimiser:** SGD on the localiser (the paper's), or, with ``optimizer='search'``
  (ours, the ``search`` variant), eq. (1) minimised over a grid of boxes
  (:mod:`stn_jax.colocalisation.search`), plus, with ``search.confidence_weight > 0`` (ours,
  the ``confidence`` variant part), that weight times the mean over images of 1 - the
  encoder's largest class probability at each image's box: no localiser is trained, and
  the run writes
  ``results.json`` (with each round's share localised and boxes), ``colocalisation.png`` and
  ``colocalisation_rounds.png`` (:func:`rounds_picture`) only.
  ``learn_scale=False`` holds the localiser's ``s`` at its start.
- **Predicted box:** theta ``(s, tx, ty)`` reads the input window ``[tx - |s|, tx + |s|] x
  [ty - |s|, ty + |s|]`` in normalised coordinates, which with ``align_corners=False`` (the
  model's) are pixel edges: ``x = (u + 1) W / 2``. The box is not clipped to the image.

The pairs and crops of step ``k`` come from ``fold_in(rng, k)``, so a run resumed from its
Orbax checkpoint (``workdir/checkpoints``) follows the same trajectory as one that was not
stopped. ``workdir/best`` stays empty: choosing a checkpoint by IoU would use the ground
truth, which co-localisation must not see.

Outputs in ``workdir``: ``metrics.jsonl`` (and TensorBoard files), ``results.json``
(the class, T or TC, the share of images with IoU > 0.5, the mean IoU, each image's IoU,
the steps and the config) and ``colocalisation.png`` (the first ``num_shown`` images with
the ground-truth box in green and the predicted one in red).
"""

from __future__ import annotations

import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from stn_jax import models
from stn_jax.colocalisation import encoder as encoder_lib
from stn_jax.colocalisation import searcher
from stn_jax.colocalisation.boxes import IOU_THRESHOLD, box_from_theta, box_iou, draw_boxes
from stn_jax.colocalisation.loss import random_crops, same_scale_crops, sample_pairs, triplet_hinge
from stn_jax.colocalisation.task import ENCODER_HW, dataset
from stn_jax.errors import ConfigError
from stn_jax.runtime import quiet, xla
from stn_jax.train import config as config_lib
from stn_jax.train import loop, optim, trainers, validate
from stn_jax.train.state import TrainState, warm_start

__all__ = ["train_colocalisation"]


def _make_steps(localizer, encoder, tx, schedule, config):
  batch, margin = int(config.batch_size), float(config.margin)
  same_scale = config.random_crop == "same_scale"
  normalize = bool(config.normalize_features)
  learn_scale = bool(config.learn_scale)

  def encode(enc_params, crops):
    # Frozen: no gradient reaches the encoder's parameters, while the crops' does flow back
    # through it into the localiser.
    e = encoder.apply({"params": jax.lax.stop_gradient(enc_params)}, crops)
    if normalize:
      e = e / jnp.sqrt(jnp.sum(jnp.square(e), -1, keepdims=True) + 1e-12)
    return e

  def hold_scale(grads):
    # learn_scale=False: no update reaches s, the first output of the regression layer
    # (its kernel starts at zero), so s stays at its start; tx and ty learn as before.
    out = grads["transformer"]["localization_out"]
    out = {"kernel": out["kernel"].at[:, 0].set(0.0), "bias": out["bias"].at[0].set(0.0)}
    return {**grads, "transformer": {**grads["transformer"], "localization_out": out}}

  def train_step(state, enc_params, images):
    n_images = images.shape[0]
    key = jax.random.fold_in(state.rng, state.step)
    kn, kc = jax.random.split(key)
    n, m = sample_pairs(kn, batch, n_images)
    if not same_scale:
      rand_crops, _ = random_crops(kc, images[n], ENCODER_HW)
      e_rand_fixed = encode(enc_params, rand_crops)  # depends on no parameter being trained

    def loss_fn(params):
      crops, aux = localizer.apply({"params": params}, images[jnp.concatenate([n, m])])
      e = encode(enc_params, crops)
      if same_scale:
        scale = jax.lax.stop_gradient(aux["theta"][:batch, 0])
        e_rand = encode(enc_params, jax.lax.stop_gradient(
            same_scale_crops(kc, images[n], scale, ENCODER_HW)))
      else:
        e_rand = e_rand_fixed
      losses, d_pair, d_rand = triplet_hinge(e[:batch], e[batch:], e_rand, margin)
      return losses.mean(), (losses, d_pair, d_rand, aux["theta"])

    (loss, (losses, d_pair, d_rand, theta)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    if not learn_scale:
      grads = hold_scale(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, {"loss": loss, "active_pairs": jnp.mean(losses > 0),
                       "pair_distance": d_pair.mean(), "random_distance": d_rand.mean(),
                       "scale": jnp.abs(theta[:, 0]).mean(), "grad_norm": grad_norm,
                       "learning_rate": schedule(state.step)}

  def thetas(params, images):
    return localizer.apply({"params": params}, images)[1]["theta"]

  options = xla.compiler_options()  # the trainers' (CPU-only) compiler options
  xla.keep_freed_memory()
  return (jax.jit(train_step, donate_argnums=0, compiler_options=options),
          jax.jit(thetas, compiler_options=options))


def _evaluate(thetas, params, images, boxes, chunk):
  theta = np.concatenate([np.asarray(thetas(params, images[i:i + chunk]))
                          for i in range(0, len(images), chunk)])
  pred = box_from_theta(theta, images.shape[1:3])
  ious = box_iou(pred, boxes)
  summary = {"localised": float(np.mean(ious > IOU_THRESHOLD)), "mean_iou": float(ious.mean()),
             "scale": float(np.abs(theta[:, 0]).mean())}
  return summary, pred, ious


def train_colocalisation(config, workdir: str, *, devices=None) -> dict:
  """Trains the co-localiser of ``config`` (``experiments/colocalisation.py``) in ``workdir``.

  Args:
    config: an ``ml_collections.ConfigDict`` with ``task='colocalisation'``.
    workdir: the run's directory; a run there is resumed.
    devices: must be None: the loop runs on JAX's default device.

  Returns:
    The contents of ``workdir/results.json``: ``digit_class``, ``distortion`` (T or TC),
    ``localised`` (the share of images with IoU > 0.5), ``mean_iou``, ``ious``, ``steps``,
    the encoder used and the config.

  Raises:
    stn_jax.train.NonFiniteLossError: the loss became NaN or Inf (the message names the
      step); the checkpoints before it are kept.
  """
  if devices is not None:
    raise ConfigError("The co-localisation loop runs on JAX's default device; do not pass "
                      "`devices` for it.")
  quiet.quiet()
  t_start = time.time()
  trainers.check_runs_under(config, "colocalisation")
  # The counts, rates and paths, the encoder's config (trained with the mesh of every
  # device when it is trained here) and this task's own fields.
  validate.check_config(config, num_devices=jax.device_count())
  images, boxes = dataset(config)
  # A workdir of another run is refused before the encoder trains for it.
  config_lib.check_workdir(config, workdir)
  encoder_info = encoder_lib.source(config, workdir)
  encoder, enc_params = encoder_lib.load(config, encoder_info)
  if config.optimizer == "search":
    return searcher.search_boxes(config, workdir, images, boxes, encoder, enc_params,
                                 encoder_info, t_start)
  return _train(config, workdir, images, boxes, encoder, enc_params, encoder_info, t_start)


def _init_state(config, localizer, images):
  init_rng, state_rng = jax.random.split(jax.random.PRNGKey(config.seed))
  params = localizer.init(init_rng, jnp.zeros((1, *images.shape[1:]), jnp.float32))["params"]
  if config.init_scale is not None:
    out = params["transformer"]["localization_out"]
    out["bias"] = jnp.asarray([config.init_scale, 0.0, 0.0], out["bias"].dtype)
  if config.init_from:
    params, _ = warm_start(config.init_from, params, {})
  tx, schedule = optim.make_optimizer(
      params, learning_rate=config.learning_rate, decay_every=config.decay_every,
      decay_factor=config.decay_factor, momentum=config.momentum,
      weight_decay=config.weight_decay,
      localization_lr_multiplier=config.localization_lr_multiplier)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats={},
                     opt_state=tx.init(params), rng=state_rng)
  return state, tx, schedule


def _train(config, workdir, images, boxes, encoder, enc_params, encoder_info, t_start):
  """The paper's SGD on the localiser, through the one loop."""
  localizer = models.get_model(config.model, input_shape=images.shape[1:],
                               **config.model_kwargs.to_dict())
  state, tx, schedule = _init_state(config, localizer, images)
  train_step, thetas = _make_steps(localizer, encoder, tx, schedule, config)
  data = jnp.asarray(images)
  shown = slice(0, min(int(config.num_shown), len(images)))
  last = {}  # the latest evaluation: (summary, predicted boxes, IoUs)

  def evaluate(ctx, step, state):
    summary, pred, ious = _evaluate(thetas, state.params, images, boxes, config.eval_batch_size)
    ctx.writer.scalars(step, "colocalisation", summary)
    ctx.writer.image(step, "colocalisation",
                     draw_boxes(images[shown], boxes[shown], pred[shown], ious[shown]))
    logging.info("step %d: %.0f%% localised (IoU > %.1f), mean IoU %.3f, mean scale %.3f",
                 step, 100 * summary["localised"], IOU_THRESHOLD, summary["mean_iou"],
                 summary["scale"])
    last["final"] = summary, pred, ious

  def finish(ctx, step, state, check_stop):
    del check_stop  # nothing is left to compute that a stop could interrupt
    # Resumed from the last step: its evaluation is in the records already.
    summary, pred, ious = last.get("final") or _evaluate(
        thetas, state.params, images, boxes, config.eval_batch_size)
    if ctx.is_main:
      from PIL import Image  # pylint: disable=import-outside-toplevel
      Image.fromarray(draw_boxes(images[shown], boxes[shown], pred[shown], ious[shown])).save(
          os.path.join(workdir, "colocalisation.png"))
    d = config.data
    return {"config": config.to_dict(), "task": config.task, "model": config.model,
            "digit_class": int(d.digit_class), "distortion": d.distortion,
            "num_images": len(images), "steps": step, **summary,
            "iou_threshold": IOU_THRESHOLD, "ious": [float(x) for x in ious],
            "num_params": sum(int(np.prod(p.shape))
                              for p in jax.tree_util.tree_leaves(state.params)),
            **encoder_info, "platform": jax.devices()[0].platform}

  # No best checkpoint: choosing one by IoU would use the ground truth.
  return loop.train(config, workdir, state, lambda s: train_step(s, enc_params, data),
                    finish=finish, actions=[loop.Every(config.eval_every, evaluate,
                                                       at_start=True)],
                    shown=("loss", "active_pairs", "scale", "learning_rate",
                           "steps_per_second"),
                    point="colocalisation-step", start_time=t_start)


trainers.register(
    "colocalisation", train_colocalisation,
    not_evaluable="A co-localisation run has no held-out sets: its results.json and "
                  "colocalisation.png are its evaluation.")
