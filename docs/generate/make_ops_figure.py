"""Draws docs/ops_warps.png: one digit under an identity, affine, projective and TPS warp.

    python docs/generate/make_ops_figure.py [--out docs/ops_warps.png] [--index 0]

The digit is one of the MNIST test images, read with
:func:`stn_jax.datasets.mnist.load_mnist` (from ``$STN_MNIST_DIR`` or
``data/mnist``; see data/README.md). Without MNIST the script draws a synthetic
"7" so that it still runs on a fresh machine, and says so in the figure title.
"""

import argparse
import pathlib

import jax.numpy as jnp
import numpy as np

from stn_jax import ops
from stn_jax.datasets.mnist import MnistNotFoundError, load_mnist


def load_digit(index: int):
  """Returns ``(image (28, 28) float32 in [0, 1], description)``."""
  try:
    images, _ = load_mnist("test")
  except MnistNotFoundError:
    images = None
  if images is not None:
    if not 0 <= index < len(images):
      raise ValueError(f"--index must be in [0, {len(images)}), got {index}.")
    return images[index].astype(np.float32) / 255.0, f"MNIST test image {index}"
  image = np.zeros((28, 28), np.float32)
  image[6:9, 7:21] = 1.0  # the bar of a 7
  for r in range(9, 23):  # its stroke
    c = 20 - (r - 9) // 2
    image[r, c - 1:c + 2] = 1.0
  return image, "synthetic digit (set STN_MNIST_DIR for a real one)"


def warps():
  """(title, transform name, params) for each panel."""
  angle = np.deg2rad(25.0)
  affine = np.array([np.cos(angle), -np.sin(angle), 0.1,
                     0.5 * np.sin(angle), np.cos(angle), -0.05])  # rotation with shear
  projective = np.array([1.0, 0.1, 0.0, 0.0, 1.1, 0.0, 0.35, 0.25])
  rng = np.random.default_rng(3)
  tps_offsets = rng.uniform(-0.25, 0.25, size=(16, 2))
  return [("identity", "affine", np.array([1.0, 0, 0, 0, 1, 0])),
          ("affine", "affine", affine),
          ("projective", "projective", projective),
          ("thin-plate spline", "tps", tps_offsets.reshape(-1))]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=str(
      pathlib.Path(__file__).resolve().parents[1] / "ops_warps.png"))  # beside docs/ops.md
  parser.add_argument("--index", type=int, default=0)
  args = parser.parse_args()

  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  digit, source = load_digit(args.index)
  image = jnp.asarray(digit)[None, :, :, None]
  panels = warps()
  fig, axes = plt.subplots(2, len(panels), figsize=(3 * len(panels), 6.2))
  for col, (title, name, params) in enumerate(panels):
    params = jnp.asarray(params, jnp.float32)[None]
    grid = ops.get_transform(name).grid(params, (28, 28))[0]
    warped = ops.warp(image, params, (28, 28), transform=name)[0, :, :, 0]
    # Top: where the output grid samples the input (every 3rd point).
    top = axes[0, col]
    top.imshow(digit, cmap="gray", extent=(-1, 1, 1, -1))
    g = np.asarray(grid)[::3, ::3]
    top.plot(g[..., 0], g[..., 1], color="tab:orange", lw=0.7)
    top.plot(g[..., 0].T, g[..., 1].T, color="tab:orange", lw=0.7)
    top.set_xlim(-1.3, 1.3)
    top.set_ylim(1.3, -1.3)
    top.set_title(f"{title}: grid on input", fontsize=9)
    bottom = axes[1, col]
    bottom.imshow(np.asarray(warped), cmap="gray", vmin=0, vmax=1)
    bottom.set_title(f"{title}: output", fontsize=9)
    for ax in (top, bottom):
      ax.set_xticks([])
      ax.set_yticks([])
  fig.suptitle(f"stn_jax.ops warps of {source}; bilinear, zeros padding, align_corners=False",
               fontsize=10)
  fig.tight_layout()
  fig.savefig(args.out, dpi=110)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
