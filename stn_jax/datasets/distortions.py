"""The paper's distorted MNIST variants, written with :mod:`stn_jax.ops`.

Supplement 1.1-1.3. Every generator takes a PRNG key, one 28x28 digit
(float32 in [0, 1]) and a pool of other digits (for clutter), and returns
``(image (H, W, C), params)``, where ``params`` holds the sampled distortion so
that tests, and anyone curious, can check it. They are pure, so they jit and
vmap; :func:`distort_batch` does both for a whole batch on the accelerator.

The geometry uses the ops' convention: normalised coordinates in [-1, 1],
pixel edges at +-1 (``align_corners=False``), grids mapping output to source.
"""

from __future__ import annotations

import functools
import jax
import jax.numpy as jnp
import numpy as np

from stn_jax import ops
from stn_jax.errors import ConfigError

__all__ = ["DISTORTIONS", "addition", "addition_batch", "colocalization",
           "colocalization_set", "distort_batch", "fixed_set",
           "elastic", "projective", "rotated", "rts", "translated_cluttered"]

DIGIT = 28


def _rotation(angle):
  c, s = jnp.cos(angle), jnp.sin(angle)
  return jnp.array([[c, -s], [s, c]])


def _warp(digit, grid):
  return ops.sample(digit[None, :, :, None], grid[None])[0]


def _affine(digit, matrix, shift, out_hw):
  theta = jnp.concatenate([matrix, shift[:, None]], 1)
  return _warp(digit, ops.affine_grid(theta, out_hw)), theta


def rotated(key, digit, others=None):
  """R: rotation uniform in [-90, 90] degrees, 28x28.

  Returns:
    ``(image (28, 28, 1), {'angle': radians, 'theta': (2, 3)})``.
  """
  del others
  angle = jax.random.uniform(key, (), minval=-jnp.pi / 2, maxval=jnp.pi / 2)
  # Output point x reads the source at R(-angle) x: the digit turns by +angle.
  image, theta = _affine(digit, _rotation(-angle), jnp.zeros(2), (DIGIT, DIGIT))
  return image, {"angle": angle, "theta": theta}


def _rts_params(key, canvas):
  ka, ks, kc = jax.random.split(key, 3)
  angle = jax.random.uniform(ka, (), minval=-jnp.pi / 4, maxval=jnp.pi / 4)
  scale = jax.random.uniform(ks, (), minval=0.7, maxval=1.2)
  # The centre, in canvas pixels, keeps the scaled 28x28 box inside the canvas.
  half = DIGIT * scale / 2
  centre = jax.random.uniform(kc, (2,), minval=half, maxval=canvas - half)
  return angle, scale, centre


def _rts_image(digit, angle, scale, centre, canvas):
  # Output pixel X (in canvas pixels) reads the digit at R(-a) (X - c) / (14 s),
  # in the digit's normalised coordinates; X = (x + 1) * canvas / 2.
  inv = _rotation(-angle)
  matrix = inv * (canvas / (DIGIT * scale))
  shift = inv @ (canvas / 2 - centre) * (2 / (DIGIT * scale))
  return _affine(digit, matrix, shift, (canvas, canvas))


def rts(key, digit, others=None, canvas: int = 42):
  """RTS: rotation in [-45, 45] degrees, scale in [0.7, 1.2], placed uniformly in 42x42.

  Returns:
    ``(image (42, 42, 1), {'angle', 'scale', 'centre' (x, y) in canvas pixels, 'theta'})``.
  """
  del others
  angle, scale, centre = _rts_params(key, canvas)
  image, theta = _rts_image(digit, angle, scale, centre, canvas)
  return image, {"angle": angle, "scale": scale, "centre": centre, "theta": theta}


