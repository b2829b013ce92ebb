"""When a process of a multi-process run is lost, the others stop within seconds, with one sentence.

Left to itself, JAX's distributed runtime notices a lost process late and loudly. Its
coordination service waits ``heartbeat_timeout_seconds`` (100 s) before it calls a silent
process dead, and then every other process aborts with a C++ stack dump. The service also lives
inside process 0, so when process 0 dies the others abort at once, with the same dump. (The C++
client takes a callback for this, but in jaxlib 0.10 any Python callback crashes the process
with ``std::bad_cast`` because it cannot convert the status it receives.) This module does three
things instead:

* **The coordination service runs in a helper process beside process 0** (``python -m
  stn_jax.runtime.peers serve ...``, started by :func:`initialize` when the process ids are
  given, as with ``launch.sh --local`` or processes started by hand). Losing trainer 0 then
  leaves the service running, so the others find out from their watchdogs rather than from a broken
  socket. The helper leaves when trainer 0 has gone: after about a second when the run ended
  cleanly or nobody is left, otherwise after ``2 * timeout + 5`` seconds, so that the survivors
  can stop first.
* **A watchdog thread in every process** writes a heartbeat into the service's key-value store
  every ``timeout / 6`` seconds (at most 1 s) and reads everyone else's. It needs nothing from the
  main thread, which may be blocked in a collective, a checkpoint barrier or an XLA compile for
  minutes (all of them release the GIL), so a slow step never looks like a lost process. A
  peer whose heartbeat has not moved for ``timeout`` seconds and that has not said it finished
  is lost: the watchdog writes one sentence, ``error: lost process 1 of 2 (no heartbeat for 6
  s), ...``, to stderr and ends this process at once with status 1, whatever its main thread is
  doing.
* **Every process says how it ended.** :func:`finished` (``main.py`` calls it after the run)
  writes "done", so a process that finishes before the others is never mistaken for a lost
  one. A process that ends any other way (an error, a signal) first checks whether a lost peer
  caused it (then it reports the peer instead of a traceback), otherwise writes "stopped", waits
  two heartbeats so the others see it, and leaves without JAX's shutdown barrier, which the
  others would never join. The others then stop with ``error: process 0 of 2 stopped before the
  end of the run ...``, unless they are failing themselves at the same time (the same error on
  every process), when each reports its own error only.

The survivors exit ``timeout`` seconds after the last heartbeat they saw, so within a heartbeat
of ``timeout`` after the loss (5.3 to 6.9 s measured by default). The run then resumes from its
last checkpoint when all processes are started again with the same command (process 0's new
helper waits for the old one to let go of the port).

Settings: ``STN_PEER_TIMEOUT`` (seconds, default 6) is how long a peer may stay silent (a
process paused that long, by Ctrl-Z or a debugger, counts as lost too); ``0`` turns this module
off, leaving JAX's own behaviour. JAX's heartbeat timeout is raised to ``2 * timeout + 10`` s
where it is shorter. On a TPU pod, where JAX finds the process
ids itself, the service stays inside process 0 (JAX's default) and only the watchdog runs: the
loss of any process but 0 is reported as above, the loss of process 0 as JAX reports it.
"""

from __future__ import annotations

import atexit
import errno
import os
import socket
import subprocess
import sys
import threading
import time

__all__ = ["finished", "initialize"]

DEFAULT_TIMEOUT = 6.0
_PREFIX = "stn_jax/peers/"
_DONE, _STOPPED = "done", "stopped"
_SHORT_LINGER = 1.0

_watchdog: _Watchdog | None = None


def _timeout_setting() -> float:
  text = os.environ.get("STN_PEER_TIMEOUT", "").strip()
  if not text:
    return DEFAULT_TIMEOUT
  try:
    value = float(text)
  except ValueError:
    value = -1.0
  if not value >= 0:  # also NaN
    raise SystemExit(f"error: STN_PEER_TIMEOUT must be a number of seconds (0 turns the peer "
                     f"watchdog off), got {text!r}.")
  return value


def _resume_clause(num: int) -> str:
  return (f"the run resumes from its last checkpoint when all {num} processes are started again "
          "with the same command")


