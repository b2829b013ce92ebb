"""Eq. (1) of co-localisation measured over a grid of boxes, and minimised there (issue 18).

  python docs/coloc_landscape.py landscape --encoder=runs/coloc_t_8/encoder --out=land.json
  python docs/coloc_landscape.py search --encoder=runs/coloc_t_8/encoder --dataset=t --digit=8

``landscape``: for ``--images`` images n of the set, the loss of n's crop at every grid box
against the other images' crops held (a) at their true boxes and (b) at the identity (the
whole image, where training starts), for each descriptor choice (layers x raw or unit
length) and each view (bilinear; ``aa``: sampled 3x finer, then averaged 3x3). It reports
where each image's least-loss box falls (its IoU with the true box) and how many grid boxes
beat the true one. The true boxes are read only here, to diagnose.

``search``: rounds of best response over the grid from the identity
(:mod:`stn_jax.train.coloc_search`), which uses no box or label; the true boxes only score
each round. The encoder is a trained ``cnn`` run (e.g. the ``encoder`` directory a
co-localisation run trains, or ``runs/first_results/r_cnn`` of docs/make_results.py).
MNIST comes from ``$STN_MNIST_DIR``. Results: docs/lab_notes.md, "Co-localisation: the
landscape of eq. (1)".
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time

import numpy as np

IMAGE_HW, CROP_HW = (84, 84), (28, 28)
# Slices of the coloc_encoder's descriptor ([pooled conv 1, pooled conv 2, logits]) by the
# size of the two last parts: "late" drops the first conv block's 8900 values.
LAYERS = ("all", "late", "logits")
VIEWS = ("bilinear", "aa")
DEFAULT_SCALES = "0.3,0.333,0.36,0.38,0.4,0.43,0.46,0.5,0.6,0.7,1.0"


def _layer_slice(layers: str, late_size: int):
  return {"all": slice(None), "late": slice(-late_size, None), "logits": slice(-10, None)}[layers]


def _dataset(dataset: str, digit: int, size: int, seed: int):
  from stn_jax.datasets import distortions, load_mnist  # pylint: disable=import-outside-toplevel
  digits, labels = load_mnist("train", os.environ.get("STN_MNIST_DIR"))
  return distortions.colocalization_set(digits.astype(np.float32) / 255.0, labels, digit,
                                        clutter=dataset == "tc", seed=seed, size=size)


def _describer(encoder_path: str, view: str):
  """``describe(theta (B, 3), images (B, 84, 84, 1)) -> (B, D)`` raw descriptors of the
  crops, and the size of the descriptor's late part (conv 2 and logits)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from stn_jax import ops  # pylint: disable=import-outside-toplevel
  from stn_jax.train.colocalisation import encoder_from_run  # pylint: disable=import-outside-toplevel
  model, params = encoder_from_run(encoder_path)

  @jax.jit
  def describe(theta, images):
    if view == "bilinear":
      crops = ops.warp(images, theta, CROP_HW, transform="attention")
    else:  # anti-aliased: 3x finer samples, averaged in 3x3 blocks
      fine = ops.warp(images, theta, tuple(3 * d for d in CROP_HW), transform="attention")
      crops = fine.reshape(fine.shape[0], CROP_HW[0], 3, CROP_HW[1], 3, -1).mean((2, 4))
    return model.apply({"params": params}, crops)

  def run(theta, images, chunk=256):
    return np.concatenate([np.asarray(describe(jnp.asarray(theta[i:i + chunk]),
                                               jnp.asarray(images[i:i + chunk])))
                           for i in range(0, len(theta), chunk)])

  # The late part: the second block's 2x2 pooled maps and the logits.
  filters = int(params["classifier"]["conv_0"]["kernel"].shape[-1])
  return run, 4 * filters + 10


def _random_windows(images, count: int, seed: int):
  """``count`` 28x28 windows per image at uniform integer positions: I_n^rand."""
  rng = np.random.default_rng(seed)
  hi = IMAGE_HW[0] - CROP_HW[0] + 1
  out = np.empty((len(images), count, *CROP_HW, images.shape[-1]), images.dtype)
  for n, image in enumerate(images):
    for r, (y, x) in enumerate(zip(rng.integers(0, hi, count), rng.integers(0, hi, count))):
      out[n, r] = image[y:y + CROP_HW[0], x:x + CROP_HW[1]]
  return out


