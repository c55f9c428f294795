"""Applying transformations to part of the parameters: `masked`, `partition`.

A masked-out leaf is replaced by a `MaskedNode`, an empty pytree node, before
the inner transformation sees the tree, so the inner state holds nothing for
it and the inner update never touches it. The inner transformation may be a
jopt or an Optax one; its hyperparameters stay visible to `get_hyperparams`
(``MaskedState.inner_state`` and ``PartitionState.inner_states`` add nothing
to the qualified names, the partition labels do).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple

import jax
import optax

from jopt import _base, _validation
from jopt.transforms import _combine

# Optax's own class (an empty pytree node standing in for a masked-out
# subtree), so jopt's and Optax's masked states hold the same nodes.
MaskedNode = optax.MaskedNode


class MaskedState(NamedTuple):
  """State of `masked`: the inner state, over the masked-in leaves only."""

  inner_state: Any


class PartitionState(NamedTuple):
  """State of `partition`: one `MaskedState` per label."""

  inner_states: dict[Hashable, MaskedState]


def _has_no_leaves(params: Any) -> bool:
  # ``optax.tree.map_params`` calls ``init`` with a leafless placeholder to
  # find where the params are copied in the state: it is passed through
  # unmasked (there is nothing to mask), so the copies are found.
  return not jax.tree.leaves(params)


def _apply_mask(tree: Any, mask_tree: Any) -> Any:
  return jax.tree.map(lambda m, x: x if m else MaskedNode(), mask_tree, tree)


def masked(
  inner: Any,
  mask: Any | Callable[[_base.Params], Any],
  *,
  mask_compatible_extra_args: bool = False,
) -> _base.GradientTransformation:
  """Applies ``inner`` to the leaves where ``mask`` is True; passes the rest.

  .. math::
     u_i \\leftarrow \\begin{cases} \\text{inner}(u)_i & m_i \\\\
     u_i & \\text{otherwise} \\end{cases}

  The inner transformation only sees (and keeps state for) the masked-in
  leaves. A typical use is weight decay on matrices but not on biases.

  Args:
    inner: the transformation to apply (jopt or Optax).
    mask: a pytree of Python bools with the structure of the params (or a
      prefix of it), or a function ``params -> such a pytree``. True applies
      ``inner``. The mask must be static (not traced).
    mask_compatible_extra_args: also mask the extra arguments of ``update``
      that have the structure of the updates.

  Returns:
    A `GradientTransformation` with state `MaskedState`.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.masked(jopt.scale(-1.0), {"w": True, "b": False})
    >>> grads = {"w": jnp.ones(2), "b": jnp.ones(1)}
    >>> updates, _ = tx.update(grads, tx.init(grads))
    >>> updates["w"], updates["b"]
    (Array([-1., -1.], dtype=float32), Array([1.], dtype=float32))

  References:
    Optax's `masked
    <https://optax.readthedocs.io/en/latest/api/optimizer_wrappers.html#optax.masked>`_.
  """
  _validation.check_transform("`inner`", inner)

  def mask_for(tree):
    return mask(tree) if _validation.is_mask_function(mask) else mask

  def mask_extra_args(extra_args, updates, mask_tree):
    if not mask_compatible_extra_args:
      return extra_args
    structure = jax.tree.structure(updates)
    return {
      k: _apply_mask(v, mask_tree) if jax.tree.structure(v) == structure else v
      for k, v in extra_args.items()
    }

  def init_fn(params):
    if _has_no_leaves(params):
      return MaskedState(inner_state=inner.init(params))
    masked_params = _apply_mask(params, mask_for(params))
    return MaskedState(inner_state=inner.init(masked_params))

  def update_fn(updates, state, params=None, **extra_args):
    mask_tree = mask_for(updates)
    inner_updates, inner_state = _combine.call_update(
      inner,
      _apply_mask(updates, mask_tree),
      state.inner_state,
      None if params is None else _apply_mask(params, mask_tree),
      **mask_extra_args(extra_args, updates, mask_tree),
    )
    updates = jax.tree.map(
      lambda m, new, old: new if m else old, mask_tree, inner_updates, updates
    )
    return updates, MaskedState(inner_state=inner_state)

  return _base.GradientTransformation(init_fn, update_fn)


def partition(
  transforms: Mapping[Hashable, Any],
  param_labels: Any | Callable[[_base.Params], Any],
  *,
  mask_compatible_extra_args: bool = False,
) -> _base.GradientTransformation:
  """Applies a different transformation to each labelled group of leaves.

  .. math:: u_i \\leftarrow \\text{transforms}[\\ell_i](u)_i

  Each transformation sees only the leaves with its label (it is `masked`
  by them) and keeps state for those alone.

  Args:
    transforms: label -> transformation (jopt or Optax).
    param_labels: a pytree of labels with the structure of the params (or a
      prefix of it), or a function ``params -> such a pytree``. Every label
      must be a key of ``transforms``.
    mask_compatible_extra_args: also mask the extra arguments of ``update``
      that have the structure of the updates.

  Returns:
    A `GradientTransformation` with state `PartitionState`. The
    hyperparameters of a label's transformation are found by
    `get_hyperparams` under ``"<label>/<name>"`` when the name is shared.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.partition(
    ...     {"fast": jopt.sgd(1.0), "slow": jopt.sgd(0.1)},
    ...     {"w": "fast", "b": "slow"})
    >>> params = {"w": jnp.ones(2), "b": jnp.ones(1)}
    >>> updates, state = tx.update(params, tx.init(params), params)
    >>> updates["w"], updates["b"]
    (Array([-1., -1.], dtype=float32), Array([-0.1], dtype=float32))
    >>> sorted(jopt.get_hyperparams(state))
    ['fast/learning_rate', 'slow/learning_rate']

  References:
    Optax's `partition
    <https://optax.readthedocs.io/en/latest/api/combining_optimizers.html#optax.partition>`_.
  """
  transforms = dict(transforms)
  for label, tx in transforms.items():
    _validation.check_transform(f"`transforms[{label!r}]`", tx)

  def labels_for(tree):
    if _validation.is_mask_function(param_labels):
      return param_labels(tree)
    return param_labels

  def group(labels, label):
    return masked(
      transforms[label],
      jax.tree.map(lambda leaf_label: leaf_label == label, labels),
      mask_compatible_extra_args=mask_compatible_extra_args,
    )

  def init_fn(params):
    if _has_no_leaves(params):
      return PartitionState(
        inner_states={
          label: MaskedState(inner_state=tx.init(params))
          for label, tx in transforms.items()
        }
      )
    labels = labels_for(params)
    unknown = set(jax.tree.leaves(labels)) - set(transforms)
    if unknown:
      raise ValueError(
        f"Parameters are labelled {sorted(map(repr, unknown))}, which "
        f"`transforms` has no entry for; its keys: "
        f"{sorted(map(repr, transforms))}."
      )
    return PartitionState(
      inner_states={
        label: group(labels, label).init(params) for label in transforms
      }
    )

  def update_fn(updates, state, params=None, **extra_args):
    labels = labels_for(updates)
    inner_states = {}
    for label in transforms:
      updates, inner_states[label] = group(labels, label).update(
        updates, state.inner_states[label], params, **extra_args
      )
    return updates, PartitionState(inner_states=inner_states)

  return _base.GradientTransformation(init_fn, update_fn)