def initialize(*, coordinator_address=None, num_processes=None, process_id=None, **kwargs):
  """``jax.distributed.initialize`` with a watchdog on the other processes.

  Takes the same arguments. Where this process is process 0 and the coordinator address is
  given, the coordination service runs in a helper process on that address (see the module
  docstring), and JAX's own service in this process, which nobody then uses, listens on a free
  loopback port.

  Raises:
    SystemExit: with an ``error:`` sentence when the helper cannot listen on the address.
    ValueError: what ``jax.distributed.initialize`` raises for incomplete arguments.
  """
  global _watchdog
  import jax  # pylint: disable=import-outside-toplevel
  timeout = _timeout_setting()
  several = num_processes is None or num_processes > 1
  if timeout:  # JAX's own verdict (an abort with a C++ stack dump) must come later than ours
    least = int(2 * timeout) + 10
    kwargs["heartbeat_timeout_seconds"] = max(kwargs.get("heartbeat_timeout_seconds", 100), least)
  helper = None
  if timeout and several and process_id == 0 and coordinator_address:
    port = coordinator_address.rpartition(":")[2]
    bind = (kwargs.get("coordinator_bind_address")
            or os.environ.get("JAX_COORDINATOR_BIND_ADDRESS") or f"[::]:{port}")
    helper = _Helper.start(bind, num_processes, timeout,
                           heartbeat=kwargs["heartbeat_timeout_seconds"],
                           shutdown=kwargs.get("shutdown_timeout_seconds", 300))
    kwargs["coordinator_bind_address"] = "127.0.0.1:0"
  try:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id, **kwargs)
  except BaseException:
    if helper is not None:
      helper.tell_linger(0)
    raise
  from jax._src import distributed  # pylint: disable=import-outside-toplevel
  state = distributed.global_state  # (jax.process_count() would start the backend now)
  if not timeout or state.num_processes < 2:
    if helper is not None:
      helper.tell_linger(_SHORT_LINGER)  # nobody to watch; the service leaves with process 0
    return
  from absl import app  # pylint: disable=import-outside-toplevel
  _watchdog = _Watchdog(state, state.process_id, state.num_processes, timeout, helper)
  _watchdog.start()

  class _OnError(app.ExceptionHandler):
    def handle(self, exception):
      del exception
      _watchdog.failing()  # a lost peer is reported here, before the traceback is printed

  app.install_exception_handler(_OnError())
  atexit.register(_watchdog.at_exit)  # after JAX's own clean-up was registered: runs before it


def finished():
  """Tells the other processes that this one completed its run (a no-op on one process).

  Call it after the run returned; a process that exits without calling it is treated as
  stopped before the end.
  """
  if _watchdog is not None:
    _watchdog.announce(_DONE)


