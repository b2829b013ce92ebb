"""Times the trainer's training step on the paper's distorted-MNIST networks against PyTorch.

    pip install -e '.[bench]'
    STN_MNIST_DIR=... python benchmarks/train_step.py [--rounds 7] [--models cnn,st_cnn]
        [--inputs rts,tc] [--batches 64,256] [--cases rts:cnn:64,...] [--split] [--no-steps]
        [--variants trainer,xla_default,dots_only] [--write docs/performance.md]

What is timed, per case (model x input x batch):

- stn_jax: the trainer's own jitted step (``trainer.build_train_step``: forward,
  backward, SGD with momentum 0.9, and the step's metrics) for
  ``experiments/distorted_mnist.py:<input>,<model>`` at full size (about 400k
  parameters), on a batch already distorted. The paper's distortion, which the
  trainer draws inside the step, is left out of the step and timed on its own
  (``distort_batch`` jitted alone, last table), because the twin has none.
- PyTorch: a twin written here from the same layer specs (``Conv2d``,
  ceil-mode ``MaxPool2d``/``AvgPool2d``, ``Linear``; ``affine_grid`` and
  ``grid_sample``, bilinear, zeros, the same ``align_corners``; the 2x average
  pooling after the transformer) with our initial weights copied in, trained by
  ``torch.optim.SGD(momentum=0.9)`` on the softmax cross-entropy.

Before timing, each case checks that the parameter counts are equal, that the
logits and the loss at our initial weights, and the loss the trainer's first step
reports, agree with the twin's (relative 1e-4). Then both take two steps from a
generic point (the ST's regressor off the identity, the batch plus noise below
1e-3: see ``off_identity`` and ``generic_batch`` for the ties they avoid) and
their losses must agree to 1e-4 and each parameter's change to 1e-2 (relative,
in the L2 norm; ``check_steps`` says why wider); this exercises the
backward pass, the momentum and the localisation net, whose gradient is zero at
the first step because the regressor starts with a zero kernel.

Timing (the project's rule): both frameworks in one process, 2 threads each
(``torch.set_num_threads(2)``; XLA's CPU client uses one thread per core), with
``OMP_WAIT_POLICY=PASSIVE`` set before torch is imported (spinning OpenMP
threads would starve XLA's). After compilation and warm-up, ``--rounds``
interleaved rounds: in each, K steps of each implementation back to back, the
order reversed every round; JAX steps are dispatched as the trainer does and
waited for with ``block_until_ready``. K is chosen so that one side of a round
takes about ``--round-seconds``. A case reports the median images/s of each,
the per-round ratio stn_jax/PyTorch (images/s over images/s, >1: stn_jax is
faster), its median and its min-max over the rounds.

``--split`` times the parts of one step for the CNN and the ST-CNN on RTS (or
``--split-input tc``) at batch 64, each jitted alone, by the same method: forward,
forward+backward, the localisation net, the grid+sampler and the classifier
(fwd+bwd), and every convolution's forward, weight gradient and input gradient against
``F.conv2d``, ``torch.nn.grad.conv2d_weight`` and ``conv2d_input``.

``--variants`` compiles the JAX side more than one way, timed in the same rounds:
``trainer`` (the trainer's compilation, ``stn_jax.runtime.xla``) and
``xla_default`` (XLA's own CPU defaults: YNNPACK takes the dot, convolution and
reduce fusions) and ``dots_only`` (YNNPACK takes the dots alone). Each variant is
checked against the twin as above; only the trainer's must agree, another's
disagreement is reported.

``--write FILE`` puts the tables between ``<!-- begin train_step.py:NAME -->``
and ``<!-- end train_step.py:NAME -->`` markers of FILE (appended at its end the
first time), leaving the rest of the file as it is.
"""

from __future__ import annotations

import os

# Before torch is imported: otherwise its OpenMP threads spin after each op and
# take the cores from XLA's threads (the project's timing rule).
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import argparse  # pylint: disable=wrong-import-position
import datetime
import importlib.util
import pathlib
import platform
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import optax

