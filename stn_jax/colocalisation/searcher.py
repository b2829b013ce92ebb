"""Co-localisation by search (ours, ``optimizer='search'``): eq. (1), plus optionally the
encoder's confidence, minimised over a grid of boxes per image
(:func:`stn_jax.colocalisation.search.search`), with the encoder's descriptors of the
crops computed here. No localiser is trained and no loop runs: the rounds end at a fixed
point of the boxes. :func:`rounds_picture` draws the boxes round by round, as the
supplement's Fig. 1 draws them step by step."""

from __future__ import annotations

import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from stn_jax import ops
from stn_jax.colocalisation import search as search_lib
from stn_jax.colocalisation.boxes import IOU_THRESHOLD, box_from_theta, box_iou, draw_boxes
from stn_jax.colocalisation.encoder import descriptor_part
from stn_jax.colocalisation.loss import random_crops, same_scale_crops
from stn_jax.colocalisation.task import ENCODER_HW
from stn_jax.errors import ConfigError
from stn_jax.runtime import checkpoint as ckpt
from stn_jax.train.state import write_config

__all__ = ["rounds_picture", "search_boxes"]


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


def _descriptors(config, images, encoder, enc_params):
  """``(describe, score, rand_desc)`` of :func:`stn_jax.colocalisation.search.search`:
  the encoder's descriptor of each image's crops at given boxes, the confidence cost of
  those boxes, and the descriptors of the random windows (an array, or a function of the
  boxes' scales with ``random_crop='same_scale'``)."""
  s = config.search
  part = descriptor_part(enc_params, s.layers)
  logits_part = descriptor_part(enc_params, "logits")

  def prep(e):  # the encoder's whole output (G, D) -> the descriptor
    d = np.asarray(e)[:, part]
    return search_lib.unit_length(d) if config.normalize_features else d

  @jax.jit
  def describe_crops(theta, x):
    crops = ops.warp(x, theta, ENCODER_HW, transform="attention")
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
      return same_scale_crops(k, data, scale, ENCODER_HW)

    def rand_desc(scales):  # (N, K) -> (N, K, R, D): R windows of each image's each scale
      stage = jax.random.fold_in(key, len(calls))
      calls.append(None)
      return np.stack([np.stack([
          encode(windows_at(jax.random.fold_in(stage, k * s.random_crops + r),
                            jnp.asarray(scales[:, k])))
          for r in range(s.random_crops)], 1) for k in range(scales.shape[1])], 1)
  else:  # I_n^rand: R 28x28 windows of every image, for every box
    rand_desc = np.stack([encode(random_crops(jax.random.fold_in(key, r), data,
                                              ENCODER_HW)[0])
                          for r in range(s.random_crops)], 1)
  return describe, score, rand_desc


def _run_search(config, images, describe, score, rand_desc):
  """``(thetas, losses, refining)`` of the search over ``config.search``'s grid."""
  s = config.search
  grid = search_lib.box_grid(list(s.scales), int(s.positions))
  kept = int(search_lib.inside(grid).sum()) if s.within else len(grid)  # search() drops the rest
  size_gib = len(images) * kept * describe(0, grid[:1]).shape[-1] * 4 / 2**30
  if size_gib > 8:
    raise ConfigError(f"The grid's descriptors would take {size_gib:.1f} GiB: use "
                      "search.layers='late', or fewer search.scales or search.positions.")
  logging.info("Search over %d boxes per image (at most %d rounds, then at most %d "
               "refining).", kept, s.rounds, s.refine_rounds)
  thetas, losses, refining = search_lib.search(
      describe, len(images), rand_desc, grid, int(s.rounds), int(s.refine_rounds),
      float(config.margin), moves=s.moves, within=bool(s.within),
      prefer_smaller=bool(s.prefer_smaller), score=score,
      score_weight=float(s.confidence_weight))
  return thetas, losses, refining


def _rounds(thetas, losses, refining, images, boxes):
  """Each round's share localised, mean IoU, scale and loss (round 0: the start), logged."""
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
  return rounds, ious


def search_boxes(config, workdir, images, boxes, encoder, enc_params, encoder_info, t_start):
  """``optimizer='search'`` (ours): eq. (1) minimised over a grid of boxes
  (:func:`stn_jax.colocalisation.search.search`); no localiser is trained. Only the images
  and the encoder choose the boxes; the true boxes score them. Writes ``results.json``,
  ``colocalisation.png`` and ``colocalisation_rounds.png`` on process 0 and returns the
  results."""
  describe, score, rand_desc = _descriptors(config, images, encoder, enc_params)
  thetas, losses, refining = _run_search(config, images, describe, score, rand_desc)
  rounds, ious = _rounds(thetas, losses, refining, images, boxes)
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
    write_config(config, workdir)
    Image.fromarray(draw_boxes(images[shown], boxes[shown], pred[shown], ious[shown])).save(
        os.path.join(workdir, "colocalisation.png"))
    Image.fromarray(rounds_picture(images, boxes, thetas)).save(
        os.path.join(workdir, "colocalisation_rounds.png"))
    path = os.path.join(workdir, "results.json")
    with open(path, "w", encoding="utf-8") as f:
      json.dump(results, f, indent=2, sort_keys=True)
    logging.info("Results: %s", path)
  return results


