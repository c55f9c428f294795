"""Numerics every building block shares: dtypes, counts, moments.

The floor the transformation families stand on (like Optax's ``numerics``
and ``tree_utils``): no family imports another's private helpers. Moments
are updated in the wider of the gradient's and the moment's dtype, stored
back in the moment's own dtype (so a jitted loop never sees the state change
dtype), and updates come out in the gradient's dtype.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

ArrayLike = jax.typing.ArrayLike

HYPERPARAM_DTYPE = jnp.float32


# --- Dtypes -------------------------------------------------------------------


def promote(a: Any, b: Any) -> Any:
  """The dtype two arrays are combined in: the wider of the two.

  Spelled out, so it holds under strict dtype promotion too.
  """
  with jax.numpy_dtype_promotion("standard"):
    return jnp.promote_types(a, b)


def float_dtype(x: Any) -> Any:
  """``x``'s dtype if inexact, else the default float dtype.

  Integer or bool leaves (and Python ints) get float updates and states, as
  in Optax, rather than having a float hyperparameter truncated to 0.
  """
  dtype = jnp.asarray(x).dtype
  if jnp.issubdtype(dtype, jnp.inexact):
    return dtype
  return jnp.dtype(jnp.result_type(float))


def as_float(x: Any) -> jax.Array:
  """``x`` as an array of `float_dtype` (Python scalars included)."""
  x = jnp.asarray(x)
  dtype = float_dtype(x)
  return x if x.dtype == dtype else x.astype(dtype)


def tree_as_float(tree: Any) -> Any:
  return jax.tree.map(as_float, tree)


def state_dtype(dtype: Any | None) -> Any | None:
  """A user-requested state dtype, canonical for the current x64 setting."""
  return None if dtype is None else jax.dtypes.canonicalize_dtype(dtype)


def cast_tree(tree: Any, like: Any) -> Any:
  return jax.tree.map(lambda x, y: x.astype(y.dtype), tree, like)


# --- Hyperparameter values ------------------------------------------------------


class Decay(NamedTuple):
  """A decay ``b`` as kept in a state: its value and ``1 - b``, both float32.

  Near 1, float32 cannot hold ``b`` finely enough for ``1 - b``: float32's
  0.999 is 1.3e-5 relative away in ``1 - b``. A decay given as a Python
  number has ``1 - b`` computed in float64 before the cast, as Optax
  computes it, so an unswept optimizer gives Optax's values; for a float32
  array (a sweep), ``1 - b`` is exact in float32 and computed from it, so a
  sweep and a loop over the same float32 values agree.
  """

  value: jax.Array
  complement: jax.Array


def _is_host_number(x: Any) -> bool:
  return isinstance(x, (int, float, np.number, np.ndarray)) and not isinstance(
    x, bool
  )


def make_decay(value: Any) -> Decay:
  """The `Decay` of a Python number or an array (traced or not)."""
  stored = jnp.asarray(value).astype(HYPERPARAM_DTYPE)
  if _is_host_number(value):
    exact = 1.0 - np.asarray(value, np.float64)
    complement = jnp.asarray(exact.astype(np.float32))
  else:
    complement = 1 - stored
  return Decay(stored, complement)


def value_of(x: Any) -> Any:
  """A hyperparameter's value (a `Decay`'s ``value``; anything else as is)."""
  return x.value if isinstance(x, Decay) else x


def as_hyperparam(value: ArrayLike) -> jax.Array:
  """A hyperparameter as float32, so it is computed with as it is swept."""
  return jnp.asarray(value_of(value)).astype(HYPERPARAM_DTYPE)


def cast_like(value: ArrayLike, like: jax.Array) -> jax.Array:
  """Casts a (float32) hyperparameter to the dtype of the array it scales."""
  return jnp.asarray(value_of(value)).astype(jnp.asarray(like).dtype)


# --- Counts --------------------------------------------------------------------


def safe_increment(count: jax.Array) -> jax.Array:
  """``count + 1`` that saturates at the dtype's maximum instead of wrapping."""
  max_value = jnp.iinfo(count.dtype).max
  one = jnp.ones([], count.dtype)
  return jnp.where(count < max_value, count + one, max_value)


# --- Trees of zeros and constants --------------------------------------------


def tree_zeros_like(tree: Any, dtype: Any = None) -> Any:
  """Zeros like each leaf, in ``dtype`` or the leaf's `float_dtype`."""
  return jax.tree.map(
    lambda x: jnp.zeros_like(x, dtype=dtype or float_dtype(x)), tree
  )


def tree_full_like(tree: Any, value: ArrayLike) -> Any:
  """``value`` in the shape and `float_dtype` of each leaf."""

  def fill(p):
    dtype = float_dtype(p)
    return jnp.full_like(p, as_hyperparam(value).astype(dtype), dtype=dtype)

  return jax.tree.map(fill, tree)


# --- Moments -------------------------------------------------------------------


def abs_sq(g: jax.Array) -> jax.Array:
  """``|g|^2`` elementwise, real-valued for complex ``g``."""
  if jnp.iscomplexobj(g):
    return jnp.real(g * jnp.conj(g))
  return g * g


def one_minus(decay: Any, like: jax.Array) -> jax.Array:
  """``1 - decay`` in ``like``'s dtype.

  A `Decay` or a Python number gives its full-precision ``1 - decay``
  (rounded once, to ``like``'s dtype); an array is subtracted in at least
  float32: rounding ``decay`` to bf16 first would move ``1 - 0.9`` by 2%.
  """
  if isinstance(decay, Decay):
    return decay.complement.astype(like.dtype)
  if _is_host_number(decay):
    exact = 1.0 - np.asarray(decay, np.float64)
    return jnp.asarray(exact.astype(like.dtype))
  dtype = promote(jnp.float32, like.dtype)
  return (1 - as_hyperparam(decay).astype(dtype)).astype(like.dtype)


def ema(new: jax.Array, moment: jax.Array, decay: Any) -> jax.Array:
  """``(1 - decay) * new + decay * moment`` in the wider of the two dtypes."""
  dtype = promote(new.dtype, moment.dtype)
  new, moment = new.astype(dtype), moment.astype(dtype)
  return one_minus(decay, new) * new + cast_like(decay, moment) * moment


def debias(moment: jax.Array, decay: Any, count: jax.Array) -> jax.Array:
  """``moment / (1 - decay^count)``, the power taken in at least float32.

  Only the correction factor is cast to the moment's dtype:
  ``decay^count`` in bf16 would round to 1 and divide by zero.
  """
  dtype = promote(jnp.float32, moment.dtype)
  power = as_hyperparam(decay).astype(dtype) ** count.astype(dtype)
  # One scalar reciprocal, then a multiply: XLA rewrites ``moment / scalar``
  # into this form in some programs and not in others (it did not inside a
  # multi-device sweep), so writing it out keeps a trial's bits the same
  # whatever program it runs in.
  return moment * (1 / (1 - power)).astype(moment.dtype)
