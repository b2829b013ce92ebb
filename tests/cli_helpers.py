"""Command lines run as a user runs them (``python -m stn_jax.main`` in a subprocess) and the
one ``error:`` line they must end in."""

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
SMOKE = "--config=experiments/distorted_mnist.py:rts,st_cnn,smoke"


def run(*args, module="stn_jax.main", env=None):
  """Runs ``python -m module args`` from the repository root, on its own package."""
  full_env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", **(env or {})}
  return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False, env=full_env)


def error_line(out, *words):
  """The ``error:`` line that ends stderr, after checking the exit and the absence of a
  traceback; each of ``words`` must be in it."""
  assert out.returncode != 0, out.stderr
  assert "Traceback" not in out.stderr, out.stderr
  lines = out.stderr.strip().splitlines()
  assert lines and lines[-1].startswith("error: "), out.stderr[-3000:]
  for word in words:
    assert word in lines[-1], (word, lines[-1])
  return lines[-1]
