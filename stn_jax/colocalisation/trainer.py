"""Co-localisation (supplementary section 1.2): its own training loop.

This module holds the loop, its config checks, its data and its encoder; the boxes are
in :mod:`stn_jax.train.coloc_boxes`, the loss and its crops in
:mod:`stn_jax.train.coloc_loss` (their names are importable from here too), and what
every loop shares in :mod:`stn_jax.train.loop`. Every process runs the same loop on its
default device; only process 0 writes the config, metrics, picture and results.

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
  (:mod:`stn_jax.train.coloc_search`), plus, with ``search.confidence_weight > 0`` (ours,
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

import json
import logging
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from stn_jax import models, ops
from stn_jax.datasets import distortions, load_mnist
from stn_jax.train import checkpoint as ckpt
from stn_jax.train import compile as compile_lib
from stn_jax.train import metrics as metrics_lib
from stn_jax.train import coloc_search, faults, loop, optim, stopping, trainer
from stn_jax.train.coloc_boxes import (IOU_THRESHOLD, box_from_theta, box_iou, draw_boxes,
                                       theta_from_box)
from stn_jax.train.coloc_loss import random_crops, same_scale_crops, sample_pairs, triplet_hinge
from stn_jax.train.loop import TrainState

__all__ = ["IOU_THRESHOLD", "box_from_theta", "box_iou", "descriptor_part", "draw_boxes",
           "encoder_from_run", "random_crops", "rounds_picture", "same_scale_crops",
           "sample_pairs", "theta_from_box", "train_colocalisation", "triplet_hinge"]

DISTORTIONS = ("T", "TC")
RANDOM_CROPS = ("digit", "same_scale")
OPTIMIZERS = ("sgd", "search")
DESCRIPTOR_LAYERS = ("all", "late", "logits")
_ENCODER_HW = (28, 28)  # the encoder's input: an MNIST digit


def _check_config(config):
  # Imported here so that this function is the whole change to this file.
  from stn_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel
  from stn_jax.train import validate  # pylint: disable=import-outside-toplevel
  if config.task != "colocalisation":
    raise ConfigError(f"train_colocalisation runs the 'colocalisation' task, not "
                      f"{config.task!r}.")
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
  # The counts (steps, batches, intervals, encoder_steps) and the encoder's own config, whose
  # batches the mesh of every device shares when it is trained here.
  validate.check_config(config, num_devices=jax.device_count())
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
  out_hw = tuple(config.model_kwargs.to_dict().get("out_hw", _ENCODER_HW))
  if out_hw != _ENCODER_HW:
    raise ConfigError(f"model_kwargs.out_hw must be the encoder's input size {_ENCODER_HW}, "
                      f"got {out_hw}.")


def _check_search(s):
  from stn_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel
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
  if s.moves not in coloc_search.MOVES:
    raise ConfigError(f"search.moves must be one of {', '.join(coloc_search.MOVES)}, got "
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


def descriptor_part(params, layers: str):
  """The slice of the ``coloc_encoder``'s descriptor ([conv block 1, conv block 2, logits],
  each flattened) that ``layers`` names: ``all``, ``late`` (block 2 and the logits) or
  ``logits``, for a ``cnn`` on 28x28 digits (block 2 ends 2x2)."""
  late = 4 * int(params["classifier"]["conv_0"]["kernel"].shape[-1]) + 10
  return {"all": slice(None), "late": slice(-late, None), "logits": slice(-10, None)}[layers]


def _dataset(config):
  d = config.data
  digits, labels = load_mnist("train", d.mnist_dir, source=d.source)
  images, boxes = distortions.colocalization_set(
      digits.astype(np.float32) / 255.0, labels, d.digit_class, clutter=d.distortion == "TC",
      seed=d.seed, size=d.size)
  return images, boxes


def _encoder_model(params, where):
  """The ``coloc_encoder`` that ``params`` (a ``cnn``'s) fit, or a ValueError."""
  try:
    conv, fc = params["classifier"]["conv_0"]["kernel"], params["classifier"]["fc_4"]["bias"]
  except (KeyError, TypeError):
    raise ValueError(f"{where} does not hold the parameters of a `cnn` model (e.g. a "
                     "distorted_mnist.py:plain,cnn run), which the encoder needs.") from None
  model = models.get_model("coloc_encoder", input_shape=(*_ENCODER_HW, 1),
                           num_classes=int(fc.shape[0]), filters=int(conv.shape[-1]))
  want = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                           jnp.zeros((1, *_ENCODER_HW, 1))))["params"]
  same = jax.tree_util.tree_structure(want) == jax.tree_util.tree_structure(params) and all(
      a.shape == b.shape for a, b in zip(jax.tree_util.tree_leaves(want),
                                         jax.tree_util.tree_leaves(params)))
  if not same:
    raise ValueError(f"{where} holds parameters of another model: the encoder needs a `cnn` "
                     f"on 28x28x1 digits.")
  return model