def homography(source, target):
  """The homography (8 params, h33 = 1) mapping 4 ``target`` points onto 4 ``source`` points.

  Args:
    source: ``(4, 2)`` points.
    target: ``(4, 2)`` points.

  Returns:
    ``(8,)`` parameters for :func:`stn_jax.ops.projective_grid`.
  """
  x, y = target[:, 0], target[:, 1]
  u, v = source[:, 0], source[:, 1]
  zero, one = jnp.zeros_like(x), jnp.ones_like(x)
  rows_u = jnp.stack([x, y, one, zero, zero, zero, -u * x, -u * y], -1)
  rows_v = jnp.stack([zero, zero, zero, x, y, one, -v * x, -v * y], -1)
  system = jnp.concatenate([rows_u, rows_v], 0)
  return jnp.linalg.solve(system, jnp.concatenate([u, v]))


# NumPy, not jnp: a jnp constant would start JAX's backend on import, before a
# multi-process run can call jax.distributed.initialize().
CORNERS = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], np.float32)


def projective(key, digit, others=None):
  """P: scale in [0.75, 1.0], then each corner moved by N(0, 5 px), 28x28; what lies beyond
  the homography's horizon stays black.

  Returns:
    ``(image (28, 28, 1), {'scale', 'corners' (4, 2) where the digit's corners
    land, normalised, 'h' (8,)})``.
  """
  del others
  ks, kn = jax.random.split(key)
  scale = jax.random.uniform(ks, (), minval=0.75, maxval=1.0)
  noise = jax.random.normal(kn, (4, 2)) * 5.0 * (2 / DIGIT)  # 5 px in normalised units
  corners = CORNERS * scale + noise
  h = homography(CORNERS, corners)
  grid = ops.projective_grid(h, (DIGIT, DIGIT))
  # A homography also maps the points beyond its horizon (w of the other sign than on the
  # digit) onto the source plane, where a picture shows nothing: a mirrored ghost of the
  # digit. Those points read nothing (NaN: the sampler's "nowhere").
  w = lambda xy: h[6] * xy[..., 0] + h[7] * xy[..., 1] + 1
  in_front = w(ops.identity_grid((DIGIT, DIGIT))) * w(jnp.mean(corners, 0)) > 0
  grid = jnp.where(in_front[..., None], grid, jnp.nan)
  image = _warp(digit, grid)
  return image, {"scale": scale, "corners": corners, "h": h}


def elastic(key, digit, others=None):
  """E: scale in [0.75, 1.0], then the 16 control points of a 4x4 TPS grid
  moved by N(0, 1.5 px), 28x28.

  Returns:
    ``(image (28, 28, 1), {'scale', 'offsets' (16, 2) normalised})``.
  """
  del others
  ks, kn = jax.random.split(key)
  scale = jax.random.uniform(ks, (), minval=0.75, maxval=1.0)
  offsets = jax.random.normal(kn, (16, 2)) * 1.5 * (2 / DIGIT)
  # Output -> the TPS -> the scaled digit's frame -> / scale -> the source.
  grid = ops.tps_grid(offsets, (DIGIT, DIGIT)) / scale
  return _warp(digit, grid), {"scale": scale, "offsets": offsets}


def _paste_max(canvas, patch, top, left):
  """Puts ``patch`` at integer ``(top, left)`` of ``canvas``, keeping the brighter pixel."""
  layer = jax.lax.dynamic_update_slice(jnp.zeros_like(canvas), patch, (top, left))
  return jnp.maximum(canvas, layer)


def _clutter(key, canvas, others, num_patches, patch):
  size = canvas.shape[0]
  keys = jax.random.split(key, num_patches)

  def add(canvas, k):
    ki, kc, kp = jax.random.split(k, 3)
    source = others[jax.random.randint(ki, (), 0, others.shape[0])]
    r, c = jax.random.randint(kc, (2,), 0, DIGIT - patch + 1)
    crop = jax.lax.dynamic_slice(source, (r, c), (patch, patch))
    top, left = jax.random.randint(kp, (2,), 0, size - patch + 1)
    return _paste_max(canvas, crop, top, left), None

  canvas, _ = jax.lax.scan(add, canvas, keys)
  return canvas


