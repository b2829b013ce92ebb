"""Random SIGKILLs during a short real training run, each followed by a resume.

  STN_MNIST_DIR=... python benchmarks/kill_resume.py --kills 20

Trains one config uninterrupted, then the same config in another workdir, killing
the process (SIGKILL, at a uniformly random moment of its life: while JAX starts,
while it compiles, restores, trains, evaluates or saves) and starting it again with
the same command. A start that reaches the end before its kill completes that
workdir, which is compared with the uninterrupted run, and the next kills go to a
new workdir; once ``--kills`` processes have been killed, the last workdir runs to
the end. It prints how many kills the runs survived, how many restarts failed
(exited with an error instead of resuming), whether every killed run's final
parameters and results equal the uninterrupted run's bit for bit, and whether its
``metrics.jsonl`` and TensorBoard files hold each point exactly once, none
missing. The table it prints goes in docs/reliability.md.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# The numbers results.json holds that a resumed run must reproduce exactly (not its wall time).
RESULT_KEYS = ("steps", "best_step", "best_validation_error", "validation_error",
               "validation_loss", "test_error", "test_loss")


def _command(args, workdir):
  return [sys.executable, "-m", "stn_jax.main", f"--config={args.config}",
          f"--workdir={workdir}", f"--config.num_steps={args.steps}",
          f"--config.checkpoint_every={args.checkpoint_every}",
          f"--config.eval_every={args.eval_every}", f"--config.log_every={args.log_every}",
          *args.override]


def _env():
  env = dict(os.environ, PYTHONPATH=str(REPO))
  env.pop("STN_FAULT", None)
  return env


def _records(workdir):
  from stn_jax.runtime import metrics  # pylint: disable=import-outside-toplevel
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    jsonl = collections.Counter((r["step"], r["split"]) for r in map(json.loads, f))
  tb = collections.Counter((tag, step) for tag, step, _ in
                           metrics.read_tensorboard(os.path.join(workdir, "tensorboard")))
  return jsonl, tb


def _compare(straight, workdir):
  """What differs between the two runs' final parameters, results and records."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from stn_jax.runtime import checkpoint  # pylint: disable=import-outside-toplevel
  want, got = (checkpoint.params_from(w) for w in (straight, workdir))
  leaves = list(zip(jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(got)))
  same_tree = jax.tree_util.tree_structure(want) == jax.tree_util.tree_structure(got)
  equal_leaves = sum(bool(np.array_equal(a, b)) for a, b in leaves)
  results = []
  for w in (straight, workdir):
    with open(os.path.join(w, "results.json"), encoding="utf-8") as f:
      results.append(json.load(f))
  differing = [k for k in RESULT_KEYS if results[0].get(k) != results[1].get(k)]
  (jsonl, tb), (want_jsonl, want_tb) = _records(workdir), _records(straight)
  return {
      "leaves": len(leaves), "equal_leaves": equal_leaves, "same_tree": same_tree,
      "results_differ": differing,
      "metrics_rows": sum(jsonl.values()), "metrics_points": len(want_jsonl),
      "metrics_repeated": sum(1 for v in jsonl.values() if v > 1),
      "metrics_missing": len(set(want_jsonl) - set(jsonl)),
      "tensorboard_scalars": sum(tb.values()), "tensorboard_points": len(want_tb),
      "tensorboard_repeated": sum(1 for v in tb.values() if v > 1),
      "tensorboard_missing": len(set(want_tb) - set(tb)),
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--kills", type=int, default=20)
  parser.add_argument("--config", default="experiments/distorted_mnist.py:rts,st_fcn,smoke")
  parser.add_argument("--steps", type=int, default=60)
  parser.add_argument("--checkpoint_every", type=int, default=7)
  parser.add_argument("--eval_every", type=int, default=5)
  parser.add_argument("--log_every", type=int, default=2)
  parser.add_argument("--seed", type=int, default=0, help="of the kill times")
  parser.add_argument("--workdir", default=None, help="default: a new temporary folder")
  parser.add_argument("--override", action="append", default=[],
                      help="another --config.KEY=VALUE for both runs (repeatable)")
  args = parser.parse_args(argv)
  if args.kills < 1:
    parser.error("--kills must be at least 1.")
  root = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="kill_resume_"))
  straight = root / "straight"
  if straight.exists():
    parser.error(f"{root} holds runs already: give a new --workdir.")

  t0 = time.monotonic()
  proc = subprocess.run(_command(args, straight), cwd=REPO, env=_env(), capture_output=True,
                        text=True)
  if proc.returncode:
    sys.exit(f"The uninterrupted run failed:\n{proc.stderr[-3000:]}")
  life = time.monotonic() - t0
  print(f"uninterrupted run: {life:.1f} s")

  rng = random.Random(args.seed)
  kills, failed, starts, compared = 0, [], 0, []
  t0 = time.monotonic()

  def finish(workdir):
    compared.append((kills_here[0], _compare(straight, workdir)))

  workdir, kills_here = root / "killed_1", [0]
  while kills < args.kills:
    starts += 1
    p = subprocess.Popen(_command(args, workdir), cwd=REPO, env=_env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
      p.wait(timeout=rng.uniform(0.5, life))
    except subprocess.TimeoutExpired:
      p.send_signal(signal.SIGKILL)
      p.wait()
      p.stderr.close()
      kills += 1
      kills_here[0] += 1
      continue
    err = p.stderr.read()
    p.stderr.close()
    if p.returncode:
      failed.append(err.strip().splitlines()[-1] if err.strip() else f"exit {p.returncode}")
      continue
    finish(workdir)  # it reached its end before its kill: compare it, go on in a new one
    workdir, kills_here = root / f"killed_{len(compared) + 1}", [0]
  starts += 1
  proc = subprocess.run(_command(args, workdir), cwd=REPO, env=_env(), capture_output=True,
                        text=True)
  if proc.returncode:
    failed.append(proc.stderr.strip().splitlines()[-1])
  else:
    finish(workdir)
  total = time.monotonic() - t0
  print(f"killed runs: {starts} starts, {kills} kills, {total:.1f} s in all\n")

  def all_of(key):
    return sum(c[key] for _, c in compared)

  rows = [("kills (SIGKILL at a random moment)", kills),
          ("starts", starts),
          ("failed resumes", len(failed)),
          ("runs completed and compared (kills each)",
           f"{len(compared)} ({', '.join(str(k) for k, _ in compared)})")]
  if compared:
    rows += [
        ("final parameters equal, bit for bit",
         f"{all_of('equal_leaves')} of {all_of('leaves')} leaves"
         + ("" if all(c["same_tree"] for _, c in compared) else " (trees differ)")),
        ("results.json numbers equal",
         "yes" if not any(c["results_differ"] for _, c in compared) else
         "no: " + ", ".join(sorted({k for _, c in compared for k in c["results_differ"]}))),
        ("metrics.jsonl rows / points of the uninterrupted runs",
         f"{all_of('metrics_rows')} / {all_of('metrics_points')}"),
        ("metrics.jsonl points repeated, missing",
         f"{all_of('metrics_repeated')}, {all_of('metrics_missing')}"),
        ("TensorBoard scalars / points of the uninterrupted runs",
         f"{all_of('tensorboard_scalars')} / {all_of('tensorboard_points')}"),
        ("TensorBoard points repeated, missing",
         f"{all_of('tensorboard_repeated')}, {all_of('tensorboard_missing')}")]
  print(f"`python benchmarks/kill_resume.py --kills {args.kills} --steps {args.steps} "
        f"--seed {args.seed}` ({args.config})\n")
  print("| | |\n|---|---|")
  for k, v in rows:
    print(f"| {k} | {v} |")
  for line in failed:
    print(f"\nfailed: {line}")
  ok = bool(compared) and not failed and all(
      c["equal_leaves"] == c["leaves"] and c["same_tree"] and not c["results_differ"]
      and not any(c[k] for k in ("metrics_repeated", "metrics_missing",
                                 "tensorboard_repeated", "tensorboard_missing"))
      for _, c in compared)
  print(f"\nworkdirs: {root}")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
