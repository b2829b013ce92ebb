"""The errors a user of the trainer can act on.

Each is raised with a whole sentence that says what was wrong and what to do;
``python -m stn_jax.main`` prints it as one ``error: ...`` line, with no
traceback, and exits with ``exit_code``. Anything else that escapes is a bug and
keeps its traceback.

Nothing here imports JAX, so any layer may raise these.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "DataError", "RunStopped", "StnError"]


class StnError(Exception):
  """Base class: an error whose message is a sentence for the user."""

  exit_code = 1


class ConfigError(StnError, ValueError):
  """A setting (config field, flag, workdir) that cannot work; raised before anything is
  written."""


class DataError(StnError, ValueError):
  """The data on disk is missing, damaged or not what the config expects."""


class CheckpointError(StnError, RuntimeError):
  """A checkpoint could not be written, or no intact one could be read."""


class RunStopped(StnError):
  """SIGINT or SIGTERM stopped the run after it saved a checkpoint it will resume from.

  Attributes:
    step: the step of that checkpoint.
    signum: the signal's number; the exit code is ``128 + signum`` as a shell reports it.
  """

  def __init__(self, message: str, *, step: int, signum: int):
    super().__init__(message)
    self.step, self.signum = step, signum
    self.exit_code = 128 + signum
