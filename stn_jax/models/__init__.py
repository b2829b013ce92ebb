"""The paper's networks, registered by name.

>>> from stn_jax import models
>>> model = models.get_model('st_cnn', input_shape=(42, 42, 1), transform='tps')
>>> 'st_cnn' in models.MODELS
True
"""

from stn_jax.models import cub, mnist, svhn  # noqa: F401 (imported to register their models)
from stn_jax.models.registry import MODELS, count_params, get_model, register, solve_width

__all__ = ["MODELS", "count_params", "get_model", "register", "solve_width"]
