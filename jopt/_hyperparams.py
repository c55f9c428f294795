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
  optimizer built with the same (float32) values computes. A decay given as
  a Python number also keeps ``1 - b`` at full precision, as Optax does.

A constructor call means the same thing whoever makes it. Each decorated
constructor also has a ``.plain`` form, the undecorated body: an optimizer
builds its parts with ``.plain`` (so it holds one set of hyperparameters,
under its own names), and Optax's ``inject_hyperparams``, which keeps the
values in its own state, takes ``.plain`` as its factory.

Name resolution: `get_hyperparams` returns a flat dict. A name that occurs
once in the state is given bare (``"learning_rate"``). A name that occurs in
several parts (two `trace` blocks in one `chain`, say) is given qualified by
the path to its part, ``"0/decay"`` and ``"1/decay"`` (chain positions, dict
keys and field names joined by ``/``). `set_hyperparams` accepts bare names
that are unique and qualified names always; a bare name shared by several
parts is refused with the qualified names listed, rather than guessed.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jopt import _base, _numerics, _validation
from jopt._validation import Range


class HyperparamsState(NamedTuple):
  """State of a transformation whose numeric hyperparameters are swept.

  Attributes:
    hyperparams: name -> float32 array (scalar, or batched under vmap).
    inner_state: the state of the plain transformation.
    complements: name -> ``1 - value`` for the decays among them, kept at
      the precision they were given with (see `get_hyperparams`).
  """

  hyperparams: dict[str, jax.Array]
  inner_state: Any
  complements: dict[str, jax.Array] | None = None


def _is_numeric(value: Any) -> bool:
  if isinstance(value, bool) or value is None or callable(value):
    return False
  if isinstance(value, (int, float, np.number, np.ndarray, jax.Array)):
    return jnp.issubdtype(jnp.result_type(value), jnp.number)
  return False


def _store(values: dict[str, Any], decays: frozenset[str]):
  """(hyperparams, complements) as kept in a `HyperparamsState`."""
  hyperparams, complements = {}, {}
  for name, value in values.items():
    if name in decays:
      decay = _numerics.make_decay(value)
      hyperparams[name], complements[name] = decay.value, decay.complement
    else:
      hyperparams[name] = jnp.asarray(value).astype(_numerics.HYPERPARAM_DTYPE)
  return hyperparams, complements


def _values(state: HyperparamsState) -> dict[str, Any]:
  """The values a rebuild is given: decays as `Decay`, the rest as stored."""
  complements = state.complements or {}
  return {
    name: _numerics.Decay(value, complements[name])
    if name in complements
    else value
    for name, value in state.hyperparams.items()
  }


def inject(
  factory: Callable[..., _base.GradientTransformation],
  hyperparams: dict[str, Any],
  decays: frozenset[str] = frozenset(),
) -> _base.GradientTransformation:
  """Keeps ``hyperparams`` in the state and rebuilds ``factory(**hp)``.

  ``factory`` is called with float32 arrays (possibly traced) in place of
  the numeric values, and with a `jopt._numerics.Decay` for the names in
  ``decays``, both in ``init`` and in every ``update``.
  """

  def init_fn(params):
    hp, complements = _store(hyperparams, decays)
    state = HyperparamsState(hp, None, complements)
    inner = factory(**_values(state))
    return state._replace(inner_state=inner.init(params))

  def update_fn(updates, state, params=None, **extra_args):
    inner = factory(**_values(state))
    updates, inner_state = inner.update(
      updates, state.inner_state, params, **extra_args
    )
    return updates, state._replace(inner_state=inner_state)

  return _base.GradientTransformation(init_fn, update_fn)


# The decorated constructor whose body is running, if any. Read only to
# refuse a public constructor there (see `_check_not_in_a_body`); it never
# changes what a constructor returns.
_BODY: contextvars.ContextVar[str | None] = contextvars.ContextVar(
  "jopt_constructor_body", default=None
)


@contextlib.contextmanager
def _building(name: str):
  token = _BODY.set(name)
  try:
    yield
  finally:
    _BODY.reset(token)


