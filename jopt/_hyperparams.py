"""Hyperparameters that live in the optimizer state.

Every jopt constructor with numeric hyperparameters (``learning_rate``,
``b1``, ``weight_decay``...) returns a transformation whose state holds those
values as float32 arrays, in a `HyperparamsState`. Its ``update`` rebuilds the
plain transformation from the values in the state, so

* a jitted train step takes the values as inputs: changing one with
  `set_hyperparams` never recompiles;
* vmapping over the state, or over values passed to a constructor inside the
  vmapped function, sweeps them;
* there is one code path: a swept optimizer computes exactly what the same
  optimizer built with a fixed value computes.

Name resolution: `get_hyperparams` returns a flat dict. A name that occurs
once in the state is given bare (``"learning_rate"``). A name that occurs in
several parts (two `trace` blocks in one `chain`, say) is given qualified by
the path to its part, ``"0/decay"`` and ``"1/decay"`` (chain positions, dict
keys and field names joined by ``/``). `set_hyperparams` accepts bare names
that are unique and qualified names always; a bare name shared by several
parts is refused with the qualified names listed, rather than guessed.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jopt import _base

HYPERPARAM_DTYPE = jnp.float32


class HyperparamsState(NamedTuple):
  """State of a transformation whose numeric hyperparameters are swept.

  Attributes:
    hyperparams: name -> float32 array (scalar, or batched under vmap).
    inner_state: the state of the plain transformation.
  """

  hyperparams: dict[str, jax.Array]
  inner_state: Any


def _is_numeric(value: Any) -> bool:
  if isinstance(value, bool) or value is None or callable(value):
    return False
  if isinstance(value, (int, float, np.number, np.ndarray, jax.Array)):
    return jnp.issubdtype(jnp.result_type(value), jnp.number)
  return False


def inject(
    factory: Callable[..., _base.GradientTransformation],
    hyperparams: dict[str, Any],
) -> _base.GradientTransformation:
  """Keeps ``hyperparams`` in the state and rebuilds ``factory(**hp)``.

  ``factory`` is called with float32 arrays (possibly traced) in place of the
  numeric values, both in ``init`` and in every ``update``.
  """

  def init_fn(params):
    hp = {
        k: jnp.asarray(v).astype(HYPERPARAM_DTYPE) for k, v in hyperparams.items()
    }
    with _base.constructor_mode("rebuild"):
      inner = factory(**hp)
    return HyperparamsState(hp, inner.init(params))

  def update_fn(updates, state, params=None, **extra_args):
    with _base.constructor_mode("rebuild"):
      inner = factory(**state.hyperparams)
    updates, inner_state = inner.update(
        updates, state.inner_state, params, **extra_args
    )
    return updates, HyperparamsState(state.hyperparams, inner_state)

  return _base.GradientTransformation(init_fn, update_fn)


def _called_by_optax_inject(frame: Any, depth: int = 16) -> bool:
  """Whether Optax's ``inject_(stateful_)hyperparams`` code is on the stack.

  Looked for in the ``depth`` innermost frames from ``frame`` out, so that a
  factory of the user's (a lambda, a function building a chain) that calls
  the jopt constructor is seen through.
  """
  while frame is not None and depth > 0:
    module = frame.f_globals.get("__name__", "")
    if module.startswith("optax.") and module.endswith("_inject"):
      return True
    frame, depth = frame.f_back, depth - 1
  return False


def sweepable(*names: str):
  """Decorates a constructor so that its numeric ``names`` live in the state.

  The decorated constructor validates its arguments (by building the plain
  transformation once) and returns a transformation whose state is a
  `HyperparamsState`. Called while an outer sweepable constructor rebuilds
  (an alias's building blocks), it returns the plain transformation, so an
  alias holds one set of hyperparameters, under the alias's argument names.
  Arguments given as callables (schedules), ``None`` or bools stay static.

  Called by Optax's ``inject_hyperparams`` (a jopt constructor given as its
  factory), it also returns the plain transformation: Optax's state then
  holds the hyperparameters, as it does for Optax's own optimizers, and the
  values Optax passes (a schedule's, or ones written into its state) apply.
  """

  def decorator(raw: Callable[..., _base.GradientTransformation]):
    signature = inspect.signature(raw)

    @functools.wraps(raw)
    def constructor(*args, **kwargs):
      if _base.is_nested():
        return raw(*args, **kwargs)
      if _called_by_optax_inject(sys._getframe(1)):
        with _base.constructor_mode("construct"):
          return raw(*args, **kwargs)
      bound = signature.bind(*args, **kwargs)
      bound.apply_defaults()
      arguments = dict(bound.arguments)
      numeric = {n: arguments[n] for n in names if _is_numeric(arguments[n])}
      with _base.constructor_mode("construct"):
        plain = raw(**arguments)  # Validates concrete values.
      if not numeric:
        return plain

      def factory(**hp):
        return raw(**{**arguments, **hp})

      return inject(factory, numeric)

    constructor.__signature__ = signature
    return constructor

  return decorator


# --- Finding hyperparameters in a state -------------------------------------


def _is_hp_node(x: Any) -> bool:
  if isinstance(x, HyperparamsState):
    return True
  # Optax's inject_hyperparams state has the same two fields.
  return type(x).__name__ in (
      "InjectHyperparamsState",
      "InjectStatefulHyperparamsState",
  ) and hasattr(x, "hyperparams")


def _key_str(entry: Any) -> str | None:
  for attr in ("idx", "key", "name"):
    if hasattr(entry, attr):
      s = str(getattr(entry, attr))
      return None if s in ("inner_state", "inner_states", "inner_opt_state") else s
  return str(entry)


def _occurrences(state: Any, prefix: tuple[str, ...] = ()):
  """Yields (path, name, value) for every hyperparameter in ``state``."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(state, is_leaf=_is_hp_node)
  for path, leaf in leaves:
    if not _is_hp_node(leaf):
      continue
    here = prefix + tuple(p for p in map(_key_str, path) if p is not None)
    for name, value in leaf.hyperparams.items():
      if callable(value):
        continue
      yield here, name, value
    yield from _occurrences(leaf.inner_state, here)


def _qualified(path: tuple[str, ...], name: str) -> str:
  return "/".join(path + (name,))


def get_hyperparams(state: Any) -> dict[str, jax.Array]:
  """Returns the numeric hyperparameters found in an optimizer state.

  Names shared by several parts of the state are qualified by the path to
  their part (see the module docstring); unique names are bare.

  Args:
    state: an optimizer state (jopt's, or Optax's `inject_hyperparams`),
      possibly nested in chains and wrappers.

  Returns:
    A dict name -> value (float32 arrays; batched if the state is).

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> state = jopt.adam(1e-3).init(jnp.zeros(3))
    >>> sorted(jopt.get_hyperparams(state))
    ['b1', 'b2', 'eps', 'eps_root', 'learning_rate']

  References:
    The drift this design avoids: `optax #1532
    <https://github.com/google-deepmind/optax/issues/1532>`_.
  """
  found = list(_occurrences(state))
  counts: dict[str, int] = {}
  for _, name, _ in found:
    counts[name] = counts.get(name, 0) + 1
  return {
      (name if counts[name] == 1 else _qualified(path, name)): value
      for path, name, value in found
  }


def _resolve(state: Any, names) -> dict[str, tuple[tuple[str, ...], str]]:
  """Maps each requested name to the one (path, name) it designates."""
  found = [(path, name) for path, name, _ in _occurrences(state)]
  by_qualified = {_qualified(p, n): (p, n) for p, n in found}
  resolved = {}
  for requested in names:
    if requested in by_qualified and "/" in requested:
      resolved[requested] = by_qualified[requested]
      continue
    matches = [(p, n) for p, n in found if n == requested]
    if len(matches) == 1:
      resolved[requested] = matches[0]
    elif not matches:
      available = sorted(get_hyperparams(state))
      raise ValueError(
          f"No hyperparameter named {requested!r} in this state; "
          f"available: {available}."
      )
    else:
      options = [_qualified(p, n) for p, n in matches]
      raise ValueError(
          f"Hyperparameter {requested!r} is shared by several parts of the "
          f"optimizer; name one of {options}."
      )
  return resolved


def set_hyperparams(state: Any, **values: Any) -> Any:
  """Returns ``state`` with the named hyperparameters replaced.

  The new values keep the stored dtype (float32 unless the state was built
  otherwise), so a jitted step that takes the state does not recompile.
  A scalar is broadcast over a batched (vmapped) hyperparameter. Values
  are not range-checked here (they may be traced): the constructor's checks
  (``0 <= b1 < 1``...) are the caller's to respect. The state's values are
  the ones ``update`` uses, whatever the transformation was built with.

  Args:
    state: an optimizer state, as returned by ``init`` or ``update``.
    **values: new values by name, bare or qualified as `get_hyperparams`
      gives them.

  Returns:
    A new state (``state`` itself is not modified).

  Raises:
    ValueError: a name that is not in the state, or a bare name that several
      parts share.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> state = jopt.sgd(0.1, momentum=0.9).init(jnp.zeros(3))
    >>> state = jopt.set_hyperparams(state, learning_rate=0.01)
    >>> float(jopt.get_hyperparams(state)["learning_rate"])
    0.009999999776482582

  References:
    The drift this design avoids: `optax #1532
    <https://github.com/google-deepmind/optax/issues/1532>`_.
  """
  targets = {v: k for k, v in _resolve(state, values).items()}

  def rewrite(node: Any, prefix: tuple[str, ...]) -> Any:
    def visit(path, leaf):
      if not _is_hp_node(leaf):
        return leaf
      here = prefix + tuple(p for p in map(_key_str, path) if p is not None)
      hp = dict(leaf.hyperparams)
      for name, old in hp.items():
        requested = targets.get((here, name))
        if requested is not None:
          old = jnp.asarray(old)
          new = jnp.asarray(values[requested]).astype(old.dtype)
          hp[name] = jnp.broadcast_to(
              new, jnp.broadcast_shapes(new.shape, old.shape)
          )
      return leaf._replace(
          hyperparams=hp, inner_state=rewrite(leaf.inner_state, here)
      )

    return jax.tree_util.tree_map_with_path(visit, node, is_leaf=_is_hp_node)

  return rewrite(state, ())
