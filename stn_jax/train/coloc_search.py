"""Eq. (1) of co-localisation over a grid of boxes: its loss for each candidate box of an
image, and rounds of best response (ours, issue 18; docs/lab_notes.md, "Co-localisation:
the landscape of eq. (1)").

Plain SGD on eq. (1) leaves the identity by zooming out, and a fixed-scale start drifts to
windows of background, although the true boxes have a far lower loss. Measured over a
grid, each image's best box against the others' current crops is near its digit, so the
loss is minimised here by rounds of best response: every image takes the grid box of least
loss against the crops the other images chose in the round before (round 0: the identity,
the whole image). Only the images and the encoder are used; no box or label.

Descriptors are NumPy arrays; the functions here are pure and small enough to test with
hand-made ones. The co-localisation loop (``optimizer='best_response'``) and
``docs/coloc_landscape.py`` compute them with an encoder.
"""

from __future__ import annotations

import itertools

import numpy as np

__all__ = ["best_response", "box_grid", "grid_losses", "local_offsets", "refined_grids",
           "search", "unit_length"]


def box_grid(scales, num_positions: int = 19, extent: float = 0.9) -> np.ndarray:
  """Attention boxes ``(s, tx, ty)``: every scale in ``scales`` at every centre of a
  ``num_positions`` x ``num_positions`` grid over ``[-extent, extent]^2``.

  >>> box_grid([0.5], 3)[:2].astype(float).round(3).tolist()
  [[0.5, -0.9, -0.9], [0.5, -0.9, 0.0]]
  """
  scales = np.asarray(scales, np.float32).reshape(-1)
  if scales.size == 0 or not np.all(np.isfinite(scales)) or np.any(scales <= 0):
    raise ValueError(f"The grid's scales must be positive numbers; got {scales.tolist()}.")
  if num_positions < 1:
    raise ValueError(f"num_positions must be at least 1, got {num_positions}.")
  centres = (np.linspace(-extent, extent, num_positions, dtype=np.float32)
             if num_positions > 1 else np.zeros(1, np.float32))  # one position: the centre
  return np.array(list(itertools.product(scales, centres, centres)), np.float32)


def local_offsets() -> np.ndarray:
  """The refining grid: ``(scale factor, dx, dy)`` with factors 0.9-1.1 and shifts of up
  to 0.075 (3 px of 84) in steps of 0.025 (about 1 px); ``(1, 0, 0)`` is among them."""
  shifts = np.arange(-3, 4, dtype=np.float32) * 0.025
  return np.array(list(itertools.product((0.9, 0.95, 1.0, 1.05, 1.1), shifts, shifts)),
                  np.float32)


def refined_grids(theta, offsets) -> np.ndarray:
  """``(N, G, 3)`` boxes around each of ``theta (N, 3)``: its scale times each offset's
  factor, its centre plus each offset's shift."""
  theta, offsets = np.asarray(theta, np.float32), np.asarray(offsets, np.float32)
  return np.stack([theta[:, None, 0] * offsets[None, :, 0],
                   theta[:, None, 1] + offsets[None, :, 1],
                   theta[:, None, 2] + offsets[None, :, 2]], -1)


def unit_length(e):
  """``e`` with each row scaled to unit length (a zero row stays near zero)."""
  e = np.asarray(e, np.float64)
  return e / np.sqrt(np.sum(e * e, -1, keepdims=True) + 1e-12)


def _sq_distances(a, b):
  return np.maximum((a * a).sum(-1)[:, None] + (b * b).sum(-1)[None] - 2 * a @ b.T, 0.0)


def grid_losses(candidates, partners, randoms, margin: float = 1.0) -> np.ndarray:
  """Eq. (1) for one image ``n`` at each candidate box, averaged over its partners ``m``
  and its random crops: ``mean_{m, r} max(0, |c - e_m|^2 - |c - e_r|^2 + margin)``.

  Args:
    candidates: ``(G, D)`` descriptors of image n's crop at each candidate box.
    partners: ``(M, D)`` descriptors of the other images' crops.
    randoms: ``(R, D)`` descriptors of random crops of image n.
    margin: alpha.

  Returns:
    ``(G,)`` losses.

  >>> grid_losses([[0.0], [1.0]], [[1.0]], [[0.0]]).tolist()  # the second matches m
  [2.0, 0.0]
  """
  candidates, partners, randoms = (np.asarray(x, np.float64)
                                   for x in (candidates, partners, randoms))
  d_pair = _sq_distances(candidates, partners)  # (G, M)
  d_rand = _sq_distances(candidates, randoms)  # (G, R)
  return np.maximum(0.0, d_pair[:, :, None] - d_rand[:, None, :] + margin).mean((1, 2))


