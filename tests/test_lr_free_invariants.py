"""The learning-rate-free, schedule-free and hypergradient optimizers
through the JAX invariants of `test_optimizers`, row by row of
`_lr_free_rows`: jit equals eager, no retrace, `set_hyperparams` takes
effect without recompiling, vmap over a hyperparameter equals a Python
loop, and bfloat16 params stay bfloat16.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import pytest
from _helpers import (
  BF16_STEPS,
  init_params,
  loss,
  run_in_bfloat16,
  stack,
  trajectory,
)
from _lr_free_rows import (
  NUM_STEPS,
  ROWS,
  Row,
  jopt_path,
  reference_path,
  row_hyperparams,
  runners,
)

import jopt

SWEEP_FACTORS = (0.5, 1.0, 2.0)


@pytest.fixture(params=ROWS, ids=[r.id for r in ROWS])
def row(request) -> Row:
  return request.param


# --- jit == eager, no retrace, set_hyperparams --------------------------------


def test_jit_matches_eager(row):
  tx = runners(row).tx
  params = init_params()
  state = tx.init(params)
  eager = []
  for _ in range(3):
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    params = jopt.apply_updates(params, updates)
    eager.append(params)
  jitted, _ = jopt_path(row)
  # Only XLA's fusion differs (a few float32 ulps per step).
  chex.assert_trees_all_close(
    stack(eager),
    jax.tree.map(lambda x: x[:3], jitted),
    rtol=1e-6,
    atol=1e-7,
  )


def test_no_retrace_on_second_call(row):
  r = runners(row)
  _, state = jopt_path(row)
  chex.assert_trees_all_equal_shapes_and_dtypes(state, r.tx.init(init_params()))
  r.run(state, init_params())  # assert_max_traces(n=1) raises on retrace


def test_set_hyperparams_takes_effect_without_recompiling(row):
  name, value = row.sweep
  r = runners(row)
  params = init_params()
  state = jopt.set_hyperparams(r.tx.init(params), **{name: 0.5 * value})
  path, _ = r.run(state, params)  # no retrace
  expected = reference_path(row, row_hyperparams(row, **{name: 0.5 * value}))
  chex.assert_trees_all_close(path, expected, rtol=row.tol, atol=row.tol)
  # And it changed the path (some rows reach the same minimum by the end).
  old = jopt_path(row)[0]["dense"]["w"]
  assert float(jnp.max(jnp.abs(path["dense"]["w"] - old))) > 1e-4


# --- vmap over a hyperparameter == a Python loop --------------------------------


def _looped(row: Row, values):
  r = runners(row)
  name = row.sweep[0]
  finals = []
  for v in values:
    state = jopt.set_hyperparams(r.tx.init(init_params()), **{name: v})
    path, _ = r.run(state, init_params())
    finals.append(jax.tree.map(lambda x: x[-1], path))
  return stack(finals)


def _values(row: Row):
  return jnp.asarray([f * row.sweep[1] for f in SWEEP_FACTORS], jnp.float32)


def test_vmap_over_constructor_matches_loop(row):
  def run(value):
    tx = row.make(**{row.sweep[0]: value})
    params = init_params()
    path, _ = trajectory(
      tx, jopt.apply_updates, loss, params, tx.init(params), NUM_STEPS
    )
    return jax.tree.map(lambda x: x[-1], path)

  values = _values(row)
  # Separately compiled programs: float32 ulps of fusion, compounded.
  chex.assert_trees_all_close(
    jax.jit(jax.vmap(run))(values),
    _looped(row, values),
    rtol=row.tol,
    atol=row.tol,
  )


def test_vmap_over_set_hyperparams_state_matches_loop(row):
  r = runners(row)
  values = _values(row)
  state = jax.tree.map(
    lambda x: jnp.broadcast_to(x, (len(values),) + x.shape),
    r.tx.init(init_params()),
  )
  state = jopt.set_hyperparams(state, **{row.sweep[0]: values})
  paths, _ = jax.jit(jax.vmap(r.run_raw, in_axes=(0, None)))(
    state, init_params()
  )
  chex.assert_trees_all_close(
    jax.tree.map(lambda x: x[:, -1], paths),
    _looped(row, values),
    rtol=row.tol,
    atol=row.tol,
  )


# --- bfloat16 params ------------------------------------------------------------


def test_bfloat16_params_give_bfloat16_updates(row):
  updates, state, new_params = run_in_bfloat16(runners(row).tx)
  for tree in (updates, new_params):
    assert {x.dtype for x in jax.tree.leaves(tree)} == {jnp.dtype(jnp.bfloat16)}
  chex.assert_tree_all_finite(updates)
  for name, value in jopt.get_hyperparams(state).items():
    assert value.dtype == jnp.float32, (name, value.dtype)
  # bf16 keeps 8 significant bits (2**-8 = 3.9e-3 relative on O(1) params);
  # three steps of rounding stay within 3e-2 of the float32 run.
  reference = jax.tree.map(lambda x: x[BF16_STEPS - 1], jopt_path(row)[0])
  chex.assert_trees_all_close(
    jax.tree.map(lambda x: x.astype(jnp.float32), new_params),
    reference,
    rtol=3e-2,
    atol=3e-2,
  )
