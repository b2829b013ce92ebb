"""Eq. (1) of co-localisation over a grid of boxes: its loss for each candidate box of an
image, and its minimisation by moving one image's box at a time (ours;
docs/research/lab_notes.md, "Co-localisation: the landscape of eq. (1)" and "the search that
localises").

Plain SGD on eq. (1) leaves the identity by zooming out, and a fixed-scale start drifts to
windows of background, although the true boxes have a far lower loss. Here eq. (1) is
minimised over a grid instead: :func:`coordinate_descent` lets each image in turn take the
box that lowers eq. (1) summed over all pairs, given the others' boxes, so the sum never
rises and the search stops where no single image can lower it; :func:`best_response`
(every image at once, against the others' boxes of the round before) is the earlier
alternative. Each box can be compared with random crops of its own scale, and a cost of
each box on its own (``unary``; the loop's ``search.confidence_weight``, ours) can join
eq. (1). Only the images and the encoder are used; no box or label.

Descriptors are NumPy arrays; the functions here are pure and small enough to test with
hand-made ones. The co-localisation loop (``optimizer='search'``) and
``docs/generate/coloc_landscape.py`` compute them with an encoder.
"""

from __future__ import annotations

import itertools

import numpy as np

__all__ = ["best_response", "box_grid", "coordinate_descent", "grid_losses", "image_losses",
           "inside", "local_offsets", "refined_grids", "search", "unit_length"]


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


def inside(theta) -> np.ndarray:
  """Whether each box ``(s, tx, ty)`` of ``theta (..., 3)`` lies within the image:
  ``|t| + |s| <= 1`` on both axes (the identity does; a box over the edge does not).

  >>> inside([[1.0, 0.0, 0.0], [0.5, 0.6, 0.0], [0.5, 0.5, -0.5]]).tolist()
  [True, False, True]
  """
  theta = np.asarray(theta, np.float64)
  return np.abs(theta[..., 1:]).max(-1) + np.abs(theta[..., 0]) <= 1.0 + 1e-6


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


def _random_sets(rand_desc, num_candidates, rand_index):
  """``rand_desc`` as ``(N, K, R, D)`` sets and each candidate's set ``(G,)``: one set for
  every candidate when ``rand_desc`` is ``(N, R, D)``."""
  rand_desc = np.asarray(rand_desc)
  if rand_index is None:
    if rand_desc.ndim != 3:
      raise ValueError(f"Random-crop descriptors of shape {rand_desc.shape} need rand_index, "
                       "each candidate's set; (N, R, D) descriptors serve every candidate.")
    return rand_desc[:, None], np.zeros(num_candidates, np.int64)
  rand_index = np.asarray(rand_index, np.int64)
  if (rand_desc.ndim != 4 or rand_index.shape != (num_candidates,)
      or np.any((rand_index < 0) | (rand_index >= rand_desc.shape[1]))):
    raise ValueError(f"rand_index must give each of the {num_candidates} candidates a set of "
                     f"rand_desc (N, K, R, D); got rand_index of shape {rand_index.shape} and "
                     f"rand_desc of shape {rand_desc.shape}.")
  return rand_desc, rand_index


def image_losses(candidates, partners, rand_sets, rand_index, margin: float = 1.0):
  """:func:`grid_losses` when candidates differ in their random crops: candidate ``g``
  is compared with ``rand_sets[rand_index[g]]`` (e.g. windows of its own scale)."""
  candidates = np.asarray(candidates)
  out = np.empty(len(candidates))
  for k in np.unique(rand_index):
    rows = rand_index == k
    out[rows] = grid_losses(candidates[rows], partners, rand_sets[k], margin)
  return out


