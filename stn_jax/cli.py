"""What the entry points (``stn_jax.main``, ``stn_jax.evaluate``, ``stn_jax.seeds``) share:
their flags, the parser that loads the config file and starts JAX's distributed runtime,
and the one-sentence error path.

What a user can fix ends the program with one line on stderr, ``error: <what was wrong
and what to do>``, and exit status 1 (:func:`fail`, :func:`user_errors`); a run stopped by
SIGINT or SIGTERM ends with the sentence that says where it will resume and exits with 128
+ the signal's number. Anything else is a bug and keeps its traceback.
"""

import contextlib
import os
import sys

from absl import app, flags
from ml_collections import config_flags

__all__ = ["check_positional", "define_run_flags", "distributed_args", "fail", "parse_flags",
           "user_errors"]

_DISTRIBUTED_FLAGS = ("distributed", "coordinator_address", "num_processes", "process_id")
_RUN_FLAGS = {}


def define_run_flags():
  """Defines ``--config`` (required), ``--workdir`` (required) and the multi-process flags;
  returns ``(config flag, workdir flag)``. Called once, by the program's entry point."""
  if _RUN_FLAGS:
    return _RUN_FLAGS["config"], _RUN_FLAGS["workdir"]
  _RUN_FLAGS["config"] = config_flags.DEFINE_config_file(
      "config", None, "Experiment config file, with an optional ':variant'.", lock_config=True)
  _RUN_FLAGS["workdir"] = flags.DEFINE_string(
      "workdir", None, "Directory for checkpoints, metrics and results.")
  flags.DEFINE_bool(
      "distributed", None, "Call jax.distributed.initialize() (default: when a coordinator or "
      "several processes are given, or on a TPU pod).")
  flags.DEFINE_string(
      "coordinator_address", None, "host:port of process 0's coordinator (default: "
      "$JAX_COORDINATOR_ADDRESS; found by JAX on a TPU pod).")
  flags.DEFINE_integer(
      "num_processes", None, "How many processes train together (default: "
      "$JAX_NUM_PROCESSES; found by JAX on a TPU pod).")
  flags.DEFINE_integer(
      "process_id", None, "This process's id, 0 to num_processes - 1 (default: "
      "$JAX_PROCESS_ID; found by JAX on a TPU pod).")
  flags.mark_flags_as_required(["config", "workdir"])
  return _RUN_FLAGS["config"], _RUN_FLAGS["workdir"]


def check_positional(argv):
  """Ends the program if ``argv`` (absl's leftover arguments) holds more than the program."""
  if len(argv) > 1:
    fail(f"Unexpected arguments: {' '.join(argv[1:])}. Flags are written --name=value.")


def _env_int(name):
  text = os.environ.get(name, "").strip()
  if not text:
    return None
  try:
    return int(text)
  except ValueError:
    raise app.UsageError(f"{name} must be an integer, got {text!r}.") from None


def distributed_args(values):
  """The keyword arguments of ``jax.distributed.initialize``, or None for one process.

  Args:
    values: parsed ``FlagValues`` holding the distributed flags.
  """
  address = values.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  num = values.num_processes
  num = _env_int("JAX_NUM_PROCESSES") if num is None else num
  pid = values.process_id
  pid = _env_int("JAX_PROCESS_ID") if pid is None else pid
  pod = os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0
  distributed = values.distributed
  if distributed is None:
    distributed = bool(address) or (num is not None and num > 1) or pod
  if not distributed:
    return None
  if num is not None or pid is not None:  # set by hand: all three, consistent
    missing = [name for name, value in (("--coordinator_address", address),
                                        ("--num_processes", num), ("--process_id", pid))
               if value is None]
    if missing:
      raise app.UsageError(
          "Several processes started by hand need a coordinator address, the number of "
          f"processes and each one's id; missing: {', '.join(missing)} (or their variables "
          "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID).")
    if num < 1:
      raise app.UsageError(f"The number of processes must be at least 1, got {num}.")
    if not 0 <= pid < num:
      raise app.UsageError(f"The process id must be in [0, {num}), got {pid}.")
  if address is not None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
      raise app.UsageError(
          f"The coordinator address must be host:port (e.g. 127.0.0.1:12345), got {address!r}.")
  return {"coordinator_address": address, "num_processes": num, "process_id": pid}