def _encoder_source(config, workdir) -> dict:
  """Where the encoder comes from, for the checkpoint identity and results.json."""
  if config.encoder_from:
    return {"encoder_from": os.path.abspath(config.encoder_from)}
  return {"encoder_trained_in": os.path.abspath(os.path.join(workdir, "encoder")),
          "encoder_steps": int(config.encoder.num_steps)}


def _encoder(config, source):
  """``(encoder model, its parameters)``, training the encoder first if ``source`` says so."""
  path = source.get("encoder_from") or source["encoder_trained_in"]
  results = os.path.join(path, "results.json")
  if "encoder_trained_in" in source:
    finished = False
    if os.path.exists(results):
      with open(results, encoding="utf-8") as f:
        finished = json.load(f).get("steps") == config.encoder.num_steps
    if finished:
      logging.info("The encoder in %s is trained already.", path)
    else:
      logging.info("Training the encoder e() (%s, %d steps) in %s.", config.encoder.model,
                   config.encoder.num_steps, path)
      trainer.train_and_evaluate(config.encoder, path)
  if os.path.exists(results):
    with open(results, encoding="utf-8") as f:
      source["encoder_test_error"] = json.load(f).get("test_error")
  return encoder_from_run(path)


def encoder_from_run(path: str):
  """``(coloc_encoder model, its parameters)`` from a trained ``cnn`` run (its workdir or
  a checkpoint) at ``path``; a ValueError names what is there instead."""
  params, _ = ckpt.params_from(path)
  return _encoder_model(params, f"The encoder checkpoint {path!r}"), params


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
      rand_crops, _ = random_crops(kc, images[n], _ENCODER_HW)
      e_rand_fixed = encode(enc_params, rand_crops)  # depends on no parameter being trained

    def loss_fn(params):
      crops, aux = localizer.apply({"params": params}, images[jnp.concatenate([n, m])])
      e = encode(enc_params, crops)
      if same_scale:
        scale = jax.lax.stop_gradient(aux["theta"][:batch, 0])
        e_rand = encode(enc_params, jax.lax.stop_gradient(
            same_scale_crops(kc, images[n], scale, _ENCODER_HW)))
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

  options = compile_lib.compiler_options()  # the trainer's (CPU-only) compiler options
  compile_lib.keep_freed_memory()
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


def train_colocalisation(config, workdir: str) -> dict:
  """Trains the co-localiser of ``config`` (``experiments/colocalisation.py``) in ``workdir``.

  Args:
    config: an ``ml_collections.ConfigDict`` with ``task='colocalisation'``.
    workdir: the run's directory; a run there is resumed.

  Returns:
    The contents of ``workdir/results.json``: ``digit_class``, ``distortion`` (T or TC),
    ``localised`` (the share of images with IoU > 0.5), ``mean_iou``, ``ious``, ``steps``,
    the encoder used and the config.

  Raises:
    stn_jax.train.NonFiniteLossError: the loss became NaN or Inf (the message names the
      step); the checkpoints before it are kept.
  """
  ckpt.quiet()
  t_start = time.time()
  _check_config(config)
  images, boxes = _dataset(config)
  localizer = models.get_model(config.model, input_shape=images.shape[1:],
                               **config.model_kwargs.to_dict())
  encoder_info = _encoder_source(config, workdir)
  if config.optimizer == "search":
    ckpt.check_workdir(config, workdir)  # a workdir of another run is not overwritten
    encoder, enc_params = _encoder(config, encoder_info)
    return _search(config, workdir, images, boxes, encoder, enc_params, encoder_info, t_start)
  checkpoints = ckpt.Checkpoints(workdir, keep=config.keep_checkpoints,
                                 identity=ckpt.run_identity(config))
  try:
    encoder, enc_params = _encoder(config, encoder_info)
    with checkpoints.disk():
      return _train(config, workdir, images, boxes, localizer, encoder, enc_params,
                    encoder_info, checkpoints, t_start)
  finally:
    checkpoints.close()