class _Watchdog:
  """The heartbeat thread of one process, and how the process ends."""

  def __init__(self, state, index: int, count: int, timeout: float, helper):
    self._state, self._client = state, state.client
    self._index, self._count = index, count
    self._timeout = timeout
    self._interval = max(0.1, min(1.0, timeout / 6))
    self._helper = helper
    self._peers = [i for i in range(count) if i != index]
    self._beats = {}  # peer -> the last heartbeat value read
    self._moved_at = {}  # peer -> time of the read that saw its heartbeat move
    self._moves = dict.fromkeys(self._peers, 0)  # peer -> how often it was seen to move
    self._ended = {}  # peer -> _DONE or _STOPPED, as it announced
    self._cond = threading.Condition()
    self._beating = True
    self._failing = False  # this process is ending with an error of its own
    self._checked = False  # whether failing() has already waited for the peers
    self._finished = False
    self._dying = threading.Lock()

  def start(self):
    now = time.monotonic()
    self._moved_at = dict.fromkeys(self._peers, now)
    threading.Thread(target=self._run, name="stn-peer-watchdog", daemon=True).start()

  # The thread.

  def _run(self):
    beat, silent_since = 0, None
    while self._state.client is self._client:  # until JAX (or at_exit) lets go of the client
      try:
        if self._beating:
          beat += 1
          self._client.key_value_set(f"{_PREFIX}beat/{self._index}", str(beat),
                                     allow_overwrite=True)
        entries = self._client.key_value_dir_get(_PREFIX)
      except Exception:  # pylint: disable=broad-except
        # No answer from the service. The C++ client usually aborts the process first.
        now = time.monotonic()
        silent_since = now if silent_since is None else silent_since
        if now - silent_since > self._timeout and self._state.client is self._client:
          self._die(f"error: the coordination service of this run "
                    f"({self._state.coordinator_address}) has not answered for "
                    f"{self._timeout:g} s, so process {self._index} stops too; "
                    f"{_resume_clause(self._count)}.")
      else:
        silent_since = None
        self._read(entries, time.monotonic())
      time.sleep(self._interval)

  def _read(self, entries, now):
    with self._cond:
      for key, value in entries:
        kind, _, which = key[len(_PREFIX):].partition("/")
        if not which.isdigit() or int(which) == self._index:
          continue
        peer = int(which)
        if kind == "beat" and self._beats.get(peer) != value:
          self._beats[peer] = value
          self._moved_at[peer] = now
          self._moves[peer] = self._moves.get(peer, 0) + 1
        elif kind == "end":
          self._ended[peer] = value
      verdict = self._verdict(now)
      self._cond.notify_all()
    if verdict:
      self._die(verdict)

  def _verdict(self, now):
    """The sentence to stop with, or None while every peer is alive or has ended well."""
    for peer in self._peers:
      ended = self._ended.get(peer)
      if ended == _DONE or (ended == _STOPPED and self._failing):
        continue  # finished; or stopping with its own error while this one does the same
      who = f"process {peer} of {self._count}" + (", the coordinator," if peer == 0 else "")
      if ended == _STOPPED:
        return (f"error: {who} stopped before the end of the run (its output says why), so "
                f"process {self._index} stops too; {_resume_clause(self._count)}.")
      silent = now - self._moved_at[peer]
      if silent > self._timeout:
        return (f"error: lost {who.rstrip(',')} (no heartbeat for {silent:.0f} s), so process "
                f"{self._index} stops too; {_resume_clause(self._count)}.")
    return None

  def _die(self, sentence):
    if not self._dying.acquire(blocking=False):
      return
    for stream in (sys.stdout, sys.stderr):
      try:
        stream.flush()
      except Exception:  # pylint: disable=broad-except
        pass
    os.write(2, (sentence + "\n").encode())
    if self._helper is not None:
      self._helper.tell_linger(_SHORT_LINGER if self._nobody_left() else None)
    os._exit(1)

  def _nobody_left(self):
    """Whether no other process still needs the service (all lost or ended)."""
    now = time.monotonic()
    return all(peer in self._ended or now - self._moved_at[peer] > self._timeout
               for peer in self._peers)

  # The main thread.

  def announce(self, how):
    """Writes how this process ended; with "done", keeps watching until JAX lets go."""
    self._finished = self._finished or how == _DONE
    try:
      self._client.key_value_set(f"{_PREFIX}end/{self._index}", how, allow_overwrite=True)
    except Exception:  # pylint: disable=broad-except
      pass  # the service is gone: the peers learn it their own way

  def failing(self):
    """This process is ending with an error: first stops with the sentence if a peer was lost.

    Waits until every peer has either ended or moved its heartbeat twice since (then the error
    is this process's own), at most ``timeout`` and two heartbeats. A lost peer is reported by
    the thread meanwhile, which ends the process.
    """
    if self._checked or self._state.client is not self._client:
      return
    self._checked = True
    with self._cond:
      self._failing = True
      start = dict(self._moves)
      deadline = time.monotonic() + self._timeout + 2 * self._interval
      while any(peer not in self._ended and self._moves[peer] - start[peer] < 2
                for peer in self._peers):
        left = deadline - time.monotonic()
        if left <= 0:
          break
        self._cond.wait(left)

  def at_exit(self):
    if self._finished:
      if self._helper is not None:  # this process exits after JAX's shutdown barrier: all did
        self._helper.tell_linger(_SHORT_LINGER)
      return  # JAX's own clean-up follows; the thread watches until it lets go of the client
    self.failing()
    self._beating = False
    self.announce(_STOPPED)
    time.sleep(2 * self._interval)  # the others see "stopped" before they see this one gone
    if self._helper is not None:
      self._helper.tell_linger(_SHORT_LINGER if self._nobody_left() else None)
    # JAX's clean-up would shut the client down through a barrier that the others, stopping
    # on their own, never join: hand it no client. Its destructor would run the same barrier
    # (measured: it waited 40 s for the other process to exit), so it is never destroyed: one
    # reference too many, in a process about to end.
    import ctypes  # pylint: disable=import-outside-toplevel
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(self._client))
    self._state.client = None