def _identity_theta(count):
  """The identity box, for ``count`` images (on a 28x28 window: the window itself)."""
  return np.tile(np.array([[1.0, 0.0, 0.0]], np.float32), (count, 1))


def landscape(args) -> dict:
  from stn_jax.train import coloc_search  # pylint: disable=import-outside-toplevel
  from stn_jax.train.coloc_boxes import box_from_theta, box_iou, theta_from_box  # pylint: disable=import-outside-toplevel
  images, boxes = _dataset(args.dataset, args.digit, args.size, args.seed)
  truth = theta_from_box(boxes, IMAGE_HW).astype(np.float32)
  grid = coloc_search.box_grid([float(s) for s in args.scales.split(",")], args.positions)
  grid_boxes = box_from_theta(grid, IMAGE_HW)
  chosen = np.random.default_rng(args.seed + 1).choice(len(images), args.images, replace=False)
  windows = _random_windows(images, args.random_crops, args.seed + 2)
  out = {}
  for view in VIEWS:
    describe, late = _describer(args.encoder, view)
    start = time.time()
    at = {"true": describe(truth, images), "identity": describe(_identity_theta(len(images)),
                                                                images)}
    per_image = {int(n): (describe(grid, np.repeat(images[n:n + 1], len(grid), 0)),
                          describe(_identity_theta(args.random_crops), windows[n]),
                          describe(truth[n:n + 1], images[n:n + 1]))
                 for n in chosen}
    print(f"{view}: descriptors in {time.time() - start:.0f} s", flush=True)
    for layers, norm in itertools.product(LAYERS, ("raw", "unit")):
      sl = _layer_slice(layers, late)

      def prep(e, sl=sl, norm=norm):
        e = np.asarray(e, np.float64)[:, sl]
        return coloc_search.unit_length(e) if norm == "unit" else e

      row = {}
      for others in ("true", "identity"):
        ious, beaten = [], []
        for n, (cand, rand, true_desc) in per_image.items():
          partners = prep(np.delete(at[others], n, axis=0))
          losses = coloc_search.grid_losses(prep(cand), partners, prep(rand))
          true_loss = coloc_search.grid_losses(prep(true_desc), partners, prep(rand))[0]
          ious.append(float(box_iou(grid_boxes[np.argmin(losses)], boxes[n])))
          beaten.append(float(np.mean(losses < true_loss)))
        row[others] = {"least_loss_box_localised": float(np.mean(np.array(ious) > 0.5)),
                       "least_loss_box_mean_iou": float(np.mean(ious)),
                       "share_of_grid_below_the_true_box": float(np.mean(beaten))}
      out[f"{view}/{layers}/{norm}"] = row
      print(f"{view}/{layers}/{norm}: {json.dumps(row)}", flush=True)
  return {"dataset": args.dataset, "digit": args.digit, "encoder": args.encoder,
          "images": [int(n) for n in chosen], "grid_boxes": len(grid), "results": out}


def _local_offsets():
  """The refining grid: ``(scale factor, dx, dy)``, factors 0.9-1.1 and shifts of up to
  0.075 (3 px of 84) in steps of 0.025 (about 1 px)."""
  shifts = np.arange(-3, 4, dtype=np.float32) * 0.025
  return np.array(list(itertools.product((0.9, 0.95, 1.0, 1.05, 1.1), shifts, shifts)),
                  np.float32)


