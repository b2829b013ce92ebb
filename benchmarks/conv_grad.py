"""The measurement behind stn_jax.nn.conv's and stn_jax.nn.pooling's CPU gradients.

For the convolutions of the paper's networks whose input gradient a training step
needs (the MNIST CNN's and ST-CNN's, at batch 64 and 256; SVHN's first convolution
after its transformer and a wide one; two of BN-Inception's, for CUB), it times
the input gradient computed three ways: XLA's (``jax.vjp`` of
``lax.conv_general_dilated``), col2im and rows (``stn_jax.nn.conv``); XLA's kernel
gradient; for stride 1 both gradients through FFTs; next to PyTorch's
``torch.nn.grad.conv2d_input`` and ``conv2d_weight`` and the forward convolution.
For the max pools of the MNIST CNN it times the gradient of XLA's ``reduce_window``
max (``select_and_scatter``) against ``stn_jax.nn.pooling.max_pool``'s and PyTorch's
``max_pool2d`` backward. Every result is checked against XLA's before timing.

All implementations of a row run in one process, interleaved (the order reversed
every round), on 2 threads (``OMP_WAIT_POLICY=PASSIVE`` for PyTorch), jitted with
the trainer's compiler options, with freed memory kept as the trainer keeps it
(``stn_jax.runtime.xla.keep_freed_memory``). The table gives each one's median
milliseconds; a way's backward time is its input gradient plus XLA's kernel
gradient (the FFT's gives both), and "picked (fastest)" names the way
``stn_jax.nn.conv.input_grad_method`` picks and, where another was faster, that
one; the spread is the rounds' min-max of the fastest way's backward time relative
to its median.

    python benchmarks/conv_grad.py [--rounds 5] [--write docs/performance.md]
"""

from __future__ import annotations

import os

os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # before torch is imported (the timing rule)

import argparse  # pylint: disable=wrong-import-position
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

try:
  import torch
  import torch.nn.functional as F
except ImportError:
  sys.exit("benchmarks/conv_grad.py compares against PyTorch: pip install -e '.[bench]'")

from stn_jax.nn import conv as conv_lib
from stn_jax.nn import pooling

from interleave import calls_per_round, interleaved, jax_repeat, torch_repeat
import train_step

DIMS = ("NHWC", "HWIO", "NHWC")

# (where, N, H, C_in, C_out, kernel, stride, padding): square inputs and kernels.
CONVS = [
    ("MNIST ST-CNN RTS, loc conv_3", 64, 9, 20, 20, 5, 1, 0),
    ("MNIST ST-CNN RTS, conv_0", 64, 21, 1, 87, 9, 1, 0),
    ("MNIST ST-CNN RTS, conv_2", 64, 7, 87, 87, 7, 1, 0),
    ("MNIST CNN RTS, conv_2", 64, 17, 86, 86, 7, 1, 0),
    ("MNIST ST-CNN TC, loc conv_3", 64, 13, 20, 20, 5, 1, 0),
    ("MNIST ST-CNN TC, conv_0", 64, 30, 1, 87, 9, 1, 0),
    ("MNIST ST-CNN TC, conv_2", 64, 11, 87, 87, 7, 1, 0),
    ("MNIST CNN TC, conv_2", 64, 26, 86, 86, 7, 1, 0),
    ("MNIST ST-CNN RTS, loc conv_3", 256, 9, 20, 20, 5, 1, 0),
    ("MNIST ST-CNN RTS, conv_0", 256, 21, 1, 87, 9, 1, 0),
    ("MNIST ST-CNN RTS, conv_2", 256, 7, 87, 87, 7, 1, 0),
    ("MNIST CNN RTS, conv_2", 256, 17, 86, 86, 7, 1, 0),
    ("MNIST ST-CNN TC, loc conv_3", 256, 13, 20, 20, 5, 1, 0),
    ("MNIST ST-CNN TC, conv_0", 256, 30, 1, 87, 9, 1, 0),
    ("MNIST ST-CNN TC, conv_2", 256, 11, 87, 87, 7, 1, 0),
    ("MNIST CNN TC, conv_2", 256, 26, 86, 86, 7, 1, 0),
    ("SVHN ST-CNN, conv after the ST", 16, 64, 3, 48, 5, 1, 2),
    ("SVHN ST-CNN, conv after the ST", 64, 64, 3, 48, 5, 1, 2),
    ("SVHN, a wide conv", 16, 64, 48, 64, 5, 1, 2),
    ("BN-Inception stem (after a CUB ST)", 4, 224, 3, 64, 7, 2, 3),
    ("BN-Inception stem (after a CUB ST)", 16, 224, 3, 64, 7, 2, 3),
    ("BN-Inception 3x3 stride 2", 8, 56, 64, 96, 3, 2, 1),
    ("BN-Inception 3x3", 8, 28, 96, 96, 3, 1, 1),
]

