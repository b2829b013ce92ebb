"""Faults as they happen: real training processes killed at chosen points (SIGKILL,
SIGINT, SIGTERM), checkpoints truncated or garbled, a full disk; each then resumed,
and its final parameters compared bit for bit with an uninterrupted run's, its
records (``metrics.jsonl`` and TensorBoard) holding each point exactly once.

The processes are ``python -m stn_jax.main`` on the ST-FCN smoke config (12 steps);
``STN_FAULT`` (``tests/fault_hooks.py``, installed through ``STN_HOOKS``) makes one
signal itself at a point that a random kill would rarely hit. ``benchmarks/kill_resume.py``
adds random kills.
"""

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from stn_jax import train
from stn_jax.errors import ConfigError
from stn_jax.runtime import checkpoint as ckpt
from stn_jax.runtime import quiet as quiet_lib
from stn_jax.train import config as config_lib
from stn_jax.runtime import metrics as metrics_lib
from stn_jax.tasks import distorted_mnist as mnist_task
from experiment_configs import REPO, configure

CONFIG = "experiments/distorted_mnist.py:rts,st_fcn,smoke"
# Evaluations at 3, 6, 9, 12 (each improvement is saved, as latest and best), regular
# checkpoints at 4, 8, 12, logs every 2 steps.
SCHEDULE = ("--config.num_steps=12", "--config.checkpoint_every=4", "--config.eval_every=3",
            "--config.log_every=2", "--config.keep_checkpoints=2")


def run(mnist_dir, workdir, *extra, fault=None, timeout=300):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]),
              STN_HOOKS="fault_hooks", PYTHONUNBUFFERED="1")
  env.pop("STN_FAULT", None)
  if fault:
    env["STN_FAULT"] = fault
  return run_python(["-m", "stn_jax.main", f"--config={CONFIG}", f"--workdir={workdir}",
                     f"--config.data.mnist_dir={mnist_dir}", *SCHEDULE, *extra],
                    env=env, timeout=timeout)