def rounds_picture(images, boxes, thetas, num_images: int = 3, most_columns: int = 6):
  """The boxes of the first ``num_images`` images after several rounds, as the
  supplement's Fig. 1 shows them after several SGD steps: one row per image, one column
  per round (the first, the last, and up to ``most_columns - 2`` evenly between), the true
  box in green, the searched one in red, its IoU under it.

  Args:
    images: ``(N, H, W, 1)``.
    boxes: ``(N, 4)`` true pixel boxes.
    thetas: ``(k + 1, N, 3)`` every image's box before the first round and after each.
  """
  k = len(thetas)
  columns = np.unique(np.round(np.linspace(0, k - 1, min(k, most_columns))).astype(int))
  rows = range(min(num_images, len(images)))
  pred = [box_from_theta(thetas[c], images.shape[1:3]) for c in columns]
  cells = [(i, j) for i in rows for j in range(len(columns))]
  ious = [float(box_iou(pred[j][i:i + 1], boxes[i:i + 1])[0]) for i, j in cells]
  return draw_boxes(np.stack([images[i] for i, _ in cells]),
                    np.stack([boxes[i] for i, _ in cells]),
                    np.stack([pred[j][i] for i, j in cells]), np.array(ious),
                    cols=len(columns))


def _search(config, workdir, images, boxes, encoder, enc_params, encoder_info, t_start):
  """``optimizer='search'`` (ours): eq. (1) minimised over a grid of boxes
  (:func:`stn_jax.train.coloc_search.search`); no localiser is trained.
  Only the images and the encoder choose the boxes; the true boxes score them."""
  s = config.search
  part = descriptor_part(enc_params, s.layers)
  logits_part = descriptor_part(enc_params, "logits")

  def prep(e):  # the encoder's whole output (G, D) -> the descriptor
    d = np.asarray(e)[:, part]
    return coloc_search.unit_length(d) if config.normalize_features else d

  @jax.jit
  def describe_crops(theta, x):
    crops = ops.warp(x, theta, _ENCODER_HW, transform="attention")
    return encoder.apply({"params": enc_params}, crops)

  data = jnp.asarray(images)

  last = {}  # the encoder's outputs at the boxes of the last call, for score()

  def outputs(n, theta, chunk=int(config.eval_batch_size)):
    tag = (n, np.asarray(theta, np.float32).tobytes())
    if last.get("tag") != tag:
      last["out"] = np.concatenate([
          np.asarray(describe_crops(jnp.asarray(theta[i:i + chunk]),
                                    jnp.broadcast_to(data[n], (len(theta[i:i + chunk]),
                                                               *data.shape[1:]))))
          for i in range(0, len(theta), chunk)])
      last["tag"] = tag
    return last["out"]

  def describe(n, theta):
    return prep(outputs(n, theta)).astype(np.float32)

  def score(n, theta):  # ours: 1 - the encoder's largest class probability at each box
    logits = outputs(n, theta)[:, logits_part].astype(np.float64)
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return 1.0 - z.max(-1) / z.sum(-1)

  key = jax.random.PRNGKey(config.seed)

  def encode(crops):
    return prep(np.asarray(encoder.apply({"params": enc_params}, crops)))

  if config.random_crop == "same_scale":
    calls = []

    @jax.jit
    def windows_at(k, scale):
      return same_scale_crops(k, data, scale, _ENCODER_HW)

    def rand_desc(scales):  # (N, K) -> (N, K, R, D): R windows of each image's each scale
      stage = jax.random.fold_in(key, len(calls))
      calls.append(None)
      return np.stack([np.stack([
          encode(windows_at(jax.random.fold_in(stage, k * s.random_crops + r),
                            jnp.asarray(scales[:, k])))
          for r in range(s.random_crops)], 1) for k in range(scales.shape[1])], 1)
  else:  # I_n^rand: R 28x28 windows of every image, for every box
    rand_desc = np.stack([encode(random_crops(jax.random.fold_in(key, r), data,
                                              _ENCODER_HW)[0])
                          for r in range(s.random_crops)], 1)
  grid = coloc_search.box_grid(list(s.scales), int(s.positions))
  kept = int(coloc_search.inside(grid).sum()) if s.within else len(grid)  # search() drops the rest
  size_gib = len(images) * kept * describe(0, grid[:1]).shape[-1] * 4 / 2**30
  if size_gib > 8:
    from stn_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel
    raise ConfigError(f"The grid's descriptors would take {size_gib:.1f} GiB: use "
                      "search.layers='late', or fewer search.scales or search.positions.")
  logging.info("Search over %d boxes per image (at most %d rounds, then at most %d "
               "refining).", kept, s.rounds, s.refine_rounds)
  thetas, losses, refining = coloc_search.search(
      describe, len(images), rand_desc, grid, int(s.rounds), int(s.refine_rounds),
      float(config.margin), moves=s.moves, within=bool(s.within),
      prefer_smaller=bool(s.prefer_smaller), score=score,
      score_weight=float(s.confidence_weight))
  rounds = []
  for r, theta in enumerate(thetas):
    ious = box_iou(box_from_theta(theta, images.shape[1:3]), boxes)
    rounds.append({"round": r, "refining": bool(refining[r]),
                   "localised": float(np.mean(ious > IOU_THRESHOLD)),
                   "mean_iou": float(ious.mean()), "scale": float(np.abs(theta[:, 0]).mean()),
                   "loss": None if r == 0 else float(losses[r - 1])})
    logging.info("round %d: %.0f%% localised (IoU > %.1f), mean IoU %.3f, mean scale %.3f, "
                 "loss %s", r, 100 * rounds[-1]["localised"], IOU_THRESHOLD,
                 rounds[-1]["mean_iou"], rounds[-1]["scale"],
                 "-" if r == 0 else f"{losses[r - 1]:.4f}")
  pred = box_from_theta(thetas[-1], images.shape[1:3])
  shown = slice(0, min(int(config.num_shown), len(images)))
  d = config.data
  results = ckpt.json_safe({
      "config": config.to_dict(), "task": config.task, "optimizer": config.optimizer,
      "digit_class": int(d.digit_class), "distortion": d.distortion,
      "num_images": len(images), "steps": 0, "rounds": rounds,
      "localised": rounds[-1]["localised"], "mean_iou": rounds[-1]["mean_iou"],
      "scale": rounds[-1]["scale"], "iou_threshold": IOU_THRESHOLD,
      "ious": [float(x) for x in ious], "theta": thetas[-1].tolist(),
      "theta_rounds": thetas.tolist(), **encoder_info,
      "platform": jax.devices()[0].platform,
      "wall_seconds_this_session": time.time() - t_start})
  if jax.process_index() == 0:
    from PIL import Image  # pylint: disable=import-outside-toplevel
    loop.write_config(config, workdir)
    Image.fromarray(draw_boxes(images[shown], boxes[shown], pred[shown], ious[shown])).save(
        os.path.join(workdir, "colocalisation.png"))
    Image.fromarray(rounds_picture(images, boxes, thetas)).save(
        os.path.join(workdir, "colocalisation_rounds.png"))
    with open(os.path.join(workdir, "results.json"), "w", encoding="utf-8") as f:
      json.dump(results, f, indent=2, sort_keys=True)
  return results


