"""Times the sampler of this checkout against the sampler of an earlier commit, and both
against PyTorch, in one process (the project's timing rule, as benchmarks/ops.py).

    python benchmarks/sampler_versions.py [--commit 8a61aa1] [--case a|b] [--rounds 9]

The earlier commit's ``stn_jax/ops/sampling.py`` is read with ``git show`` and imported as
a module of its own (it uses only ``_checks`` and ``compute_dtype``, which this checkout
still has), so both samplers run on the same grids (``ops.affine_grid`` of this checkout),
in the same rounds, under the trainer's compiler options and under XLA's defaults.
8a61aa1 is the last commit with the hand-written custom VJP, before the custom JVP.

Cases (the two of issue 31): a. N=256 42x42x1 -> 42x42 affine, gradient w.r.t. theta only;
b. N=128 32x32x48 -> 32x32 affine, gradients w.r.t. the image and theta.
"""

import os

os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # before torch is imported (the timing rule)

import argparse  # pylint: disable=wrong-import-position
import importlib.util
import statistics
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

from stn_jax import ops
from stn_jax.runtime import xla

from interleave import calls_per_round, interleaved, jax_repeat, torch_repeat

CASES = {"a": dict(n=256, hw=(42, 42), channels=1, image_grad=False),
         "b": dict(n=128, hw=(32, 32), channels=48, image_grad=True)}


def _old_sampler(commit):
  source = subprocess.run(["git", "show", f"{commit}:stn_jax/ops/sampling.py"], check=True,
                          capture_output=True, text=True).stdout
  source = source.replace("from stn_jax.ops.grids import compute_dtype",
                          "from stn_jax.ops._dtypes import compute_dtype")
  path = os.path.join(tempfile.mkdtemp(), f"sampling_{commit}.py")
  with open(path, "w", encoding="utf-8") as f:
    f.write(source)
  spec = importlib.util.spec_from_file_location(f"sampling_{commit}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.sample


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--commit", default="8a61aa1")
  parser.add_argument("--case", default="a", choices=sorted(CASES))
  parser.add_argument("--rounds", type=int, default=9)
  parser.add_argument("--round-seconds", type=float, default=0.4)
  args = parser.parse_args(argv)
  torch.set_num_threads(2)
  xla.keep_freed_memory()
  case = CASES[args.case]
  n, (h, w), c, image_grad = case["n"], case["hw"], case["channels"], case["image_grad"]
  rng = np.random.default_rng(0)
  image = rng.uniform(0, 1, (n, h, w, c)).astype(np.float32)
  angle = rng.uniform(-0.6, 0.6, n)
  theta = np.stack([np.stack([np.cos(angle), -np.sin(angle), rng.uniform(-.2, .2, n)], -1),
                    np.stack([np.sin(angle), np.cos(angle), rng.uniform(-.2, .2, n)], -1)],
                   1).astype(np.float32)
  cotangent = rng.normal(size=(n, h, w, c)).astype(np.float32)
  wrt = (0, 1) if image_grad else 1
  args_jax = (jnp.asarray(image), jnp.asarray(theta), jnp.asarray(cotangent))
  samplers = {"now": ops.sample, args.commit: _old_sampler(args.commit)}
  calls, results = {}, {}
  for options_name, options in (("trainer options", xla.compiler_options()),
                                ("XLA defaults", None)):
    for name, sampler in samplers.items():
      def loss(image, theta, cotangent, sampler=sampler):
        return jnp.sum(sampler(image, ops.affine_grid(theta, (h, w))) * cotangent)
      step = jax.jit(jax.value_and_grad(loss, argnums=wrt), compiler_options=options)
      results[name] = jax.tree.map(np.asarray, step(*args_jax))
      calls[f"{name}, {options_name}"] = jax_repeat(step, *args_jax)
  # The two samplers agree before they are timed.
  for a, b in zip(jax.tree.leaves(results["now"]), jax.tree.leaves(results[args.commit])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  t_image = torch.from_numpy(image).permute(0, 3, 1, 2).contiguous()
  t_theta, t_cot = torch.from_numpy(theta), torch.from_numpy(cotangent).permute(0, 3, 1, 2)

  def torch_step():
    i = t_image.detach().requires_grad_(image_grad)
    t = t_theta.detach().requires_grad_(True)
    grid = F.affine_grid(t, (n, c, h, w), align_corners=False)
    (F.grid_sample(i, grid, align_corners=False) * t_cot).sum().backward()

  calls["torch"] = torch_repeat(torch_step)
  for call in calls.values():
    call(2)
  k = calls_per_round(calls, args.round_seconds)
  load = os.getloadavg()
  times = interleaved(calls, args.rounds, k)
  print(f"case {args.case}, {k} calls x {args.rounds} rounds; load before {load[0]:.2f}, "
        f"after {os.getloadavg()[0]:.2f}; jax {jax.__version__}, torch {torch.__version__}")
  print("| sampler | ms (median) | / PyTorch per round: median | min-max |")
  print("|---|---:|---:|---:|")
  for name, t in times.items():
    ratios = [a / b for a, b in zip(t, times["torch"])]
    print(f"| {name} | {1e3 * statistics.median(t):.2f} | {statistics.median(ratios):.2f} | "
          f"{min(ratios):.2f}-{max(ratios):.2f} |")
  sys.stdout.flush()


if __name__ == "__main__":
  main()
