"""What the multi-process tests (several trainer processes on loopback) give their
children: the smoke run's arguments and an environment of CPU devices."""

import os
import pathlib
import re
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
ARGS = ["--config=experiments/distorted_mnist.py:rts,st_cnn,smoke", "--config.tensorboard=False"]


def _env(devices):
  """The environment of a child: this Python, the repo importable, ``devices`` CPU devices."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("JAX_COORDINATOR", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"))}
  xla = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", ""))
  env["XLA_FLAGS"] = f"{xla} --xla_force_host_platform_device_count={devices}".strip()
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHON"] = sys.executable
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
  return env
