"""The one entry point: ``python -m stn_jax.main --config=experiments/<file>.py[:variant] --workdir=DIR``.

Flags only; the work is ``stn_jax.train.train_and_evaluate``. Override any
config field with ``--config.<key>=<value>`` (e.g. ``--config.num_steps=1000``).
On several processes (a TPU pod, or ``launch.sh --local N``), JAX's distributed
runtime is started first.
"""

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, with an optional ':variant'.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", None, "Call jax.distributed.initialize() (default: when the environment "
    "says there are several processes, or on a TPU pod).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}.")
  import jax  # pylint: disable=import-outside-toplevel
  from stn_jax import train  # pylint: disable=import-outside-toplevel
  distributed = _DISTRIBUTED.value
  if distributed is None:
    import os  # pylint: disable=import-outside-toplevel
    distributed = bool(os.environ.get("JAX_COORDINATOR_ADDRESS")) or bool(
        os.environ.get("TPU_WORKER_HOSTNAMES", "").count(","))
  if distributed:
    jax.distributed.initialize()
  logging.info("JAX process %d of %d, %d local device(s).", jax.process_index(),
               jax.process_count(), jax.local_device_count())
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
