"""Times stn_jax.ops warps (forward + backward) against PyTorch's grid_sample.

    pip install -e '.[bench]'
    python benchmarks/ops.py [--rounds 7] [--only LETTERS] [--write docs/performance.md]

Six cases sized like the paper's transformers, each "grid + sample + gradient of a
weighted sum" (bilinear unless said otherwise):

  a. distorted MNIST: N=256, 42x42x1 -> 42x42, affine, gradient w.r.t. theta;
  b. a transformer inside an SVHN CNN: N=128, 32x32x48 -> 32x32, affine,
     gradients w.r.t. the feature map and theta;
  c. CUB attention: N=32, 448x448x3 -> 224x224, attention (s, tx, ty), gradient
     w.r.t. the parameters; JAX both with the gather sampler and with the
     separable (two-matmul) one;
  d. co-localisation crops: N=100, 84x84x1 -> 28x28, attention, as c (the small
     end, for the separable sampler's default on this platform);
  e. bicubic: case a with ``mode='bicubic'`` on both sides;
  f. the 3-D sampler: N=8, 32x32x32x1 volumes -> 32x32x32, affine 3-D
     (``ops.warp_3d``, NDHWC; torch's 5-D ``F.affine_grid`` with theta (N, 3, 4) and
     ``F.grid_sample``, NCDHW), gradients w.r.t. the volume and theta.

Every JAX case is compiled twice and both are timed in the same rounds: with the
trainer's compiler options (``stn_jax.runtime.xla.compiler_options``, what the trainer's
steps get) and with XLA's defaults (``compiler_options=None``). Where the trainer's
options are none (not a CPU) the two are the same program, and it is timed once.

The project's timing rule: both frameworks in one process on 2 threads
(``OMP_WAIT_POLICY=PASSIVE`` set before torch is imported, ``torch.set_num_threads``),
freed memory kept as the trainer keeps it; after warm-up, interleaved rounds of K calls
of each (the order reversed every round). Every array is an argument of the jitted
function (constants closed over would be folded by XLA at compile time and flatter the
timing). Before timing, each case checks that the two frameworks agree on the outputs
and the gradients (every JAX compilation against PyTorch). The first table gives each
implementation's median milliseconds per call and, per round, stn_jax's time over
PyTorch's (median and min-max over the rounds); the second, per case and sampler, the
time under the trainer's options over the time under XLA's defaults, per round, and whether
the two compiled to the same optimised HLO (the options move convolutions out of
YNNPACK: a sampler without any compiles to one program, and the ratio is then the noise of
the rounds).

``--only`` picks cases by the start of their names, comma-separated (``--only e``,
``--only a,f``).
"""

import os

os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # before torch is imported (the timing rule)

import argparse  # pylint: disable=wrong-import-position
import re
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from stn_jax import ops

try:
  import torch
  import torch.nn.functional as F
except ImportError:  # pragma: no cover - a message for the user
  sys.exit("benchmarks/ops.py compares against PyTorch: pip install -e '.[bench]'")

from interleave import calls_per_round, interleaved, jax_repeat, torch_repeat
import train_step

TRAINER, DEFAULTS = "trainer options", "XLA defaults"


def _affine_thetas(rng, n):
  """Random affine thetas near the identity: rotation, scale, shear, shift."""
  angle = rng.uniform(-0.6, 0.6, n)
  scale = rng.uniform(0.7, 1.2, (n, 2))
  shear = rng.uniform(-0.2, 0.2, n)
  shift = rng.uniform(-0.2, 0.2, (n, 2))
  c, s = np.cos(angle), np.sin(angle)
  theta = np.stack([np.stack([scale[:, 0] * c, -s + shear, shift[:, 0]], -1),
                    np.stack([s, scale[:, 1] * c, shift[:, 1]], -1)], 1)
  return theta.astype(np.float32)


def _affine_thetas_3d(rng, n):
  """Random 3-D affine thetas (N, 3, 4) near the identity: a rotation about a random axis
  (Rodrigues), per-axis scales, a shift."""
  axis = rng.normal(size=(n, 3))
  axis /= np.linalg.norm(axis, axis=1, keepdims=True)
  angle = rng.uniform(-0.5, 0.5, n)[:, None, None]
  k = np.zeros((n, 3, 3))
  k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
  k -= k.transpose(0, 2, 1)
  rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
  linear = rotation * rng.uniform(0.8, 1.15, (n, 1, 3))
  shift = rng.uniform(-0.2, 0.2, (n, 3, 1))
  return np.concatenate([linear, shift], -1).astype(np.float32)


