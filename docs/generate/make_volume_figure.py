"""Draws docs/ops_volume.png: slices of a volume before and after a 3-D affine warp.

    python docs/generate/make_volume_figure.py [--out docs/ops_volume.png]

The volume is synthetic (32^3): a solid ball, a bar along x and a thinner bar along z,
so that a rotation about the x axis shows in every slice. The warp is
``stn_jax.ops.warp_3d`` with a 30-degree turn about x and a zoom of 1.2.
"""

import argparse
import pathlib

import numpy as np

from stn_jax import ops

SIZE = 32


def phantom() -> np.ndarray:
  """(D, H, W) float32 in [0, 1]."""
  z, y, x = np.meshgrid(*(np.linspace(-1, 1, SIZE),) * 3, indexing="ij")
  volume = ((x + 0.3) ** 2 + y ** 2 + z ** 2 < 0.25).astype(np.float32)
  volume[(np.abs(y - 0.5) < 0.12) & (np.abs(z) < 0.12) & (np.abs(x) < 0.8)] = 0.6
  volume[(np.abs(x - 0.55) < 0.08) & (np.abs(y + 0.4) < 0.08) & (np.abs(z) < 0.8)] = 0.8
  return volume


def theta(degrees: float = 30.0, zoom: float = 1.2) -> np.ndarray:
  """Output (x, y, z) -> source: a turn about x, the source read 1/zoom as far."""
  a = np.deg2rad(degrees)
  turn = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(a), -np.sin(a)], [0.0, np.sin(a), np.cos(a)]])
  return np.concatenate([turn / zoom, np.zeros((3, 1))], 1)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=str(
      pathlib.Path(__file__).resolve().parents[1] / "ops_volume.png"))  # beside docs/ops.md
  args = parser.parse_args()
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  volume = phantom()
  warped = np.asarray(ops.warp_3d(volume[None, ..., None], theta()[None], (SIZE,) * 3))[0, ..., 0]
  slices = np.linspace(4, SIZE - 5, 5).astype(int)
  fig, axes = plt.subplots(2, len(slices), figsize=(2 * len(slices), 5.0))
  for row, (name, vol) in enumerate((("input", volume), ("warp_3d", warped))):
    for col, k in enumerate(slices):
      ax = axes[row, col]
      ax.imshow(vol[k], cmap="gray", vmin=0, vmax=1)
      ax.set_xticks([])
      ax.set_yticks([])
      ax.set_title(f"{name}, z slice {k}", fontsize=8)
  fig.suptitle("A 32^3 volume and warp_3d of it (30-degree turn about x, zoom 1.2), by z slice",
               fontsize=9)
  fig.tight_layout(rect=(0, 0, 1, 0.95), h_pad=1.5)
  fig.savefig(args.out, dpi=100)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