def best_response(grid_desc, rand_desc, start, rounds: int, margin: float = 1.0):
  """Rounds of best response to eq. (1) over a grid of boxes.

  In each round every image ``n`` takes the box ``g`` minimising
  ``grid_losses(grid_desc[n], crops of the others, rand_desc[n])``, where the others'
  crops are those they chose in the round before; all images move together. An image
  keeps its box unless another costs strictly less, and the rounds stop early once a round
  would move no box (a fixed point of best response).

  Args:
    grid_desc: ``(N, G, D)`` descriptors of every image's crop at every grid box.
    rand_desc: ``(N, R, D)`` descriptors of random crops of every image.
    start: ``(N,)`` grid indices of the boxes before round 1 (e.g. the identity's).
    rounds: the most rounds.
    margin: alpha.

  Returns:
    ``(choices, losses)``: ``choices`` is ``(k + 1, N)`` grid indices for the ``k <=
    rounds`` rounds that moved a box (row 0 is ``start``); ``losses`` is ``(k,)``, each
    round's mean loss at its choices against the round before's.
  """
  grid_desc, rand_desc = np.asarray(grid_desc), np.asarray(rand_desc)
  n_images = grid_desc.shape[0]
  if n_images < 2:
    raise ValueError(f"Best response needs at least 2 images (eq. (1) compares pairs); got "
                     f"{n_images}.")
  choice = np.asarray(start, np.int64)
  if choice.shape != (n_images,) or np.any((choice < 0) | (choice >= grid_desc.shape[1])):
    raise ValueError(f"start must hold one grid index in [0, {grid_desc.shape[1]}) per image "
                     f"({n_images}); got shape {choice.shape}.")
  choices, losses = [choice], []
  for _ in range(rounds):
    current = grid_desc[np.arange(n_images), choice]  # (N, D)
    new, total = np.empty_like(choice), 0.0
    for n in range(n_images):
      others = np.delete(current, n, axis=0)
      loss = grid_losses(grid_desc[n], others, rand_desc[n], margin)
      best = int(np.argmin(loss))
      new[n] = choice[n] if loss[choice[n]] <= loss[best] else best
      total += loss[new[n]]
    if np.array_equal(new, choice):
      break  # a fixed point: further rounds would repeat this one
    choice = new
    choices.append(choice)
    losses.append(total / n_images)
  return np.stack(choices), np.asarray(losses)


def search(describe, num_images: int, rand_desc, grid, rounds: int, refine_rounds: int = 0,
           margin: float = 1.0):
  """Eq. (1) minimised by best response: at most ``rounds`` on ``grid`` from the identity,
  then at most ``refine_rounds`` on :func:`local_offsets` around each image's box; each
  stage stops at a fixed point (:func:`best_response`).

  Args:
    describe: ``describe(n, theta (G, 3)) -> (G, D)`` the (unit-length) descriptors of
      image ``n``'s crops at the boxes ``theta``.
    num_images: N.
    rand_desc: ``(N, R, D)`` descriptors of random crops of each image.
    grid: ``(G, 3)`` boxes, the identity ``(1, 0, 0)`` among them.
    rounds, refine_rounds: the most rounds on the grid, then on the finer one.
    margin: alpha.

  Returns:
    ``(thetas, losses, refining)``: ``(k + 1, N, 3)`` every image's box before the first
    round and after each of the ``k`` rounds that moved a box, ``(k,)`` each round's loss,
    and ``(k + 1,)`` whether each row came from a refining round.
  """
  grid = np.asarray(grid, np.float32)
  identity = np.flatnonzero(np.all(grid == np.array([1.0, 0.0, 0.0], np.float32), -1))
  if identity.size == 0:
    raise ValueError("The search starts at the identity: the grid must hold the box "
                     "(1, 0, 0) (a scale of 1.0 and an odd number of positions).")
  grid_desc = np.stack([describe(n, grid) for n in range(num_images)])
  choices, losses = best_response(grid_desc, rand_desc, np.full(num_images, identity[0]),
                                  rounds, margin)
  thetas = [grid[c] for c in choices]
  coarse = len(thetas)
  if refine_rounds:
    offsets = local_offsets()
    fine = refined_grids(thetas[-1], offsets)
    fine_desc = np.stack([describe(n, fine[n]) for n in range(num_images)])
    centre = int(np.flatnonzero(np.all(offsets == np.array([1.0, 0, 0], np.float32), -1))[0])
    fine_choices, fine_losses = best_response(fine_desc, rand_desc,
                                              np.full(num_images, centre), refine_rounds,
                                              margin)
    thetas += [fine[np.arange(num_images), c] for c in fine_choices[1:]]
    losses = np.concatenate([losses, fine_losses])
  return np.stack(thetas), np.asarray(losses), np.arange(len(thetas)) >= coarse