def _attention_params(rng, n):
  return np.stack([rng.uniform(0.3, 0.7, n), rng.uniform(-0.4, 0.4, n),
                   rng.uniform(-0.4, 0.4, n)], -1).astype(np.float32)


def _attention_theta(p):
  zero = np.zeros_like(p[:, 0])
  return np.stack([np.stack([p[:, 0], zero, p[:, 1]], -1),
                   np.stack([zero, p[:, 0], p[:, 2]], -1)], 1)


def _channels_first(x):
  """NHWC / NDHWC numpy -> contiguous NCHW / NCDHW torch."""
  return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))


def _channels_last(t):
  return np.moveaxis(t.detach().numpy(), 1, -1)


def _jax_warp(transform, out_shape, mode, separable):
  """``warp(image, params)`` of the case: the 2-D ``ops.warp`` or, for ``affine_3d``,
  ``ops.warp_3d`` (params the (N, 3, 4) thetas)."""
  if transform == "affine_3d":
    return lambda image, params: ops.warp_3d(image, params, out_shape, mode=mode)
  return lambda image, params: ops.warp(image, params, out_shape, transform=transform,
                                        separable=separable, mode=mode)


def _jax_grid(transform, params, out_shape):
  if transform == "affine_3d":
    return ops.affine_grid_3d(params, out_shape)
  return ops.get_transform(transform).grid(params, out_shape)


def _jax_step(warp, wrt, options, args):
  """jit(value_and_grad) of sum(cotangent * warp(image, params)), compiled for ``args``
  with ``options`` (None: XLA's defaults). Returns the compiled step (it dispatches as fast
  as the jitted function) and its optimised HLO without the metadata."""

  def loss(image, params, cotangent):
    return jnp.sum(warp(image, params) * cotangent)

  step = jax.jit(jax.value_and_grad(loss, argnums=wrt), compiler_options=options or None)
  compiled = step.lower(*args).compile()
  return compiled, re.sub(r"metadata=\{[^}]*\}", "", compiled.as_text())


def _torch_step(image, theta, cotangent, out_shape, need_image_grad, mode):
  """Same computation in PyTorch; image NCHW or NCDHW, theta (N, 2, 3) or (N, 3, 4)."""
  image = image.detach().requires_grad_(need_image_grad)
  theta = theta.detach().requires_grad_(True)
  grid = F.affine_grid(theta, (image.shape[0], image.shape[1], *out_shape), align_corners=False)
  out = F.grid_sample(image, grid, mode=mode, padding_mode="zeros", align_corners=False)
  value = (out * cotangent).sum()
  value.backward()
  return value, image.grad, theta.grad


def edge_flips(j_grid, t_grid, in_shape):
  """Per sample: whether any point of the two frameworks' float32 grids falls on different
  sides of a pixel (voxel) edge. Grids (N, ..., dims) of normalised (x, y[, z]); in_shape
  the image's spatial shape ((H, W) or (D, H, W)); align_corners=False."""
  size = np.array(in_shape[::-1], np.float32)  # x along W, y along H, z along D
  cell = lambda g: np.floor(((np.asarray(g) + 1) * size - 1) / 2)
  return np.any(cell(j_grid) != cell(t_grid), axis=tuple(range(1, np.ndim(j_grid))))


def compile_variants(options):
  """``[(label, options)]``: the trainer's options and XLA's defaults, or one entry where the
  trainer's options are XLA's defaults."""
  if not options:
    return [(f"{TRAINER} = {DEFAULTS}", None)]
  return [(TRAINER, options), (DEFAULTS, None)]


