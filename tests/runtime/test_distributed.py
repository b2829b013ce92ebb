"""Several processes: ``launch.sh --local 2`` trains the smoke run on two processes over
loopback, and they follow the trajectory of one process with two devices fed the same global
batches. ``launch.sh --tpu ... --dry-run`` prints the gcloud command, quoted.

The training test reads MNIST from ``$STN_MNIST_DIR`` and is skipped without it.
"""

import json
import os
import shlex
import subprocess
import sys

import pytest

from process_helpers import ARGS, REPO, _env

LAUNCH = str(REPO / "launch.sh")

# One process, two devices, and the global batches of two processes: each process reads its own
# shard of the examples (pipeline.train_iterator), so the global batch is shard 0's batch then
# shard 1's, not a batch of one process reading every example.
_REFERENCE = """
import runpy, sys
import numpy as np
from stn_jax.tasks import distorted_mnist as mnist_task


class Joined:
  def __init__(self, iterators):
    self.iterators = iterators

  def __iter__(self):
    return self

  def __next__(self):
    parts = [next(it) for it in self.iterators]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def get_state(self):
    return {str(i): it.get_state() for i, it in enumerate(self.iterators)}

  def set_state(self, state):
    for i, it in enumerate(self.iterators):
      it.set_state(state[str(i)])


per_process = mnist_task.DistortedMnist.train_iterator
mnist_task.DistortedMnist.train_iterator = lambda self, index, count: Joined(
    [per_process(self, i, 2) for i in range(2)])
sys.argv[0] = "stn_jax.main"
runpy.run_module("stn_jax.main", run_name="__main__")
"""


def _read(workdir):
  with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
    results = json.load(f)
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return results, [json.loads(line) for line in f]


# Three processes compiling at once: 50-100 s on 2 cores, the longest test by far, so it
# runs with the long checks (.ci/run runs those too).
@pytest.mark.slow
def test_two_processes_train_together_like_one_process_with_two_devices(tmp_path):
  if not os.environ.get("STN_MNIST_DIR"):
    pytest.skip("STN_MNIST_DIR is not set: these runs read the real MNIST files.")
  two, one = str(tmp_path / "two_processes"), str(tmp_path / "one_process")
  # Both runs at once, to keep the test short.
  launched = subprocess.Popen([LAUNCH, "--local", "2", "--", *ARGS, f"--workdir={two}"],
                              cwd=REPO, env=_env(1), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
  reference = subprocess.Popen([sys.executable, "-c", _REFERENCE, *ARGS, f"--workdir={one}"],
                               cwd=REPO, env=_env(2), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
  try:
    out_two, _ = launched.communicate(timeout=180)
    out_one, _ = reference.communicate(timeout=180)
  except subprocess.TimeoutExpired:
    launched.terminate()  # launch.sh stops its processes, then exits
    outs = []
    for proc in (launched, reference):
      try:
        outs.append(proc.communicate(timeout=20)[0])
      except subprocess.TimeoutExpired:
        proc.kill()
        outs.append(proc.communicate()[0])
    pytest.fail("The runs did not finish in 180 s; the ends of their logs:\n"
                + "\n---\n".join(out[-3000:] for out in outs))
  assert launched.returncode == 0, out_two[-4000:]
  assert reference.returncode == 0, out_one[-4000:]
  assert "[0] " in out_two and "[1] " in out_two  # both processes ran, their lines prefixed

  results_two, metrics_two = _read(two)
  results_one, metrics_one = _read(one)
  assert (results_two["processes"], results_two["devices"]) == (2, 2)
  assert (results_one["processes"], results_one["devices"]) == (1, 2)
  assert results_two["steps"] == results_one["steps"] == 6
  # metrics.jsonl is process 0's alone: one line per log, not one per process.
  assert ([(m["step"], m["split"]) for m in metrics_two]
          == [(m["step"], m["split"]) for m in metrics_one])
  assert [m["step"] for m in metrics_two if m["split"] == "train"] == [2, 4, 6]
  for a, b in zip(metrics_one, metrics_two):
    for key in ("loss", "error", "grad_norm"):
      if key in a:
        assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a, b)
  for key in ("validation_error", "test_error", "test_loss", "test_examples"):
    assert results_two[key] == pytest.approx(results_one[key], rel=1e-4, abs=1e-6), key


def _run(*args, env=None):
  return subprocess.run([LAUNCH, *args], capture_output=True, text=True, timeout=60, env=env)


def test_tpu_dry_run_prints_the_gcloud_command_quoted():
  args = ["--config=experiments/distorted_mnist.py:rts,st_cnn", "--workdir=/mnt/shared/run 1",
          "--config.note=it's $HOME \"x\"; rm -rf /"]
  proc = _run("--tpu", "my-pod", "--zone", "us-central2-b", "--project", "my-project",
              "--dry-run", "--", *args)
  assert proc.returncode == 0, proc.stderr
  argv = shlex.split(proc.stdout)
  assert argv[:-1] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-pod", "--zone",
                       "us-central2-b", "--project", "my-project", "--worker=all", "--command"]
  # What each worker's shell runs: every argument arrives as it was given.
  assert shlex.split(argv[-1]) == ["cd", f"~/{REPO.name}", "&&", "python3", "-m",
                                   "stn_jax.main", "--distributed", *args]

  proc = _run("--tpu", "p", "--zone", "z", "--remote-dir", "/opt/my repo", "--dry-run", "--",
              "--workdir=w")
  assert shlex.split(shlex.split(proc.stdout)[-1])[:3] == ["cd", "/opt/my repo", "&&"]

  proc = _run("--tpu", "my-pod", "--dry-run", "--", *args)
  assert proc.returncode == 2 and "--tpu needs --zone" in proc.stderr
  proc = _run("--local", "0", "--", *args)
  assert proc.returncode == 2 and "positive number of processes" in proc.stderr
  proc = _run("--help")
  assert proc.returncode == 0 and "--local N" in proc.stdout and "--tpu NAME" in proc.stdout