try:
  import torch
  import torch.nn.functional as F
except ImportError as e:  # pragma: no cover - a message for the user
  raise SystemExit("benchmarks/train_step.py compares against PyTorch: "
                   "pip install -e '.[bench]'") from e

from stn_jax.datasets import MnistNotFoundError, distortions, load_mnist
from stn_jax.runtime import xla as compile_lib
from stn_jax.tasks import distorted_mnist as mnist_task
from stn_jax.train import classifier as trainer

import step_split
from interleave import calls_per_round, interleaved, jax_repeat, ratio_stats, torch_repeat
from torch_twin import TorchTwin, max_rel_diff, torch_trainer

REPO = pathlib.Path(__file__).resolve().parents[1]
MODELS = ("fcn", "cnn", "st_fcn", "st_cnn")
INPUTS = ("rts", "tc")
BATCHES = (64, 256)
THREADS = 2
# XLA's CPU default list of YNNPACK fusion types in jaxlib 0.10.2 (read from the
# debug_options file that --xla_dump_to writes), given explicitly so that it
# overrides whatever the trainer's compilation sets.
XLA_DEFAULT_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type":
                       "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,"
                       "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION,LIBRARY_FUSION_TYPE_REDUCE"}
# YNNPACK for dots only: its reductions were slow on the samplers' few-channel sums
# (benchmarks/ops.py's CUB case).
DOTS_ONLY_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
VARIANTS = ("trainer", "xla_default", "dots_only")


def trainer_options():
  """The compiler options the trainer's jitted steps get on this platform."""
  return dict(compile_lib.compiler_options() or {})


def variant_options(variant):
  if variant == "trainer":
    return trainer_options()
  return dict(XLA_DEFAULT_OPTIONS if variant == "xla_default" else DOTS_ONLY_OPTIONS)


# ----------------------------------------------------------------------------- configs and data

