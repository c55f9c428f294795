"""The learning-rate-free, schedule-free and hypergradient optimizers
against their references: optax.contrib's versions (the rows of
`_lr_free_rows`, the Schedule-Free evaluation params, integer and tuple
params, Optax at Python defaults) and, for the hypergradient methods Optax
lacks, the paper's update rule in NumPy float64.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import optax
import pytest
from _helpers import init_params, loss, trajectory
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


@pytest.fixture(params=ROWS, ids=[r.id for r in ROWS])
def row(request) -> Row:
  return request.param


# --- numerics against optax.contrib or the paper -----------------------------


def test_matches_reference(row):
  path, _ = jopt_path(row)
  chex.assert_trees_all_close(
    path,
    reference_path(row, row_hyperparams(row)),
    rtol=row.tol,
    atol=row.tol,
  )
  # The run moved the params: a comparison of two frozen paths proves nothing.
  moved = path["dense"]["w"][-1] - init_params()["dense"]["w"]
  assert float(jnp.max(jnp.abs(moved))) > 1e-2


def test_hypergradient_adapts_the_learning_rate():
  r = runners(ROWS[[x.id for x in ROWS].index("adam_hd")])
  _, state = r.run(r.tx.init(init_params()), init_params())
  # Far from 0.05: the rate is learned, not fixed.
  assert abs(float(state.inner_state.learning_rate) - 0.05) > 1e-3


# --- Schedule-Free evaluation params ---------------------------------------------


def test_schedule_free_eval_params_match_optax():
  for row in ROWS[:2]:
    path, state = jopt_path(row)
    params = jax.tree.map(lambda x: x[-1], path)
    otx = row.optax_make(row_hyperparams(row))
    with jax.numpy_dtype_promotion("standard"):
      opath, ostate = jax.jit(
        lambda p, o=otx: trajectory(
          o, optax.apply_updates, loss, p, o.init(p), NUM_STEPS
        )
      )(init_params())
      expected = optax.contrib.schedule_free_eval_params(
        ostate, jax.tree.map(lambda x: x[-1], opath)
      )
    chex.assert_trees_all_close(
      jopt.schedule_free_eval_params(state, params),
      expected,
      rtol=1e-6,
      atol=1e-6,
    )


# --- Integer params, tuple params, Optax at Python defaults --------------------


_INT_PARAMS = jnp.array([1, -2, 3], jnp.int32)
_FLOAT_GRADS = jnp.array([0.5, -1.0, 2.0], jnp.float32)

LR_FREE = {
  "schedule_free_sgd": lambda: jopt.schedule_free_sgd(0.1),
  "schedule_free_adamw": lambda: jopt.schedule_free_adamw(0.1),
  "prodigy": jopt.prodigy,
  "dadapt_adamw": jopt.dadapt_adamw,
  "mechanize": lambda: jopt.mechanize(jopt.sgd(0.1)),
}


@pytest.mark.parametrize("make", LR_FREE.values(), ids=LR_FREE.keys())
def test_integer_params_get_float_updates(make):
  # As Optax gives (see jopt._numerics.float_dtype): an int32 step would
  # truncate every update to 0. The updates are those of the same params
  # as float32, the params held fixed over three steps.
  tx = make()
  int_state, float_state = (
    tx.init(_INT_PARAMS),
    tx.init(_INT_PARAMS.astype(jnp.float32)),
  )
  for _ in range(3):
    ours, int_state = tx.update(_FLOAT_GRADS, int_state, _INT_PARAMS)
    expected, float_state = tx.update(
      _FLOAT_GRADS, float_state, _INT_PARAMS.astype(jnp.float32)
    )
  assert ours.dtype == jnp.float32
  assert bool(jnp.any(ours != 0))
  chex.assert_trees_all_close(ours, expected, rtol=1e-6)


_TUPLE_PARAMS = {
  # Mixed ranks (an IndexError before), and exactly three arrays (taken
  # for one (m, v, s) triple before: wrong values, no error).
  "mixed": (jnp.array([1.0, -2.0]), jnp.array([[0.5, 0.25], [-1.0, 2.0]])),
  "three": (
    jnp.array([1.0, -2.0]),
    jnp.array([0.5, 0.3]),
    jnp.array([-1.0, 2.0]),
  ),
}


@pytest.mark.parametrize(
  "params", _TUPLE_PARAMS.values(), ids=_TUPLE_PARAMS.keys()
)
@pytest.mark.parametrize("name", ["prodigy", "dadapt_adamw"])
def test_tuple_params_match_optax(name, params):
  def run(tx, apply):
    p, state = params, tx.init(params)
    for _ in range(5):
      grads = jax.tree.map(lambda x: jnp.sin(3.0 * x) + x, p)
      updates, state = tx.update(grads, state, p)
      p = apply(p, updates)
    return p

  ours = run(getattr(jopt, name)(), jopt.apply_updates)
  with jax.numpy_dtype_promotion("standard"):
    theirs = run(getattr(optax.contrib, name)(), optax.apply_updates)
  chex.assert_trees_all_close(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("learning_rate", [0.0025, 0.05])
def test_schedule_free_adamw_at_python_defaults_matches_optax(learning_rate):
  # b2 = 0.999 as a Python number: 1 - b2 is taken at full precision, as
  # Optax takes it, not from float32's 0.999 (1.3e-5 relative away). What
  # is left is float32 rounding of params of order 1 (2^-22 = 2.4e-7).
  def run(tx, apply):
    params, state = init_params(), None
    state = tx.init(params)
    for _ in range(5):
      grads = jax.grad(loss)(params)
      updates, state = tx.update(grads, state, params)
      params = apply(params, updates)
    return params

  ours = run(jopt.schedule_free_adamw(learning_rate), jopt.apply_updates)
  with jax.numpy_dtype_promotion("standard"):
    theirs = run(
      optax.contrib.schedule_free_adamw(learning_rate), optax.apply_updates
    )
  chex.assert_trees_all_close(ours, theirs, rtol=0, atol=5e-7)


def test_dog_accepts_a_zero_initial_distance_as_optax_does():
  params, moved = jnp.array([1.0, -2.0]), jnp.array([1.5, -2.0])
  grads = jnp.array([0.3, -0.4])
  ours, theirs = (
    jopt.dog(init_step=("distance", 0.0)),
    optax.contrib.dog(init_step=("distance", 0.0)),
  )
  # From x_0 no distance yet: a zero step; once the params moved, DoG's.
  for p in (params, moved):
    chex.assert_trees_all_close(
      ours.update(grads, ours.init(params), p)[0],
      theirs.update(grads, theirs.init(params), p)[0],
      rtol=1e-6,
    )
