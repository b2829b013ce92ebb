"""Slow, independent NumPy reference for ``torch.nn.functional.grid_sample`` (2-D).

Written from torch's documented semantics (the coordinate pipeline of
ATen's GridSampler: unnormalise -> padding -> interpolation), not from its
code, and used by the tests as ground truth. Layout is NHWC: ``image`` is
(N, H, W, C) and ``grid`` is (N, Ho, Wo, 2) with the last axis (x, y).
Everything is float64 and computed one output pixel at a time with plain
Python loops, so each step can be read off directly.

Both the values and the gradients follow torch, including its sub-gradient
choices: bilinear uses the cell [floor(ix), floor(ix) + 1] even at integer
ix, and border clipping has derivative 0 at the edges themselves.

Non-finite grid values (which make torch return NaN or crash) follow this
library's rule instead: if the coordinate the kernel reads from (the padded
coordinate for bilinear/nearest, the unnormalised one for bicubic) is NaN or
+-Inf in x or y, that output pixel is 0 and passes back no gradient. Border
padding clips +-Inf to the edge first, so every mode gives the edge value
there (bicubic too: all its taps clip onto the edge).
"""

import math

import numpy as np

MODES = ("bilinear", "nearest", "bicubic")
PADDING_MODES = ("zeros", "border", "reflection")
CUBIC_A = -0.75  # torch's cubic-convolution constant


def _unnormalize(coord, size, align_corners):
    """Map [-1, 1] to pixel coordinates; also return d(pixel)/d(coord).

    These formulas give the same float64 results as torch's CPU kernel, which
    writes them as (c + 1) * ((size - 1) / 2) and (c + 1) * (size / 2) - 0.5:
    the only difference is exact halving.
    """
    if align_corners:
        return (coord + 1) / 2 * (size - 1), (size - 1) / 2
    return ((coord + 1) * size - 1) / 2, size / 2


def _clip(x, size):
    """Border padding: clip to [0, size - 1].

    The derivative is 1 strictly inside and 0 at or past either edge; torch
    treats the edges as outside for the gradient. NaN passes through.
    """
    if x <= 0:
        return 0.0, 0.0
    if x >= size - 1:
        return float(size - 1), 0.0
    return x, 1.0


def _reflect(x, size, align_corners):
    """Reflect x into [low, low + span]; also return the derivative (+-1).

    The mirrors are the pixel centres 0 and size - 1 with align_corners, and
    the image edges -0.5 and size - 0.5 without. The derivative flips sign
    for each mirror crossed and for starting below low. When the result lies
    on a mirror, the sign is ambiguous, but the clip that always follows
    makes the derivative 0 there anyway.
    """
    low, span = (0.0, size - 1.0) if align_corners else (-0.5, float(size))
    if span == 0:  # a single pixel with align_corners: everything maps to 0
        return 0.0, 0.0
    if not math.isfinite(x):
        return math.nan, 0.0
    d = x - low
    sign = -1.0 if d < 0 else 1.0
    extra = math.fmod(abs(d), 2 * span)  # distance into one period
    if extra > span:  # in the mirrored half of the period
        return low + 2 * span - extra, -sign
    return low + extra, sign


def _pad(x, size, padding_mode, align_corners):
    """Padding for a coordinate (continuous or integer); also return its derivative."""
    if padding_mode == "zeros":
        return x, 1.0
    if padding_mode == "border":
        return _clip(x, size)
    r, dr = _reflect(x, size, align_corners)
    c, dc = _clip(r, size)  # torch clips after reflecting (matters without align_corners)
    return c, dr * dc


def _cubic(t):
    """Cubic-convolution weights of taps floor-1 .. floor+2, and their d/dt."""
    a = CUBIC_A

    def c1(s):  # kernel for |distance| <= 1
        return ((a + 2) * s - (a + 3)) * s * s + 1

    def c2(s):  # kernel for 1 < |distance| < 2
        return ((a * s - 5 * a) * s + 8 * a) * s - 4 * a

    def dc1(s):
        return (3 * (a + 2) * s - 2 * (a + 3)) * s

    def dc2(s):
        return (3 * a * s - 10 * a) * s + 8 * a

    w = [c2(t + 1), c1(t), c1(1 - t), c2(2 - t)]
    dw = [dc2(t + 1), dc1(t), -dc1(1 - t), -dc2(2 - t)]
    return w, dw


