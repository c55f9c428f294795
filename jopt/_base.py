"""The core protocol: gradient transformations, `identity`, `apply_updates`.

A `GradientTransformation` is a pair of pure functions. ``init(params)`` makes
the optimizer state; ``update(updates, state, params=None, **extra_args)``
maps gradients to updates and returns the new state. The shape is Optax's, so
jopt and Optax transformations mix freely.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

Params = Any
Updates = Any
OptState = Any
ArrayLike = jax.typing.ArrayLike
Schedule = Callable[[ArrayLike], ArrayLike]
ScalarOrSchedule = float | jax.Array | Schedule


class TransformInitFn(Protocol):
  def __call__(self, params: Params) -> OptState: ...


class TransformUpdateFn(Protocol):
  def __call__(
      self,
      updates: Updates,
      state: OptState,
      params: Params | None = None,
      **extra_args: Any,
  ) -> tuple[Updates, OptState]: ...


class GradientTransformation(NamedTuple):
  """A pure gradient transformation: ``init(params)`` and ``update(...)``.

  ``update(updates, state, params=None, **extra_args)`` returns
  ``(new_updates, new_state)``. Extra keyword arguments (``value=`` for
  `reduce_on_plateau`, for instance) are passed to every part of a `chain`
  that accepts them and ignored by the rest.

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

  init: TransformInitFn
  update: TransformUpdateFn


class EmptyState(NamedTuple):
  """The state of a transformation that keeps none."""


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

  Leaves that are ``None`` in ``updates`` leave the parameter unchanged.

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
    if u is None:
      return p
    return jnp.asarray(p + u).astype(jnp.asarray(p).dtype)

  return jax.tree.map(apply, params, updates, is_leaf=lambda x: x is None)


# --- Validation and small numeric helpers shared by every family -----------


# Where a constructor is being called from. None: by the user. "construct":
# inside another constructor that is validating its arguments. "rebuild":
# inside a hyperparameter-carrying transformation that rebuilds its plain
# transformation from the (possibly traced) values in its state. In both
# nested modes, constructors return plain transformations, so an alias keeps
# one set of hyperparameters under its own names; only "rebuild" skips the
# validation, as the values were checked when the optimizer was built.
_MODE: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "jopt_constructor_mode", default=None
)


@contextlib.contextmanager
def constructor_mode(mode: str) -> Iterator[None]:
  token = _MODE.set(mode)
  try:
    yield
  finally:
    _MODE.reset(token)


def is_nested() -> bool:
  return _MODE.get() is not None


def is_rebuilding() -> bool:
  return _MODE.get() == "rebuild"


def is_concrete(value: Any) -> bool:
  """True when ``value`` can be checked now (it is not a tracer)."""
  return not isinstance(value, jax.core.Tracer)


def check_range(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
  """Raises ``ValueError`` when a concrete scalar ``value`` is out of range.

  Callables (schedules), ``None`` and traced values are not checked: a traced
  value is only known when the program runs.
  """
  if value is None or callable(value) or not is_concrete(value):
    return
  if is_rebuilding():
    return
  # numpy, not jnp: under jit (JAX >= 0.7) jnp.asarray of a constant is a
  # tracer, which could not be compared here.
  arr = np.asarray(value)
  if arr.ndim != 0:
    # Arrays of values (a sweep built outside vmap) are checked elementwise.
    for v in arr.reshape(-1).tolist():
      check_range(
          name, v, low=low, high=high, low_open=low_open, high_open=high_open
      )
    return
  v = float(arr)
  lo_bad = low is not None and (v <= low if low_open else v < low)
  hi_bad = high is not None and (v >= high if high_open else v > high)
  if math.isnan(v) or lo_bad or hi_bad:
    lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
    hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
    if low is None:
      allowed = f"<{'' if high_open else '='} {high:g}"
    elif high is None:
      allowed = f">{'' if low_open else '='} {low:g}"
    else:
      allowed = f"in {lo}, {hi}"
    raise ValueError(f"`{name}` must be {allowed}; got {v!r}.")


def cast_like(value: ArrayLike, like: jax.Array) -> jax.Array:
  """Casts a (float32) hyperparameter to the dtype of the array it scales."""
  return jnp.asarray(value).astype(jnp.asarray(like).dtype)


def safe_increment(count: jax.Array) -> jax.Array:
  """``count + 1`` that saturates at the dtype's maximum instead of wrapping."""
  max_value = jnp.iinfo(count.dtype).max
  one = jnp.ones([], count.dtype)
  return jnp.where(count < max_value, count + one, max_value)


def tree_zeros_like(tree: Any, dtype: Any = None) -> Any:
  return jax.tree.map(lambda x: jnp.zeros_like(x, dtype=dtype), tree)
