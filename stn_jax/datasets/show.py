"""Draws a grid of samples of one of the paper's MNIST datasets, with labels (and boxes).

    python -m stn_jax.datasets.show --dataset=rts --out=rts.png [--split=test] [--seed=0]

MNIST is read from ``--data_dir`` or ``$STN_MNIST_DIR`` (see data/README.md).
Datasets: r, rts, p, e, tc, addition, coloc_t, coloc_tc, mnist_numbers (the
offline SVHN stand-in). Needs matplotlib
(``pip install -e '.[docs]'``).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from stn_jax.datasets import distortions as D
from stn_jax.datasets import mnist_numbers
from stn_jax.datasets.mnist import load_mnist

DATASETS = ("r", "rts", "p", "e", "tc", "addition", "coloc_t", "coloc_tc", "mnist_numbers")


def samples(dataset: str, digits, labels, seed: int, count: int):
  """``(images (count, H, W, C), titles, boxes or None)`` for ``dataset``."""
  key = jax.random.key(seed)
  digits = jnp.asarray(digits, jnp.float32)
  if dataset in ("r", "rts", "p", "e", "tc"):
    images, _ = D.distort_batch(dataset.upper(), key, digits[:max(count, 7)])
    return np.asarray(images[:count]), [str(int(l)) for l in labels[:count]], None
  if dataset == "addition":
    a, b = digits[:count], digits[count:2 * count]
    images, _ = D.addition_batch(key, a, b)
    titles = [f"{int(x)}+{int(y)}={int(x) + int(y)}"
              for x, y in zip(labels[:count], labels[count:2 * count])]
    return np.asarray(images), titles, None
  if dataset in ("coloc_t", "coloc_tc"):
    # One class, as the paper's co-localisation sets are: the first test label's.
    cls = int(labels[0])
    chosen = digits[np.flatnonzero(np.asarray(labels) == cls)[:count]]
    others = digits[np.flatnonzero(np.asarray(labels) != cls)[:16]]
    keys = jax.random.split(key, chosen.shape[0])
    images, boxes = jax.vmap(lambda k, d: D.colocalization(k, d, others,
                                                           dataset == "coloc_tc"))(keys, chosen)
    return np.asarray(images), [str(cls)] * chosen.shape[0], np.asarray(boxes)
  if dataset == "mnist_numbers":
    images, numbers, _ = mnist_numbers.number_batch(key, digits, jnp.asarray(labels), count)
    titles = ["".join(str(int(d)) for d in row if d != mnist_numbers.NO_DIGIT)
              for row in np.asarray(numbers)]
    return np.asarray(images), titles, None
  raise ValueError(f"Unknown dataset {dataset!r}; known: {', '.join(DATASETS)}.")


def draw(images, titles, boxes, out, title):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  n = len(images)
  cols = 8
  rows = -(-n // cols)
  channels = images.shape[-1]
  fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.75 * rows), squeeze=False)
  for ax in axes.ravel():
    ax.axis("off")
  for i in range(n):
    ax = axes.ravel()[i]
    # Channels side by side with a blue bar between, as the paper's figure shows them.
    if channels == 3:  # RGB
      ax.imshow(images[i])
      ax.set_title(titles[i], fontsize=8)
      continue
    tiles = [images[i, :, :, c] for c in range(channels)]
    if channels > 1:
      bar = np.full((images.shape[1], 2), np.nan)
      tiles = [t for c in tiles for t in (c, bar)][:-1]
    ax.imshow(np.concatenate(tiles, 1), cmap="gray", vmin=0, vmax=1)
    if channels > 1:
      ax.axvline(images.shape[2] + 0.5, color="tab:blue", lw=2)
    if boxes is not None:
      x0, y0, x1, y1 = boxes[i]
      ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                                 color="tab:orange", lw=1))
    ax.set_title(titles[i], fontsize=8)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(out, dpi=90)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dataset", required=True, choices=DATASETS)
  parser.add_argument("--out", required=True)
  parser.add_argument("--split", default="test", choices=("train", "test"))
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--count", type=int, default=16)
  parser.add_argument("--data_dir", default=None)
  args = parser.parse_args(argv)
  images, labels = load_mnist(args.split, args.data_dir)
  digits = images[:max(400, 2 * args.count)].astype(np.float32) / 255.0
  imgs, titles, boxes = samples(args.dataset, digits, labels[:len(digits)], args.seed,
                                args.count)
  draw(imgs, titles, boxes, args.out,
       f"{args.dataset}: real MNIST {args.split} digits, seed {args.seed}")
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
