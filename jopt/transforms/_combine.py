"""Composing transformations: `chain`."""

from __future__ import annotations

import functools
import inspect
from typing import Any

import optax

from jopt import _base


def accepts_extra_args(tx: Any) -> bool:
  """Whether ``tx.update`` takes ``**extra_args`` (jopt's and Optax's do).

  Besides jopt's and Optax's transformation types, any object whose
  ``update`` has a ``**kwargs`` parameter (``jopt.MultiSteps``, say).
  """
  if isinstance(tx, optax.GradientTransformationExtraArgs):
    return True  # jopt's transformations are Optax's type too
  return _has_var_keyword(getattr(tx, "update", None))


def _var_keyword_of(fn: Any) -> bool:
  try:
    params = inspect.signature(fn).parameters.values()
  except (TypeError, ValueError):
    return False
  return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


# Cached per class method only: a class's function holds no user data,
# whereas caching closures would keep what they capture alive.
_cached_var_keyword_of = functools.lru_cache(maxsize=256)(_var_keyword_of)


def _has_var_keyword(update: Any) -> bool:
  if update is None:
    return False
  method = getattr(update, "__func__", None)  # a bound method's function
  if method is not None:
    return _cached_var_keyword_of(method)
  return _var_keyword_of(update)


def call_update(tx, updates, state, params=None, **extra_args):
  """Calls ``tx.update``, passing extra args only if it accepts them."""
  if accepts_extra_args(tx):
    return tx.update(updates, state, params, **extra_args)
  return tx.update(updates, state, params)


def chain(*transforms: Any) -> _base.GradientTransformation:
  """Applies transformations one after the other.

  .. math:: (u, s) = f_n(\\dots f_2(f_1(g)) \\dots)

  The state is the tuple of the parts' states. Extra keyword arguments given
  to ``update`` reach every part that accepts them. Parts may be jopt or Optax
  transformations.

  Args:
    *transforms: the transformations, applied in order.

  Returns:
    A `GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.chain(jopt.clip(1.0), jopt.scale(-0.5))
    >>> tx.update(jnp.array([3.0, -0.5]), tx.init(jnp.zeros(2)))[0]
    Array([-0.5 ,  0.25], dtype=float32)

  References:
    Optax's `chain
    <https://optax.readthedocs.io/en/latest/api/combining_optimizers.html#optax.chain>`_.
  """
  for i, tx in enumerate(transforms):
    if not (hasattr(tx, "init") and hasattr(tx, "update")):
      raise TypeError(
        f"chain: argument {i} is a {type(tx).__name__}, not a gradient "
        "transformation (an object with `init` and `update`)."
      )

  def init_fn(params):
    return tuple(tx.init(params) for tx in transforms)

  def update_fn(updates, state, params=None, **extra_args):
    if not isinstance(state, tuple) or len(state) != len(transforms):
      raise ValueError(
        f"chain of {len(transforms)} transformations got a state that is "
        f"not a tuple of {len(transforms)} states; call `init` first."
      )
    new_state = []
    for tx, s in zip(transforms, state, strict=True):
      updates, s = call_update(tx, updates, s, params, **extra_args)
      new_state.append(s)
    return updates, tuple(new_state)

  return _base.GradientTransformation(init_fn, update_fn)
