"""Argument checks shared by the ops: they raise a sentence before XLA sees the input."""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np


def shape_of(x) -> tuple[int, ...]:
  return tuple(np.shape(x))


def check_min_rank(x, name: str, rank: int, expected: str) -> tuple[int, ...]:
  shape = shape_of(x)
  if len(shape) < rank:
    raise ValueError(
        f"`{name}` must have shape {expected} (at least {rank} dimensions), "
        f"but got shape {shape}.")
  return shape


def check_trailing(x, name: str, trailing: Sequence[int], expected: str) -> tuple[int, ...]:
  """Checks that the last dimensions of `x` equal `trailing`."""
  shape = check_min_rank(x, name, len(trailing), expected)
  if tuple(shape[len(shape) - len(trailing):]) != tuple(trailing):
    raise ValueError(
        f"`{name}` must have shape {expected}, but got shape {shape}.")
  return shape


def check_out_hw(out_hw) -> tuple[int, int]:
  try:
    h, w = (int(v) for v in out_hw)
    ok = all(int(v) == v for v in out_hw)
  except (TypeError, ValueError):
    ok = False
  if not ok or h < 1 or w < 1:
    raise ValueError(
        f"`out_hw` must be a pair of positive integers (height, width), but got {out_hw!r}.")
  return h, w


def check_choice(value, name: str, choices: Sequence[str]) -> str:
  if value not in choices:
    raise ValueError(
        f"Unknown `{name}` {value!r}; expected one of {', '.join(map(repr, choices))}.")
  return value


def check_floating(x, name: str):
  dtype = jnp.result_type(x)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(
        f"`{name}` must be a floating-point array (float32 or bfloat16), but got dtype {dtype}.")
  return dtype