def best_response(grid_desc, rand_desc, start, rounds: int, margin: float = 1.0,
                  rand_index=None, allowed=None):
  """Rounds of best response to eq. (1) over a grid of boxes.

  In each round every image ``n`` takes the box ``g`` minimising
  ``grid_losses(grid_desc[n], crops of the others, its random crops)``, where the others'
  crops are those they chose in the round before; all images move together. An image
  keeps its box unless another costs strictly less, and the rounds stop early once a round
  would move no box (a fixed point of best response).

  Args:
    grid_desc: ``(N, G, D)`` descriptors of every image's crop at every grid box.
    rand_desc: ``(N, R, D)`` descriptors of random crops of every image, compared with
      every box; or ``(N, K, R, D)``, ``K`` sets of them, box ``g`` compared with set
      ``rand_index[g]`` (``random_crop='same_scale'``: windows of the box's scale).
    start: ``(N,)`` grid indices of the boxes before round 1 (e.g. the identity's).
    rounds: the most rounds.
    margin: alpha.
    rand_index: ``(G,)`` each box's set of random crops, with ``(N, K, R, D)`` only.
    allowed: ``(N, G)`` booleans, the boxes each image may take (default: all).

  Returns:
    ``(choices, losses)``: ``choices`` is ``(k + 1, N)`` grid indices for the ``k <=
    rounds`` rounds that moved a box (row 0 is ``start``); ``losses`` is ``(k,)``, each
    round's mean loss at its choices against the round before's.
  """
  grid_desc = np.asarray(grid_desc)
  n_images = grid_desc.shape[0]
  if n_images < 2:
    raise ValueError(f"Best response needs at least 2 images (eq. (1) compares pairs); got "
                     f"{n_images}.")
  rand_desc, rand_index = _random_sets(rand_desc, grid_desc.shape[1], rand_index)
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
      loss = image_losses(grid_desc[n], others, rand_desc[n], rand_index, margin)
      if allowed is not None:
        loss[~np.asarray(allowed[n])] = np.inf
      best = int(np.argmin(loss))
      new[n] = choice[n] if loss[choice[n]] <= loss[best] else best
      total += loss[new[n]]
    if np.array_equal(new, choice):
      break  # a fixed point: further rounds would repeat this one
    choice = new
    choices.append(choice)
    losses.append(total / n_images)
  return np.stack(choices), np.asarray(losses)


def _pick(cost, current, rank, places):
  """``(box, better)``: the box of least ``cost`` (ties: the lower ``rank``, then the one
  nearest ``current`` by ``places``), and whether it beats ``current``."""
  if rank is None:
    best = int(np.argmin(cost))
    return best, cost[best] < cost[current]
  ties = np.flatnonzero(cost == cost.min())
  ties = ties[rank[ties] == rank[ties].min()]
  if places is not None and len(ties) > 1:
    ties = ties[np.argsort(np.abs(places[ties] - places[current]).sum(-1), kind="stable")]
  best = int(ties[0])
  return best, (cost[best], rank[best]) < (cost[current], rank[current])


