"""Checking arguments: `check_range` and declared `Range` s.

A constructor declares the range of each numeric hyperparameter once (see
`jopt._hyperparams.sweepable`); the range is checked when the public
constructor is called, on concrete values only: a traced value is only known
when the program runs.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import numpy as np


def is_concrete(value: Any) -> bool:
  """True when ``value`` can be checked now (it is not a tracer)."""
  return not isinstance(value, jax.core.Tracer)


def _describe(low, high, low_open, high_open) -> str:
  if low is None:
    return f"<{'' if high_open else '='} {high:g}"
  if high is None:
    return f">{'' if low_open else '='} {low:g}"
  lo = ("(" if low_open else "[") + f"{low:g}"
  hi = f"{high:g}" + (")" if high_open else "]")
  return f"in {lo}, {hi}"


def check_real(name: str, value: Any) -> None:
  """Raises ``ValueError`` when a hyperparameter's value is complex.

  Stored as float32, a complex value would silently lose its imaginary
  part. Traced values are checked too (by dtype); callables (schedules) and
  ``None`` are not.
  """
  if value is None or callable(value):
    return
  if np.iscomplexobj(value):
    raise ValueError(
      f"`{name}` must be real; got a complex value ({value!r}). "
      "Hyperparameters are real numbers (complex params are fine)."
    )


def check_range(
  name: str,
  value: Any,
  *,
  low: float | None = None,
  high: float | None = None,
  low_open: bool = False,
  high_open: bool = False,
  integer: bool = False,
) -> None:
  """Raises ``ValueError`` when a concrete numeric ``value`` is out of range.

  A complex value is refused (see `check_real`), traced or not. Otherwise
  callables (schedules), ``None`` and traced values are not checked. Arrays
  of values (a sweep built outside `jax.vmap`) are checked elementwise.
  """
  check_real(name, value)
  if value is None or callable(value) or not is_concrete(value):
    return
  # numpy, not jnp: under jit (JAX >= 0.7) jnp.asarray of a constant is a
  # tracer, which could not be compared here.
  flat = np.asarray(value, dtype=np.float64).reshape(-1)
  for v in flat.tolist():
    lo_bad = low is not None and (v <= low if low_open else v < low)
    hi_bad = high is not None and (v >= high if high_open else v > high)
    if math.isnan(v) or lo_bad or hi_bad:
      allowed = _describe(low, high, low_open, high_open)
      raise ValueError(f"`{name}` must be {allowed}; got {v!r}.")
    if integer and v != round(v):
      raise ValueError(f"`{name}` must be an integer; got {v!r}.")


def check_tree_match(name: str, reference: Any, other: Any) -> None:
  """Raises a clear error when two pytrees differ in structure."""
  ref_def = jax.tree.structure(reference)
  other_def = jax.tree.structure(other)
  if ref_def != other_def:
    raise ValueError(
      f"`{name}` does not match the structure the optimizer state was "
      f"initialised with.\n  expected: {ref_def}\n  got:      {other_def}"
    )


def check_transform(name: str, tx: Any) -> None:
  """Raises ``TypeError`` unless ``tx`` has ``init`` and ``update``."""
  if not (hasattr(tx, "init") and hasattr(tx, "update")):
    raise TypeError(
      f"{name} is a {type(tx).__name__}, not a gradient transformation "
      "(an object with `init` and `update`)."
    )


def is_mask_function(mask: Any) -> bool:
  """Whether ``mask`` is a function of the params rather than a mask tree.

  A callable pytree whose leaves are not all callables (an Equinox module of
  bools, say) is a mask tree, not a function.
  """
  return callable(mask) and all(map(callable, jax.tree.leaves(mask)))


class Range(NamedTuple):
  """The values a numeric hyperparameter may take.

  ``complement``: the hyperparameter is a decay ``b`` whose ``1 - b`` is
  used; a Python number keeps ``1 - b`` at full precision (see
  `jopt._numerics.Decay`).
  """

  low: float | None = None
  high: float | None = None
  low_open: bool = False
  high_open: bool = False
  integer: bool = False
  complement: bool = False

  def check(self, name: str, value: Any) -> None:
    check_range(
      name,
      value,
      low=self.low,
      high=self.high,
      low_open=self.low_open,
      high_open=self.high_open,
      integer=self.integer,
    )


ANY = Range()
NON_NEGATIVE = Range(low=0.0)
POSITIVE = Range(low=0.0, low_open=True)
# A coefficient in [0, 1), such as momentum.
UNIT = Range(low=0.0, high=1.0, high_open=True)
# The averaging coefficient of a moving average: 1 would never forget.
DECAY = Range(low=0.0, high=1.0, high_open=True, complement=True)