def run_case(name, *, n, in_shape, channels, out_shape, transform, image_grad, separable,
             rng, options, rounds, round_seconds, mode="bilinear"):
  image = rng.uniform(0, 1, (n, *in_shape, channels)).astype(np.float32)
  if transform == "affine_3d":
    params = theta = _affine_thetas_3d(rng, n)
  elif transform == "affine":
    params = theta = _affine_thetas(rng, n)
  else:
    params = _attention_params(rng, n)
    theta = _attention_theta(params)
  cotangent = rng.normal(size=(n, *out_shape, channels)).astype(np.float32)

  wrt = (0, 1) if image_grad else 1
  jax_params = params if transform == "affine_3d" else params.reshape(n, -1)
  jax_args = (jnp.asarray(image), jnp.asarray(jax_params), jnp.asarray(cotangent))
  t_image, t_theta, t_cot = _channels_first(image), torch.from_numpy(theta), _channels_first(
      cotangent)
  t_step = lambda: _torch_step(t_image, t_theta, t_cot, out_shape, image_grad, mode)

  # Agreement first: a fast wrong answer is not a result.
  t_value, t_gimage, t_gtheta = t_step()
  # float32 grids from the two frameworks differ by an ulp here and there; where
  # that moves a coordinate across a pixel edge, the piecewise-polynomial gradient
  # legitimately jumps. Those samples are left out of the gradient comparison.
  j_grid = _jax_grid(transform, jax_args[1], out_shape)
  t_grid = F.affine_grid(t_theta, (n, channels, *out_shape), align_corners=False).numpy()
  edge_flip = edge_flips(j_grid, t_grid, in_shape)
  keep = ~edge_flip
  print(f"{name}: {edge_flip.sum()} of {n} samples have a grid point on the other side of a "
        "pixel edge in float32; their gradients are not compared", flush=True)
  gt = t_gtheta.numpy()
  if transform == "attention":  # chain rule from d/dtheta to d/d(s, tx, ty)
    expected = np.stack([gt[:, 0, 0] + gt[:, 1, 1], gt[:, 0, 2], gt[:, 1, 2]], -1)
  else:
    expected = gt.reshape(n, -1)
  variants = compile_variants(options)
  calls, programs = {}, {}
  for sep in separable:
    sampler = "separable" if sep else "gather"
    warp = _jax_warp(transform, out_shape, mode, sep)
    for label, opts in variants:
      step, programs[(sampler, label)] = _jax_step(warp, wrt, opts, jax_args)
      value, grads = step(*jax_args)
      g_image, g_params = grads if image_grad else (None, grads)
      where = f"{name}, {sampler}, {label}"
      np.testing.assert_allclose(float(value), float(t_value.detach()), rtol=1e-4, atol=1e-2,
                                 err_msg=f"{where}: value")
      np.testing.assert_allclose(np.asarray(g_params).reshape(n, -1)[keep], expected[keep],
                                 rtol=2e-3, atol=2e-2, err_msg=f"{where}: d/dparams")
      if image_grad:
        np.testing.assert_allclose(np.asarray(g_image)[keep], _channels_last(t_gimage)[keep],
                                   rtol=1e-4, atol=1e-4, err_msg=f"{where}: d/dimage")
      calls[(sampler, label)] = jax_repeat(step, *jax_args)
  calls["torch"] = torch_repeat(t_step)
  for call in calls.values():
    call(1)
  k = calls_per_round(calls, round_seconds)
  times = interleaved(calls, rounds, k)
  rows = []
  torch_ms = 1e3 * statistics.median(times["torch"])
  for key, t in times.items():
    if key == "torch":
      continue
    sampler, label = key
    ratios = [a / b for a, b in zip(t, times["torch"])]
    row = {"case": name, "way": sampler, "options": label, "ms": 1e3 * statistics.median(t),
           "torch_ms": torch_ms, "ratio": statistics.median(ratios), "min": min(ratios),
           "max": max(ratios), "k": k, "rounds": rounds}
    if label == TRAINER:  # per round, the trainer's options against XLA's defaults
      vs = [a / b for a, b in zip(t, times[(sampler, DEFAULTS)])]
      row["vs_defaults"] = (statistics.median(vs), min(vs), max(vs))
      # The options move convolutions out of YNNPACK; a sampler may have none, and then the
      # two compilations are one program and their ratio is the rounds' noise.
      row["same_program"] = programs[key] == programs[(sampler, DEFAULTS)]
    rows.append(row)
  return rows


def table(rows):
  lines = ["| case | stn_jax sampler | XLA compiler options | stn_jax ms | PyTorch ms | "
           "stn_jax/PyTorch time: median | min-max | K x rounds |",
           "|---|---|---|---:|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['case']} | {r['way']} | {r['options']} | {r['ms']:.1f} | "
                 f"{r['torch_ms']:.1f} | {r['ratio']:.2f} | {r['min']:.2f}-{r['max']:.2f} | "
                 f"{r['k']} x {r['rounds']} |")
  return lines