def _place(key, digit, size):
  top, left = jax.random.randint(key, (2,), 0, size - DIGIT + 1)
  return _paste_max(jnp.zeros((size, size), digit.dtype), digit, top, left), top, left


def translated_cluttered(key, digit, others, canvas: int = 60, num_patches: int = 6,
                         patch: int = 6):
  """TC: the digit at a uniform location in a 60x60 black canvas, plus six 6x6
  patches cropped from other digits at uniform locations.

  Args:
    key: PRNG key.
    digit: ``(28, 28)``.
    others: ``(K, 28, 28)`` digits to crop clutter from (not ``digit`` itself).
    canvas, num_patches, patch: the sizes (the paper's by default).

  Returns:
    ``(image (60, 60, 1), {'top', 'left'})``: where the digit's 28x28 box starts.
  """
  kd, kc = jax.random.split(key)
  image, top, left = _place(kd, digit, canvas)
  image = _clutter(kc, image, others, num_patches, patch)
  return image[..., None], {"top": top, "left": left}


def addition(key, digit_a, digit_b, canvas: int = 42):
  """MNIST addition input: each digit under its own RTS, one per channel.

  Returns:
    ``(image (42, 42, 2), {'theta': (2, 2, 3), 'angle', 'scale', 'centre' per channel})``.
  """
  ka, kb = jax.random.split(key)
  a, pa = rts(ka, digit_a, canvas=canvas)
  b, pb = rts(kb, digit_b, canvas=canvas)
  params = jax.tree_util.tree_map(lambda u, v: jnp.stack([u, v]), pa, pb)
  return jnp.concatenate([a, b], -1), params


def colocalization(key, digit, others, clutter: bool, canvas: int = 84, num_patches: int = 16,
                   patch: int = 6):
  """Co-localisation image: a 28x28 digit at a uniform location in an 84x84
  black canvas (T), plus sixteen 6x6 crops of other digits with ``clutter`` (TC).

  Returns:
    ``(image (84, 84, 1), box)``: ``box = (x0, y0, x1, y1)`` of the digit in
    pixels, ``x1 = x0 + 28``.
  """
  kd, kc = jax.random.split(key)
  image, top, left = _place(kd, digit, canvas)
  if clutter:
    image = _clutter(kc, image, others, num_patches, patch)
  box = jnp.stack([left, top, left + DIGIT, top + DIGIT]).astype(jnp.float32)
  return image[..., None], box


# name -> fn(key, digit (28, 28), others (K, 28, 28)) -> (image, params)
DISTORTIONS = {
    "R": rotated,
    "RTS": rts,
    "P": projective,
    "E": elastic,
    "TC": translated_cluttered,
}

_NUM_OTHERS = 6  # clutter for example i is cropped from the batch's digits i+1 .. i+6


@functools.partial(jax.jit, static_argnums=0)
def distort_batch(name: str, key, digits):
  """Applies distortion ``name`` to every digit of a batch, with its own key.

  Args:
    name: a key of :data:`DISTORTIONS` (``'R'``, ``'RTS'``, ``'P'``, ``'E'``, ``'TC'``).
    key: PRNG key; example ``i`` uses ``fold_in(key, i)``.
    digits: ``(B, 28, 28)`` float32 in [0, 1]; for TC, ``B > 6`` (the clutter of
      each digit comes from the next six in the batch).

  Returns:
    ``(images (B, H, W, 1), params)``, params batched.
  """
  if name not in DISTORTIONS:
    raise ValueError(f"Unknown distortion {name!r}; known: {', '.join(DISTORTIONS)}.")
  if digits.ndim != 3 or digits.shape[1:] != (DIGIT, DIGIT):
    raise ValueError(f"`digits` must have shape (B, 28, 28), but got shape {digits.shape}.")
  b = digits.shape[0]
  if name == "TC" and b <= _NUM_OTHERS:
    raise ValueError(f"TC crops clutter from the other digits of the batch, so the batch must "
                     f"hold more than {_NUM_OTHERS} digits; got {b}.")
  idx = (jnp.arange(b)[:, None] + jnp.arange(1, _NUM_OTHERS + 1)[None]) % b
  others = digits[idx]  # (B, 6, 28, 28)
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(b))
  return jax.vmap(DISTORTIONS[name])(keys, digits, others)


