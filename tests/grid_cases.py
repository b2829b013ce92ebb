"""Grids that exercise the hard cases: exact integer pixel positions and the borders."""

import numpy as np

# torch's padding modes, against which the sampler is checked in every mode; 'fill' (no
# torch counterpart) has its own tests in test_fill_padding.py.
TORCH_PADDING_MODES = ("zeros", "border", "reflection")


def pixel_coordinates(index, size, align_corners):
  """Normalised coordinate of integer pixel position(s) ``index``."""
  index = np.asarray(index, np.float64)
  if align_corners:
    return 2.0 * index / (size - 1) - 1.0
  return (2.0 * index + 1.0) / size - 1.0


def random_grid(rng, n, ho, wo, h, w, align_corners, *, spread=1.4):
  """A grid with random points, exact integer pixel positions and the exact borders.

  Sizes should make the normalisation dyadic (W - 1 a power of two with
  align_corners, W a power of two without) so the integer positions are exact
  in float32 as well.
  """
  grid = rng.uniform(-spread, spread, size=(n, ho, wo, 2))
  # Row 0: integer pixel positions across the image and one beyond each edge.
  xs = np.arange(-1, w + 1)[:wo]
  ys = np.resize(np.arange(-1, h + 1), wo)
  grid[0, 0, :len(xs), 0] = pixel_coordinates(xs, w, align_corners)
  grid[0, 0, :, 1] = pixel_coordinates(ys, h, align_corners)
  # Row 1: the corners of the image in normalised coordinates (+-1), and the edge pixels.
  corners = np.array([[-1, -1], [1, -1], [-1, 1], [1, 1]], np.float64)
  grid[-1, 1, :4] = corners
  grid[-1, 1, 4:6, 0] = pixel_coordinates([0, w - 1], w, align_corners)
  grid[-1, 1, 4:6, 1] = pixel_coordinates([h - 1, 0], h, align_corners)
  return grid
