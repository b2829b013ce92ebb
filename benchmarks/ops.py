"""Times stn_jax.ops warps (forward + backward) against PyTorch's grid_sample.

    pip install -e '.[bench]'
    python benchmarks/ops.py [--rounds 7] [--write docs/performance.md]

Four cases sized like the paper's transformers, each "grid + bilinear sample +
gradient of a weighted sum":

  a. distorted MNIST: N=256, 42x42x1 -> 42x42, affine, gradient w.r.t. theta;
  b. a transformer inside an SVHN CNN: N=128, 32x32x48 -> 32x32, affine,
     gradients w.r.t. the feature map and theta;
  c. CUB attention: N=32, 448x448x3 -> 224x224, attention (s, tx, ty), gradient
     w.r.t. the parameters; JAX both with the gather sampler and with the
     separable (two-matmul) one;
  d. co-localisation crops: N=100, 84x84x1 -> 28x28, attention, as c (the small
     end, for the separable sampler's default on this platform).

The project's timing rule: both frameworks in one process on 2 threads
(``OMP_WAIT_POLICY=PASSIVE`` set before torch is imported, ``torch.set_num_threads``),
JAX jitted with the trainer's compiler options and freed memory kept as the
trainer keeps it; after warm-up, interleaved rounds of K calls of each (the order
reversed every round). Every array is an argument of the jitted function (constants
closed over would be folded by XLA at compile time and flatter the timing). Before
timing, each case checks that the two frameworks agree on the outputs and the
gradients. The table gives each implementation's median milliseconds per call and,
per round, stn_jax's time over PyTorch's (median and min-max over the rounds).
"""

import os

os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # before torch is imported (the timing rule)

import argparse  # pylint: disable=wrong-import-position
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


def _attention_params(rng, n):
  return np.stack([rng.uniform(0.3, 0.7, n), rng.uniform(-0.4, 0.4, n),
                   rng.uniform(-0.4, 0.4, n)], -1).astype(np.float32)


def _attention_theta(p):
  zero = np.zeros_like(p[:, 0])
  return np.stack([np.stack([p[:, 0], zero, p[:, 1]], -1),
                   np.stack([zero, p[:, 0], p[:, 2]], -1)], 1)


def _jax_step(transform, out_hw, wrt, options, separable=False):
  """jit(value_and_grad) of sum(cotangent * warp(image, params))."""

  def loss(image, params, cotangent):
    out = ops.warp(image, params, out_hw, transform=transform, separable=separable)
    return jnp.sum(out * cotangent)

  return jax.jit(jax.value_and_grad(loss, argnums=wrt), compiler_options=options or None)


def _torch_step(image, theta, cotangent, out_hw, need_image_grad):
  """Same computation in PyTorch; image NCHW, theta (N, 2, 3)."""
  image = image.detach().requires_grad_(need_image_grad)
  theta = theta.detach().requires_grad_(True)
  grid = F.affine_grid(theta, (image.shape[0], image.shape[1], *out_hw), align_corners=False)
  out = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
  value = (out * cotangent).sum()
  value.backward()
  return value, image.grad, theta.grad


