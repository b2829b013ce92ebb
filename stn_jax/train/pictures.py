"""Pictures of what each spatial transformer does: the input with the sampled region
outlined, and what the transformer takes from it.

The trainer draws one every ``config.picture_every`` steps for ``config.pictures``
fixed validation inputs, into ``workdir/pictures/step_N.png`` and TensorBoard.
A transformer is found by the ``grid`` it sows into the ``intermediates``
collection (``stn_jax.nn.SpatialTransformer`` does). Its region is drawn on the
network's input even when it acts on a feature map deeper in the network (as in
ST-CNN Multi): the feature maps keep the input's frame, so the same normalised
coordinates name the same place, and its output column shows the input sampled
through its grid, i.e. what it looks at, in pixels.
"""

from __future__ import annotations

import numpy as np

__all__ = ["COLOURS", "find_grids", "region_outline", "st_picture"]

# One outline colour per transformer, in the order find_grids returns them.
COLOURS = ((255, 64, 64), (64, 200, 255), (255, 210, 0), (120, 255, 120), (255, 120, 255),
           (255, 160, 60))


def find_grids(intermediates) -> list[tuple[str, np.ndarray]]:
  """``(name, grid)`` of every transformer in a model's ``intermediates``, in path order.

  >>> tree = {'transformer': {'st_1': {'grid': (np.zeros((2, 3, 3, 2)),)},
  ...                         'st_0': {'grid': (np.ones((2, 3, 3, 2)),), 'theta': (0,)}}}
  >>> [(name, g.shape) for name, g in find_grids(tree)]
  [('transformer/st_0', (2, 3, 3, 2)), ('transformer/st_1', (2, 3, 3, 2))]
  >>> [(name, g.shape) for name, g in find_grids({'grid': (np.zeros((2, 4, 3, 3, 2)),)})][-1]
  ('3', (2, 3, 3, 2))
  """
  found = []

  def visit(node, path):
    if not isinstance(node, dict):
      return
    for key in sorted(node):
      value = node[key]
      if key == "grid":
        grid = value[-1] if isinstance(value, (tuple, list)) else value
        if len(grid.shape) == 5:  # (N, T, Ho, Wo, 2): T parallel transformers in one module
          found.extend(("/".join(path + [str(t)]), np.asarray(grid)[:, t])
                       for t in range(grid.shape[1]))
        else:
          found.append(("/".join(path), np.asarray(grid)))
      else:
        visit(value, path + [str(key)])

  visit(dict(intermediates), [])
  return found


def region_outline(grid, height: int, width: int) -> np.ndarray:
  """The outline of the region a grid samples, in pixels of a ``height x width`` input.

  The grid holds the input coordinates of the output pixels' centres
  (``align_corners=False``: -1 and 1 are the outer edges of the input). The
  outline goes round the grid's border, moved out by half an output pixel, so an
  identity grid outlines the whole input.

  Args:
    grid: ``(Ho, Wo, 2)`` normalised ``(x, y)`` coordinates.
    height, width: the input's size in pixels.

  Returns:
    ``(K, 2)`` pixel ``(x, y)`` points of a closed polygon (the first point repeated last).

  >>> from stn_jax import ops
  >>> identity = np.asarray(ops.affine_grid(np.array([[1., 0, 0], [0, 1, 0]]), (4, 4)))
  >>> outline = region_outline(identity, 28, 28)
  >>> outline.min(0).tolist(), outline.max(0).tolist()
  ([0.0, 0.0], [28.0, 28.0])
  """
  g = np.asarray(grid, np.float64)
  if g.ndim != 3 or g.shape[-1] != 2:
    raise ValueError(f"`grid` must have shape (Ho, Wo, 2), got {g.shape}.")
  for axis in (0, 1):  # a one-pixel side: its region has no extent along that side
    if g.shape[axis] < 2:
      g = np.repeat(g, 2, axis)
  # Half a pixel outwards along each axis: extrapolate from the border's neighbour.
  g = np.concatenate([1.5 * g[:1] - 0.5 * g[1:2], (g[:-1] + g[1:]) / 2,
                      1.5 * g[-1:] - 0.5 * g[-2:-1]], 0)
  g = np.concatenate([1.5 * g[:, :1] - 0.5 * g[:, 1:2], (g[:, :-1] + g[:, 1:]) / 2,
                      1.5 * g[:, -1:] - 0.5 * g[:, -2:-1]], 1)
  border = np.concatenate([g[0, :-1], g[:-1, -1], g[-1, ::-1][:-1], g[::-1, 0]], 0)
  return np.stack([(border[:, 0] + 1) * width / 2, (border[:, 1] + 1) * height / 2], -1)


def _rgb(images: np.ndarray) -> np.ndarray:
  """``(N, H, W, C)`` in [0, 1] to uint8 RGB: grey for 1 channel, red/green for 2."""
  x = np.clip(np.nan_to_num(np.asarray(images, np.float32)), 0.0, 1.0)
  c = x.shape[-1]
  if c == 1:
    x = np.repeat(x, 3, -1)
  elif c == 2:
    x = np.concatenate([x, np.zeros_like(x[..., :1])], -1)
  elif c > 3:
    x = x[..., :3]
  return (x * 255 + 0.5).astype(np.uint8)


def st_picture(images, grids, *, cell: int = 96, outputs=None) -> np.ndarray:
  """One row per input: the input with each transformer's region, then each output.

  Args:
    images: ``(N, H, W, C)`` network inputs in [0, 1] (C = 1, 2 (red/green) or 3).
    grids: ``[(name, (N, Ho, Wo, 2) grid), ...]`` from :func:`find_grids`.
    cell: the side, in pixels, each picture is scaled to.
    outputs: ``[(N, Ho, Wo, C), ...]``, one per grid: what to show as each
      transformer's output (default: ``images`` sampled through the grid).

  Returns:
    An ``(N * cell, (1 + len(grids)) * cell, 3)`` uint8 picture.
  """
  # Pillow and the sampler are needed only when a picture is drawn.
  from PIL import Image, ImageDraw  # pylint: disable=import-outside-toplevel
  from stn_jax import ops  # pylint: disable=import-outside-toplevel
  images = np.asarray(images, np.float32)
  n, h, w, _ = images.shape
  if outputs is None:
    outputs = [np.asarray(ops.sample(images, g)) for _, g in grids]
  canvas = Image.new("RGB", ((1 + len(grids)) * cell, n * cell))
  inputs = _rgb(images)
  warped = [_rgb(o) for o in outputs]
  draw = ImageDraw.Draw(canvas)
  for i in range(n):
    canvas.paste(Image.fromarray(inputs[i]).resize((cell, cell), Image.Resampling.NEAREST),
                 (0, i * cell))
    for k, (_, g) in enumerate(grids):
      colour = COLOURS[k % len(COLOURS)]
      points = region_outline(g[i], h, w) * (cell / w, cell / h) + (0, i * cell)
      draw.line([tuple(p) for p in points], fill=colour, width=2)
      canvas.paste(Image.fromarray(warped[k][i]).resize((cell, cell),
                                                        Image.Resampling.NEAREST),
                   ((1 + k) * cell, i * cell))
      draw.rectangle([(1 + k) * cell, i * cell, (2 + k) * cell - 1, (i + 1) * cell - 1],
                     outline=colour)
  return np.asarray(canvas)