def _check_not_in_a_body(name: str) -> None:
  """Refuses the public form of ``name`` inside another constructor's body.

  A body builds its parts with their ``.plain`` forms. The public form
  would nest a second `HyperparamsState` holding the values the body was
  given when it ran: `set_hyperparams` and sweeps would change the outer
  copy while the part went on using its stale inner one.
  """
  outer = _BODY.get()
  if outer is not None:
    raise RuntimeError(
      f"`{name}` was called inside the body of the constructor `{outer}`. "
      f"Build the part with its plain form, `{name}.plain(...)`: the "
      f"public `{name}` keeps its own copy of its hyperparameters in the "
      f"state, which `set_hyperparams` and sweeps of `{outer}` would not "
      f"reach."
    )


# Init-only argument -> the constructors that declare it, for the error of
# `set_hyperparams` (static: filled when the constructors are defined).
_INIT_ONLY: dict[str, list[str]] = {}


def sweepable(*names: str, init_only: tuple[str, ...] = (), **ranges: Range):
  """Decorates a constructor so that its numeric hyperparameters live in the state.

  Hyperparameters are named positionally (no range checked here: the body
  may check with `check_range`) or by keyword with their `Range`
  (``b1=DECAY``), which is checked once, on the values the caller gives.
  Those also named in ``init_only`` are read only by ``init`` (a starting
  value of the state): they are checked like the others but not kept in the
  state, since a value set there later would change nothing;
  `set_hyperparams` refuses them, naming the constructor argument.

  The decorated constructor checks the declared ranges, builds the plain
  transformation once (the body's own checks run), and returns a
  transformation whose state is a `HyperparamsState` holding the numeric
  hyperparameters; its ``update`` rebuilds the plain transformation from
  the values in the state. Arguments given as callables (schedules),
  ``None`` or bools stay static; with none numeric, the plain
  transformation is returned.

  ``constructor.plain`` is the undecorated body: it returns the plain
  transformation, with the values it is given and no state of its own. An
  optimizer builds its parts with their ``.plain`` forms, so it keeps one
  set of hyperparameters, under its own argument names; Optax's
  ``inject_hyperparams`` takes a ``.plain`` form as its factory. Calling
  the public form of a decorated constructor while a decorated body (public
  or plain) runs raises `RuntimeError` naming it: a body builds its parts
  with ``.plain``.
  """
  declared = {**{name: _validation.ANY for name in names}, **ranges}
  decays = frozenset(n for n, r in declared.items() if r.complement)
  if not set(init_only) <= set(declared):
    raise TypeError(
      f"init_only {sorted(set(init_only) - set(declared))} "
      "are not declared hyperparameters."
    )

  def decorator(raw: Callable[..., _base.GradientTransformation]):
    signature = inspect.signature(raw)
    missing = set(declared) - set(signature.parameters)
    if missing:
      raise TypeError(f"{raw.__name__} has no argument {sorted(missing)}.")

    name = raw.__name__
    for arg in init_only:
      _INIT_ONLY.setdefault(arg, []).append(name)

    @functools.wraps(raw)
    def body(*args, **kwargs):
      with _building(name):
        return raw(*args, **kwargs)

    @functools.wraps(raw)
    def constructor(*args, **kwargs):
      _check_not_in_a_body(name)
      bound = signature.bind(*args, **kwargs)
      bound.apply_defaults()
      arguments = dict(bound.arguments)
      for arg in declared:
        _validation.check_real(arg, arguments[arg])
      for arg, allowed in ranges.items():
        allowed.check(arg, arguments[arg])
      plain = body(**arguments)
      numeric = {
        n: arguments[n]
        for n in declared
        if n not in init_only and _is_numeric(arguments[n])
      }
      if not numeric:
        return plain

      def factory(**hp):
        return body(**{**arguments, **hp})

      return inject(factory, numeric, decays & set(numeric))

    constructor.__signature__ = signature
    constructor.plain = body
    constructor.ranges = dict(declared)
    return constructor

  return decorator