def options_table(rows):
  """Per case and sampler, the trainer's options' time over XLA's defaults', per round."""
  pairs = [r for r in rows if "vs_defaults" in r]
  if not pairs:
    return []
  lines = ["| case | stn_jax sampler | the same optimised HLO? | trainer options / XLA "
           "defaults time: median | min-max |", "|---|---|---|---:|---:|"]
  for r in pairs:
    med, lo, hi = r["vs_defaults"]
    same = "yes (the ratio is noise)" if r["same_program"] else "no"
    lines.append(f"| {r['case']} | {r['way']} | {same} | {med:.2f} | {lo:.2f}-{hi:.2f} |")
  return lines


CASES = [
    dict(name="a. MNIST N=256 42x42x1->42x42 affine, d/dtheta", n=256, in_shape=(42, 42),
         channels=1, out_shape=(42, 42), transform="affine", image_grad=False,
         separable=(False,)),
    dict(name="b. SVHN N=128 32x32x48->32x32 affine, d/dimage+d/dtheta", n=128,
         in_shape=(32, 32), channels=48, out_shape=(32, 32), transform="affine",
         image_grad=True, separable=(False,)),
    dict(name="c. CUB N=32 448x448x3->224x224 attention, d/dparams", n=32, in_shape=(448, 448),
         channels=3, out_shape=(224, 224), transform="attention", image_grad=False,
         separable=(False, True)),
    # The small end of the axis-aligned transformers (co-localisation crops), where the
    # separable sampler's two small matrix products could beat the gather on a CPU.
    dict(name="d. co-localisation N=100 84x84x1->28x28 attention, d/dparams", n=100,
         in_shape=(84, 84), channels=1, out_shape=(28, 28), transform="attention",
         image_grad=False, separable=(False, True)),
    dict(name="e. bicubic MNIST N=256 42x42x1->42x42 affine, d/dtheta", n=256,
         in_shape=(42, 42), channels=1, out_shape=(42, 42), transform="affine",
         image_grad=False, separable=(False,), mode="bicubic"),
    dict(name="f. 3-D sampler N=8 32x32x32x1->32x32x32 affine, d/dvolume+d/dtheta", n=8,
         in_shape=(32, 32, 32), channels=1, out_shape=(32, 32, 32), transform="affine_3d",
         image_grad=True, separable=(False,)),
]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--round-seconds", type=float, default=0.4)
  parser.add_argument("--only", help="run the cases whose name starts with this (a letter), or "
                                     "with one of these, comma-separated (a,e,f)")
  parser.add_argument("--write", metavar="FILE", help="put the table into FILE's marked block")
  args = parser.parse_args(argv)
  options, env, args.command, start = train_step.setup_run("ops.py", argv)
  only = [p for p in (args.only or "").split(",") if p]
  cases = [c for c in CASES if not only or any(c["name"].startswith(p) for p in only)]
  if not cases:
    raise SystemExit(f"--only {args.only!r} names no case; the cases: "
                     + ", ".join(c["name"].split(" ")[0] for c in CASES))
  if not options:
    print("the trainer's compiler options are XLA's defaults here (not a CPU): each JAX case "
          "is compiled and timed once", flush=True)
  rng = np.random.default_rng(0)
  rows = []
  for case in cases:
    case_rows = run_case(**case, rng=rng, options=options, rounds=args.rounds,
                         round_seconds=args.round_seconds)
    print("\n".join(table(case_rows)[2:]), flush=True)
    rows.extend(case_rows)
  variants = ("the trainer's compiler options and XLA's defaults (compiler_options=None), "
              "in the same rounds" if options else
              "the trainer's compiler options, which are XLA's defaults on this platform")
  lines = (train_step.header_lines(env, args, time.perf_counter() - start)
           + [f"- stn_jax compiled with {variants}", ""] + table(rows))
  extra = options_table(rows)
  if extra:
    lines += [""] + extra
  print("\n".join(lines))
  if args.write:
    train_step.write_blocks(args.write, {"sampler": lines}, script="ops.py")


if __name__ == "__main__":
  main()
