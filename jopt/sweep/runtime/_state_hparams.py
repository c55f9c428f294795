"""A stepwise search trains with the hyperparameters it records.

A stepwise training function keeps its optimizer state from segment to
segment, and a jopt optimizer state (or Optax's ``inject_hyperparams``
state) holds the hyperparameter values its ``update`` uses. The values a
search records for a trial are the ones it passes to ``segment``; a
segment that ignores them (its optimizer was built in ``init``) would go
on training with the state's values: a PBT member with its first rate
after every explore step, while ``res.schedule`` reports the new ones.

So before each segment, every dimension of the space whose name is a
hyperparameter of the state (as `jopt.get_hyperparams` names it: a bare
name, or a qualified one such as ``"0/decay"``) is written into the state
with `jopt.set_hyperparams`. A segment that writes them itself computes
the same thing; a state that holds no such name is passed as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from jopt import _hyperparams


def _names_in(state: Any) -> tuple[set[str], set[str]]:
  """The bare and the qualified hyperparameter names found in ``state``."""
  bare, qualified = set(), set()
  for path, name, _ in _hyperparams._occurrences(state):
    bare.add(name)
    qualified.add(_hyperparams._qualified(path, name))
  return bare, qualified


def apply_hparams(state: Any, hparams: Mapping[str, Any]) -> Any:
  """``state`` with the trial's values of its own hyperparameters."""
  bare, qualified = _names_in(state)
  values = {
    name: value
    for name, value in hparams.items()
    if (name in bare or name in qualified)
    and jnp.issubdtype(jnp.result_type(value), jnp.number)
  }
  if not values:
    return state
  try:
    return _hyperparams.set_hyperparams(state, **values)
  except ValueError as e:
    raise ValueError(
      f"The search writes each trial's hyperparameters into the state "
      f"before every segment, so that it trains with the values it "
      f"records, and could not: {e} Name the space's dimension as "
      f"jopt.get_hyperparams names it."
    ) from e


def applying_hparams(segment):
  """``segment`` run on a state that holds the trial's hyperparameters."""

  def segment_with_hparams(state, hparams):
    return segment(apply_hparams(state, hparams), hparams)

  return segment_with_hparams