def run_python(args, *, env, timeout):
  """``python args`` in the repository, as ``subprocess.run`` with captured text; a run
  still going after ``timeout`` seconds fails the test with every thread's stack (Python's
  faulthandler prints them on SIGABRT), so a hang says where it hung."""
  proc = subprocess.Popen([sys.executable, "-X", "faulthandler", *args], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    out, err = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.send_signal(signal.SIGABRT)
    try:
      out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
      proc.kill()
      out, err = proc.communicate()
    pytest.fail(f"{' '.join(args)} did not finish in {timeout} s. The end of its stderr, with "
                f"every thread's stack:\n{err[-12000:]}")
  return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def ok(proc):
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def no_traceback(text):
  assert "Traceback" not in text, text[max(text.find("Traceback") - 500, 0):][:4000]


def params_at(workdir, step):
  return ckpt.params_from(os.path.join(workdir, "checkpoints", str(step)))


def assert_same_final(workdir, straight):
  """Bit for bit: every leaf of the final parameters and batch statistics, and results."""
  want, got = params_at(straight, 12), params_at(workdir, 12)
  want_leaves, got_leaves = jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(got)
  assert jax.tree_util.tree_structure(want) == jax.tree_util.tree_structure(got)
  assert len(got_leaves) > 0
  for a, b in zip(want_leaves, got_leaves):
    assert np.array_equal(a, b)
  with open(os.path.join(straight, "results.json"), encoding="utf-8") as f:
    want = json.load(f)
  with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
    got = json.load(f)
  for k in ("test_error", "validation_error", "test_loss", "best_step",
            "best_validation_error", "steps"):
    assert got[k] == want[k], k
  assert got["best_step"] is not None


def records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  jsonl = collections.Counter((r["step"], r["split"]) for r in rows)
  tb = collections.Counter((tag, step) for tag, step, _ in
                           metrics_lib.read_tensorboard(os.path.join(workdir, "tensorboard")))
  return jsonl, tb


def assert_records_once(workdir, straight):
  """Each (step, split) once in metrics.jsonl, each (tag, step) once in TensorBoard, and the
  same points as the uninterrupted run, none missing."""
  jsonl, tb = records(workdir)
  want_jsonl, want_tb = records(straight)
  assert max(jsonl.values()) == 1 and max(tb.values()) == 1
  assert set(jsonl) == set(want_jsonl)
  # The rates (images per second) are the only scalars a restart changes, not their steps.
  assert set(tb) == set(want_tb)
  assert os.listdir(os.path.join(workdir, "pictures")) and sorted(
      os.listdir(os.path.join(workdir, "pictures"))) == sorted(
          os.listdir(os.path.join(straight, "pictures")))


@pytest.fixture(scope="module")
def straight(mnist_dir, tmp_path_factory):
  """The uninterrupted run every faulty one is compared with."""
  workdir = str(tmp_path_factory.mktemp("straight") / "run")
  ok(run(mnist_dir, workdir))
  return workdir


@pytest.fixture(scope="module")
def killed_at_8(mnist_dir, tmp_path_factory):
  """A run SIGKILLed once its checkpoint of step 8 is written: two checkpoints kept."""
  workdir = str(tmp_path_factory.mktemp("killed") / "run")
  proc = run(mnist_dir, workdir, fault="saved@8")
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
  assert len(steps) == 2 and steps[-1] == 8
  return workdir


def test_kill_between_the_regular_and_the_best_checkpoint(mnist_dir, straight, tmp_path):
  workdir = str(tmp_path / "run")
  # Step 3 is the first evaluation, so it is saved as the best too.
  proc = run(mnist_dir, workdir, fault="between-saves@3")
  assert proc.returncode == -signal.SIGKILL
  assert "3" in os.listdir(os.path.join(workdir, "checkpoints"))
  assert "3" not in os.listdir(os.path.join(workdir, "best"))
  ok(run(mnist_dir, workdir))
  assert_same_final(workdir, straight)
  assert_records_once(workdir, straight)


@pytest.mark.slow  # 13 s of real subprocess runs
def test_a_best_checkpoint_ahead_of_the_latest_is_recomputed(mnist_dir, straight, tmp_path):
  # What an older version left when killed between best/N and checkpoints/N: every restart
  # then failed with Orbax's StepAlreadyExistsError.
  workdir = str(tmp_path / "run")
  # Checkpoints at 2 and 3 (the first evaluation, also the best).
  proc = run(mnist_dir, workdir, "--config.checkpoint_every=2", fault="saved@3")
  assert proc.returncode == -signal.SIGKILL
  assert os.listdir(os.path.join(workdir, "best")) == ["3"]
  shutil.rmtree(os.path.join(workdir, "checkpoints", "3"))
  proc = ok(run(mnist_dir, workdir))
  assert "Resumed from the checkpoint of step 2" in proc.stderr
  assert "Removing best/3" in proc.stderr
  assert_same_final(workdir, straight)
  assert_records_once(workdir, straight)
  assert os.listdir(os.path.join(workdir, "best")) == os.listdir(
      os.path.join(straight, "best"))


@pytest.mark.slow  # 11 s of real subprocess runs
def test_a_finished_run_resumed_keeps_its_best_record(mnist_dir, straight, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(straight, workdir)
  for _ in range(2):
    proc = ok(run(mnist_dir, workdir))
    assert "Resumed from the checkpoint of step 12" in proc.stderr
    assert_same_final(workdir, straight)
  assert_records_once(workdir, straight)


def _biggest_state_file(step_dir):
  files = [os.path.join(r, n) for r, _, ns in os.walk(os.path.join(step_dir, "state"))
           for n in ns]
  return max(files, key=os.path.getsize)


def _truncate(step_dir):
  path = _biggest_state_file(step_dir)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def _garble(step_dir):
  path = _biggest_state_file(step_dir)
  size = os.path.getsize(path)
  with open(path, "wb") as f:
    f.write(np.random.default_rng(0).bytes(size))


def _no_state_metadata(step_dir):
  os.remove(os.path.join(step_dir, "state", "_METADATA"))


def _garbage_meta(step_dir):
  with open(os.path.join(step_dir, "meta", "metadata"), "w", encoding="utf-8") as f:
    f.write("{garbage")


DAMAGE = {"truncated": _truncate, "garbled": _garble, "no_state_metadata": _no_state_metadata,
          "garbage_meta": _garbage_meta}


# One kind of damage in the default suite, the others with -m slow: the code path is one.
@pytest.mark.parametrize("damage", [
    d if d == "truncated" else pytest.param(d, marks=pytest.mark.slow) for d in sorted(DAMAGE)])
def test_a_damaged_latest_checkpoint_is_set_aside(mnist_dir, straight, killed_at_8, tmp_path,
                                                  damage):
  workdir = str(tmp_path / "run")
  shutil.copytree(killed_at_8, workdir)
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints"))
                 if s.isdigit())
  newest, older = steps[-1], steps[-2]
  DAMAGE[damage](os.path.join(workdir, "checkpoints", str(newest)))
  proc = ok(run(mnist_dir, workdir))
  warnings = [l for l in proc.stderr.splitlines() if "could not be read" in l]
  assert len(warnings) == 1 and f"step {newest}" in warnings[0]
  no_traceback(proc.stderr)
  assert f"Resumed from the checkpoint of step {older}" in proc.stderr
  assert os.listdir(os.path.join(workdir, "damaged")) == [f"checkpoints_{newest}"]
  assert_same_final(workdir, straight)
  assert_records_once(workdir, straight)


def test_no_intact_checkpoint_says_so_then_starts_again(mnist_dir, straight, killed_at_8,
                                                        tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(killed_at_8, workdir)
  root = os.path.join(workdir, "checkpoints")
  steps = [s for s in os.listdir(root) if s.isdigit()]
  for s in steps:
    _garbage_meta(os.path.join(root, s))
  proc = run(mnist_dir, workdir)
  assert proc.returncode == 1
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: No checkpoint in") and "Run the same command again" in last
  no_traceback(proc.stderr)
  assert sorted(os.listdir(os.path.join(workdir, "damaged"))) == sorted(
      f"checkpoints_{s}" for s in steps)
  proc = ok(run(mnist_dir, workdir))
  assert "Starting from step 0" in proc.stderr and "previous/1" in proc.stderr
  # The best checkpoint of the lost run is kept aside, not deleted.
  assert [n for n in os.listdir(os.path.join(workdir, "previous")) if n.startswith("best_")]
  assert_same_final(workdir, straight)
  assert_records_once(workdir, straight)


@pytest.mark.parametrize("sig", ["INT", pytest.param("TERM", marks=pytest.mark.slow)])
def test_a_signal_saves_where_it_stops(mnist_dir, straight, tmp_path, sig):
  workdir = str(tmp_path / "run")
  # Step 5 is no checkpoint step: the signal makes it one.
  proc = run(mnist_dir, workdir, fault=f"step@5:{sig}")
  signum = getattr(signal, f"SIG{sig}")
  assert proc.returncode == 128 + signum, proc.stderr[-2000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert f"Stopped by SIG{sig} at step 5" in last and "resume from step 5" in last
  no_traceback(proc.stderr)
  assert "5" in os.listdir(os.path.join(workdir, "checkpoints"))
  proc = ok(run(mnist_dir, workdir))
  assert "Resumed from the checkpoint of step 5" in proc.stderr
  assert_same_final(workdir, straight)
  assert_records_once(workdir, straight)


def test_ctrl_c_from_outside_exits_within_seconds(mnist_dir, tmp_path):
  workdir = str(tmp_path / "run")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]),
              STN_HOOKS="fault_hooks", PYTHONUNBUFFERED="1")
  env.pop("STN_FAULT", None)
  proc = subprocess.Popen(
      [sys.executable, "-m", "stn_jax.main", f"--config={CONFIG}", f"--workdir={workdir}",
       f"--config.data.mnist_dir={mnist_dir}", "--config.num_steps=100000",
       "--config.log_every=1", "--config.eval_every=100000",
       "--config.checkpoint_every=100000"],
      cwd=REPO, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
  try:
    lines = []
    for line in proc.stderr:
      lines.append(line)
      if "step 20/100000" in line:
        break
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    proc.wait(timeout=60)
    took = time.monotonic() - sent
  finally:
    proc.kill()
  assert proc.returncode == 128 + signal.SIGINT, rest[-2000:]
  assert took < 15, took
  last = rest.strip().splitlines()[-1]
  assert "Stopped by SIGINT at step" in last
  no_traceback(rest)
  step = int(last.split("resume from step ")[1].rstrip("."))
  assert step >= 20 and str(step) in os.listdir(os.path.join(workdir, "checkpoints"))


# Disk sizes at which the smoke run fills the disk at different points: writing the first
# checkpoint, a later one's state while its predecessor is complete, and with TensorBoard's
# writer thread and Orbax's abandoned writes still failing after the sentence was given.
# The middle one in the default run, the other two with -m slow.
FULL_AT = [pytest.param(("700k", "1100k"), marks=pytest.mark.slow, id="first-and-late"),
           pytest.param(("1000k",), id="later")]


@pytest.mark.parametrize("sizes", FULL_AT)
def test_a_full_disk_gives_one_sentence_and_resumes(sizes, mnist_dir, straight, tmp_path):
  mounts = []

  def small_disk(size):
    mount = tmp_path / f"disk{size}"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                      capture_output=True).returncode:
      pytest.skip("cannot mount a small tmpfs here (needs root)")
    mounts.append(mount)
    return mount

  try:
    for size in sizes:
      mount = small_disk(size)
      workdir = str(mount / "run")
      proc = run(mnist_dir, workdir)
      assert proc.returncode == 1, (size, proc.stderr[-2000:])
      lines = proc.stderr.strip().splitlines()
      assert lines[-1].startswith("error: Could not write"), (size, proc.stderr[-3000:])
      assert "No space left on device" in lines[-1] and workdir in lines[-1]
      assert ("the last complete checkpoint is step" in lines[-1]
              or "no complete checkpoint was saved yet" in lines[-1])
      no_traceback(proc.stderr)
      assert len(lines) < 60, len(lines)
    subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
    ok(run(mnist_dir, workdir))
    assert_same_final(workdir, straight)
    assert_records_once(workdir, straight)
  finally:
    for mount in mounts:
      subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_colocalisation_killed_in_its_encoder_and_in_its_loop(mnist_dir, tmp_path):
  def coloc(workdir, fault=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]),
              STN_HOOKS="fault_hooks")
    env.pop("STN_FAULT", None)
    if fault:
      env["STN_FAULT"] = fault
    return run_python(
        ["-m", "stn_jax.main", "--config=experiments/colocalisation.py:t,8,smoke",
         f"--workdir={workdir}", f"--config.data.mnist_dir={mnist_dir}",
         "--config.num_steps=6"], env=env, timeout=300)

  straight, workdir = str(tmp_path / "straight"), str(tmp_path / "run")
  ok(coloc(straight))
  # The encoder (4 steps, checkpoints at 3 and 4) trains first, in workdir/encoder.
  assert coloc(workdir, "saved@3").returncode == -signal.SIGKILL
  ckpts = os.path.join(workdir, "checkpoints")  # made once the loop starts
  assert not [s for s in (os.listdir(ckpts) if os.path.isdir(ckpts) else []) if s.isdigit()]
  proc = coloc(workdir, "colocalisation-step@5:TERM")
  assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-2000:]
  assert "Resumed from the checkpoint of step 3" in proc.stderr  # the encoder's
  assert "resume from step 5" in proc.stderr.strip().splitlines()[-1]
  proc = coloc(workdir, "colocalisation-step@6")
  assert proc.returncode == -signal.SIGKILL
  proc = ok(coloc(workdir))
  assert "Resumed from the checkpoint of step 5" in proc.stderr
  for a, b in zip(*(jax.tree_util.tree_leaves(params_at(w, 6)) for w in (straight, workdir))):
    assert np.array_equal(a, b)
  with open(os.path.join(straight, "results.json"), encoding="utf-8") as f:
    want = json.load(f)
  with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
    got = json.load(f)
  assert got["ious"] == want["ious"] and got["steps"] == 6
  jsonl, tb = records(workdir)
  want_jsonl, want_tb = records(straight)
  assert max(jsonl.values()) == 1 and max(tb.values()) == 1
  assert set(jsonl) == set(want_jsonl) and set(tb) == set(want_tb)