def coordinate_descent(grid_desc, rand_desc, start, sweeps: int, margin: float = 1.0,
                       rand_index=None, allowed=None, rank=None, places=None, unary=None):
  """Eq. (1) summed over all pairs, minimised over a grid of boxes one image at a time.

  The objective is ``J = mean_n mean_{m != n, r} max(0, |c_n - c_m|^2 - |c_n - r_n|^2 +
  margin)``, ``c_n`` image ``n``'s crop at its box and ``r_n`` its random crops. In each
  sweep every image in turn (0, 1, ...) takes the box that minimises ``J`` with the
  others' boxes as they are now: its own terms (``n`` against each partner) and those in
  which it is the partner (each ``m`` against ``n``). An image keeps its box unless
  another lowers ``J``, so ``J`` never rises, and the sweeps stop at the first that moves
  no box: there no single image can lower ``J`` (a minimum over the grid, one image at a
  time), or after ``sweeps``.

  Args:
    grid_desc: ``(N, G, D)`` descriptors of every image's crop at every grid box.
    rand_desc, rand_index: random crops' descriptors, as for :func:`best_response`.
    start: ``(N,)`` grid indices of the boxes before the first sweep.
    sweeps: the most sweeps.
    margin: alpha.
    allowed: ``(N, G)`` booleans, the boxes each image may take (default: all).
    rank: ``(G,)`` which of two boxes of equal ``J`` is preferred (the lower rank, e.g.
      the smaller box). An image then moves when the move lowers ``J``, or keeps it and
      lowers the rank; the pair ``(J, rank)`` never rises, so the sweeps still end.
      Default: no preference (an image moves only when ``J`` falls).
    places: ``(G, P)`` where each box is (e.g. ``(s, tx, ty)``), with ``rank``: of the
      boxes with the least ``(J, rank)``, an image takes the one nearest its own, not the
      first in the grid's order (which would send boxes of equal loss to one corner).
    unary: ``(N, G)`` a cost of each image's each box on its own, added to the objective
      as its mean over the images' boxes: ``J + mean_n unary[n, box_n]`` (e.g. how little
      the encoder reads a digit there). Default: none.

  Returns:
    ``(choices, objective)``: ``(k + 1, N)`` the boxes before the first sweep and after
    each of the ``k <= sweeps`` sweeps that moved a box, and ``(k + 1,)`` ``J`` at each.
  """
  grid_desc = np.asarray(grid_desc, np.float32)
  n_images, n_boxes = grid_desc.shape[:2]
  if n_images < 2:
    raise ValueError(f"Coordinate descent needs at least 2 images (eq. (1) compares pairs); "
                     f"got {n_images}.")
  rand_desc, rand_index = _random_sets(rand_desc, n_boxes, rand_index)
  allowed = np.ones((n_images, n_boxes), bool) if allowed is None else np.asarray(allowed)
  choice = np.array(start, np.int64)
  if choice.shape != (n_images,) or np.any((choice < 0) | (choice >= n_boxes)):
    raise ValueError(f"start must hold one grid index in [0, {n_boxes}) per image "
                     f"({n_images}); got shape {choice.shape}.")
  unary = np.zeros((n_images, n_boxes)) if unary is None else np.asarray(unary, np.float64)
  if unary.shape != (n_images, n_boxes) or not np.all(np.isfinite(unary)):
    raise ValueError(f"unary must hold a finite cost for each of the {n_boxes} boxes of each "
                     f"of the {n_images} images; got shape {unary.shape}.")
  # What does not change while boxes move, computed once: each box's distance to its own
  # random crops (N, G, R), and each box's squared length.
  d_rand = np.empty((n_images, n_boxes, rand_desc.shape[2]), np.float32)
  for n in range(n_images):
    for k in np.unique(rand_index):
      rows = rand_index == k
      d_rand[n, rows] = _sq_distances(grid_desc[n, rows], rand_desc[n, k])
  norms = np.einsum("ngd,ngd->ng", grid_desc, grid_desc)

  def pair_distances(n, boxes_of):  # (G, M) |grid box of n - the others' crops|^2
    others = np.delete(np.arange(n_images), n)
    cross = grid_desc[n] @ grid_desc[others, boxes_of[others]].T
    return np.maximum(norms[n][:, None] + norms[others, boxes_of[others]][None] - 2 * cross,
                      0.0), others

  def objective(boxes_of):  # J at the boxes: the crops' own pairs only, not every box's
    own = d_rand[np.arange(n_images), boxes_of]  # (N, R)
    crops = grid_desc[np.arange(n_images), boxes_of]
    pair = _sq_distances(crops, crops)  # (N, N)
    return float(np.mean([np.maximum(0.0, np.delete(pair[n], n)[:, None] - own[n][None]
                                      + margin).mean() for n in range(n_images)])
                 + unary[np.arange(n_images), boxes_of].mean())

  choices, totals = [choice.copy()], [objective(choice)]
  for _ in range(sweeps):
    moved = False
    for n in range(n_images):
      d_pair, others = pair_distances(n, choice)
      own = d_rand[others, choice[others]]  # (M, R): each partner's own random crops
      # n's share of J times N: its own terms, and the others' with n as their partner;
      # its unary cost enters J + mean unary at the same scale.
      cost = (np.maximum(0.0, d_pair[:, :, None] - d_rand[n][:, None, :] + margin).mean((1, 2))
              + np.maximum(0.0, d_pair[:, :, None] - own[None] + margin).mean((1, 2))
              + unary[n])
      cost[~allowed[n]] = np.inf
      best, better = _pick(cost, choice[n], rank, places)
      if better:
        choice[n], moved = best, True
    if not moved:
      break  # no image can lower J alone
    choices.append(choice.copy())
    totals.append(objective(choice))
  return np.stack(choices), np.asarray(totals)


MOVES = ("sequential", "simultaneous")