# (where, input shape NHWC, window): after a ReLU, as in the networks.
POOLS = [
    ("MNIST CNN RTS, pool_1", (64, 34, 34, 86), 2),
    ("MNIST CNN RTS, pool_3", (64, 11, 11, 86), 2),
    ("MNIST CNN TC, pool_1", (64, 52, 52, 86), 2),
    ("MNIST ST-CNN RTS, pool_1", (64, 13, 13, 87), 2),
]


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def _time(calls, rounds, round_seconds):
  for call in calls.values():
    call(1)
  k = calls_per_round(calls, round_seconds)
  times = interleaved(calls, rounds, k)
  return {name: 1e3 * statistics.median(t) for name, t in times.items()}, times, k


def conv_row(spec, options, rounds, round_seconds):
  where, n, h, cin, cout, k, s, p = spec
  strides, padding = (s, s), ((p, p), (p, p))
  rng = np.random.default_rng(0)
  x = rng.normal(size=(n, h, h, cin)).astype(np.float32)
  w = (rng.normal(size=(k, k, cin, cout)) / np.sqrt(k * k * cin)).astype(np.float32)
  plain = lambda x, w: lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=DIMS)
  y = jax.jit(plain)(x, w)
  g = rng.normal(size=y.shape).astype(np.float32)
  jit = lambda f: jax.jit(f, compiler_options=options or None)
  ways = {
      "forward": (jit(plain), (x, w)),
      "xla": (jit(lambda g, w: jax.vjp(lambda v: plain(v, w), x)[1](g)[0]), (g, w)),
      "col2im": (jit(lambda g, w: conv_lib._col2im(g, w, x.shape, strides, padding)), (g, w)),  # pylint: disable=protected-access
      "rows": (jit(lambda g, w: conv_lib._by_rows(g, w, x.shape, strides, padding)), (g, w)),  # pylint: disable=protected-access
      "xla dW": (jit(lambda x, g: jax.vjp(lambda k: plain(x, k), w)[1](g)[0]), (x, g)),
  }
  if strides == (1, 1):
    ways["fft"] = (jit(lambda x, w, g: conv_lib._fft_grads(x, w, g, padding)), (x, w, g))  # pylint: disable=protected-access
  want = ways["xla"][0](g, w)
  want_dw = ways["xla dW"][0](x, g)
  for name in ("col2im", "rows"):
    rel = _rel(ways[name][0](g, w), want)
    if rel > 1e-4:
      raise AssertionError(f"{where}: {name} differs from XLA's input gradient by {rel:.1e}")
  if "fft" in ways:
    dx, dw = ways["fft"][0](x, w, g)
    rel = max(_rel(dx, want), _rel(dw, want_dw))
    if rel > 1e-4:
      raise AssertionError(f"{where}: the FFT's gradients differ from XLA's by {rel:.1e}")
  tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
  tw = torch.from_numpy(w.transpose(3, 2, 0, 1).copy())
  tg = torch.from_numpy(g.transpose(0, 3, 1, 2).copy())
  t_dx = lambda: torch.nn.grad.conv2d_input(tx.shape, tw, tg, stride=s, padding=p)
  t_dw = lambda: torch.nn.grad.conv2d_weight(tx, tw.shape, tg, stride=s, padding=p)
  rel = _rel(t_dx().numpy().transpose(0, 2, 3, 1), want)
  rel = max(rel, _rel(t_dw().numpy().transpose(2, 3, 1, 0), want_dw))
  if rel > 1e-4:
    raise AssertionError(f"{where}: PyTorch's gradients differ by {rel:.1e}")
  calls = {name: jax_repeat(f, *a) for name, (f, a) in ways.items()}
  calls["torch"] = torch_repeat(t_dx)
  calls["torch dW"] = torch_repeat(t_dw)
  ms, times, calls_k = _time(calls, rounds, round_seconds)
  chosen = conv_lib.input_grad_method(x.shape, w.shape, strides, padding)
  # A way's cost in a step: its input gradient plus XLA's kernel gradient; the FFT's both.
  backward = {name: ms[name] + ms["xla dW"] for name in ("xla", "col2im", "rows")}
  round_backward = {name: [a + b for a, b in zip(times[name], times["xla dW"])]
                    for name in backward}
  if "fft" in ms:
    backward["fft"], round_backward["fft"] = ms["fft"], times["fft"]
  best = min(backward, key=backward.get)
  spread = [t / statistics.median(round_backward[best]) for t in round_backward[best]]
  return {"where": where, "shape": f"{k}x{k} s{s} p{p}, {cin}->{cout} on {h}x{h}", "batch": n,
          "ms": ms, "backward": backward, "chosen": chosen, "best": best, "k": calls_k,
          "spread": (min(spread), max(spread))}