def test_a_diverged_process_saves_nothing_and_says_so(mnist_dir, tmp_path):
  workdir = str(tmp_path / "run")
  # NaN parameters after step 2; the evaluation of step 3 improves on "none yet" and asks for
  # a checkpoint before the losses are logged (step 4).
  proc = run(mnist_dir, workdir, "--config.log_every=4", fault="nan@2")
  assert proc.returncode == 1, proc.stderr[-2000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: The training loss became nan at step 3") and (
      "no checkpoint had been saved yet" in last)
  no_traceback(proc.stderr)
  for folder in ("checkpoints", "best"):
    assert not [s for s in os.listdir(os.path.join(workdir, folder)) if s.isdigit()]


@pytest.mark.slow  # two CLI runs; the same refusal in-process stays in the default run
def test_another_experiment_is_refused_from_the_command_line(mnist_dir, tmp_path):
  workdir = str(tmp_path / "run")
  ok(run(mnist_dir, workdir, "--config.num_steps=3"))
  before = sorted(os.listdir(workdir))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]),
              STN_HOOKS="fault_hooks")
  proc = subprocess.run(
      [sys.executable, "-m", "stn_jax.main",
       "--config=experiments/distorted_mnist.py:e,st_fcn,smoke", f"--workdir={workdir}",
       f"--config.data.mnist_dir={mnist_dir}", "--config.batch_size=8"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: The workdir") and "batch_size: 16 there, 8 here" in last and (
      "data.distortion: 'RTS' there, 'E' here" in last)
  no_traceback(proc.stderr)
  assert sorted(os.listdir(workdir)) == before


# -- in-process checks --------------------------------------------------------------------

def smoke_config(mnist_dir, variant="rts,st_fcn,smoke", **overrides):
  return configure("distorted_mnist", variant, **{"data.mnist_dir": str(mnist_dir), **overrides})


def test_no_checkpoint_holds_non_finite_parameters(mnist_dir, tmp_path, monkeypatch):
  clean = mnist_task.DistortedMnist.device_batch

  def poisoned(self, batch, key):  # every image is NaN
    images, labels = clean(self, batch, key)
    return images * np.float32("nan"), labels

  monkeypatch.setattr(mnist_task.DistortedMnist, "device_batch", poisoned)
  # The first evaluation (step 3) always improves on "none yet" and asks for a best
  # checkpoint while the losses of steps 1-3 are not logged yet (every 4): an older version
  # saved NaN parameters there, and said no checkpoint had been saved.
  c = smoke_config(mnist_dir, log_every=4, eval_every=3, num_steps=8, checkpoint_every=100)
  with pytest.raises(train.NonFiniteLossError, match="became nan at step 1.*no checkpoint "
                     "had been saved yet"):
    train.train_and_evaluate(c, str(tmp_path))
  for folder in ("checkpoints", "best"):
    assert not [s for s in os.listdir(tmp_path / folder) if s.isdigit()], folder


def test_another_experiment_in_the_same_workdir_is_refused(mnist_dir, tmp_path):
  train.train_and_evaluate(smoke_config(mnist_dir, "p,st_fcn,smoke", num_steps=3), str(tmp_path))
  with open(tmp_path / "config.json", encoding="utf-8") as f:
    before = f.read()
  with pytest.raises(ConfigError, match="data.distortion: 'P' there, 'E' here"):
    train.train_and_evaluate(smoke_config(mnist_dir, "e,st_fcn,smoke"), str(tmp_path))
  with pytest.raises(ConfigError, match="batch_size: 16 there, 8 here; learning_rate: 0.01 "
                     "there, 0.5 here"):
    train.train_and_evaluate(smoke_config(mnist_dir, "p,st_fcn,smoke", batch_size=8,
                                          learning_rate=0.5), str(tmp_path))
  for field, value in (("seed", 3), ("decay_every", 5), ("localization_lr_multiplier", 0.3),
                       ("momentum", 0.5)):
    with pytest.raises(ConfigError, match=f"{field}: "):
      train.train_and_evaluate(smoke_config(mnist_dir, "p,st_fcn,smoke", **{field: value}),
                               str(tmp_path))
  with open(tmp_path / "config.json", encoding="utf-8") as f:
    assert f.read() == before  # a refused run writes nothing
  # num_steps is not part of the identity: a run may be extended.
  results = train.train_and_evaluate(smoke_config(mnist_dir, "p,st_fcn,smoke", num_steps=4),
                                     str(tmp_path))
  assert results["steps"] == 4


def test_timed_checkpoints(mnist_dir, tmp_path):
  # 0.6 ms: every step is due; the step interval alone would save at step 6 only.
  c = smoke_config(mnist_dir, checkpoint_minutes=1e-5, checkpoint_every=100, keep_checkpoints=3)
  train.train_and_evaluate(c, str(tmp_path))
  assert sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit()) == [4, 5, 6]