def load_config(variant, batch_size, mnist_dir=None):
  """``experiments/distorted_mnist.py:<variant>`` with ``batch_size``."""
  spec = importlib.util.spec_from_file_location("distorted_mnist",
                                                REPO / "experiments" / "distorted_mnist.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(variant)
  with config.unlocked():
    config.batch_size = batch_size
    config.data.mnist_dir = mnist_dir
  return config


class PreDistorted(mnist_task.DistortedMnist):
  """The distorted-MNIST task with batches distorted before the step (the twin has no
  distortion, and both must see the same images)."""

  def device_batch(self, batch, key):
    del key
    return batch["image"], batch["label"]


def make_batch(distortion, batch_size, mnist_dir, seed=0, synthetic=False):
  """A distorted batch ``(images (B, H, W, 1) float32, labels (B,) int32, source)`` of MNIST
  training digits, or of random images if ``synthetic`` or MNIST is not found."""
  rng = np.random.default_rng(seed)
  source = "random 28x28 images"
  if not synthetic:
    try:
      digits, labels = load_mnist("train", mnist_dir)
      idx = rng.choice(len(digits), batch_size, replace=False)
      digits, labels = digits[idx].astype(np.float32) / 255.0, labels[idx].astype(np.int32)
      source = "MNIST training digits"
    except MnistNotFoundError:
      source += " (MNIST not found)"
  if source.startswith("random"):
    digits = rng.uniform(0, 1, (batch_size, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, batch_size).astype(np.int32)
  images, _ = distortions.distort_batch(distortion, jax.random.key(seed), jnp.asarray(digits))
  return np.asarray(images), labels, source


def ynn_convolutions(compiled):
  """(convolutions inside YNNPACK fusions, all convolutions) of a compiled executable."""
  return compile_lib.ynn_convolutions(compiled.as_text())


# ----------------------------------------------------------------------------- agreement checks

def check_twin(model, params, twin, images, labels, x, y):
  """Asserts equal parameter counts and agreeing logits and loss at the initial weights.

  Returns:
    ``(parameter count, the twin's loss)``.
  """
  n_ours = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
  n_twin = sum(p.numel() for p in twin.parameters())
  if n_ours != n_twin:
    raise AssertionError(f"parameter counts differ: stn_jax {n_ours}, PyTorch twin {n_twin}")
  logits = np.asarray(jax.jit(lambda p, v: model.apply({"params": p}, v))(params, images))
  with torch.no_grad():
    t_logits = twin(x).numpy()
  np.testing.assert_allclose(logits, t_logits, rtol=1e-4, atol=1e-4 * np.abs(t_logits).max(),
                             err_msg="logits at the initial weights")
  loss = float(optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean())
  t_loss = float(F.cross_entropy(torch.from_numpy(t_logits), y))
  np.testing.assert_allclose(loss, t_loss, rtol=1e-4, err_msg="loss at the initial weights")
  return n_ours, t_loss


def off_identity(params, seed=0):
  """``params`` with the ST's regressor moved off its initial identity transform.

  At the identity every grid point sits exactly on a pixel centre, where the bilinear
  sampler's gradient jumps (a float32 coordinate an ulp either side picks the left or
  the right derivative) and sampled background pixels are 0 or an ulp above it (so a
  ReLU after the first convolution passes or stops the gradient). The two frameworks'
  gradients legitimately differ there; the step-by-step comparison starts from a
  generic point instead: a small random regressor kernel and a transform near,
  not at, the identity.
  """
  if "transformer" not in params:
    return params
  rng = np.random.default_rng(seed)
  out = params["transformer"]["localization_out"]
  moved = {"kernel": rng.normal(0, 0.01, out["kernel"].shape).astype(np.float32),
           "bias": (out["bias"] + rng.uniform(-0.05, 0.05, out["bias"].shape)).astype(np.float32)}
  return {**params, "transformer": {**params["transformer"], "localization_out": moved}}


def generic_batch(images, seed=0):
  """``images`` plus uniform noise in [0, 1e-3), for the step-by-step comparison.

  MNIST's 8-bit pixels are often equal, and a 9x9 patch holding one nonzero pixel
  gives a convolution output that the neighbouring patch, holding another pixel of
  the same value at the same kernel position, repeats exactly: at our initial
  weights the TC CNN's first max pooling has hundreds of exact ties per batch of
  256 (380 counted in float64). Max pooling's gradient is not defined at a tie; XLA
  and PyTorch give it to different elements, and their first-step gradients differ
  by about 1e-3 (each as far from float64). A little noise removes the ties (and
  the exact zeros of the background) without changing what is computed.
  """
  noise = np.random.default_rng(seed).uniform(0, 1e-3, images.shape)
  return (images + noise).astype(np.float32)


def rel_l2(a, b):
  """||a - b|| / ||b||, in float64."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


LOSS_RTOL = 1e-4
UPDATE_RTOL = 1e-2


def check_steps(losses, t_losses, start, params, twin, where, *, strict=True):
  """How far two steps' losses, and what they did to the parameters, are from the twin's.

  Each parameter is compared by its change over the two steps (``params - start``:
  biases start at zero, and a kernel's initial values would hide its update), as
  ``||ours - twin's|| / ||twin's||``. The tolerance is wider than the losses' because
  float32 puts a few ReLU inputs and max-pooling rivals on the other side of their
  threshold from float64: in the TC CNN at batch 256 on the generic batch, PyTorch's
  float32 step flips 2 ReLUs and 3 max-pooling winners against its float64 step, and
  its conv bias gradients move by 2e-3 of their largest value; XLA's flips fall
  elsewhere. Across the 16 cases the largest difference seen was 3e-3. A wrong
  layout, learning rate or momentum changes an update by order 1.

  Args:
    losses, t_losses: the two steps' losses, ours and the twin's.
    start: the parameters both started from.
    params: ours after the two steps.
    twin: the twin, after its two steps.
    where: names the case in the message.
    strict: raise an AssertionError beyond ``LOSS_RTOL`` or ``UPDATE_RTOL``; else only
      report.

  Returns:
    ``(largest update difference, its parameter's path, largest loss difference)``.
  """
  loss_diff = max(abs(a - b) / abs(b) for a, b in zip(losses, t_losses))
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  t_flat = dict(jax.tree_util.tree_flatten_with_path(twin.flax_params())[0])
  s_flat = dict(jax.tree_util.tree_flatten_with_path(start)[0])
  worst, worst_path = max(
      (rel_l2(value - s_flat[path], t_flat[path] - s_flat[path]), jax.tree_util.keystr(path))
      for path, value in flat)
  if strict and loss_diff > LOSS_RTOL:
    raise AssertionError(f"{where}: the losses of two steps differ from the twin's by "
                         f"{loss_diff:.2e} (relative)")
  if strict and worst > UPDATE_RTOL:
    raise AssertionError(f"{where}: two steps changed parameter {worst_path} differently from "
                         f"the twin's, by {worst:.2e} of the twin's largest change")
  return worst, worst_path, loss_diff


# ----------------------------------------------------------------------------- one case

def setup_case(config, variants, *, synthetic=False):
  """Everything a timed case needs, checked: the JAX steps (one per variant), the twin's step.

  Args:
    config: a ``distorted_mnist`` config (``load_config``).
    variants: names in ``VARIANTS``.
    synthetic: random images instead of MNIST digits.

  Raises:
    AssertionError: the twin and the trainer's step disagree.
  """
  task = PreDistorted(config)
  model = task.model()
  train_step, state, to_global = trainer.build_train_step(config, jax.devices()[:1], task=task)
  images, labels, source = make_batch(config.data.distortion, config.batch_size,
                                      config.data.mnist_dir, synthetic=synthetic)
  batch = to_global({"image": images, "label": labels})
  params = jax.device_get(state.params)
  x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
  y = torch.from_numpy(labels.astype(np.int64))
  twin = TorchTwin(model)
  twin.load(params)
  num_params, init_loss = check_twin(model, params, twin, images, labels, x, y)
  # The two-step comparison starts from a generic point, away from where gradients are
  # not defined and each framework picks its own (see off_identity and generic_batch).
  moved = off_identity(params)
  twin.load(moved)
  check_images = generic_batch(images)
  check_batch = to_global({"image": check_images, "label": labels})
  check_step = torch_trainer(twin, torch.from_numpy(check_images.transpose(0, 3, 1, 2).copy()),
                             y, config.learning_rate, config.momentum)
  t_losses = [float(check_step().detach()) for _ in range(2)]
  torch_step = torch_trainer(twin, x, y, config.learning_rate, config.momentum)

  steps, states, notes, first = {}, {}, {}, None
  for v in variants:
    # The trainer's jitted step, compiled with the variant's options added to its own
    # (a Compiled object dispatches as fast as the jit call, ~8 us).
    steps[v] = compiled = train_step.lower(state, batch).compile(
        compiler_options=variant_options(v))
    where = f"{config.data.distortion} {config.model} {config.batch_size} {v}"
    # One step from our initial weights: the loss it reports is the twin's.
    _, metrics = steps[v](jax.tree_util.tree_map(jnp.copy, state), batch)
    np.testing.assert_allclose(float(metrics["loss"]), init_loss, rtol=1e-4,
                               err_msg=f"{where}: loss of the first step")
    s = jax.tree_util.tree_map(jnp.copy, state)  # each variant donates its own
    s = s.replace(params=jax.device_put(moved, jax.tree_util.tree_map(lambda a: a.sharding,
                                                                       s.params)))
    losses = []
    for _ in range(2):
      s, metrics = steps[v](s, check_batch)
      losses.append(float(metrics["loss"]))
    after = jax.device_get(s.params)
    # Only the trainer's own compilation must agree; another variant's disagreement is
    # reported.
    worst, worst_path, loss_diff = check_steps(losses, t_losses, moved, after, twin, where,
                                               strict=v == "trainer")
    if worst > UPDATE_RTOL or loss_diff > LOSS_RTOL:
      print(f"warning: {where}: two steps changed {worst_path} differently from the twin's, by "
            f"{worst:.1e} of its largest change (losses by {loss_diff:.1e})", flush=True)
    states[v] = s
    first = first if v != variants[0] else (after, losses)
    # Against the first variant: the same numbers, or within the twin's tolerance?
    vs_first = max(max_rel_diff(a, b) for a, b in zip(jax.tree_util.tree_leaves(after),
                                                       jax.tree_util.tree_leaves(first[0])))
    notes[v] = {"ynn_convolutions": ynn_convolutions(compiled), "param_rel_diff": worst,
                "param_worst": worst_path, "loss_rel_diff": loss_diff,
                "vs_first_params": vs_first, "vs_first_loss": abs(losses[1] - first[1][1])}

  def jax_call(v):
    def call(k):
      s = states[v]
      for _ in range(k):
        s, metrics = steps[v](s, batch)
      jax.block_until_ready((s, metrics))
      states[v] = s
    return call

  calls = {f"jax:{v}": jax_call(v) for v in variants}
  calls["torch"] = torch_repeat(torch_step)
  return {"calls": calls, "num_params": num_params, "notes": notes, "source": source}


def run_case(input_name, model_name, batch_size, variants, rounds, round_seconds, mnist_dir):
  start = time.perf_counter()
  case = setup_case(load_config(f"{input_name},{model_name}", batch_size, mnist_dir), variants)
  calls = case["calls"]
  for call in calls.values():  # warm-up beyond the two checked steps
    call(1)
  k = calls_per_round(calls, round_seconds)
  times = interleaved(calls, rounds, k)
  row = {"input": input_name, "model": model_name, "batch": batch_size, "k": k,
         "rounds": rounds, "params": case["num_params"], "source": case["source"],
         "torch_ips": batch_size / statistics.median(times["torch"]), "variants": {},
         "seconds": time.perf_counter() - start}
  for v in variants:
    t = times[f"jax:{v}"]
    med, lo, hi = ratio_stats(t, times["torch"])
    row["variants"][v] = {"ips": batch_size / statistics.median(t), "ratio": med,
                          "ratio_min": lo, "ratio_max": hi, "times": t, **case["notes"][v]}
  if len(variants) > 1:
    a, b = (times[f"jax:{v}"] for v in variants[:2])
    row["speedup"] = ratio_stats(b, a)  # speed of variants[1] over variants[0], per round
  row["torch_times"] = times["torch"]
  return row


def time_distortion(input_name, batch_size, rounds, round_seconds, mnist_dir):
  """ms of ``distort_batch`` jitted alone (what the trainer adds inside the step)."""
  config = load_config(f"{input_name},cnn", batch_size, mnist_dir)
  digits = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (batch_size, 28, 28)), jnp.float32)
  fn = jax.jit(lambda key, d: distortions.distort_batch(config.data.distortion, key, d)[0],
               compiler_options=trainer_options() or None)
  calls = {"jax": jax_repeat(fn, jax.random.key(1), digits)}
  calls["jax"](2)
  k = calls_per_round(calls, round_seconds)
  t = interleaved(calls, rounds, k)["jax"]
  return {"input": input_name, "batch": batch_size, "ms": 1e3 * statistics.median(t),
          "ms_min": 1e3 * min(t), "ms_max": 1e3 * max(t)}


# ----------------------------------------------------------------------------- the split

def run_split(model_name, label, batch_size, rounds, round_seconds, mnist_dir, options,
              input_name="rts"):
  """The parts of one step of ``<input_name>,<model_name>`` (see ``step_split``)."""
  config = load_config(f"{input_name},{model_name}", batch_size, mnist_dir)
  task = PreDistorted(config)
  model = task.model()
  _, state, _ = trainer.build_train_step(config, jax.devices()[:1], task=task)
  images, labels, _ = make_batch(config.data.distortion, batch_size, mnist_dir)
  twin = TorchTwin(model)
  twin.load(off_identity(jax.device_get(state.params)))
  step = torch_trainer(twin, torch.from_numpy(images.transpose(0, 3, 1, 2).copy()),
                       torch.from_numpy(labels.astype(np.int64)), config.learning_rate,
                       config.momentum)
  for _ in range(3):  # weights a few steps in, the same in both
    step()
  params = jax.tree_util.tree_map(np.ascontiguousarray, twin.flax_params())
  return step_split.time_parts(label, model, params, twin, images, labels, rounds=rounds,
                               round_seconds=round_seconds, options=options)


# ----------------------------------------------------------------------------- reporting

def setup_run(script, argv):
  """What every benchmark of one process does first, by the timing rule: PyTorch on
  ``THREADS`` threads, freed memory kept as the trainer keeps it. Returns the trainer's
  compiler options, the environment to report, the command line that ran (``script`` and
  its arguments) and the start time."""
  torch.set_num_threads(THREADS)
  options = compile_lib.compiler_options()
  compile_lib.keep_freed_memory()
  command = f"python benchmarks/{script}" + "".join(
      f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
  return options, environment(), command, time.perf_counter()


def environment():
  load = os.getloadavg()
  return {
      "date": datetime.date.today().isoformat(),
      "machine": f"{platform.machine()}, {os.cpu_count()} CPU threads visible "
                 f"({_cpu_name()}), {platform.system()}",
      "versions": f"jax {jax.__version__}, jaxlib {jaxlib.__version__}, numpy {np.__version__}, "
                  f"torch {torch.__version__} (threads {torch.get_num_threads()}), "
                  f"Python {platform.python_version()}",
      "load_before": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
      "omp": os.environ.get("OMP_WAIT_POLICY"),
      "trainer_options": trainer_options(),
  }


def _cpu_name():
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown processor"


def _commit():
  try:
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def header_lines(env, args, seconds):
  load = os.getloadavg()
  return [
      f"- date: {env['date']}, commit {_commit()}; command: `{args.command}`",
      f"- machine: {env['machine']}; JAX device: {jax.devices()[0].device_kind}",
      f"- {env['versions']}; OMP_WAIT_POLICY={env['omp']}",
      f"- trainer's XLA compiler options: {env['trainer_options'] or 'none (XLA defaults)'}",
      f"- load average (1, 5, 15 min) before: {env['load_before']}, after: "
      f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; the run took {seconds:.0f} s",
  ]


def step_table(rows, variant):
  lines = ["| input | model | params | batch | K x rounds | stn_jax img/s | PyTorch img/s | "
           "stn_jax/PyTorch median | per-round min-max |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    v = r["variants"][variant]
    lines.append(f"| {r['input'].upper()} | {r['model']} | {r['params']:,} | {r['batch']} | "
                 f"{r['k']} x {r['rounds']} | {v['ips']:,.0f} | {r['torch_ips']:,.0f} | "
                 f"{v['ratio']:.2f} | {v['ratio_min']:.2f}-{v['ratio_max']:.2f} |")
  return lines


def variants_table(rows, variants):
  a, b = variants[:2]
  lines = [f"| input | model | batch | YNN convs ({a}) | YNN convs ({b}) | {a} img/s | {b} img/s | "
           f"PyTorch img/s | {b} speed over {a}: median (min-max) | {a}/PyTorch | {b}/PyTorch | "
           f"2-step parameter change vs the twin's: {a}, {b} |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    va, vb = r["variants"][a], r["variants"][b]
    s = r["speedup"]
    ynn = lambda v: f"{v['ynn_convolutions'][0]} of {v['ynn_convolutions'][1]}"
    lines.append(f"| {r['input'].upper()} | {r['model']} | {r['batch']} | {ynn(va)} | {ynn(vb)} | "
                 f"{va['ips']:,.0f} | {vb['ips']:,.0f} | {r['torch_ips']:,.0f} | "
                 f"{s[0]:.2f} ({s[1]:.2f}-{s[2]:.2f}) | {va['ratio']:.2f} | {vb['ratio']:.2f} | "
                 f"{va['param_rel_diff']:.0e}, {vb['param_rel_diff']:.0e} |")
  return lines


def split_table(rows):
  lines = ["| model | part | stn_jax ms | PyTorch ms | stn_jax/PyTorch median | min-max |",
           "|---|---|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['model']} | {r['part']} | {r['jax_ms']:.2f} | {r['torch_ms']:.2f} | "
                 f"{r['ratio']:.2f} | {r['ratio_min']:.2f}-{r['ratio_max']:.2f} |")
  return lines


def distortion_table(rows):
  lines = ["| input | batch | ms per batch (median, min-max) |", "|---|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['input'].upper()} | {r['batch']} | {r['ms']:.1f} "
                 f"({r['ms_min']:.1f}-{r['ms_max']:.1f}) |")
  return lines


def write_blocks(path, blocks, script="train_step.py"):
  """Replaces each ``name``'s marked block in ``path`` (appending it if absent)."""
  path = pathlib.Path(path)
  text = path.read_text(encoding="utf-8") if path.exists() else ""
  for name, lines in blocks.items():
    begin, end = f"<!-- begin {script}:{name} -->", f"<!-- end {script}:{name} -->"
    block = "\n".join([begin, *lines, end])
    if begin in text and end in text:
      text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
      text = text.rstrip("\n") + "\n\n" + block + "\n"
  path.write_text(text, encoding="utf-8")


# ----------------------------------------------------------------------------- main

def parse_cases(args):
  if args.cases:
    cases = []
    for item in args.cases.split(","):
      parts = item.split(":")
      if len(parts) != 3 or parts[0] not in INPUTS or parts[1] not in MODELS:
        raise SystemExit(f"--cases: {item!r} is not INPUT:MODEL:BATCH with INPUT in {INPUTS} "
                         f"and MODEL in {MODELS}, e.g. rts:st_cnn:64.")
      cases.append((parts[0], parts[1], int(parts[2])))
    return cases
  pick = lambda text, known: [t for t in text.split(",") if t] if text else list(known)
  inputs, models = pick(args.inputs, INPUTS), pick(args.models, MODELS)
  batches = [int(b) for b in args.batches.split(",")] if args.batches else list(BATCHES)
  for name, given, known in (("--inputs", inputs, INPUTS), ("--models", models, MODELS)):
    if set(given) - set(known):
      raise SystemExit(f"{name}: unknown {sorted(set(given) - set(known))}; known: {known}.")
  return [(i, m, b) for i in inputs for m in models for b in batches]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", help=f"comma-separated, of {','.join(MODELS)} (default all)")
  parser.add_argument("--inputs", help=f"comma-separated, of {','.join(INPUTS)} (default all)")
  parser.add_argument("--batches", help="comma-separated batch sizes (default 64,256)")
  parser.add_argument("--cases", help="INPUT:MODEL:BATCH,... instead of the three above")
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--round-seconds", type=float, default=0.4,
                      help="about how long one side of one round takes (sets K)")
  parser.add_argument("--variants", default="trainer",
                      help=f"JAX compilations to time, comma-separated, of {','.join(VARIANTS)}")
  parser.add_argument("--split", action="store_true",
                      help="also time the parts of one step (CNN and ST-CNN, RTS, batch 64)")
  parser.add_argument("--split-input", default="rts", choices=INPUTS,
                      help="the input whose networks --split cuts (default rts)")
  parser.add_argument("--no-steps", action="store_true", help="skip the whole-step cases")
  parser.add_argument("--mnist-dir", default=None,
                      help="MNIST IDX files (default: $STN_MNIST_DIR, then data/mnist)")
  parser.add_argument("--write", metavar="FILE", help="put the tables into FILE's marked blocks")
  args = parser.parse_args(argv)
  shown_args = list(argv if argv is not None else sys.argv[1:])
  for i, a in enumerate(shown_args):  # --write says where, not what: leave it out
    if a == "--write":
      del shown_args[i:i + 2]
      break
    if a.startswith("--write="):
      del shown_args[i]
      break
  args.command = " ".join(["python benchmarks/train_step.py", *shown_args])
  variants = [v for v in args.variants.split(",") if v]
  if not variants or set(variants) - set(VARIANTS):
    raise SystemExit(f"--variants: choose from {VARIANTS}.")
  torch.set_num_threads(THREADS)
  env = environment()
  print(f"load before: {env['load_before']}; {env['versions']}; OMP_WAIT_POLICY={env['omp']}; "
        f"trainer options: {env['trainer_options']}", flush=True)
  start = time.perf_counter()
  rows, split_rows, distortion_rows = [], [], []
  if not args.no_steps:
    for input_name, model_name, batch_size in parse_cases(args):
      row = run_case(input_name, model_name, batch_size, variants, args.rounds,
                     args.round_seconds, args.mnist_dir)
      rows.append(row)
      text = "  ".join(f"{v} {d['ips']:7.0f} img/s ratio {d['ratio']:.2f} "
                       f"[{d['ratio_min']:.2f}-{d['ratio_max']:.2f}] ynn convs "
                       f"{d['ynn_convolutions'][0]}/{d['ynn_convolutions'][1]} "
                       f"(update vs twin {d['param_rel_diff']:.1e}, params vs {variants[0]} "
                       f"{d['vs_first_params']:.1e})"
                       for v, d in row["variants"].items())
      print(f"{input_name:3s} {model_name:6s} {batch_size:4d} ({row['params']:,} params, "
            f"K={row['k']}, {row['seconds']:.0f} s): torch {row['torch_ips']:7.0f} img/s  {text}",
            flush=True)
    for input_name in sorted({r["input"] for r in rows}):
      for batch_size in sorted({r["batch"] for r in rows}):
        distortion_rows.append(time_distortion(input_name, batch_size, args.rounds,
                                               args.round_seconds, args.mnist_dir))
        d = distortion_rows[-1]
        print(f"distortion {input_name} {batch_size}: {d['ms']:.1f} ms", flush=True)
  if args.split:
    for model_name in ("st_cnn", "cnn"):
      for v in variants:
        label = model_name if len(variants) == 1 else f"{model_name} ({v})"
        if args.split_input != "rts":
          label = f"{args.split_input.upper()} {label}"
        split_rows += run_split(model_name, label, 64, args.rounds, args.round_seconds,
                                args.mnist_dir, variant_options(v), args.split_input)
  seconds = time.perf_counter() - start
  blocks = {}
  head = header_lines(env, args, seconds)
  shown = "trainer" if "trainer" in variants else variants[0]  # in the steps table
  if rows:
    data = {r["source"] for r in rows}
    blocks["steps"] = head + [f"- data: one batch of {', '.join(sorted(data))}, distorted once",
                              ""] + step_table(rows, shown)
    blocks["distortion"] = distortion_table(distortion_rows)
    if len(variants) > 1:
      blocks["variants"] = head + [""] + variants_table(rows, variants)
  if split_rows:
    blocks["split"] = head + [""] + split_table(split_rows)
  for name, lines in blocks.items():
    print(f"\n[{name}]\n" + "\n".join(lines))
  if args.write:
    write_blocks(args.write, blocks)
    print(f"wrote {args.write}")


if __name__ == "__main__":
  main()
