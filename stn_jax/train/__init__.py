"""Training: ``train_and_evaluate(config, workdir)`` and its parts.

See ``stn_jax.train.run`` for the entry, ``trainer`` for the classifier loop, ``loop``
for the pieces every loop shares, ``tasks`` for what each experiment family feeds the
trainer, ``optim`` for the paper's SGD, ``checkpoint`` for Orbax and ``metrics`` for the
logs.
"""

from stn_jax.train.loop import NonFiniteLossError, TrainState
from stn_jax.train.run import train_and_evaluate

__all__ = ["NonFiniteLossError", "TrainState", "train_and_evaluate"]
