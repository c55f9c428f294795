"""Clipping: `clip` (elementwise) and `clip_by_global_norm`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jopt import _base, _hyperparams, _numerics
from jopt._base import ArrayLike
from jopt._validation import NON_NEGATIVE, POSITIVE


@_hyperparams.sweepable(max_delta=NON_NEGATIVE)
def clip(max_delta: ArrayLike) -> _base.GradientTransformation:
  """Clips every element of the updates to ``[-max_delta, max_delta]``.

  .. math:: u_i \\leftarrow \\min(\\max(u_i, -\\delta), \\delta)

  Args:
    max_delta: the largest absolute value ``delta >= 0`` an element may keep.

  Returns:
    A `GradientTransformation` whose state holds ``max_delta``.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.clip(1.0)
    >>> tx.update(jnp.array([3.0, -0.5, -2.0]), tx.init(jnp.zeros(3)))[0]
    Array([ 1. , -0.5, -1. ], dtype=float32)

  References:
    Optax's `clip
    <https://optax.readthedocs.io/en/latest/api/transformations.html#optax.clip>`_.
  """

  def init_fn(params):
    del params
    return _base.EmptyState()

  def update_fn(updates, state, params=None, **extra_args):
    updates = _numerics.tree_as_float(updates)
    del params, extra_args

    def clip_leaf(u):
      bound = _numerics.cast_like(max_delta, u)
      return jnp.clip(u, -bound, bound)

    return jax.tree.map(clip_leaf, updates), state

  return _base.GradientTransformation(init_fn, update_fn)


def _norm_dtype(leaves: list[jax.Array]) -> Any:
  """The dtype the global norm is accumulated in: at least float32."""
  # Picked by width rather than `jnp.promote_types`, which strict dtype
  # promotion refuses for bf16 with float32.
  real_dtypes = [jnp.finfo(jnp.asarray(x).dtype).dtype for x in leaves]
  return max(real_dtypes + [jnp.dtype(jnp.float32)], key=lambda d: d.itemsize)


def global_norm(updates: Any) -> jax.Array:
  """The Euclidean norm of all the leaves of ``updates`` taken together.

  Half-precision leaves are squared and summed in float32, so the norm of a
  bf16 tree does not lose its low bits (or overflow) in the reduction.
  """
  leaves = jax.tree.leaves(updates)
  dtype = _norm_dtype(leaves)
  total = jnp.zeros([], dtype)
  for x in leaves:
    x = jnp.asarray(x)
    if jnp.iscomplexobj(x):
      sq = jnp.square(x.real.astype(dtype)) + jnp.square(x.imag.astype(dtype))
    else:
      sq = jnp.square(x.astype(dtype))
    total = total + jnp.sum(sq)
  return jnp.sqrt(total)


@_hyperparams.sweepable(max_norm=POSITIVE)
def clip_by_global_norm(max_norm: ArrayLike) -> _base.GradientTransformation:
  """Rescales the updates so that their global norm is at most ``max_norm``.

  .. math::
     \\|u\\| = \\Big(\\sum_{\\text{leaves}} \\sum_i u_i^2\\Big)^{1/2},\\qquad
     u \\leftarrow \\begin{cases} u & \\|u\\| < c \\\\
     u\\, c / \\|u\\| & \\text{otherwise} \\end{cases}

  The direction of the update is kept; only its length is capped.

  Args:
    max_norm: the largest global norm ``c > 0`` the updates may have.

  Returns:
    A `GradientTransformation` whose state holds ``max_norm``.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.clip_by_global_norm(1.0)
    >>> grads = {"a": jnp.array([3.0]), "b": jnp.array([4.0])}
    >>> clipped, _ = tx.update(grads, tx.init(grads))
    >>> clipped["a"], clipped["b"]
    (Array([0.6], dtype=float32), Array([0.8], dtype=float32))

  References:
    Pascanu et al., 2013, `On the difficulty of training recurrent neural
    networks <https://arxiv.org/abs/1211.5063>`_.
  """

  def init_fn(params):
    del params
    return _base.EmptyState()

  def update_fn(updates, state, params=None, **extra_args):
    updates = _numerics.tree_as_float(updates)
    del params, extra_args
    norm = global_norm(updates)
    keep = norm < _numerics.cast_like(max_norm, norm)

    def clip_leaf(u):
      scaled = (u / norm.astype(u.dtype)) * _numerics.cast_like(max_norm, u)
      return jnp.where(keep, u, scaled)

    return jax.tree.map(clip_leaf, updates), state

  return _base.GradientTransformation(init_fn, update_fn)