def test_a_checkpoint_of_an_older_version_is_checked_against_its_config_json(mnist_dir,
                                                                             tmp_path):
  train.train_and_evaluate(smoke_config(mnist_dir, num_steps=3), str(tmp_path))
  meta = tmp_path / "checkpoints" / "3" / "meta" / "metadata"
  with open(meta, encoding="utf-8") as f:
    stored = json.load(f)
  # Older checkpoints named the model, task and input alone.
  stored["identity"] = {k: stored["identity"][k] for k in ("task", "model")}
  stored["identity"]["input_shape"] = [42, 42, 1]
  with open(meta, "w", encoding="utf-8") as f:
    json.dump(stored, f)
  with pytest.raises(ConfigError, match="batch_size: 16 there, 8 here"):
    config_lib.check_workdir(smoke_config(mnist_dir, batch_size=8), str(tmp_path))
  with pytest.raises(ConfigError, match="batch_size: 16 there, 8 here"):
    train.train_and_evaluate(smoke_config(mnist_dir, batch_size=8), str(tmp_path))
  config_lib.check_workdir(smoke_config(mnist_dir, num_steps=5), str(tmp_path))
  assert train.train_and_evaluate(smoke_config(mnist_dir, num_steps=5),
                                  str(tmp_path))["steps"] == 5


def test_what_orbax_abandons_after_a_failure_stays_off_the_console(monkeypatch):
  monkeypatch.setattr(quiet_lib, "_checkpoint_failure_told", False)
  task = ("Task exception was never retrieved\nfuture: <Task finished name='Task-9' coro=<"
          "async_serialize_from_host() done, defined at /v/orbax/checkpoint/_src/s.py:126>>")
  future = ("Future exception was never retrieved\nfuture: <Future finished exception="
            "ValueError('RESOURCE_EXHAUSTED: Error writing \"k\" in OCDBT database')>")
  other = "Future exception was never retrieved\nfuture: <Future finished exception=KeyError()>"
  assert quiet_lib._abandoned_by_orbax(task) and quiet_lib._abandoned_by_orbax(future)  # pylint: disable=protected-access
  assert not quiet_lib._abandoned_by_orbax(other)  # pylint: disable=protected-access
  assert not quiet_lib._abandoned_by_orbax("Executing <Task> took 0.2 seconds")  # pylint: disable=protected-access
  monkeypatch.setattr(quiet_lib, "_checkpoint_failure_told", True)
  assert quiet_lib._abandoned_by_orbax(other)  # pylint: disable=protected-access
