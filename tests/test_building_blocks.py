"""One table of every public building block, run through one suite.

The optimizers have theirs (`test_optimizers.py`); this one holds the parts
they are chained from, each alone: scaling and momentum, the adaptive
preconditioners, regularizers, clipping, the combinators (`chain`,
`masked`, `partition`) and the wrappers (`apply_if_finite`, `MultiSteps`,
`reduce_on_plateau`). (`scale_by_dog` is run inside `dog`, a row of
`_lr_free_rows.py`.) Adding a block = adding a row.

A block is fed a fixed sequence of gradients at fixed params, so the
reference sees exactly the inputs jopt sees: Optax's block of the same name
(given the same float32 values), or the closed form where Optax has none.
Every row checks: the reference, jit == eager, no retrace on the second
call, bfloat16 params keep bfloat16 updates. A row that names a
hyperparameter to sweep (``sweep``) also checks: a new value given to the
constructor inside jit does not recompile, vmap over values == a Python
loop, and, where the value lives in the state, `set_hyperparams` takes
effect without recompiling and a vmapped state == the loop.

The jitted runners are built once per row and wrapped in
`chex.assert_max_traces(n=1)`, so a test that made one retrace would fail.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import optax
import pytest
from _helpers import gradient_sequence, init_params, jit_traced_once, stack

import jopt

NUM_STEPS = 8
PARAMS = init_params()
GRADS = gradient_sequence(NUM_STEPS, PARAMS)
# Losses for `reduce_on_plateau`'s ``value=``: improvements, plateaus and
# worse values; with patience 1 the scale is cut at steps 2-5 and 7.
VALUES = (1.0, 0.8, 0.8, 0.8, 0.9, 0.85, 0.5, 0.5)
# Gradients with a NaN at steps 2 and 3, for `apply_if_finite`: two skipped
# steps in a row, then a finite one.
NAN_GRADS = [
  {**g, "scale": jnp.float32(jnp.nan)} if step in (2, 3) else g
  for step, g in enumerate(GRADS)
]


# eq=False: rows hash by identity (their gradients are dicts), for caching.
@dataclasses.dataclass(frozen=True, eq=False)
class Row:
  """A building block under test."""

  id: str
  # (lib, **hyperparameters) -> transformation; lib is `jopt` or `optax`.
  make: Callable[..., Any]
  # (name, values): the hyperparameter the sweep checks vary, and three
  # values of it, the middle one the row's own. Values are dyadic (exact in
  # float32), so Optax given the Python float computes with jopt's value.
  sweep: tuple[str, tuple[float, float, float]] | None = None
  # (hyperparameters, grads, params) -> updates, where Optax lacks the block.
  closed_form: Callable[..., Any] | None = None
  grads: tuple = tuple(GRADS)
  plateau: bool = False  # feeds ``value=`` from VALUES to every update

  def build(self, lib, value=None):
    if self.sweep is None:
      return self.make(lib)
    name, values = self.sweep
    return self.make(lib, **{name: values[1] if value is None else value})


def _named(name, **fixed):
  """``make`` for a block with the same name in both libraries."""

  def make(lib, **hp):
    return getattr(lib, name)(**{**fixed, **hp})

  return make


def _centered_rms(lib, **hp):
  if lib is optax:  # Optax's name for the centered form
    return optax.scale_by_stddev(initial_scale=1.0, **hp)
  return jopt.scale_by_rms(centered=True, initial_scale=1.0, **hp)


def _l1(hp, grads, params):
  return jax.tree.map(lambda g, p: g + hp["l1"] * jnp.sign(p), grads, params)


def _scale_by_schedule(lib, init_value):
  return lib.scale_by_schedule(lib.linear_schedule(init_value, 0.25, 6))


def _masked(lib, b1):
  mask = {"dense": {"w": True}, "scale": False}
  return lib.masked(lib.scale_by_adam(b1=b1), mask)


def _partition(lib, decay):
  transforms = {"a": lib.trace(decay), "b": lib.scale(-0.5)}
  return lib.partition(transforms, {"dense": {"w": "a"}, "scale": "b"})


def _chain(lib, max_norm):
  return lib.chain(lib.clip_by_global_norm(max_norm), lib.trace(0.5))


def _apply_if_finite(lib, b1):
  return lib.apply_if_finite(lib.scale_by_adam(b1=b1), 2)


def _multi_steps(lib, b1):
  return lib.MultiSteps(lib.scale_by_adam(b1=b1), every_k_schedule=3)


def _reduce_on_plateau(lib, factor):
  lib = optax.contrib if lib is optax else lib  # where Optax keeps it
  return lib.reduce_on_plateau(factor=factor, patience=1)


DECAYS = (0.5, 0.75, 0.875)

ROWS = [
  Row("identity", _named("identity")),
  Row("scale", _named("scale"), ("step_size", (-0.5, 2.0, 0.25))),
  Row(
    "scale_by_learning_rate",
    _named("scale_by_learning_rate"),
    ("learning_rate", (0.25, 0.5, 1.0)),
  ),
  Row("scale_by_schedule", _scale_by_schedule, ("init_value", (0.5, 1.0, 2.0))),
  Row("trace", _named("trace"), ("decay", DECAYS)),
  Row("trace_nesterov", _named("trace", nesterov=True), ("decay", DECAYS)),
  # Not `initial_accumulator_value`: only `init` reads it, so a new value
  # set in an initialised state changes nothing.
  Row("scale_by_rss", _named("scale_by_rss"), ("eps", (0.125, 0.25, 0.5))),
  Row("scale_by_rms", _named("scale_by_rms"), ("decay", DECAYS)),
  Row("scale_by_rms_centered", _centered_rms, ("decay", DECAYS)),
  Row("scale_by_adam", _named("scale_by_adam"), ("b1", DECAYS)),
  Row("scale_by_adamax", _named("scale_by_adamax"), ("b2", DECAYS)),
  Row("scale_by_amsgrad", _named("scale_by_amsgrad"), ("b2", DECAYS)),
  # A sign: b1 must move far to flip one over 8 steps.
  Row("scale_by_lion", _named("scale_by_lion"), ("b1", (0.0, 0.5, 0.875))),
  Row(
    "add_decayed_weights",
    _named("add_decayed_weights"),
    ("weight_decay", (0.125, 0.25, 0.5)),
  ),
  Row("add_l1", _named("add_l1"), ("l1", (0.125, 0.25, 0.5)), closed_form=_l1),
  Row("clip", _named("clip"), ("max_delta", (0.25, 0.5, 1.0))),
  Row(
    "clip_by_global_norm",
    _named("clip_by_global_norm"),
    ("max_norm", (0.5, 1.0, 8.0)),
  ),
  Row("chain", _chain, ("max_norm", (0.5, 1.0, 8.0))),
  Row("masked", _masked, ("b1", DECAYS)),
  Row("partition", _partition, ("decay", DECAYS)),
  Row(
    "apply_if_finite", _apply_if_finite, ("b1", DECAYS), grads=tuple(NAN_GRADS)
  ),
  Row("multi_steps", _multi_steps, ("b1", DECAYS)),
  Row(
    "reduce_on_plateau",
    _reduce_on_plateau,
    ("factor", (0.25, 0.5, 0.75)),
    plateau=True,
  ),
]
SWEPT = [r for r in ROWS if r.sweep is not None]


def _in_state(row: Row) -> bool:
  """Whether the swept value lives in the state (not inside a schedule)."""
  state = row.build(jopt).init(PARAMS)
  return row.sweep[0] in jopt.get_hyperparams(state)


IN_STATE = [r for r in SWEPT if _in_state(r)]


def _rows(name, rows):
  """A fixture ``name`` that runs a test once per row of ``rows``."""
  return pytest.fixture(name=name, params=rows, ids=[r.id for r in rows])(
    lambda request: request.param
  )


_row = _rows("row", ROWS)
_swept_row = _rows("swept_row", SWEPT)
_in_state_row = _rows("in_state_row", IN_STATE)


# --- Running a block ---------------------------------------------------------


def _scan(tx, state, grads, params, plateau):
  """(stacked updates, final state) of ``tx`` over the stacked ``grads``."""
  values = jnp.asarray(VALUES, jnp.float32)

  def body(s, inputs):
    g, v = inputs
    extra = {"value": v} if plateau else {}
    u, s = tx.update(g, s, params, **extra)
    return s, u

  state, updates = jax.lax.scan(body, state, (grads, values))
  return updates, state


def _eager(tx, grads, params, plateau, steps, standard=False):
  """The first ``steps`` updates, one Python call per step, no jit."""
  state = tx.init(params)
  outs = []
  for step, g in enumerate(grads[:steps]):
    extra = {"value": jnp.float32(VALUES[step])} if plateau else {}
    with jax.numpy_dtype_promotion("standard" if standard else "strict"):
      u, state = tx.update(g, state, params, **extra)
    outs.append(u)
  return stack(outs)


@dataclasses.dataclass
class Runners:
  tx: Any  # row.build(jopt)
  run: Callable  # jitted (state, grads) -> (updates, state); one trace
  run_raw: Callable  # the same, unjitted (to vmap)
  built: Callable  # jitted value -> updates, the block built inside; one trace
  built_raw: Callable


@functools.cache
def _runners(row: Row) -> Runners:
  tx = row.build(jopt)

  def run_raw(state, grads):
    return _scan(tx, state, grads, PARAMS, row.plateau)

  def built_raw(value):
    inner = row.build(jopt, value)
    return _scan(
      inner, inner.init(PARAMS), stack(row.grads), PARAMS, row.plateau
    )[0]

  return Runners(
    tx=tx,
    run=jit_traced_once(run_raw, f"block_run_{row.id}"),
    run_raw=run_raw,
    built=jit_traced_once(built_raw, f"block_built_{row.id}"),
    built_raw=built_raw,
  )


@functools.cache
def _jopt_updates(row: Row):
  r = _runners(row)
  return r.run(r.tx.init(PARAMS), stack(row.grads))


@functools.cache
def _reference(row: Row, value: float | None = None):
  """The reference's updates at ``value`` (the row's own if None)."""
  if row.closed_form is not None:
    name, values = row.sweep
    hp = {name: values[1] if value is None else value}
    return stack([row.closed_form(hp, g, PARAMS) for g in row.grads])
  # Optax is the reference, not under test: eager, standard promotion, and
  # Python-float hyperparameters (some of its constructors branch on them).
  return _eager(
    row.build(optax, value),
    row.grads,
    PARAMS,
    row.plateau,
    NUM_STEPS,
    standard=True,
  )


def _values(row: Row):
  return jnp.asarray(row.sweep[1], jnp.float32)


# With the same float32 inputs, jopt and Optax run the same arithmetic; only
# XLA's fusion and operation order can differ (jopt jitted, Optax eager).
# Measured on CPU over the 8 steps: identical for scale, clip, the
# regularizers, scale_by_rms, lion and reduce_on_plateau; at most 2.4e-7
# absolute (2 float32 ulps at O(1) updates, in trace, partition and the
# Adam family) elsewhere. 1e-6 allows ~8 ulps for other platforms and XLA
# versions; a wrong formula (eps inside the root, a missed bias correction,
# a decay applied as 1 - decay) moves an update by >= 1e-3.
RTOL = 1e-6
ATOL = 1e-6


# --- (1) against the reference -----------------------------------------------


def test_matches_reference(row):
  updates, _ = _jopt_updates(row)
  chex.assert_trees_all_close(updates, _reference(row), rtol=RTOL, atol=ATOL)
  chex.assert_trees_all_equal_dtypes(
    jax.tree.map(lambda u: u[0], updates), PARAMS
  )


def test_rows_are_not_trivial():
  # A block that passed its gradients through unchanged would match a
  # reference that did the same: every row but `identity` must change them.
  for r in ROWS:
    if r.id == "identity":
      continue
    moved = jax.tree.map(
      lambda u, g: jnp.nanmax(jnp.abs(u - g)),
      _jopt_updates(r)[0],
      stack(r.grads),
    )
    assert max(float(m) for m in jax.tree.leaves(moved)) > 1e-3, r.id


# --- (2) jit == eager, (3) no retrace ----------------------------------------


def test_jit_matches_eager(row):
  eager = _eager(_runners(row).tx, row.grads, PARAMS, row.plateau, 3)
  jitted, _ = _jopt_updates(row)
  # Only XLA's fusion differs (a few float32 ulps).
  chex.assert_trees_all_close(
    eager, jax.tree.map(lambda x: x[:3], jitted), rtol=1e-6, atol=1e-7
  )


def test_no_retrace_on_second_call(row):
  r = _runners(row)
  _, state = _jopt_updates(row)
  # The returned state must have init's structure, shapes, dtypes and weak
  # types, or feeding it back would compile a second program.
  chex.assert_trees_all_equal_shapes_and_dtypes(state, r.tx.init(PARAMS))
  r.run(state, stack(row.grads))  # assert_max_traces(n=1) raises on retrace


# --- (4) bfloat16 params -----------------------------------------------------


@functools.cache
def _bfloat16_run(row: Row):
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), PARAMS)
  grads = jax.tree.map(lambda x: x.astype(jnp.bfloat16), stack(row.grads))
  tx = _runners(row).tx
  return jax.jit(lambda p, g: _scan(tx, tx.init(p), g, p, row.plateau))(
    params, grads
  )


def test_bfloat16_params_give_bfloat16_updates(row):
  updates, state = _bfloat16_run(row)
  assert {x.dtype for x in jax.tree.leaves(updates)} == {
    jnp.dtype(jnp.bfloat16)
  }
  for name, value in jopt.get_hyperparams(state).items():
    assert value.dtype == jnp.float32, (name, value.dtype)
  # bf16 keeps 8 significant bits: 2**-8 = 3.9e-3 relative per rounding.
  # The gradients themselves are rounded to bf16 first, then a few roundings
  # in the block's arithmetic (a moment, a root, a division): measured at
  # most 1.6e-2 from the float32 run (Nesterov momentum), so 3e-2.
  chex.assert_trees_all_close(
    jax.tree.map(lambda x: x.astype(jnp.float32), updates),
    _jopt_updates(row)[0],
    rtol=3e-2,
    atol=3e-2,
  )


# --- (5) a new value given to the constructor: no recompile, vmap == loop ----


@functools.cache
def _looped_built(row: Row):
  """Updates for each sweep value, through one compiled program."""
  return stack([_runners(row).built(v) for v in _values(row)])


def test_new_value_to_the_constructor_matches_reference_without_recompiling(
  swept_row,
):
  looped = _looped_built(swept_row)  # `built` traces once for all values
  for i, value in enumerate(swept_row.sweep[1]):
    chex.assert_trees_all_close(
      jax.tree.map(lambda x, i=i: x[i], looped),
      _reference(swept_row, value),
      rtol=RTOL,
      atol=ATOL,
    )


def test_vmap_over_constructor_matches_loop(swept_row):
  vmapped = jax.jit(jax.vmap(_runners(swept_row).built_raw))(_values(swept_row))
  # Vmapped and looped programs are compiled separately: fusion may differ
  # by float32 ulps, as against the reference.
  chex.assert_trees_all_close(
    vmapped, _looped_built(swept_row), rtol=RTOL, atol=ATOL
  )


# --- (6) set_hyperparams: no recompile, vmapped state == loop ----------------


def test_set_hyperparams_takes_effect_without_recompiling(in_state_row):
  row = in_state_row
  r = _runners(row)
  name, (low, *_) = row.sweep
  state = jopt.set_hyperparams(r.tx.init(PARAMS), **{name: low})
  updates, _ = r.run(state, stack(row.grads))  # no retrace
  chex.assert_trees_all_close(
    updates, _reference(row, low), rtol=RTOL, atol=ATOL
  )
  changed = jax.tree.map(
    lambda a, b: jnp.max(jnp.abs(a - b)), updates, _jopt_updates(row)[0]
  )
  assert max(float(m) for m in jax.tree.leaves(changed)) > 1e-4


def test_vmap_over_set_hyperparams_state_matches_loop(in_state_row):
  row = in_state_row
  r = _runners(row)
  values = _values(row)
  state = jax.tree.map(
    lambda x: jnp.broadcast_to(x, (len(values),) + x.shape),
    r.tx.init(PARAMS),
  )
  state = jopt.set_hyperparams(state, **{row.sweep[0]: values})
  updates, _ = jax.jit(jax.vmap(r.run_raw, in_axes=(0, None)))(
    state, stack(row.grads)
  )
  chex.assert_trees_all_close(updates, _looped_built(row), rtol=RTOL, atol=ATOL)


# --- Stateful where Optax is stateless ---------------------------------------


@pytest.mark.parametrize(
  "name, value",
  [
    ("scale", 0.5),
    ("clip", 0.5),
    ("clip_by_global_norm", 1.0),
    ("add_decayed_weights", 0.25),
  ],
)
def test_stateless_optax_blocks_keep_their_value_in_the_state(name, value):
  # docs/optax_differences.md, entry 1: the value is a hyperparameter a
  # sweep varies, so it lives in the state; `.plain` is Optax's block.
  public, plain = getattr(jopt, name), getattr(jopt, name).plain
  state = public(value).init(PARAMS)
  assert isinstance(state, jopt.HyperparamsState)
  assert list(jopt.get_hyperparams(state).values()) == [value]
  optax_state = getattr(optax, name)(value).init(PARAMS)
  chex.assert_trees_all_equal_structs(plain(value).init(PARAMS), optax_state)
  chex.assert_trees_all_equal_structs(state.inner_state, optax_state)
  with jax.numpy_dtype_promotion("standard"):
    expected, _ = getattr(optax, name)(value).update(
      GRADS[0], optax_state, PARAMS
    )
  for tx in (public(value), plain(value)):
    updates, _ = tx.update(GRADS[0], tx.init(PARAMS), PARAMS)
    chex.assert_trees_all_close(updates, expected, rtol=RTOL, atol=ATOL)
