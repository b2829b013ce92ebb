"""Times stn_jax.ops warps (forward + backward) against PyTorch's grid_sample.

    pip install -e '.[bench]'
    python benchmarks/ops.py [--repeats 20] [--out docs/performance.md]

Three cases sized like the paper's transformers, each "grid + bilinear sample +
gradient of a weighted sum":

  a. distorted MNIST: N=256, 42x42x1 -> 42x42, affine, gradient w.r.t. theta;
  b. a transformer inside an SVHN CNN: N=128, 32x32x48 -> 32x32, affine,
     gradients w.r.t. the feature map and theta;
  c. CUB attention: N=32, 448x448x3 -> 224x224, attention (s, tx, ty), gradient
     w.r.t. the parameters; JAX both with the gather sampler and with the
     separable (two-matmul) one.

Both frameworks run in one process on the same threads. Every array is an
argument of the jitted JAX function (constants closed over would be folded by
XLA at compile time and flatter the timing). Before timing, each case checks
that the two frameworks agree on the outputs and the gradients. Reported times
are the median of ``--repeats`` steady-state calls, after compilation and
warm-up. Results go to a Markdown table together with the machine and versions.
"""

import argparse
import datetime
import os
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from stn_jax import ops

try:
  import torch
  import torch.nn.functional as F
except ImportError as e:  # pragma: no cover - a message for the user
  raise SystemExit("benchmarks/ops.py compares against PyTorch: pip install -e '.[bench]'") from e


def _median_ms(fn, repeats):
  fn()  # warm-up (compilation for JAX)
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


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


def _jax_step(transform, out_hw, wrt, separable=False):
  """jit(value_and_grad) of sum(cotangent * warp(image, params))."""

  def loss(image, params, cotangent):
    out = ops.warp(image, params, out_hw, transform=transform, separable=separable)
    return jnp.sum(out * cotangent)

  return jax.jit(jax.value_and_grad(loss, argnums=wrt))


def _torch_step(image, theta, cotangent, out_hw, need_image_grad):
  """Same computation in PyTorch; image NCHW, theta (N, 2, 3)."""
  image = image.detach().requires_grad_(need_image_grad)
  theta = theta.detach().requires_grad_(True)
  grid = F.affine_grid(theta, (image.shape[0], image.shape[1], *out_hw), align_corners=False)
  out = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
  value = (out * cotangent).sum()
  value.backward()
  return value, image.grad, theta.grad


def run_case(name, *, n, in_hw, channels, out_hw, transform, image_grad, separable, repeats, rng):
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
  rows = []
  for sep in separable:
    step = _jax_step(transform, out_hw, wrt, separable=sep)
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

    def jax_call(step=step):
      jax.block_until_ready(step(*jax_args))

    label = "separable" if sep else "gather"
    rows.append((name, f"stn_jax ({label})", _median_ms(jax_call, repeats)))
  torch_ms = _median_ms(lambda: _torch_step(t_image, t_theta, t_cot, out_hw, image_grad), repeats)
  rows.append((name, "torch grid_sample", torch_ms))
  return rows


CASES = [
    dict(name="a. MNIST N=256 42x42x1->42x42 affine, d/dtheta", n=256, in_hw=(42, 42),
         channels=1, out_hw=(42, 42), transform="affine", image_grad=False, separable=(False,)),
    dict(name="b. SVHN N=128 32x32x48->32x32 affine, d/dimage+d/dtheta", n=128, in_hw=(32, 32),
         channels=48, out_hw=(32, 32), transform="affine", image_grad=True, separable=(False,)),
    dict(name="c. CUB N=32 448x448x3->224x224 attention, d/dparams", n=32, in_hw=(448, 448),
         channels=3, out_hw=(224, 224), transform="attention", image_grad=False,
         separable=(False, True)),
]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--out", default=str(pathlib.Path(__file__).parents[1] / "docs" /
                                           "performance.md"))
  args = parser.parse_args()
  threads = os.cpu_count()
  torch.set_num_threads(threads)
  rng = np.random.default_rng(0)
  rows = []
  for case in CASES:
    case_rows = run_case(**case, repeats=args.repeats, rng=rng)
    for row in case_rows:
      print(f"{row[0]:60s} {row[1]:22s} {row[2]:9.1f} ms", flush=True)
    rows.extend(case_rows)

  device = jax.devices()[0]
  lines = [
      "# Performance of stn_jax.ops",
      "",
      "Written by `python benchmarks/ops.py` (see its docstring for what each case computes);",
      "times are the median of "
      f"{args.repeats} steady-state calls of grid + bilinear sample + backward, in milliseconds.",
      "Before timing, the script checked that both frameworks agree on the outputs and the",
      "gradients. Samples where the two float32 grids put a point on different sides of a",
      "pixel edge (an ulp apart) are left out of the gradient check, because the",
      "piecewise-linear gradient jumps there. In float64 the tests show exact agreement.",
      "",
      f"- date: {datetime.date.today().isoformat()}",
      f"- machine: {platform.machine()}, {threads} CPU threads visible "
      f"({platform.processor() or 'unknown processor'}), {platform.system()}",
      f"- JAX device: {device.platform} ({device.device_kind})",
      f"- jax {jax.__version__}, numpy {np.__version__}, torch {torch.__version__} "
      f"(torch threads: {torch.get_num_threads()}), Python {platform.python_version()}",
      "",
      "| case | implementation | ms |",
      "|---|---|---|",
  ]
  lines += [f"| {c} | {impl} | {ms:.1f} |" for c, impl, ms in rows]
  out = pathlib.Path(args.out)
  # Keep the sections other benchmarks write below this table (from the first "## ").
  old = out.read_text().split("\n") if out.exists() else []
  rest = next((old[i:] for i, line in enumerate(old) if line.startswith("## ")), [])
  out.write_text("\n".join(lines + ([""] + rest if rest else [""])).rstrip("\n") + "\n")
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