# --- Finding hyperparameters in a state -------------------------------------


_HP_NODES = (
  HyperparamsState,
  # Optax's inject_hyperparams states: the same two fields.
  optax.InjectHyperparamsState,
  optax.InjectStatefulHyperparamsState,
)


def _is_hp_node(x: Any) -> bool:
  return isinstance(x, _HP_NODES)


def _key_str(entry: Any) -> str | None:
  for attr in ("idx", "key", "name"):
    if hasattr(entry, attr):
      s = str(getattr(entry, attr))
      return (
        None if s in ("inner_state", "inner_states", "inner_opt_state") else s
      )
  return str(entry)


def _occurrences(state: Any, prefix: tuple[str, ...] = ()):
  """Yields (path, name, value) for every hyperparameter in ``state``."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(state, is_leaf=_is_hp_node)
  for path, leaf in leaves:
    if not _is_hp_node(leaf):
      continue
    here = prefix + tuple(p for p in map(_key_str, path) if p is not None)
    for name, value in leaf.hyperparams.items():
      # A schedule is not a value; an array wrapped in a callable container
      # (an NNX variable inside nnx.Optimizer's state) is.
      if callable(value) and not hasattr(value, "__jax_array__"):
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
    (name if counts[name] == 1 else _qualified(path, name)): _unwrap(value)
    for path, name, value in found
  }


def _unwrap(value: Any) -> Any:
  """The array inside a container such as an NNX variable (nnx.Optimizer)."""
  if callable(value) and hasattr(value, "__jax_array__"):
    return jnp.asarray(value)
  return value


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
      bare = requested.rsplit("/", 1)[-1]
      if bare in _INIT_ONLY:
        makers = " or ".join(f"`{m}`" for m in _INIT_ONLY[bare])
        raise ValueError(
          f"{requested!r} is read only when the state is initialised, so "
          f"it is not in the state: pass `{bare}=` to the constructor "
          f"({makers}) and call `init` again. Settable here: {available}."
        )
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


def _settable_shape(name: str, value: Any, stored: tuple[int, ...]):
  """``stored``, if ``value`` broadcasts to it; else a ValueError.

  A value never grows the stored shape: a [3] learning rate set in an
  unbatched state would make every param [3]-shaped.
  """
  shape = jnp.shape(value)
  try:
    fits = jnp.broadcast_shapes(shape, stored) == tuple(stored)
  except ValueError:
    fits = False
  if not fits:
    raise ValueError(
      f"Hyperparameter {name!r}: got a value of shape {list(shape)}, but "
      f"this state holds it with shape {list(stored)} (a scalar, or one "
      "value per trial of a state batched by jax.vmap). To sweep several "
      "values, build or vmap the state over them."
    )
  return tuple(stored)


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
    ValueError: a name that is not in the state, a bare name that several
      parts share, a value whose shape does not broadcast to the stored one
      (a value never adds a batch axis), or a complex value.

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
      complements = dict(getattr(leaf, "complements", None) or {})
      for name, old in hp.items():
        requested = targets.get((here, name))
        if requested is None:
          continue
        wrapper = old if callable(old) and hasattr(old, "replace") else None
        old = jnp.asarray(old)
        value = values[requested]
        _validation.check_real(requested, value)
        shape = _settable_shape(requested, value, old.shape)
        if name in complements:
          decay = _numerics.make_decay(value)
          complements[name] = jnp.broadcast_to(decay.complement, shape)
          value = decay.value
        hp[name] = jnp.broadcast_to(jnp.asarray(value).astype(old.dtype), shape)
        if wrapper is not None:  # an NNX variable: a new one, same kind
          hp[name] = wrapper.replace(hp[name])
      leaf = leaf._replace(
        hyperparams=hp, inner_state=rewrite(leaf.inner_state, here)
      )
      if complements:
        leaf = leaf._replace(complements=complements)
      return leaf

    return jax.tree_util.tree_map_with_path(visit, node, is_leaf=_is_hp_node)

  return rewrite(state, ())
