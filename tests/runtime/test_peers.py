"""Losing a process of a multi-process run (stn_jax/runtime/peers.py).

Two real trainer processes on loopback (CPU, gloo), as a user starts them by hand; once they
have trained and checkpointed together, one is SIGKILLed. The other must stop within seconds
with one ``error:`` sentence, whether the lost one is the coordinator (process 0) or not. The
rest checks the watchdog's bookkeeping on a fake key-value store, without processes.
"""
# pylint: disable=protected-access

import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

from stn_jax.runtime import peers
from process_helpers import ARGS, REPO, _env


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _first_checkpoint(workdir: pathlib.Path):
  folder = workdir / "checkpoints"
  return folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir())


@pytest.mark.parametrize("victim", [1, pytest.param(0, marks=pytest.mark.slow)],
                         ids=["kill_process_1", "kill_coordinator"])
def test_the_survivor_stops_soon_with_one_sentence_when_a_process_is_killed(
    victim, mnist_dir, tmp_path):
  env = {**_env(1), "STN_MNIST_DIR": str(mnist_dir)}
  env.pop("STN_PEER_TIMEOUT", None)  # the defaults are what is measured
  port, workdir = _free_port(), tmp_path / "run"
  procs, logs = [], []
  for pid in range(2):
    logs.append(tmp_path / f"process_{pid}.log")
    with open(logs[-1], "w", encoding="utf-8") as log:
      procs.append(subprocess.Popen(
          [sys.executable, "-m", "stn_jax.main", *ARGS, f"--workdir={workdir}",
           "--config.num_steps=100000", "--config.checkpoint_every=4",
           "--config.eval_every=100000", f"--coordinator_address=127.0.0.1:{port}",
           "--num_processes=2", f"--process_id={pid}"],
          cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
  survivor = procs[1 - victim]
  try:
    deadline = time.monotonic() + 150
    while not _first_checkpoint(workdir):  # both have trained and saved together
      if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
        pytest.fail("The run did not reach its first checkpoint; the ends of the logs:\n"
                    + "\n---\n".join(log.read_text()[-3000:] for log in logs))
      time.sleep(0.2)
    procs[victim].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    try:
      code = survivor.wait(timeout=20)
    except subprocess.TimeoutExpired:
      pytest.fail("The survivor was still running 20 s after the kill:\n"
                  + logs[1 - victim].read_text()[-3000:])
    took = time.monotonic() - killed
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  out = logs[1 - victim].read_text()
  print(f"survivor (process {1 - victim}) exited {code} after {took:.1f} s")
  assert code != 0, out[-3000:]
  last = out.strip().splitlines()[-1]
  named = f"error: lost process {victim} of 2" + (", the coordinator (" if victim == 0 else " (")
  assert last.startswith(named), out[-3000:]
  assert "started again with the same command" in last and "checkpoint" in last
  for noise in ("Traceback", "*** Check failure", "Fatal Python error", "@ 0x"):
    assert noise not in out, out[-3000:]


class _FakeClient:
  """The key-value store of the coordination service, in memory."""

  def __init__(self):
    self.store = {}

  def key_value_set(self, key, value, allow_overwrite=False):
    assert allow_overwrite or key not in self.store
    self.store[key] = value

  def key_value_dir_get(self, prefix):
    return [(k, v) for k, v in sorted(self.store.items()) if k.startswith(prefix)]


class _FakeState:
  def __init__(self):
    self.client = _FakeClient()
    self.coordinator_address = "127.0.0.1:1"


def _watchdog(index=0, count=3, timeout=6.0):
  state = _FakeState()
  dog = peers._Watchdog(state, index, count, timeout, helper=None)
  dog._moved_at = dict.fromkeys(dog._peers, 0.0)
  return dog, state.client


def _read(dog, client, now):
  return dog._read(client.key_value_dir_get("stn_jax/peers/"), now)


@pytest.fixture
def deaths(monkeypatch):
  said = []
  monkeypatch.setattr(peers._Watchdog, "_die", lambda self, sentence: said.append(sentence))
  return said


def test_a_peer_is_lost_only_after_its_heartbeat_stands_still_for_the_timeout(deaths):
  dog, client = _watchdog()
  for second in range(10):  # process 1 beats every second, process 2 once only
    client.key_value_set("stn_jax/peers/beat/1", str(second), allow_overwrite=True)
    if second == 0:
      client.key_value_set("stn_jax/peers/beat/2", "0")
    _read(dog, client, float(second))
    assert not deaths or second >= 7, deaths
  assert deaths and deaths[0].startswith("error: lost process 2 of 3 (no heartbeat for 7 s)")
  assert "when all 3 processes are started again with the same command" in deaths[0]


def test_a_process_that_finished_is_not_lost_and_one_that_stopped_is_reported(deaths):
  dog, client = _watchdog(index=1)
  client.key_value_set("stn_jax/peers/end/0", "done")
  client.key_value_set("stn_jax/peers/beat/2", "1")
  _read(dog, client, 1.0)
  _read(dog, client, 100.0)  # process 0 silent for long, but done; process 2 is silent
  assert deaths == ["error: lost process 2 of 3 (no heartbeat for 99 s), so process 1 stops too; "
                    "the run resumes from its last checkpoint when all 3 processes are started "
                    "again with the same command."]
  deaths.clear()
  client.key_value_set("stn_jax/peers/end/2", "stopped")
  _read(dog, client, 101.0)
  assert deaths and deaths[0].startswith(
      "error: process 2 of 3 stopped before the end of the run (its output says why)")


def test_the_coordinator_is_named_as_such(deaths):
  dog, client = _watchdog(index=2)
  client.key_value_set("stn_jax/peers/beat/1", "1")
  _read(dog, client, 7.0)
  assert deaths and deaths[0].startswith(
      "error: lost process 0 of 3, the coordinator (no heartbeat for 7 s), so process 2 stops")
  deaths.clear()
  client.key_value_set("stn_jax/peers/end/0", "stopped")
  _read(dog, client, 8.0)
  assert deaths and deaths[0].startswith("error: process 0 of 3, the coordinator, stopped before")


def test_processes_failing_together_do_not_blame_each_other(deaths):
  dog, client = _watchdog(index=0, count=2)
  client.key_value_set("stn_jax/peers/beat/1", "1")
  _read(dog, client, 1.0)
  dog._failing = True  # as failing() sets it
  client.key_value_set("stn_jax/peers/end/1", "stopped")
  _read(dog, client, 2.0)
  _read(dog, client, 50.0)
  assert not deaths
  assert dog._nobody_left()


def test_the_timeout_setting_is_checked(monkeypatch):
  monkeypatch.setenv("STN_PEER_TIMEOUT", "soon")
  with pytest.raises(SystemExit, match="STN_PEER_TIMEOUT must be a number of seconds"):
    peers._timeout_setting()
  monkeypatch.setenv("STN_PEER_TIMEOUT", "2.5")
  assert peers._timeout_setting() == 2.5
  monkeypatch.delenv("STN_PEER_TIMEOUT")
  assert peers._timeout_setting() == peers.DEFAULT_TIMEOUT


def test_a_port_in_use_is_seen():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    assert peers._port_taken(f"127.0.0.1:{port}")
  assert not peers._port_taken(f"127.0.0.1:{port}")