def _taps(gx, gy, H, W, mode, padding_mode, align_corners):
    """The pixels one output point reads.

    Returns (taps, mx, my). taps is a list of (row, col, weight, dweight/dix,
    dweight/diy), with out-of-bounds taps left out, so they add nothing to the
    value or to either gradient. mx and my are d(ix)/d(grid x) and
    d(iy)/d(grid y), chained through the unnormalisation and the padding.
    """
    ix, ux = _unnormalize(gx, W, align_corners)
    iy, uy = _unnormalize(gy, H, align_corners)

    if mode == "bicubic":
        if padding_mode == "border":
            # Beyond the edge every tap clips onto the edge pixel and the
            # weights sum to 1: an infinite coordinate reads the edge, flat.
            if math.isinf(ix):
                ix, ux = (-2.0 if ix < 0 else W + 1.0), 0.0
            if math.isinf(iy):
                iy, uy = (-2.0 if iy < 0 else H + 1.0), 0.0
        # Bicubic pads each integer tap, not the continuous coordinate.
        if not (math.isfinite(ix) and math.isfinite(iy)):
            return [], 0.0, 0.0
        x0, y0 = math.floor(ix), math.floor(iy)
        wx, dwx = _cubic(ix - x0)
        wy, dwy = _cubic(iy - y0)
        taps = []
        for j in range(4):
            r, _ = _pad(float(y0 - 1 + j), H, padding_mode, align_corners)
            for i in range(4):
                c, _ = _pad(float(x0 - 1 + i), W, padding_mode, align_corners)
                # Padded integer taps stay exact integers, so int() is exact.
                if 0 <= r <= H - 1 and 0 <= c <= W - 1:
                    taps.append((int(r), int(c), wx[i] * wy[j], dwx[i] * wy[j], wx[i] * dwy[j]))
        return taps, ux, uy

    px, dpx = _pad(ix, W, padding_mode, align_corners)
    py, dpy = _pad(iy, H, padding_mode, align_corners)
    if not (math.isfinite(px) and math.isfinite(py)):
        return [], 0.0, 0.0
    mx, my = ux * dpx, uy * dpy

    if mode == "nearest":
        c, r = round(px), round(py)  # Python's round() is half-to-even, like torch
        taps = [(r, c, 1.0, 0.0, 0.0)] if 0 <= r < H and 0 <= c < W else []
        return taps, mx, my

    # Bilinear: always the cell [x0, x0 + 1] x [y0, y0 + 1] with x0 = floor(px),
    # so at integer px the derivative is the one of the cell to the right.
    x0, y0 = math.floor(px), math.floor(py)
    fx, fy = px - x0, py - y0
    taps = []
    for r, wy, dwy in ((y0, 1 - fy, -1.0), (y0 + 1, fy, 1.0)):
        for c, wx, dwx in ((x0, 1 - fx, -1.0), (x0 + 1, fx, 1.0)):
            if 0 <= r < H and 0 <= c < W:
                taps.append((r, c, wx * wy, dwx * wy, wx * dwy))
    return taps, mx, my


def _check(image, grid, mode, padding_mode):
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    image = np.asarray(image, dtype=np.float64)
    grid = np.asarray(grid, dtype=np.float64)
    if image.ndim != 4 or grid.ndim != 4 or grid.shape[-1] != 2 or grid.shape[0] != image.shape[0]:
        raise ValueError(f"expected image (N,H,W,C) and grid (N,Ho,Wo,2), got {image.shape} "
                         f"and {grid.shape}")
    return image, grid


def grid_sample_ref(image, grid, *, mode="bilinear", padding_mode="zeros", align_corners=False):
    """image (N,H,W,C), grid (N,Ho,Wo,2) with last axis (x, y) in [-1,1] -> (N,Ho,Wo,C) float64."""
    image, grid = _check(image, grid, mode, padding_mode)
    N, H, W, C = image.shape
    _, Ho, Wo, _ = grid.shape
    out = np.zeros((N, Ho, Wo, C))
    for n in range(N):
        for i in range(Ho):
            for j in range(Wo):
                taps, _, _ = _taps(grid[n, i, j, 0], grid[n, i, j, 1], H, W, mode, padding_mode,
                                   align_corners)
                for r, c, w, _, _ in taps:
                    out[n, i, j] += w * image[n, r, c]
    return out


def grid_sample_ref_vjp(image, grid, cotangent, *, mode="bilinear", padding_mode="zeros",
                        align_corners=False):
    """Returns (d_image (N,H,W,C), d_grid (N,Ho,Wo,2)) = gradients of sum(out * cotangent),
    float64, with torch's conventions."""
    image, grid = _check(image, grid, mode, padding_mode)
    cotangent = np.asarray(cotangent, dtype=np.float64)
    N, H, W, C = image.shape
    _, Ho, Wo, _ = grid.shape
    if cotangent.shape != (N, Ho, Wo, C):
        raise ValueError(f"cotangent must have shape {(N, Ho, Wo, C)}, got {cotangent.shape}")
    d_image = np.zeros_like(image)
    d_grid = np.zeros_like(grid)
    for n in range(N):
        for i in range(Ho):
            for j in range(Wo):
                g = cotangent[n, i, j]
                taps, mx, my = _taps(grid[n, i, j, 0], grid[n, i, j, 1], H, W, mode,
                                     padding_mode, align_corners)
                dx = dy = 0.0  # d(sum(out * cotangent)) / d(ix), d(iy)
                for r, c, w, dwdx, dwdy in taps:
                    d_image[n, r, c] += w * g
                    v = float(np.dot(image[n, r, c], g))
                    dx += dwdx * v
                    dy += dwdy * v
                d_grid[n, i, j] = (dx * mx, dy * my)
    return d_image, d_grid