def search(args) -> dict:
  from stn_jax.train import coloc_search  # pylint: disable=import-outside-toplevel
  from stn_jax.train.coloc_boxes import IOU_THRESHOLD, box_from_theta, box_iou  # pylint: disable=import-outside-toplevel
  images, boxes = _dataset(args.dataset, args.digit, args.size, args.seed)
  scales = [float(s) for s in args.scales.split(",")]
  if 1.0 not in scales or args.positions % 2 == 0:
    raise SystemExit("The search starts at the identity: --scales must include 1.0 and "
                     "--positions must be odd (so that the centre is on the grid).")
  grid = coloc_search.box_grid(scales, args.positions)
  describe, late = _describer(args.encoder, "bilinear")
  sl = _layer_slice(args.layers, late)
  start = time.time()
  size = len(images) * len(grid) * describe(grid[:1], images[:1])[:, sl].shape[-1] * 4
  if size > 8 * 2**30:
    raise SystemExit(f"The grid's descriptors would take {size / 2**30:.1f} GiB: use "
                     "--layers=late (or fewer --scales or --positions).")
  grid_desc = np.stack([
      coloc_search.unit_length(describe(grid, np.repeat(images[n:n + 1], len(grid), 0))[:, sl])
      .astype(np.float32) for n in range(len(images))])
  windows = _random_windows(images, args.random_crops, args.seed + 2)
  rand_desc = np.stack([coloc_search.unit_length(
      describe(_identity_theta(args.random_crops), windows[n])[:, sl]) for n in range(len(images))])
  seconds_descriptors = time.time() - start
  identity = int(np.flatnonzero((grid[:, 0] == 1.0) & (grid[:, 1] == 0) & (grid[:, 2] == 0))[0])
  choices, losses = coloc_search.best_response(
      grid_desc, rand_desc, np.full(len(images), identity), args.rounds, args.margin)
  thetas = [grid[choice] for choice in choices]
  if args.refine_rounds:  # a finer grid around each image's box, from that box
    local = _local_offsets()
    theta = thetas[-1]
    fine = np.stack([theta[:, None, 0] * local[None, :, 0], theta[:, None, 1] + local[None, :, 1],
                     theta[:, None, 2] + local[None, :, 2]], -1)  # (N, G', 3)
    fine_desc = np.stack([coloc_search.unit_length(describe(fine[n], np.repeat(
        images[n:n + 1], len(local), 0))[:, sl]).astype(np.float32) for n in range(len(images))])
    centre = int(np.flatnonzero(np.all(local == np.array([1.0, 0, 0], np.float32), -1))[0])
    fine_choices, fine_losses = coloc_search.best_response(
        fine_desc, rand_desc, np.full(len(images), centre), args.refine_rounds, args.margin)
    thetas += [fine[np.arange(len(images)), c] for c in fine_choices[1:]]
    losses = np.concatenate([losses, fine_losses])
  rounds = []
  for r, theta in enumerate(thetas):
    ious = box_iou(box_from_theta(theta, IMAGE_HW), boxes)
    rounds.append({"round": r, "refined": r > args.rounds,
                   "localised": float(np.mean(ious > IOU_THRESHOLD)),
                   "mean_iou": float(ious.mean()), "scale": float(theta[:, 0].mean()),
                   "loss": None if r == 0 else float(losses[r - 1])})
    print(json.dumps(rounds[-1]), flush=True)
  return {"dataset": args.dataset, "digit": args.digit, "encoder": args.encoder,
          "layers": args.layers, "scales": scales, "positions": args.positions,
          "grid_boxes": len(grid), "random_crops": args.random_crops, "margin": args.margin,
          "rounds": rounds, "ious": [float(x) for x in ious],
          "refine_rounds": args.refine_rounds, "final_theta": thetas[-1].tolist(),
          "seconds_descriptors": seconds_descriptors,
          "seconds_total": time.time() - start}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
  parser.add_argument("command", choices=("landscape", "search"))
  parser.add_argument("--encoder", required=True, help="a trained cnn run or checkpoint")
  parser.add_argument("--dataset", choices=("t", "tc"), default="t")
  parser.add_argument("--digit", type=int, choices=range(10), default=8)
  parser.add_argument("--size", type=int, default=100, help="images in the set")
  parser.add_argument("--seed", type=int, default=0, help="data.seed of the set")
  parser.add_argument("--scales", default=DEFAULT_SCALES)
  parser.add_argument("--positions", type=int, default=19, help="box centres per axis")
  parser.add_argument("--random_crops", type=int, default=16, help="I_n^rand per image")
  parser.add_argument("--margin", type=float, default=1.0)
  parser.add_argument("--layers", choices=LAYERS, default="late", help="search: descriptor")
  parser.add_argument("--rounds", type=int, default=2, help="search: rounds of best response")
  parser.add_argument("--refine_rounds", type=int, default=0,
                      help="search: then rounds on a finer grid around each box")
  parser.add_argument("--images", type=int, default=10, help="landscape: images measured")
  parser.add_argument("--out", default=None, help="write the results here (JSON)")
  args = parser.parse_args(argv)
  if not os.environ.get("STN_MNIST_DIR"):
    parser.error("set STN_MNIST_DIR to the directory of the MNIST IDX files "
                 "(see data/README.md).")
  result = landscape(args) if args.command == "landscape" else search(args)
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=1)
  return result


if __name__ == "__main__":
  main()