def test_main_refuses_an_incomplete_or_inconsistent_process_setup(tmp_path):
  env = _env(1)
  base = [sys.executable, "-m", "stn_jax.main", *ARGS, f"--workdir={tmp_path}"]
  proc = subprocess.run(base + ["--num_processes=2", "--process_id=0"], capture_output=True,
                        text=True, timeout=60, env=env, cwd=REPO)
  assert proc.returncode != 0
  assert "missing: --coordinator_address" in proc.stderr
  proc = subprocess.run(base + ["--coordinator_address=127.0.0.1:1", "--num_processes=2",
                                "--process_id=2"], capture_output=True, text=True,
                        timeout=60, env=env, cwd=REPO)
  assert proc.returncode != 0
  assert "The process id must be in [0, 2), got 2." in proc.stderr
  assert not os.listdir(tmp_path)  # refused before anything ran


def test_remote_python_is_read_by_the_workers_shell_as_typed(tmp_path):
  # A python behind a ~ and an `env X=1` prefix: the worker's shell must expand the one
  # and apply the other. The command gcloud would send is run here by bash, with HOME at a
  # folder whose bin/fakepy prints what it got.
  home = tmp_path / "home"
  (home / "bin").mkdir(parents=True)
  fake = home / "bin" / "fakepy"
  fake.write_text("#!/bin/sh\necho \"probe=$STN_PROBE\"\nfor a in \"$@\"; do echo \"arg=$a\"; "
                  "done\n")
  fake.chmod(0o755)
  args = ["--workdir=/tmp/run 1", "--config.note=it's $HOME"]
  env = {**os.environ, "REMOTE_PYTHON": "env STN_PROBE=1 ~/bin/fakepy"}
  proc = _run("--tpu", "p", "--zone", "z", "--remote-dir", str(tmp_path), "--dry-run", "--",
              *args, env=env)
  assert proc.returncode == 0, proc.stderr
  remote = shlex.split(proc.stdout)[-1]
  ran = subprocess.run(["bash", "-c", remote], capture_output=True, text=True, timeout=30,
                       env={**os.environ, "HOME": str(home)})
  assert ran.returncode == 0, ran.stderr
  assert ran.stdout.splitlines() == ["probe=1", "arg=-m", "arg=stn_jax.main",
                                     "arg=--distributed", *[f"arg={a}" for a in args]]
  for bad in ("", "   ", "python3\nrm -rf /"):
    proc = _run("--tpu", "p", "--zone", "z", "--dry-run", "--", "--workdir=w",
                env={**os.environ, "REMOTE_PYTHON": bad})
    if bad == "":  # empty is unset: the default python3
      assert proc.returncode == 0 and " python3 -m stn_jax.main" in shlex.split(proc.stdout)[-1]
    else:
      assert proc.returncode == 2 and "REMOTE_PYTHON must be a command" in proc.stderr
