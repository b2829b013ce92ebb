"""Times the trainer's SVHN training steps: the CNN baseline, ST-CNN Single and ST-CNN Multi.

    pip install -e '.[bench]'
    python benchmarks/svhn_step.py [--rounds 7] [--batch B] [--write docs/performance.md]

The paper (section 4.2) reports that ST-CNN Multi is only 6% slower than the CNN in a
forward and backward pass. This times, for each of ``experiments/svhn_cnn.py``,
``svhn_single.py`` and ``svhn_multi.py`` (their default variant: the paper's 64x64 crops,
the full-size networks), the trainer's own jitted training step
(``stn_jax.train.classifier.build_train_step``: the uint8 batch to floats as the real
SVHN task does it, forward with dropout, backward, the five heads' summed cross entropy,
SGD with momentum and weight decay, the localisation nets at their rate, the step's
metrics), all three fed the same synthetic batch: uniform random uint8 images and random
valid labels (a number of 1 to 5 digits, 0-9 left to right, then 10 for "no digit").
No SVHN data is read. Each model's first step is checked to give a finite loss.

The step holds more than the paper's forward+backward pass: the optimiser's update of the
parameters (58.6M in the CNN; ST-CNN Single's localisation net adds 1.8% to them, ST-CNN
Multi's four add 8.7%) and the metrics, which narrow the ratios a little. The transformers
start at the identity and sample at pixel centres, and the three models share the CNN's
layer names (hence its initial weights), so their first steps' losses agree: the table
shows them.

Timing (the project's rule): the three in one process, after compilation and a warm-up
step, ``--rounds`` interleaved rounds of K steps of each, the order reversed every
round, K such that one model's share of a round takes about ``--round-seconds``. The
table gives each model's median ms per step and the rounds' min-max, and per round its
time over the CNN's (median and min-max over the rounds).

Batch: the configs' own, 128 (the paper's), unless ``--batch`` gives another. On the
project's 2-core development machine (idle) a full-size step at 128 took 3-5 s and
compiling the three about 75 s: ``--rounds 2`` took 2 minutes, so the default 7 rounds
take about 3; ``--batch 32`` takes about a third of the stepping time.
"""

from __future__ import annotations

import os

# The timing rule, and train_step (imported for the report's helpers) imports torch.
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import argparse  # pylint: disable=wrong-import-position
import importlib.util
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from stn_jax.datasets.mnist_numbers import MAX_DIGITS, NO_DIGIT
from stn_jax.tasks import base as task_base
from stn_jax.tasks import svhn as svhn_task
from stn_jax.train import classifier as trainer

from interleave import calls_per_round, interleaved
import train_step

# (label, experiment file), the CNN first: the ratios are to it.
MODELS = (("CNN", "svhn_cnn.py"), ("ST-CNN Single", "svhn_single.py"),
          ("ST-CNN Multi", "svhn_multi.py"))
PAPER_MULTI_OVER_CNN = 1.06


def load_config(filename, batch_size=None):
  """``experiments/<filename>``'s default config (64x64), with ``batch_size`` if given."""
  spec = importlib.util.spec_from_file_location(filename[:-3],
                                                train_step.REPO / "experiments" / filename)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  if batch_size is not None:
    with config.unlocked():
      config.batch_size = batch_size
  return config


class SyntheticSvhn(svhn_task.Svhn):
  """The SVHN task without its data set: the real SVHN task's step on batches given here.

  The task's constructor would open the prepared SVHN; this one only sets what the step
  needs. ``device_batch`` is the real data's (uint8 images to [0, 1] floats, the labels as
  they are); the model and the losses are the task's own.
  """

  def __init__(self, config):  # pylint: disable=super-init-not-called
    task_base.Task.__init__(self, config)
    self.input_shape = (config.data.size, config.data.size, 3)
    self._cache, self._splits = {}, None

  def device_batch(self, batch, key):
    del key
    return batch["image"].astype(jnp.float32) / 255.0, batch["label"]


