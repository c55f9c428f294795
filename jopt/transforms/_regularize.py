"""Penalties added to the updates: `add_decayed_weights` and NEW `add_l1`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jopt import _base, _hyperparams, _numerics, _validation
from jopt._base import ScalarOrSchedule
from jopt._numerics import promote
from jopt._validation import ANY, NON_NEGATIVE

Mask = Any | Callable[[Any], Any]


class ScheduleCountState(NamedTuple):
  """State of a penalty whose coefficient is a schedule: the step count."""

  count: jax.Array


def _masked_map(fn, mask, updates, params):
  """``fn(g, p)`` on the leaves the mask selects; the others pass through.

  ``mask`` is a pytree of bools with the structure of (or a prefix of) the
  params, or a callable that returns one given the updates.
  """
  if mask is None:
    return jax.tree.map(fn, updates, params)
  mask_tree = mask(updates) if _validation.is_mask_function(mask) else mask

  def per_subtree(selected, g, p):
    if isinstance(selected, (bool, np.bool_)):
      return jax.tree.map(fn, g, p) if selected else g
    return jax.tree.map(
      lambda gi, pi: jnp.where(selected, fn(gi, pi), gi), g, p
    )

  return jax.tree.map(per_subtree, mask_tree, updates, params)


def _add_param_term(
  name: str,
  coefficient: ScalarOrSchedule,
  term: Callable[[jax.Array], jax.Array],
  mask: Mask,
) -> _base.GradientTransformation:
  """Adds ``coefficient * term(params)`` to the updates (where masked in)."""
  scheduled = callable(coefficient)

  def init_fn(params):
    del params
    if scheduled:
      return ScheduleCountState(count=jnp.zeros([], jnp.int32))
    return _base.EmptyState()

  def update_fn(updates, state, params=None, **extra_args):
    updates = _numerics.tree_as_float(updates)
    del extra_args
    if params is None:
      raise ValueError(
        f"{name}: `update` needs the current params: "
        "call `update(updates, state, params)`."
      )
    if updates is None:  # nothing to add a penalty to, as in Optax
      return None, state
    params = _numerics.tree_as_float(params)
    if scheduled:
      value = coefficient(state.count)
      state = ScheduleCountState(count=_numerics.safe_increment(state.count))
    else:
      value = coefficient

    def add(g, p):
      dtype = promote(g.dtype, p.dtype)
      p = p.astype(dtype)
      penalty = _numerics.cast_like(value, p) * term(p)
      return (g.astype(dtype) + penalty).astype(g.dtype)

    return _masked_map(add, mask, updates, params), state

  return _base.GradientTransformation(init_fn, update_fn)


@_hyperparams.sweepable(weight_decay=ANY)
def add_decayed_weights(
  weight_decay: ScalarOrSchedule = 0.0,
  mask: Mask = None,
) -> _base.GradientTransformation:
  """Adds ``weight_decay * params`` to the updates.

  .. math:: u \\leftarrow u + \\lambda\\, \\theta

  Before the learning rate (as in `adamw`) this is decoupled weight decay;
  applied to the raw gradients, it is the gradient of an L2 penalty
  :math:`\\frac{\\lambda}{2}\\lVert\\theta\\rVert^2`.

  Args:
    weight_decay: the rate ``lambda``, or a schedule. Any sign, as in Optax
      (whose `fromage` adds a negative one); the optimizers ask for >= 0.
    mask: which params to decay: a pytree of bools with the params'
      structure (or a prefix of it), or a callable returning one given the
      updates. ``True`` decays; the others' updates pass through unchanged.

  Returns:
    A `GradientTransformation`; ``update`` needs ``params``.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array([3.0])}
    >>> tx = jopt.add_decayed_weights(0.5, mask={"w": True, "b": False})
    >>> updates, _ = tx.update(
    ...     jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    >>> updates["w"], updates["b"]
    (Array([ 0.5, -1. ], dtype=float32), Array([0.], dtype=float32))

  References:
    Loshchilov and Hutter, 2019, `Decoupled weight decay regularization
    <https://arxiv.org/abs/1711.05101>`_.
  """
  return _add_param_term("weight_decay", weight_decay, lambda p: p, mask)


@_hyperparams.sweepable(l1=NON_NEGATIVE)
def add_l1(
  l1: ScalarOrSchedule = 0.0,
  mask: Mask = None,
) -> _base.GradientTransformation:
  """NEW: adds ``l1 * sign(params)``, a subgradient of an L1 penalty.

  .. math:: u \\leftarrow u + \\lambda_1\\, \\mathrm{sign}(\\theta)

  the subgradient of :math:`\\lambda_1 \\lVert\\theta\\rVert_1` (0 at 0).
  Placed before an optimizer's learning-rate scaling, as with
  `add_decayed_weights`.

  Args:
    l1: the penalty's strength ``lambda_1`` (>= 0), or a schedule.
    mask: which params to penalise, as in `add_decayed_weights`.

  Returns:
    A `GradientTransformation`; ``update`` needs ``params``.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> params = jnp.array([2.0, 0.0, -0.5])
    >>> tx = jopt.chain(jopt.add_l1(0.1), jopt.sgd(1.0))
    >>> updates, _ = tx.update(jnp.zeros(3), tx.init(params), params)
    >>> updates
    Array([-0.1, -0. ,  0.1], dtype=float32)

  References:
    Tibshirani, 1996, `Regression shrinkage and selection via the lasso
    <https://doi.org/10.1111/j.2517-6161.1996.tb02080.x>`_.
  """
  return _add_param_term("l1", l1, jnp.sign, mask)