def _train(config, workdir, images, boxes, localizer, encoder, enc_params, encoder_info,
           checkpoints, t_start):
  init_rng, state_rng = jax.random.split(jax.random.PRNGKey(config.seed))
  params = localizer.init(init_rng, jnp.zeros((1, *images.shape[1:]), jnp.float32))["params"]
  if config.init_scale is not None:
    out = params["transformer"]["localization_out"]
    out["bias"] = jnp.asarray([config.init_scale, 0.0, 0.0], out["bias"].dtype)
  if config.init_from:
    params, _ = loop.warm_start(config.init_from, params, {})
  tx, schedule = optim.make_optimizer(
      params, learning_rate=config.learning_rate, decay_every=config.decay_every,
      decay_factor=config.decay_factor, momentum=config.momentum,
      weight_decay=config.weight_decay,
      localization_lr_multiplier=config.localization_lr_multiplier)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats={},
                     opt_state=tx.init(params), rng=state_rng)
  state, resumed = loop.restore(checkpoints, state, workdir)
  first = int(state.step)
  train_step, thetas = _make_steps(localizer, encoder, tx, schedule, config)
  data = jnp.asarray(images)
  shown = slice(0, min(int(config.num_shown), len(images)))

  is_main = jax.process_index() == 0
  if is_main:
    loop.write_config(config, workdir)
  writer = metrics_lib.MetricWriter(
      workdir, enabled=is_main, tensorboard=config.tensorboard,
      resume_step=None if resumed is None else resumed.step,
      resume_bytes=None if resumed is None else resumed.record.get("metrics_bytes"))
  progress = metrics_lib.Progress(first, config.num_steps, config.batch_size, enabled=is_main)

  def evaluate(step):
    summary, pred, ious = _evaluate(thetas, state.params, images, boxes, config.eval_batch_size)
    writer.scalars(step, "colocalisation", summary)
    writer.image(step, "colocalisation",
                 draw_boxes(images[shown], boxes[shown], pred[shown], ious[shown]))
    logging.info("step %d: %.0f%% localised (IoU > %.1f), mean IoU %.3f, mean scale %.3f",
                 step, 100 * summary["localised"], IOU_THRESHOLD, summary["mean_iou"],
                 summary["scale"])
    return summary, pred, ious

  pending = []  # the device metrics since the last log line, fetched together
  step = first
  final = None
  # No best checkpoint: choosing one by IoU would use the ground truth.
  history = {}
  try:
    with stopping.Guard(config.checkpoint_minutes) as guard:
      save = loop.Saver(checkpoints, writer, guard)
      if first == 0:
        evaluate(0)
      while step < config.num_steps:
        state, m = train_step(state, enc_params, data)
        pending.append(m)
        step += 1
        faults.point("colocalisation-step", step)
        last = step == config.num_steps
        logged_now = step % config.log_every == 0 or last
        if logged_now:
          loop.log_train(step, pending, checkpoints, writer, progress,
                         ("loss", "active_pairs", "scale", "learning_rate", "steps_per_second"))
          pending = []
        if step % config.eval_every == 0 or last:
          final = evaluate(step)
        signum, timed = guard.poll(sync=logged_now)
        if timed or signum or step % config.checkpoint_every == 0 or last:
          save(step, state, pending, history)
        if signum:
          raise loop.stopped(guard, signum, step, checkpoints)
    checkpoints.wait()
    # Resumed from the last step: its evaluation is in the records already.
    summary, pred, ious = final if final is not None else _evaluate(
        thetas, state.params, images, boxes, config.eval_batch_size)
    if is_main:
      from PIL import Image  # pylint: disable=import-outside-toplevel
      Image.fromarray(draw_boxes(images[shown], boxes[shown], pred[shown], ious[shown])).save(
          os.path.join(workdir, "colocalisation.png"))
    d = config.data
    results = {"config": config.to_dict(), "task": config.task, "model": config.model,
               "digit_class": int(d.digit_class), "distortion": d.distortion,
               "num_images": len(images), "steps": step, **summary,
               "iou_threshold": IOU_THRESHOLD, "ious": [float(x) for x in ious],
               "num_params": sum(int(np.prod(p.shape))
                                 for p in jax.tree_util.tree_leaves(state.params)),
               **encoder_info, "platform": jax.devices()[0].platform,
               "wall_seconds_this_session": time.time() - t_start}
    results = ckpt.json_safe(results)
    if is_main:
      with open(os.path.join(workdir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    return results
  finally:
    writer.close()