def synthetic_batch(batch_size, size, seed=0):
  """``{'image': uint8 (B, S, S, 3), 'label': int32 (B, 5)}``: random pixels, and numbers of
  1 to ``MAX_DIGITS`` random digits padded with ``NO_DIGIT``."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)
  lengths = rng.integers(1, MAX_DIGITS + 1, batch_size)
  digits = rng.integers(0, 10, (batch_size, MAX_DIGITS))
  labels = np.where(np.arange(MAX_DIGITS) < lengths[:, None], digits, NO_DIGIT)
  return {"image": images, "label": labels.astype(np.int32)}


def setup_model(config, host_batch):
  """The trainer's step for ``config``, its state after one checked step, and ``call(k)``."""
  start = time.perf_counter()
  task = SyntheticSvhn(config)
  step, state, to_global = trainer.build_train_step(config, jax.devices()[:1], task=task)
  num_params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(state.params))
  batch = to_global(host_batch)
  state, metrics = step(state, batch)  # compiles
  loss = float(metrics["loss"])
  if not np.isfinite(loss):
    raise AssertionError(f"{config.model}: the first step's loss is {loss}")
  holder = {"state": state}

  def call(k):
    s = holder["state"]
    for _ in range(k):
      s, m = step(s, batch)
    jax.block_until_ready((s, m))
    holder["state"] = s

  return call, {"params": num_params, "first_loss": loss,
                "setup_s": time.perf_counter() - start}


def run(batch_size, rounds, round_seconds):
  configs = {label: load_config(filename, batch_size) for label, filename in MODELS}
  sizes = {c.data.size for c in configs.values()}
  batches = {c.batch_size for c in configs.values()}
  if len(sizes) != 1 or len(batches) != 1:
    raise SystemExit(f"the configs disagree on the input size {sizes} or the batch {batches}")
  host_batch = synthetic_batch(batches.pop(), sizes.pop())
  calls, notes = {}, {}
  for label, _ in MODELS:
    calls[label], notes[label] = setup_model(configs[label], host_batch)
    print(f"{label}: {configs[label].model}, {notes[label]['params']:,} parameters, first loss "
          f"{notes[label]['first_loss']:.3f}, compiled and stepped in "
          f"{notes[label]['setup_s']:.0f} s", flush=True)
  for call in calls.values():  # warm-up
    call(1)
  k = calls_per_round(calls, round_seconds)
  times = interleaved(calls, rounds, k)
  rows = []
  reference = times[MODELS[0][0]]
  for label, filename in MODELS:
    t = times[label]
    ratios = [a / b for a, b in zip(t, reference)]
    rows.append({"model": label, "config": f"{filename}", "name": configs[label].model,
                 "params": notes[label]["params"], "batch": configs[label].batch_size,
                 "size": configs[label].data.size, "k": k, "rounds": rounds,
                 "ms": 1e3 * statistics.median(t), "ms_min": 1e3 * min(t),
                 "ms_max": 1e3 * max(t), "ratio": statistics.median(ratios),
                 "ratio_min": min(ratios), "ratio_max": max(ratios),
                 "first_loss": notes[label]["first_loss"]})
  return rows


def table(rows):
  lines = ["| model | config (model) | params | first-step loss | input, batch | K x rounds | "
           "ms/step: median | min-max | time / CNN's: median | min-max |",
           "|---|---|---:|---:|---|---:|---:|---:|---:|---:|"]
  for r in rows:
    ratio = ("1 (reference)", "") if r is rows[0] else (f"{r['ratio']:.3f}",
                                                        f"{r['ratio_min']:.3f}-"
                                                        f"{r['ratio_max']:.3f}")
    lines.append(f"| {r['model']} | {r['config']} ({r['name']}) | {r['params']:,} | "
                 f"{r['first_loss']:.4f} | {r['size']}x{r['size']}x3, {r['batch']} | "
                 f"{r['k']} x {r['rounds']} | "
                 f"{r['ms']:.0f} | {r['ms_min']:.0f}-{r['ms_max']:.0f} | {ratio[0]} | "
                 f"{ratio[1]} |")
  multi = rows[-1]
  lines += ["", f"ST-CNN Multi / CNN time: {multi['ratio']:.2f} (per round "
            f"{multi['ratio_min']:.2f}-{multi['ratio_max']:.2f}); the paper: "
            f"{PAPER_MULTI_OVER_CNN:.2f} (\"only 6% slower\", forward and backward pass)"]
  return lines


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--round-seconds", type=float, default=1.0,
                      help="about how long one model's share of a round takes (sets K)")
  parser.add_argument("--batch", type=int, default=None,
                      help="the batch size (default: the configs', 128)")
  parser.add_argument("--write", metavar="FILE", help="put the table into FILE's marked block")
  args = parser.parse_args(argv)
  _, env, args.command, start = train_step.setup_run("svhn_step.py", argv)
  rows = run(args.batch, args.rounds, args.round_seconds)
  lines = (train_step.header_lines(env, args, time.perf_counter() - start)
           + ["- data: one synthetic batch (uniform random uint8 images, random 1-5 digit "
              "labels), the same for the three", ""] + table(rows))
  print("\n".join(lines))
  if args.write:
    train_step.write_blocks(args.write, {"steps": lines}, script="svhn_step.py")


if __name__ == "__main__":
  main()
