"""Training: ``train_and_evaluate(config, workdir)`` and its parts.

How a run flows: the config names a task (:mod:`stn_jax.tasks`), the task names its
trainer (:mod:`trainers`; ``classifier`` for every task that trains a classifier), the
trainer builds the state and the step and hands them to the one loop (:mod:`loop`), which
runs the trainer's actions (evaluate, draw) at their intervals and owns checkpoints,
records and stopping (through :mod:`stn_jax.runtime`). Beside them: ``config`` (the
schema), ``validate`` (the checks before any work), ``optim`` (the paper's SGD),
``state`` (what a checkpoint holds) and ``pictures``.
"""

from stn_jax.train.run import train_and_evaluate
from stn_jax.train.state import NonFiniteLossError, TrainState

__all__ = ["NonFiniteLossError", "TrainState", "train_and_evaluate"]
