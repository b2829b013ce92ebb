"""The one entry point:
``python -m stn_jax.main --config=experiments/<file>.py[:variant] --workdir=DIR``.

Flags only; the work is ``stn_jax.train.train_and_evaluate``. Override any
config field with ``--config.<key>=<value>`` (e.g. ``--config.num_steps=1000``).

On several processes JAX's distributed runtime is started first. On a TPU pod
JAX finds the coordinator, the number of processes and each one's id by
itself. Elsewhere (``launch.sh --local N``, or hosts started by hand) give all
three, as flags or in the environment: ``--coordinator_address`` or
``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0), ``--num_processes``
or ``JAX_NUM_PROCESSES``, ``--process_id`` or ``JAX_PROCESS_ID``. On CPUs the
processes talk through gloo (``JAX_CPU_COLLECTIVES_IMPLEMENTATION`` may name
another).

What a user can fix ends the run with one line on stderr, ``error: <what was
wrong and what to do>``, and exit status 1: a config file that does not load, a
flag or setting that cannot work, a workdir that is a file, missing or damaged
data (these before anything is written), a diverged loss. A run stopped by
SIGINT or SIGTERM ends with the sentence that says where it will resume (no
``error:``: a stop is not an error) and exits with 128 + the signal's number.
Anything else is a bug and keeps its traceback.
"""

import importlib.util
import sys

# The trainer's packages come with the `train` extra; the ops and models need none of them.
_MISSING = [name for name in ("absl", "ml_collections", "optax", "orbax", "grain",
                              "tensorboardX") if importlib.util.find_spec(name) is None]
if _MISSING:
  sys.exit(f"error: the trainer needs {', '.join(_MISSING)}, which come with the `train` extra: "
           "pip install -e '.[train]' (from the repository) or pip install 'stn_jax[train]'.")

from absl import app, logging  # noqa: E402 (after the check above)

from stn_jax import cli  # noqa: E402

_CONFIG, _WORKDIR = cli.define_run_flags()


def main(argv):
  cli.check_positional(argv)
  import jax  # pylint: disable=import-outside-toplevel
  from stn_jax import train  # pylint: disable=import-outside-toplevel
  from stn_jax.runtime import events, peers  # pylint: disable=import-outside-toplevel
  from stn_jax.train import validate  # pylint: disable=import-outside-toplevel
  events.load_hooks()
  logging.info("JAX process %d of %d, %d local device(s).", jax.process_index(),
               jax.process_count(), jax.local_device_count())
  with cli.user_errors():
    # Here, where the workdir is known: nothing is read or written before it passes.
    validate.check_config(_CONFIG.value, _WORKDIR.value, jax.device_count())
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    peers.finished()  # the other processes may still be running: this one is not lost


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
