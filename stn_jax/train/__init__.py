"""Training: ``train_and_evaluate(config, workdir)`` and its parts.

See ``stn_jax.train.trainer`` for the loop, ``tasks`` for what each experiment
family feeds it, ``optim`` for the paper's SGD, ``checkpoint`` for Orbax and
``metrics`` for the logs.
"""

from stn_jax.train.trainer import NonFiniteLossError, TrainState, train_and_evaluate

__all__ = ["NonFiniteLossError", "TrainState", "train_and_evaluate"]