def run_case(name, *, n, in_hw, channels, out_hw, transform, image_grad, separable, rng,
             options, rounds, round_seconds):
  image = rng.uniform(0, 1, (n, *in_hw, channels)).astype(np.float32)
  params = _affine_thetas(rng, n) if transform == "affine" else _attention_params(rng, n)
  theta = params if transform == "affine" else _attention_theta(params)
  cotangent = rng.normal(size=(n, *out_hw, channels)).astype(np.float32)

  wrt = (0, 1) if image_grad else 1
  jax_args = (jnp.asarray(image), jnp.asarray(params.reshape(n, -1)), jnp.asarray(cotangent))
  t_image = torch.from_numpy(image).permute(0, 3, 1, 2).contiguous()
  t_theta = torch.from_numpy(theta)
  t_cot = torch.from_numpy(cotangent).permute(0, 3, 1, 2).contiguous()

  # Agreement first: a fast wrong answer is not a result.
  t_value, t_gimage, t_gtheta = _torch_step(t_image, t_theta, t_cot, out_hw, image_grad)
  # float32 grids from the two frameworks differ by an ulp here and there; where
  # that moves a coordinate across a pixel edge, the piecewise-linear gradient
  # legitimately jumps. Those samples are left out of the gradient comparison.
  j_grid = np.asarray(ops.get_transform(transform).grid(jax_args[1], out_hw))
  t_grid = F.affine_grid(t_theta, (n, channels, *out_hw), align_corners=False).numpy()
  size = np.array(in_hw[::-1], np.float32)
  edge_flip = np.any(np.floor(((j_grid + 1) * size - 1) / 2) !=
                     np.floor(((t_grid + 1) * size - 1) / 2), axis=(1, 2, 3))
  keep = ~edge_flip
  print(f"{name}: {edge_flip.sum()} of {n} samples have a grid point on the other side of a "
        "pixel edge in float32; their gradients are not compared", flush=True)
  calls = {}
  for sep in separable:
    step = _jax_step(transform, out_hw, wrt, options, separable=sep)
    value, grads = step(*jax_args)
    g_image, g_params = grads if image_grad else (None, grads)
    np.testing.assert_allclose(float(value), float(t_value.detach()), rtol=1e-4, atol=1e-2)
    gt = t_gtheta.numpy()
    if transform == "affine":
      expected = gt.reshape(n, 6)
    else:  # chain rule from d/dtheta to d/d(s, tx, ty)
      expected = np.stack([gt[:, 0, 0] + gt[:, 1, 1], gt[:, 0, 2], gt[:, 1, 2]], -1)
    np.testing.assert_allclose(np.asarray(g_params).reshape(n, -1)[keep], expected[keep],
                               rtol=2e-3, atol=2e-2)
    if image_grad:
      np.testing.assert_allclose(np.asarray(g_image)[keep],
                                 t_gimage.permute(0, 2, 3, 1).numpy()[keep], rtol=1e-4, atol=1e-4)
    calls["separable" if sep else "gather"] = jax_repeat(step, *jax_args)
  calls["torch"] = torch_repeat(lambda: _torch_step(t_image, t_theta, t_cot, out_hw, image_grad))
  for call in calls.values():
    call(1)
  k = calls_per_round(calls, round_seconds)
  times = interleaved(calls, rounds, k)
  rows = []
  for label, t in times.items():
    if label == "torch":
      continue
    ratios = [a / b for a, b in zip(t, times["torch"])]
    rows.append({"case": name, "way": label, "ms": 1e3 * statistics.median(t),
                 "torch_ms": 1e3 * statistics.median(times["torch"]),
                 "ratio": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
                 "k": k, "rounds": rounds})
  return rows


def table(rows):
  lines = ["| case | stn_jax sampler | stn_jax ms | PyTorch ms | stn_jax/PyTorch time: median "
           "| min-max | K x rounds |", "|---|---|---:|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['case']} | {r['way']} | {r['ms']:.1f} | {r['torch_ms']:.1f} | "
                 f"{r['ratio']:.2f} | {r['min']:.2f}-{r['max']:.2f} | {r['k']} x {r['rounds']} |")
  return lines


CASES = [
    dict(name="a. MNIST N=256 42x42x1->42x42 affine, d/dtheta", n=256, in_hw=(42, 42),
         channels=1, out_hw=(42, 42), transform="affine", image_grad=False, separable=(False,)),
    dict(name="b. SVHN N=128 32x32x48->32x32 affine, d/dimage+d/dtheta", n=128, in_hw=(32, 32),
         channels=48, out_hw=(32, 32), transform="affine", image_grad=True, separable=(False,)),
    dict(name="c. CUB N=32 448x448x3->224x224 attention, d/dparams", n=32, in_hw=(448, 448),
         channels=3, out_hw=(224, 224), transform="attention", image_grad=False,
         separable=(False, True)),
    # The small end of the axis-aligned transformers (co-localisation crops), where the
    # separable sampler's two small matrix products could beat the gather on a CPU.
    dict(name="d. co-localisation N=100 84x84x1->28x28 attention, d/dparams", n=100,
         in_hw=(84, 84), channels=1, out_hw=(28, 28), transform="attention",
         image_grad=False, separable=(False, True)),
]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--round-seconds", type=float, default=0.4)
  parser.add_argument("--only", help="run the cases whose name starts with this letter")
  parser.add_argument("--write", metavar="FILE", help="put the table into FILE's marked block")
  args = parser.parse_args(argv)
  options, env, args.command, start = train_step.setup_run("ops.py", argv)
  rng = np.random.default_rng(0)
  rows = []
  for case in CASES:
    if args.only and not case["name"].startswith(args.only):
      continue
    rows.extend(run_case(**case, rng=rng, options=options, rounds=args.rounds,
                         round_seconds=args.round_seconds))
    print("\n".join(table(rows)[-1:]), flush=True)
  lines = train_step.header_lines(env, args, time.perf_counter() - start) + [""] + table(rows)
  print("\n".join(lines))
  if args.write:
    train_step.write_blocks(args.write, {"sampler": lines}, script="ops.py")


if __name__ == "__main__":
  main()