def _start_distributed(argv):
  """Starts JAX's distributed runtime when several processes train together.

  It must start before anything touches a device, and loading the config file
  imports the model code; so this runs from the flags parser, after the
  distributed flags are read and before the other flags (``--config``) are.
  """
  if any(a.split("=")[0] in ("-h", "--help", "--helpshort", "--helpfull") for a in argv[1:]):
    return
  if "process_id" not in flags.FLAGS:
    return  # an entry point without the multi-process flags
  early = flags.FlagValues()
  for name in _DISTRIBUTED_FLAGS:
    early[name] = flags.FLAGS[name]  # the same flag objects, read early
  try:
    early(argv, known_only=True)
  except flags.Error:
    return  # the full parse reports it
  kwargs = distributed_args(early)
  if kwargs is None:
    return
  import jax  # pylint: disable=import-outside-toplevel
  # CPU processes need cross-process collectives (older JAX had none by default).
  if not os.environ.get("JAX_CPU_COLLECTIVES_IMPLEMENTATION"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  from stn_jax.runtime import peers  # pylint: disable=import-outside-toplevel
  try:
    peers.initialize(**kwargs)  # jax.distributed.initialize, and a watchdog on the others
  except ValueError as e:
    raise app.UsageError(
        f"Could not start JAX's distributed runtime ({e}). Outside a TPU pod, give "
        "--coordinator_address, --num_processes and --process_id (or JAX_COORDINATOR_ADDRESS, "
        "JAX_NUM_PROCESSES, JAX_PROCESS_ID), or run one process with --nodistributed.") from e


def fail(message, code=1, *, prefix="error: "):
  """Ends the program with ``error: <message>`` as the last line on stderr.

  The message is put on one line, so that the last line of a failed run says
  what went wrong (a prepared-dataset error, for one, holds a command on a line of
  its own).
  """
  line = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
  sys.stdout.flush()
  sys.stderr.write(f"{prefix}{line}\n")
  sys.stderr.flush()
  raise SystemExit(code)


@contextlib.contextmanager
def user_errors():
  """Reports the errors a user can act on (``stn_jax.errors``, a missing file) as one
  ``error:`` line with their exit code; anything else is a bug and keeps its traceback."""
  from stn_jax.errors import RunStopped, StnError  # pylint: disable=import-outside-toplevel
  try:
    yield
  except RunStopped as e:  # a stop asked for, not an error: its sentence, without 'error:'
    fail(e, e.exit_code, prefix="")
  except (StnError, FileNotFoundError) as e:
    fail(e, getattr(e, "exit_code", 1))


def _config_arg(argv):
  """The value of ``--config`` in ``argv`` (``--config=X`` or ``--config X``), or None."""
  for i, arg in enumerate(argv[1:], start=1):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _experiments_hint():
  names = sorted(n for n in os.listdir("experiments") if n.endswith(".py")) if os.path.isdir(
      "experiments") else []
  return (f" The experiments here: {', '.join(f'experiments/{n}' for n in names)}."
          if names else "")


def config_problem(argv):
  """The sentence for a ``--config`` that cannot be loaded or overridden as given, or None.

  config_flags reports a config file it cannot load or run with a traceback inside its
  message, or only when the config is first read, and an override of a field the config
  lacks as an AttributeError; so the file is loaded here first, as config_flags loads it
  (it is small). A config file that fails otherwise (NameError, ImportError, ...) has a
  bug: that propagates with its traceback.
  """
  import importlib.machinery  # pylint: disable=import-outside-toplevel
  import importlib.util  # pylint: disable=import-outside-toplevel
  config_arg = _config_arg(argv)
  if config_arg is None:
    return None  # absl's own message names the required flag
  path, colon, variant = config_arg.partition(":")
  if not os.path.isfile(path):
    what = "is a directory" if os.path.isdir(path) else "does not exist"
    return (f"The config file {path!r} {what} (looked from {os.getcwd()}); give "
            f"--config=experiments/<name>.py[:variant].{_experiments_hint()}")
  try:
    with open(path, "rb") as f:
      code = compile(f.read(), path, "exec")
  except (SyntaxError, ValueError) as e:  # ValueError: bytes that are not text
    where = f" (line {e.lineno})" if getattr(e, "lineno", None) else ""
    reason = getattr(e, "msg", None) or str(e)
    return (f"The config file {path!r} is not Python: {reason}{where}. Give a config file "
            f"such as experiments/distorted_mnist.py, which defines get_config().")
  loader = importlib.machinery.SourceFileLoader("_stn_config_check", path)
  module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
  exec(code, module.__dict__)  # pylint: disable=exec-used
  get_config = getattr(module, "get_config", None)
  if not callable(get_config):
    return (f"The config file {path!r} defines no get_config(); a config file returns its "
            "ConfigDict from get_config(arg=None), as those in experiments/ do.")
  try:
    config = get_config(variant) if colon else get_config()
  except ValueError as e:  # the config's own sentence, e.g. an unknown variant
    return f"--config={config_arg}: {e}"
  for arg in argv[1:]:
    if not arg.startswith("--config."):
      continue
    node, seen = config, []
    for key in arg[len("--config."):].split("=", 1)[0].split("."):
      if not hasattr(node, "keys") or key not in node:
        where = ".".join(seen) or "the top level"
        valid = sorted(node.keys()) if hasattr(node, "keys") else []
        return (f"{arg.split('=', 1)[0]} names no field of the config: {where} has "
                f"{', '.join(valid) if valid else 'no fields'}.")
      node = node[key]
      seen.append(key)
  return None


def parse_flags(argv):
  """The flags parser of the entry points (``app.run(main, flags_parser=cli.parse_flags)``):
  starts JAX's distributed runtime when several processes are given, reports a config file
  or override that cannot work as one ``error:`` line, then parses the flags."""
  try:
    _start_distributed(argv)
  except app.UsageError as e:
    fail(e)
  if not any(a.split("=")[0] in ("-h", "--help", "--helpshort", "--helpfull")
             for a in argv[1:]):
    problem = config_problem(argv)
    if problem is not None:
      fail(problem)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:  # what app.parse_flags_with_usage reports, on one line
    fail(f"{str(e).rstrip('.')}. Pass --helpfull to see the flags.")