class _Helper:
  """Trainer 0's handle on the helper process that runs the coordination service."""

  def __init__(self, proc, default_linger):
    self._proc, self._default_linger = proc, default_linger

  @classmethod
  def start(cls, bind, num_processes, timeout, *, heartbeat, shutdown):
    linger = 2 * timeout + 5
    wait_for_port = linger + 5  # a previous run's helper may still be lingering on the port
    # The helper imports this module from where this process found it.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stn_jax.runtime.peers", "serve", bind, str(num_processes),
         str(heartbeat), str(shutdown), str(linger), str(wait_for_port)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
        start_new_session=True)  # neither Ctrl-C nor launch.sh's group kill reach it
    line = _read_line(proc.stdout, wait_for_port + 60)
    proc.stdout.close()
    if line != "ready":
      proc.kill()
      raise SystemExit(line if line.startswith("error:") else
                       f"error: the coordination service for {bind} did not start "
                       f"({line or 'no answer'}).")
    return cls(proc, linger)

  def tell_linger(self, seconds):
    """How long the helper stays after this process has gone (None: the default)."""
    seconds = self._default_linger if seconds is None else seconds
    try:
      self._proc.stdin.write(f"linger {seconds}\n".encode())
      self._proc.stdin.flush()
    except OSError:
      pass


def _read_line(stream, timeout):
  import select  # pylint: disable=import-outside-toplevel
  deadline, data = time.monotonic() + timeout, b""
  while not data.endswith(b"\n"):
    left = deadline - time.monotonic()
    if left <= 0 or not select.select([stream], [], [], left)[0]:
      break
    chunk = os.read(stream.fileno(), 4096)
    if not chunk:
      break
    data += chunk
  return data.decode(errors="replace").strip()


# The helper process.

def _port_taken(bind):
  """Whether something listens on the host:port ``bind`` (a plain bind, without SO_REUSEPORT,
  fails then; gRPC itself would share the port and split the connections)."""
  host, _, port = bind.rpartition(":")
  host = host.strip("[]") or "::"
  try:
    infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
  except (OSError, ValueError):
    return False  # gRPC reports it
  for family, kind, proto, _, address in infos:
    with socket.socket(family, kind, proto) as s:
      s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are fine
      if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
      try:
        s.bind(address)
      except OSError as e:
        if e.errno == errno.EADDRINUSE:
          return True
        continue
      return False
  return False


def _serve(bind, num, heartbeat, shutdown, linger, wait_for_port):
  import signal  # pylint: disable=import-outside-toplevel
  for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)  # it leaves when trainer 0 has gone, not before
  deadline = time.monotonic() + wait_for_port
  while _port_taken(bind):
    if time.monotonic() > deadline:
      print(f"error: port {bind.rpartition(':')[2]} of the coordinator address is in use on this "
            "machine (by another run?); stop that run or give --coordinator_address another "
            "port.", flush=True)
      return 1
    time.sleep(0.5)
  try:
    import jaxlib._jax as _jax  # pylint: disable=import-outside-toplevel
  except ImportError:
    from jax._src.lib import _jax  # pylint: disable=import-outside-toplevel
  try:
    service = _jax.get_distributed_runtime_service(
        bind, num, heartbeat_timeout=heartbeat, shutdown_timeout=shutdown)
  except Exception as e:  # pylint: disable=broad-except
    print(f"error: could not start the coordination service on {bind}: {e}", flush=True)
    return 1
  print("ready", flush=True)
  parent, told = os.getppid(), [linger]

  def listen():
    for line in sys.stdin:
      if line.startswith("linger "):
        told[0] = float(line.split()[1])

  listener = threading.Thread(target=listen, daemon=True)
  listener.start()
  while listener.is_alive() and os.getppid() == parent:
    time.sleep(0.2)
  listener.join(0.5)  # a last word written just before trainer 0 ended
  time.sleep(told[0])
  closing = threading.Thread(target=service.shutdown, daemon=True)
  closing.start()
  closing.join(5)  # its barrier may wait for processes that are gone: not for long
  return 0


if __name__ == "__main__":
  if len(sys.argv) == 8 and sys.argv[1] == "serve":
    a = sys.argv[2:]
    os._exit(_serve(a[0], int(a[1]), int(a[2]), int(a[3]), float(a[4]), float(a[5])))
  sys.exit("usage: python -m stn_jax.runtime.peers serve ADDRESS NUM_PROCESSES HEARTBEAT_S "
           "SHUTDOWN_S LINGER_S PORT_WAIT_S (started by stn_jax.runtime.peers.initialize)")