@jax.jit
def addition_batch(key, digits_a, digits_b):
  """:func:`addition` over a batch of digit pairs; pair ``i`` uses ``fold_in(key, i)``.

  Returns:
    ``(images (B, 42, 42, 2), params)``.
  """
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(digits_a.shape[0]))
  return jax.vmap(addition)(keys, digits_a, digits_b)


def fixed_set(name: str, digits, seed: int, chunk: int = 1000):
  """A distorted copy of ``digits`` that depends only on ``seed``: an evaluation set.

  The digits are processed in chunks of ``chunk`` (chunk ``j`` with key
  ``fold_in(key(seed), j)``), so the set is the same whatever the machine.

  Args:
    name: a key of :data:`DISTORTIONS`.
    digits: ``(N, 28, 28)`` float32 in [0, 1].
    seed: the set's seed.
    chunk: digits per device call (only changes memory use, not the result,
      as long as it is kept the same).

  Returns:
    ``(images (N, H, W, 1), params)`` as NumPy arrays.
  """
  digits = jnp.asarray(digits, jnp.float32)
  key = jax.random.key(seed)
  parts = []
  for j, start in enumerate(range(0, digits.shape[0], chunk)):
    batch = digits[start:start + chunk]
    n = batch.shape[0]
    if name == "TC" and n <= _NUM_OTHERS:  # a short last chunk borrows clutter
      batch = jnp.concatenate([batch, digits[:_NUM_OTHERS + 1]], 0)
    images, params = distort_batch(name, jax.random.fold_in(key, j), batch)
    parts.append((images[:n], jax.tree_util.tree_map(lambda p, n=n: p[:n], params)))
  images = np.concatenate([np.asarray(p[0]) for p in parts])
  params = jax.tree_util.tree_map(lambda *ps: np.concatenate([np.asarray(p) for p in ps]),
                                  *[p[1] for p in parts])
  return images, params


def colocalization_set(digits, labels, digit_class: int, *, clutter: bool, seed: int,
                       size: int = 100):
  """The paper's co-localisation dataset: ``size`` images of one digit class.

  Args:
    digits: ``(N, 28, 28)`` float32 training digits in [0, 1].
    labels: ``(N,)`` their labels.
    digit_class: the class all images show.
    clutter: add sixteen 6x6 crops of other (any-class) digits (TC) or not (T).
    seed: fixes the digits chosen and their placement.
    size: the number of images (100 in the paper).

  Returns:
    ``(images (size, 84, 84, 1), boxes (size, 4))`` as NumPy arrays; boxes are
    ``(x0, y0, x1, y1)`` in pixels.
  """
  labels = np.asarray(labels)
  members = np.flatnonzero(labels == digit_class)
  if len(members) < size:
    raise ConfigError(f"Class {digit_class} has {len(members)} digits, fewer than the {size} "
                      f"images asked for; ask for at most {len(members)} (data.size), or give "
                      "more digits.")
  rng = np.random.default_rng(seed)
  chosen = rng.choice(members, size, replace=False)
  others = np.flatnonzero(labels != digit_class)
  clutter_from = rng.choice(others, (size, 16), replace=True)
  digits = jnp.asarray(digits, jnp.float32)
  keys = jax.random.split(jax.random.key(seed), size)
  images, boxes = jax.jit(jax.vmap(lambda k, d, o: colocalization(k, d, o, clutter)))(
      keys, digits[chosen], digits[clutter_from])
  return np.asarray(images), np.asarray(boxes)