def pool_row(spec, options, rounds, round_seconds):
  where, shape, window = spec
  rng = np.random.default_rng(0)
  x = np.maximum(rng.normal(size=shape), 0).astype(np.float32)
  y = pooling.max_pool(jnp.asarray(x), window)
  g = rng.normal(size=y.shape).astype(np.float32)
  jit = lambda f: jax.jit(f, compiler_options=options or None)
  xla = jit(lambda x, g: jax.vjp(lambda v: pooling._xla_max_pool(v, window), x)[1](g)[0])  # pylint: disable=protected-access
  ours = jit(lambda x, g: jax.vjp(lambda v: pooling.max_pool(v, window), x)[1](g)[0])
  if not np.array_equal(xla(x, g), ours(x, g)):
    raise AssertionError(f"{where}: the max pool's gradients differ")
  tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
  tg = torch.from_numpy(g.transpose(0, 3, 1, 2).copy())

  def t_pool():
    v = tx.detach().requires_grad_(True)
    F.max_pool2d(v, window, ceil_mode=True).backward(tg)
    return v.grad
  calls = {"xla": jax_repeat(xla, x, g), "ours": jax_repeat(ours, x, g),
           "torch": torch_repeat(t_pool)}
  ms, times, k = _time(calls, rounds, round_seconds)
  spread = [t / statistics.median(times["ours"]) for t in times["ours"]]
  return {"where": where, "shape": f"{window}x{window} on {shape[1]}x{shape[2]}x{shape[3]}",
          "batch": shape[0], "ms": ms, "k": k, "spread": (min(spread), max(spread))}


def conv_table(rows):
  out = ["| layer | convolution | batch | forward ms | XLA dX ms | col2im dX ms | rows dX ms "
         "| XLA dW ms | FFT dX+dW ms | PyTorch dX ms | PyTorch dW ms | picked (fastest) "
         "| stn_jax/PyTorch backward time | K | spread |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
  for r in rows:
    m = r["ms"]
    picked = r["chosen"] + ("" if r["chosen"] == r["best"] else f" ({r['best']})")
    fft = f"{m['fft']:.2f}" if "fft" in m else "-"
    ratio = r["backward"][r["chosen"]] / (m["torch"] + m["torch dW"])
    out.append(f"| {r['where']} | {r['shape']} | {r['batch']} | {m['forward']:.2f} | "
               f"{m['xla']:.2f} | {m['col2im']:.2f} | {m['rows']:.2f} | {m['xla dW']:.2f} | "
               f"{fft} | {m['torch']:.2f} | {m['torch dW']:.2f} | {picked} | {ratio:.2f} | "
               f"{r['k']} | {r['spread'][0]:.2f}-{r['spread'][1]:.2f} |")
  return out


def pool_table(rows):
  out = ["| layer | pool | batch | XLA fwd+bwd ms | stn_jax fwd+bwd ms | PyTorch fwd+bwd ms "
         "| K | spread |", "|---|---|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    m = r["ms"]
    out.append(f"| {r['where']} | {r['shape']} | {r['batch']} | {m['xla']:.2f} | "
               f"{m['ours']:.2f} | {m['torch']:.2f} | {r['k']} | "
               f"{r['spread'][0]:.2f}-{r['spread'][1]:.2f} |")
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--round-seconds", type=float, default=0.3)
  parser.add_argument("--only", help="run the rows whose layer name contains this")
  parser.add_argument("--write", metavar="FILE", help="put the tables into FILE's marked blocks")
  args = parser.parse_args(argv)
  options, env, args.command, start = train_step.setup_run("conv_grad.py", argv)
  convs, pools = [], []
  for spec in CONVS:
    if args.only and args.only not in spec[0]:
      continue
    convs.append(conv_row(spec, options, args.rounds, args.round_seconds))
    print(conv_table(convs)[-1], flush=True)
  for spec in POOLS:
    if args.only and args.only not in spec[0]:
      continue
    pools.append(pool_row(spec, options, args.rounds, args.round_seconds))
    print(pool_table(pools)[-1], flush=True)
  header = train_step.header_lines(env, args, time.perf_counter() - start)
  blocks = {"conv": header + [""] + conv_table(convs), "pool": [""] + pool_table(pools)}
  for lines in blocks.values():
    print("\n".join(lines))
  if args.write:
    train_step.write_blocks(args.write, blocks, script="conv_grad.py")


if __name__ == "__main__":
  main()
