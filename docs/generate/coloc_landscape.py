"""Eq. (1) of co-localisation measured over a grid of boxes (issue 18).

  python docs/generate/coloc_landscape.py --encoder=runs/coloc_t_8/encoder --out=land.json

For ``--images`` images n of the set, the loss of n's crop at every grid box
against the other images' crops held (a) at their true boxes and (b) at the identity (the
whole image, where training starts), for each descriptor choice (layers x raw or unit
length) and each view (bilinear; ``aa``: sampled 3x finer, then averaged 3x3). It reports
where each image's least-loss box falls (its IoU with the true box) and how many grid boxes
beat the true one. The true boxes are read only here, to diagnose.

The encoder is a trained ``cnn`` run (e.g. the ``encoder`` directory a co-localisation run
trains, or ``runs/first_results/r_cnn`` of docs/generate/make_results.py). MNIST comes from
``$STN_MNIST_DIR``. What it showed, and the search it led to (the ``search`` variant of
experiments/colocalisation.py): docs/research/lab_notes.md, "Co-localisation: the landscape of
eq. (1)".
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time

import numpy as np

IMAGE_HW, CROP_HW = (84, 84), (28, 28)
VIEWS = ("bilinear", "aa")
DEFAULT_SCALES = "0.3,0.333,0.36,0.38,0.4,0.43,0.46,0.5,0.6,0.7,1.0"


def _dataset(dataset: str, digit: int, size: int, seed: int):
  from stn_jax.datasets import distortions, load_mnist  # pylint: disable=import-outside-toplevel
  digits, labels = load_mnist("train", os.environ.get("STN_MNIST_DIR"))
  return distortions.colocalization_set(digits.astype(np.float32) / 255.0, labels, digit,
                                        clutter=dataset == "tc", seed=seed, size=size)


def _describer(encoder_path: str, view: str):
  """``describe(theta (B, 3), images (B, 84, 84, 1)) -> (B, D)`` raw descriptors of the
  crops, and the encoder's parameters."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from stn_jax import ops  # pylint: disable=import-outside-toplevel
  from stn_jax.colocalisation import encoder_from_run  # pylint: disable=import-outside-toplevel
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

  return run, params


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
  from stn_jax.colocalisation import search as coloc_search  # pylint: disable=import-outside-toplevel
  from stn_jax.colocalisation import DESCRIPTOR_LAYERS, descriptor_part  # pylint: disable=import-outside-toplevel
  from stn_jax.colocalisation.boxes import box_from_theta, box_iou, theta_from_box  # pylint: disable=import-outside-toplevel
  images, boxes = _dataset(args.dataset, args.digit, args.size, args.seed)
  truth = theta_from_box(boxes, IMAGE_HW).astype(np.float32)
  grid = coloc_search.box_grid([float(s) for s in args.scales.split(",")], args.positions)
  grid_boxes = box_from_theta(grid, IMAGE_HW)
  chosen = np.random.default_rng(args.seed + 1).choice(len(images), args.images, replace=False)
  windows = _random_windows(images, args.random_crops, args.seed + 2)
  out = {}
  for view in VIEWS:
    describe, params = _describer(args.encoder, view)
    start = time.time()
    at = {"true": describe(truth, images), "identity": describe(_identity_theta(len(images)),
                                                                images)}
    per_image = {int(n): (describe(grid, np.repeat(images[n:n + 1], len(grid), 0)),
                          describe(_identity_theta(args.random_crops), windows[n]))
                 for n in chosen}
    print(f"{view}: descriptors in {time.time() - start:.0f} s", flush=True)
    for layers, norm in itertools.product(DESCRIPTOR_LAYERS, ("raw", "unit")):
      sl = descriptor_part(params, layers)

      def prep(e, sl=sl, norm=norm):
        e = np.asarray(e, np.float64)[:, sl]
        return coloc_search.unit_length(e) if norm == "unit" else e

      row = {}
      for others in ("true", "identity"):
        ious, beaten = [], []
        for n, (cand, rand) in per_image.items():
          partners = prep(np.delete(at[others], n, axis=0))
          losses = coloc_search.grid_losses(prep(cand), partners, prep(rand), args.margin)
          true_loss = coloc_search.grid_losses(prep(at["true"][n:n + 1]), partners, prep(rand),
                                               args.margin)[0]
          ious.append(float(box_iou(grid_boxes[np.argmin(losses)], boxes[n])))
          beaten.append(float(np.mean(losses < true_loss)))
        row[others] = {"least_loss_box_localised": float(np.mean(np.array(ious) > 0.5)),
                       "least_loss_box_mean_iou": float(np.mean(ious)),
                       "share_of_grid_below_the_true_box": float(np.mean(beaten))}
      out[f"{view}/{layers}/{norm}"] = row
      print(f"{view}/{layers}/{norm}: {json.dumps(row)}", flush=True)
  return {"dataset": args.dataset, "digit": args.digit, "encoder": args.encoder,
          "images": [int(n) for n in chosen], "grid_boxes": len(grid), "results": out}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
  parser.add_argument("--encoder", required=True, help="a trained cnn run or checkpoint")
  parser.add_argument("--dataset", choices=("t", "tc"), default="t")
  parser.add_argument("--digit", type=int, choices=range(10), default=8)
  parser.add_argument("--size", type=int, default=100, help="images in the set")
  parser.add_argument("--seed", type=int, default=0, help="data.seed of the set")
  parser.add_argument("--scales", default=DEFAULT_SCALES)
  parser.add_argument("--positions", type=int, default=19, help="box centres per axis")
  parser.add_argument("--random_crops", type=int, default=16, help="I_n^rand per image")
  parser.add_argument("--margin", type=float, default=1.0)
  parser.add_argument("--images", type=int, default=10, help="images measured")
  parser.add_argument("--out", default=None, help="write the results here (JSON)")
  args = parser.parse_args(argv)
  if not os.environ.get("STN_MNIST_DIR"):
    parser.error("set STN_MNIST_DIR to the directory of the MNIST IDX files "
                 "(see data/README.md).")
  result = landscape(args)
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=1)
  return result


if __name__ == "__main__":
  main()