def search(describe, num_images: int, rand_desc, grid, rounds: int, refine_rounds: int = 0,
           margin: float = 1.0, moves: str = "sequential", within: bool = False,
           prefer_smaller: bool = False, score=None, score_weight: float = 0.0):
  """Eq. (1) minimised over boxes: at most ``rounds`` on ``grid`` from the identity, then at
  most ``refine_rounds`` on :func:`local_offsets` around each image's box; each stage
  stops at a fixed point.

  Args:
    describe: ``describe(n, theta (G, 3)) -> (G, D)`` the (unit-length) descriptors of
      image ``n``'s crops at the boxes ``theta``.
    num_images: N.
    rand_desc: ``(N, R, D)`` descriptors of random crops of each image, compared with
      every box; or a function ``rand_desc(scales (N, K)) -> (N, K, R, D)``, the
      descriptors of random crops of each image at each of its ``K`` scales, so that each
      box is compared with crops of its own scale (``random_crop='same_scale'``).
    grid: ``(G, 3)`` boxes, the identity ``(1, 0, 0)`` among them.
    rounds, refine_rounds: the most rounds on the grid, then on the finer one.
    margin: alpha.
    moves: ``'sequential'``: :func:`coordinate_descent` (one image at a time, eq. (1)
      summed over all pairs never rises); ``'simultaneous'``: :func:`best_response`
      (every image against the others' boxes of the round before).
    within: only boxes inside the image (:func:`inside`).
    prefer_smaller: of two boxes with the same sum, an image takes the smaller, and of
      boxes alike in both, the nearest its own (``'sequential'`` only:
      :func:`coordinate_descent`'s ``rank``, the box's scale, and ``places``).
    score, score_weight: ``score(n, theta (G, 3)) -> (G,)`` a cost of each of image
      ``n``'s boxes on its own; with ``score_weight > 0`` (``'sequential'`` only) the
      search minimises ``J + score_weight * mean_n score(n, box_n)`` (the ``unary`` of
      :func:`coordinate_descent`). Default: eq. (1) alone.

  Returns:
    ``(thetas, losses, refining)``: ``(k + 1, N, 3)`` every image's box before the first
    round and after each of the ``k`` rounds that moved a box, ``(k,)`` the loss after
    each round (``'sequential'``: eq. (1)'s mean over all pairs, plus the weighted
    score's mean when there is one; ``'simultaneous'``: each
    image's loss against the round before's boxes, averaged), and ``(k + 1,)`` whether each
    row came from a refining round.
  """
  if moves not in MOVES:
    raise ValueError(f"moves must be one of {', '.join(MOVES)}, got {moves!r}.")
  if prefer_smaller and moves != "sequential":
    raise ValueError("prefer_smaller needs moves='sequential': best response has no rank.")
  if not (np.isfinite(score_weight) and score_weight >= 0):
    raise ValueError(f"score_weight must be a finite number >= 0, got {score_weight}.")
  scored = score is not None and score_weight > 0
  if scored and moves != "sequential":
    raise ValueError("A score needs moves='sequential': best response has no unary cost.")
  grid = np.asarray(grid, np.float32)
  if within:
    grid = grid[inside(grid)]
  identity = np.flatnonzero(np.all(grid == np.array([1.0, 0.0, 0.0], np.float32), -1))
  if identity.size == 0:
    raise ValueError("The search starts at the identity: the grid must hold the box "
                     "(1, 0, 0) (a scale of 1.0 and an odd number of positions).")

  def randoms(scales, of_box):  # scales (N, K); of_box (G,) each box's column of scales
    if not callable(rand_desc):
      return np.asarray(rand_desc), None
    return np.asarray(rand_desc(np.asarray(scales, np.float32))), of_box

  def described(boxes):  # boxes (N, G, 3) -> descriptors (N, G, D), weighted scores or None
    desc, costs = [], []
    for n in range(num_images):  # each image's score right after its descriptors
      desc.append(describe(n, boxes[n]))
      if scored:
        costs.append(score_weight * np.asarray(score(n, boxes[n]), np.float64))
    return np.stack(desc), (np.stack(costs) if scored else None)

  def minimise(desc, rand, start, most, index, allowed, places, costs):
    if moves == "simultaneous":
      return best_response(desc, rand, start, most, margin, index, allowed)
    choices, totals = coordinate_descent(desc, rand, start, most, margin, index, allowed,
                                         rank=places[:, 0] if prefer_smaller else None,
                                         places=places, unary=costs)
    return choices, totals[1:]

  grid_desc, grid_costs = described(np.broadcast_to(grid, (num_images, *grid.shape)))
  scales, of_box = np.unique(grid[:, 0], return_inverse=True)
  rand, index = randoms(np.broadcast_to(scales, (num_images, len(scales))), of_box)
  choices, losses = minimise(grid_desc, rand, np.full(num_images, identity[0]), rounds, index,
                             None, grid, grid_costs)
  thetas = [grid[c] for c in choices]
  coarse = len(thetas)
  if refine_rounds:
    offsets = local_offsets()
    fine = refined_grids(thetas[-1], offsets)
    fine_desc, fine_costs = described(fine)
    factors, of_offset = np.unique(offsets[:, 0], return_inverse=True)
    rand, index = randoms(np.abs(thetas[-1][:, :1]) * factors[None], of_offset)
    centre = int(np.flatnonzero(np.all(offsets == np.array([1.0, 0, 0], np.float32), -1))[0])
    allowed = inside(fine) if within else None
    if allowed is not None:
      allowed[:, centre] = True  # where each image is: it may stay
    fine_choices, fine_losses = minimise(fine_desc, rand, np.full(num_images, centre),
                                         refine_rounds, index, allowed, offsets, fine_costs)
    thetas += [fine[np.arange(num_images), c] for c in fine_choices[1:]]
    losses = np.concatenate([losses, fine_losses])
  return np.stack(thetas), np.asarray(losses), np.arange(len(thetas)) >= coarse
