"""The core protocol: gradient transformations, `identity`, `apply_updates`.

A `GradientTransformation` is a pair of pure functions. ``init(params)`` makes
the optimizer state; ``update(updates, state, params=None, **extra_args)``
maps gradients to updates and returns the new state. The shape is Optax's, so
jopt and Optax transformations mix freely.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

Params = Any
Updates = Any
OptState = Any
ArrayLike = jax.typing.ArrayLike
Schedule = Callable[[ArrayLike], ArrayLike]
ScalarOrSchedule = float | jax.Array | Schedule


class GradientTransformation(optax.GradientTransformationExtraArgs):
  """A pure gradient transformation: ``init(params)`` and ``update(...)``.

  ``update(updates, state, params=None, **extra_args)`` returns
  ``(new_updates, new_state)``. Extra keyword arguments (``value=`` for
  `reduce_on_plateau`, for instance) are passed to every part of a `chain`
  that accepts them and ignored by the rest.

  The same named tuple ``(init, update)`` as Optax's, and an instance of
  ``optax.GradientTransformationExtraArgs`` (so of
  ``optax.GradientTransformation``): Optax code that checks the type, or
  passes extra arguments only to transformations that take them, treats a
  jopt transformation as one of its own.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.sgd(0.1)
    >>> params = {"w": jnp.ones(3)}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"w": jnp.ones(3)}, state, params)
    >>> jopt.apply_updates(params, updates)["w"]
    Array([0.9, 0.9, 0.9], dtype=float32)
  """

  __slots__ = ()


# Optax's own class: a stateless jopt transformation's state is Optax's.
EmptyState = optax.EmptyState


def identity() -> GradientTransformation:
  """Leaves updates unchanged and keeps no state.

  .. math:: u \\leftarrow u

  Returns:
    A `GradientTransformation` with state `EmptyState`.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.identity()
    >>> tx.update(jnp.ones(2), tx.init(jnp.ones(2)))[0]
    Array([1., 1.], dtype=float32)

  References:
    Optax's `identity
    <https://optax.readthedocs.io/en/latest/api/transformations.html#optax.identity>`_.
  """

  def init_fn(params):
    del params
    return EmptyState()

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    return updates, state

  return GradientTransformation(init_fn, update_fn)


def apply_updates(params: Params, updates: Updates) -> Params:
  """Returns ``params + updates``, keeping each parameter's dtype.

  .. math:: \\theta_t = \\theta_{t-1} + u_t

  Leaves that are ``None`` in ``updates`` leave the parameter unchanged;
  ``None`` leaves in ``params`` stay ``None``.

  Args:
    params: the current parameters (a pytree of arrays).
    updates: the updates from a transformation, with the params' structure.

  Returns:
    The new parameters, each leaf in its original dtype.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> jopt.apply_updates({"w": jnp.ones(2)}, {"w": -jnp.ones(2)})["w"]
    Array([0., 0.], dtype=float32)

  References:
    Optax's `apply_updates
    <https://optax.readthedocs.io/en/latest/api/utilities.html#optax.apply_updates>`_.
  """

  def apply(p, u):
    if p is None or u is None:
      return p
    return jnp.asarray(p + u).astype(jnp.asarray(p).dtype)

  return jax.tree.map(apply, params, updates, is_leaf=lambda x: x is None)
