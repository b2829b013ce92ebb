"""Models by name, and parameter budgets.

A builder takes keyword options (at least ``input_shape``) and returns a Flax
module. :func:`get_model` checks the options against the builder's signature,
so a misspelt option fails with the list of valid ones.
"""

from __future__ import annotations

import inspect
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stn_jax.errors import ConfigError

__all__ = ["MODELS", "check_input", "count_params", "get_model", "register", "solve_width"]

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
  """Decorator: registers a model builder under ``name``."""
  def wrap(builder):
    if name in MODELS:
      raise ValueError(f"A model named {name!r} is already registered.")
    MODELS[name] = builder
    return builder
  return wrap


def get_model(name: str, **options) -> nn.Module:
  """Builds the model registered under ``name``.

  Args:
    name: a registered name (``sorted(MODELS)`` lists them).
    **options: the builder's keyword options, e.g. ``input_shape=(42, 42, 1)``.

  Returns:
    The Flax module.

  >>> model = get_model('fcn', input_shape=(28, 28, 1), hidden=16)
  >>> type(model).__name__
  'Classifier'
  """
  if name not in MODELS:
    raise ConfigError(f"Unknown model {name!r}; known models: {', '.join(sorted(MODELS))}. "
                      "Name one of them (--config.model=NAME).")
  builder = MODELS[name]
  accepted = inspect.signature(builder).parameters
  unknown = sorted(set(options) - set(accepted))
  if unknown:
    raise ConfigError(f"Unknown option(s) {unknown} for model {name!r}; it accepts: "
                      f"{', '.join(accepted)}.")
  return builder(**options)


def check_input(x, input_shape, where: str) -> None:
  """Raises a ValueError unless ``x`` is ``(N, *input_shape)``: the model was built for that."""
  if x.ndim != 4 or tuple(x.shape[1:]) != tuple(input_shape):
    raise ValueError(f"{where}: expected input of shape (N, {', '.join(map(str, input_shape))}), "
                     f"but got shape {x.shape}.")


def count_params(module: nn.Module, input_shape, **call_kwargs) -> int:
  """Number of parameters of ``module`` on a ``(1, *input_shape)`` input (no compute).

  Args:
    module: the Flax module.
    input_shape: the input's shape without the batch axis.
    **call_kwargs: passed to ``module.init``'s call.

  Returns:
    The parameter count.
  """
  x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x, **call_kwargs), x)
  return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(shapes["params"])))


def solve_width(build: Callable[[int], nn.Module], input_shape, budget: int,
                low: int = 1, high: int = 8192) -> int:
  """The width (units or filters) whose model has the parameter count nearest ``budget``.

  Args:
    build: ``width -> module``; the count must grow with the width.
    input_shape: the input's shape without the batch axis.
    budget: the target number of parameters.
    low, high: the range searched.

  Returns:
    The width.
  """
  input_shape = tuple(input_shape)
  counts = {}

  def count(w):
    if w not in counts:
      counts[w] = count_params(build(w), input_shape)
    return counts[w]

  if count(low) >= budget:
    return low
  lo, hi = low, high  # invariant: count(lo) < budget
  if count(hi) < budget:
    return hi
  while hi - lo > 1:
    mid = (lo + hi) // 2
    if count(mid) < budget:
      lo = mid
    else:
      hi = mid
  return lo if budget - count(lo) <= count(hi) - budget else hi
