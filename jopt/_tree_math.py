"""Whole-tree reductions and scalar dtypes for the learning-rate-free family.

Learning-rate-free methods (`prodigy`, `dadapt_adamw`, `dog`, `mechanize`,
the hypergradient optimizers) steer one scalar step size from inner products
and norms over all the params. Those scalars are kept in float32 (float64
for float64 params) whatever the params' dtype: summed in bfloat16, a norm
over thousands of entries loses most of its digits.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jopt import _numerics, _validation


def scalar_dtype(params: Any) -> Any:
  """float32, or the widest floating dtype among the params if wider."""
  dtype = jnp.dtype(jnp.float32)
  for leaf in jax.tree.leaves(params):
    leaf_dtype = jnp.asarray(leaf).dtype
    if jnp.issubdtype(leaf_dtype, jnp.floating):
      dtype = _numerics.promote(dtype, leaf_dtype)
  return dtype


def wide(x: jax.Array, dtype: Any) -> jax.Array:
  """``x`` in the wider of its dtype and ``dtype``."""
  return x.astype(_numerics.promote(x.dtype, dtype))


def _total(values: list[jax.Array], dtype: Any) -> jax.Array:
  # Summed leaf by leaf in order, as optax.tree.sum does.
  total = jnp.zeros([], dtype)
  for value in values:
    total = total + value.astype(dtype)
  return total


def vdot(a: Any, b: Any, dtype: Any) -> jax.Array:
  """``<a, b>`` over all leaves, in ``dtype`` (at least)."""
  return _total(
    [
      jnp.vdot(wide(x, dtype), wide(y, dtype), precision="highest")
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    ],
    dtype,
  )


def sum_abs(tree: Any, dtype: Any) -> jax.Array:
  """``sum |x|`` over all leaves (the l1 norm)."""
  return _total(
    [jnp.sum(jnp.abs(wide(x, dtype))) for x in jax.tree.leaves(tree)], dtype
  )


def sq_norm(tree: Any, dtype: Any) -> jax.Array:
  """``sum x^2`` over all leaves (the squared l2 norm)."""
  return _total(
    [jnp.sum(jnp.square(wide(x, dtype))) for x in jax.tree.leaves(tree)],
    dtype,
  )


def unzip(tree: Any, like: Any, n: int) -> tuple[Any, ...]:
  """Splits a tree of ``n``-tuples shaped like ``like`` into ``n`` trees.

  Transposed against ``like``'s structure, so a tuple in the params (a leaf
  of ``like``'s container, not a leaf) is never taken for one of the
  ``n``-tuples.
  """
  return jax.tree.transpose(
    jax.tree.structure(like), jax.tree.structure((0,) * n), tree
  )


def require_params(name: str, params: Any) -> None:
  if params is None:
    raise ValueError(
      f"{name}: `update` needs the current params: "
      "call `update(updates, state, params)`."
    )


def check_betas(betas: Any) -> tuple[Any, Any]:
  """Unpacks ``betas = (b1, b2)``, each in [0, 1)."""
  if not isinstance(betas, (tuple, list)) or len(betas) != 2:
    raise ValueError(f"`betas` must be a pair (b1, b2); got {betas!r}.")
  b1, b2 = betas
  _validation.check_range("betas[0]", b1, low=0.0, high=1.0, high_open=True)
  _validation.check_range("betas[1]", b2, low=0.0, high=1.0, high_open=True)
  return b1, b2
