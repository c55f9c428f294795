"""One table of every optimizer, run through one suite.

Adding an optimizer = adding a row to `ROWS`. Each row builds the same
optimizer from jopt and from Optax (``make(lib, learning_rate)`` with
``lib`` either module), so Optax is the numerical reference throughout.

Compile time dominates on CPU, so the jitted runners are built once per row
(`_runners`) and shared by the tests; the jopt runner is wrapped in
`chex.assert_max_traces(n=1)`, so any test that made it retrace would fail.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import (
  BF16_STEPS,
  init_params,
  jit_traced_once,
  loss,
  run_in_bfloat16,
  trajectory,
)

import jopt


@dataclasses.dataclass(frozen=True)
class Row:
  """An optimizer under test and the settings each problem needs."""

  id: str
  # (jopt or optax, learning_rate, **hyperparameters) -> transformation.
  make: Callable[..., Any]
  requires: tuple[str, ...]  # the Optax (and jopt) functions it calls
  lr: float  # for the numerics, vmap and dtype checks
  quadratic: tuple[float, int]  # (learning_rate, steps)
  rosenbrock: tuple[float, int]  # (learning_rate, steps)


def _alias(name, **fixed):
  """``make`` for a plain alias: ``lib.<name>(lr, **fixed, **overrides)``."""

  def make(lib, learning_rate, **hp):
    return getattr(lib, name)(learning_rate, **{**fixed, **hp})

  make.fixed = fixed
  return make


def _clip_adamw(lib, learning_rate, max_norm=1.0, **hp):
  return lib.chain(
    lib.clip_by_global_norm(max_norm),
    lib.adamw(learning_rate, **{**_clip_adamw.fixed, **hp}),
  )


_clip_adamw.fixed = {"weight_decay": 1e-3}


# Learning rates and step counts are per row: a sign-based (lion) or
# normalised (rmsprop) update oscillates at the scale of the learning rate,
# and AMSGrad's running max of the first, huge Rosenbrock gradient needs a
# large learning rate to move at all.
ROWS = [
  Row("sgd", _alias("sgd"), ("sgd",), 0.1, (0.05, 300), (2e-3, 20000)),
  Row(
    "sgd_momentum",
    _alias("sgd", momentum=0.9),
    ("sgd",),
    0.05,
    (0.05, 300),
    (1e-3, 5000),
  ),
  Row(
    "sgd_nesterov",
    _alias("sgd", momentum=0.9, nesterov=True),
    ("sgd",),
    0.05,
    (0.05, 300),
    (1e-3, 5000),
  ),
  Row(
    "adagrad", _alias("adagrad"), ("adagrad",), 0.1, (0.5, 300), (0.2, 10000)
  ),
  Row(
    "rmsprop",
    _alias("rmsprop"),
    ("rmsprop",),
    1e-2,
    (5e-4, 4000),
    (1e-3, 10000),
  ),
  Row(
    "rmsprop_centered_momentum",
    _alias("rmsprop", centered=True, momentum=0.9),
    ("rmsprop",),
    1e-2,
    (1e-3, 3000),
    (1e-3, 5000),
  ),
  Row("adam", _alias("adam"), ("adam",), 1e-2, (0.05, 500), (1e-2, 5000)),
  Row(
    "adam_nesterov",
    _alias("adam", nesterov=True),
    ("adam",),
    1e-2,
    (0.05, 500),
    (1e-2, 5000),
  ),
  Row(
    "adamw",
    _alias("adamw", weight_decay=1e-3),
    ("adamw",),
    1e-2,
    (0.05, 500),
    (1e-2, 5000),
  ),
  Row("nadam", _alias("nadam"), ("nadam",), 1e-2, (0.05, 500), (1e-2, 5000)),
  Row(
    "adamax", _alias("adamax"), ("adamax",), 1e-2, (0.05, 500), (1e-3, 20000)
  ),
  Row(
    "amsgrad", _alias("amsgrad"), ("amsgrad",), 1e-2, (0.05, 500), (0.2, 20000)
  ),
  Row("lion", _alias("lion"), ("lion",), 1e-3, (5e-4, 3000), (3e-4, 10000)),
  Row(
    "chain_clip_adamw",
    _clip_adamw,
    ("chain", "clip_by_global_norm", "adamw"),
    1e-2,
    (0.05, 500),
    (1e-2, 5000),
  ),
]

NUM_STEPS = 60
# Learning rates for the sweep checks, as multiples of the row's `lr`.
SWEEP_FACTORS = (0.5, 1.0, 2.0)


@pytest.fixture(params=ROWS, ids=[r.id for r in ROWS])
def row(request) -> Row:
  return request.param


# --- Problems ---------------------------------------------------------------


def _quadratic(x):
  # Condition number 10.
  return 0.5 * (x[0] ** 2 + 10.0 * x[1] ** 2)


def _rosenbrock(x):
  return (1.0 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2


# --- Shared jitted runners (one compile per row and purpose) ----------------


@dataclasses.dataclass
class Runners:
  tx: Any  # row.make(jopt, row.lr)
  jopt_run: Callable  # (state, params) -> (path, state); jitted, 1 trace
  jopt_run_raw: Callable  # the same, unjitted (to vmap)
  optax_run: Callable  # (hyperparams, params) -> path; jitted


def _run_optax(row: Row, hyperparams, params):
  otx = row.make(optax, **hyperparams)
  # Optax is the reference, not under test: run it with standard promotion.
  with jax.numpy_dtype_promotion("standard"):
    return trajectory(
      otx, optax.apply_updates, loss, params, otx.init(params), NUM_STEPS
    )[0]


@functools.cache
def _runners(row: Row) -> Runners:
  tx = row.make(jopt, row.lr)

  def jopt_run_raw(state, params):
    return trajectory(tx, jopt.apply_updates, loss, params, state, NUM_STEPS)

  return Runners(
    tx=tx,
    jopt_run=jit_traced_once(jopt_run_raw, f"jopt_run_{row.id}"),
    jopt_run_raw=jopt_run_raw,
    optax_run=jax.jit(functools.partial(_run_optax, row)),
  )


def _optax_path(row: Row, lr: float):
  """Optax's trajectory at ``lr`` (a float32 value, as jopt holds it), every
  other hyperparameter left at the row's Python-float value: jopt keeps a
  decay's ``1 - b`` at that precision too, so both libraries compute with
  the very same numbers and only the arithmetic is compared.
  (`test_hyperparameter_defaults_match_optax` checks jopt's defaults against
  Optax's.)"""
  return _runners(row).optax_run(
    {"learning_rate": jnp.float32(lr)}, init_params()
  )


@functools.cache
def _jopt_path(row: Row):
  r = _runners(row)
  params = init_params()
  return r.jopt_run(r.tx.init(params), params)


# With the same float32 hyperparameters, jopt and Optax differ only where XLA
# fuses or orders the arithmetic differently. Measured over 60 steps on CPU:
# 0 for sgd/adagrad/rmsprop/lion, <= 1.2e-7 (one ulp at O(1) params) for the
# Adam family. 1e-6 allows ~8 ulps for other platforms and XLA versions; a
# wrong formula (eps inside vs outside the root, a missing bias correction)
# shows up at >= 1e-4.
RTOL_F32 = 1e-6
ATOL_F32 = 1e-6


# --- (1) numerics vs Optax ---------------------------------------------------


def test_matches_optax_same_hyperparams(row):
  path, _ = _jopt_path(row)
  chex.assert_trees_all_close(
    path,
    _optax_path(row, row.lr),
    rtol=RTOL_F32,
    atol=ATOL_F32,
  )


def test_hyperparameter_defaults_match_optax(row):
  # The run above passes jopt's values to Optax; here those values are
  # checked against Optax's own defaults (and the row's explicit settings).
  expected = {"learning_rate": row.lr, **row.make.fixed}
  signatures = [inspect.signature(row.make)]
  signatures += [inspect.signature(getattr(optax, n)) for n in row.requires]
  for signature in signatures:
    for p in signature.parameters.values():
      if p.default is not inspect.Parameter.empty and p.default is not None:
        expected.setdefault(p.name, p.default)
  stored = jopt.get_hyperparams(_runners(row).tx.init(init_params()))
  assert stored
  for name, value in stored.items():
    assert name in expected, f"{name} is not an argument of Optax's {row.id}"
    assert value == np.float32(expected[name]), (name, value, expected[name])


# --- (2) convergence ----------------------------------------------------------


@functools.cache
def _converge(row: Row):
  """Final iterates on both problems, from one compiled program."""

  def solve(objective, x0, lr, steps):
    tx = row.make(jopt, lr)
    path, _ = trajectory(
      tx, jopt.apply_updates, objective, x0, tx.init(x0), steps
    )
    return path[-1]

  @jax.jit
  def run(lr_quadratic, lr_rosenbrock):
    return {
      "quadratic": solve(
        _quadratic, jnp.array([1.0, -1.0]), lr_quadratic, row.quadratic[1]
      ),
      "rosenbrock": solve(
        _rosenbrock,
        jnp.array([-1.2, 1.0]),
        lr_rosenbrock,
        row.rosenbrock[1],
      ),
    }

  return run(jnp.float32(row.quadratic[0]), jnp.float32(row.rosenbrock[0]))


# Distance to the minimiser after the row's steps: 1e-3 on the quadratic
# (from distance 1.4), 1e-2 on Rosenbrock's curved valley (from distance 2.2);
# lion and adamw's weight decay shift their fixed point by ~1e-3.
@pytest.mark.parametrize(
  "problem, optimum, tol",
  [("quadratic", (0.0, 0.0), 1e-3), ("rosenbrock", (1.0, 1.0), 1e-2)],
)
def test_converges(row, problem, optimum, tol):
  x = _converge(row)[problem]
  error = float(jnp.linalg.norm(x - jnp.asarray(optimum)))
  assert error < tol, f"{row.id} on {problem}: |x - x*| = {error:.2e}"


# --- (3) jit == no jit, (4) no retrace ----------------------------------------


def test_jit_matches_eager(row):
  tx = _runners(row).tx
  params = init_params()
  state = tx.init(params)
  eager = []
  for _ in range(3):
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    params = jopt.apply_updates(params, updates)
    eager.append(params)
  jitted, _ = _jopt_path(row)
  # Only XLA's fusion differs (a few float32 ulps per step).
  chex.assert_trees_all_close(
    jax.tree.map(lambda *xs: jnp.stack(xs), *eager),
    jax.tree.map(lambda x: x[:3], jitted),
    rtol=1e-6,
    atol=1e-7,
  )


def test_no_retrace_on_second_call(row):
  r = _runners(row)
  _, state = _jopt_path(row)
  # Feeding the returned state back in must hit the compiled program: the
  # state's structure, shapes, dtypes (and weak types, which only the trace
  # count sees) must not change in `update`.
  chex.assert_trees_all_equal_shapes_and_dtypes(state, r.tx.init(init_params()))
  r.jopt_run(state, init_params())  # assert_max_traces(n=1) raises on retrace


# --- (6) set_hyperparams, without recompiling --------------------------------


def test_set_hyperparams_takes_effect_without_recompiling(row):
  r = _runners(row)
  new_lr = 0.5 * row.lr
  params = init_params()
  state = jopt.set_hyperparams(r.tx.init(params), learning_rate=new_lr)
  path, _ = r.jopt_run(state, params)  # assert_max_traces(n=1): no retrace.
  chex.assert_trees_all_close(
    path,
    _optax_path(row, new_lr),
    rtol=RTOL_F32,
    atol=ATOL_F32,
  )
  # And it did change the result.
  old = _jopt_path(row)[0]["dense"]["w"][-1]
  assert float(jnp.max(jnp.abs(path["dense"]["w"][-1] - old))) > 1e-4


# --- (5) vmap over the learning rate == a Python loop -------------------------


@functools.cache
def _built_inside(row: Row):
  """Final params for a batch of learning rates, built inside vmap."""

  def run(lr):
    tx = row.make(jopt, lr)
    params = init_params()
    path, _ = trajectory(
      tx, jopt.apply_updates, loss, params, tx.init(params), NUM_STEPS
    )
    return jax.tree.map(lambda x: x[-1], path)

  return jax.jit(jax.vmap(run))


def _looped(row: Row, lrs):
  """One run per learning rate, through the shared compiled runner."""
  r = _runners(row)
  params = init_params()
  finals = []
  for lr in lrs:
    state = jopt.set_hyperparams(r.tx.init(params), learning_rate=lr)
    path, _ = r.jopt_run(state, params)
    finals.append(jax.tree.map(lambda x: x[-1], path))
  return jax.tree.map(lambda *xs: jnp.stack(xs), *finals)


# Vmapped and looped programs are compiled separately, so fusion may differ by
# float32 ulps that compound over the 60 steps (as against Optax above).
def test_vmap_over_constructor_matches_loop(row):
  lrs = jnp.asarray([f * row.lr for f in SWEEP_FACTORS], jnp.float32)
  chex.assert_trees_all_close(
    _built_inside(row)(lrs),
    _looped(row, lrs),
    rtol=RTOL_F32,
    atol=ATOL_F32,
  )


@functools.cache
def _vmapped_state_runner(row: Row):
  return jax.jit(jax.vmap(_runners(row).jopt_run_raw, in_axes=(0, None)))


def test_vmap_over_set_hyperparams_state_matches_loop(row):
  r = _runners(row)
  params = init_params()
  lrs = jnp.asarray([f * row.lr for f in SWEEP_FACTORS], jnp.float32)
  state = r.tx.init(params)
  batched = jax.tree.map(
    lambda x: jnp.broadcast_to(x, (len(SWEEP_FACTORS),) + x.shape), state
  )
  batched = jopt.set_hyperparams(batched, learning_rate=lrs)
  paths, _ = _vmapped_state_runner(row)(batched, params)
  chex.assert_trees_all_close(
    jax.tree.map(lambda x: x[:, -1], paths),
    _looped(row, lrs),
    rtol=RTOL_F32,
    atol=ATOL_F32,
  )


# --- (7) bfloat16 params -------------------------------------------------------


@functools.cache
def _bfloat16_run(row: Row):
  return run_in_bfloat16(_runners(row).tx)


def test_bfloat16_params_give_bfloat16_updates(row):
  updates, state, new_params = _bfloat16_run(row)
  for tree in (updates, new_params):
    assert {x.dtype for x in jax.tree.leaves(tree)} == {jnp.dtype(jnp.bfloat16)}
  chex.assert_tree_all_finite(updates)
  hyperparams = jopt.get_hyperparams(state)
  assert hyperparams, "no hyperparameters found in the state"
  for name, value in hyperparams.items():
    assert value.dtype == jnp.float32, (name, value.dtype)
  # Against the float32 run: bf16 keeps 8 significant bits (relative step
  # 2**-8 = 3.9e-3 on O(1) params); three steps of rounding stay within 3e-2.
  reference = jax.tree.map(lambda x: x[BF16_STEPS - 1], _jopt_path(row)[0])
  chex.assert_trees_all_close(
    jax.tree.map(lambda x: x.astype(jnp.float32), new_params),
    reference,
    rtol=3e-2,
    atol=3e-2,
  )


# --- (8) float64 params under x64 ----------------------------------------------


def _dyadic_decays(row: Row) -> dict[str, float]:
  """Decays whose float32 value and float32 ``1 - value`` are both exact.

  jopt keeps a decay and its ``1 - value`` in float32; with these values
  Optax in float64, given the same Python floats, computes the very same
  numbers.
  """
  ranges = getattr(jopt, row.requires[-1]).ranges
  decays = sorted(n for n, r in ranges.items() if r.complement)
  return {n: 1.0 - 2.0 ** -(3 + 7 * i) for i, n in enumerate(decays)}


def test_float64_params(row):
  with jax.enable_x64(True):
    params = jax.tree.map(
      lambda x: jnp.asarray(np.asarray(x, np.float64)), init_params()
    )
    tx = row.make(jopt, row.lr, **_dyadic_decays(row))

    @jax.jit
    def run_jopt(params):
      return trajectory(
        tx, jopt.apply_updates, loss, params, tx.init(params), NUM_STEPS
      )

    path, state = run_jopt(params)
    assert {x.dtype for x in jax.tree.leaves(path)} == {jnp.dtype(jnp.float64)}
    hyperparams = jopt.get_hyperparams(state)
    for value in hyperparams.values():
      assert value.dtype == jnp.float32
    # Optax in float64 with jopt's float32 hyperparameter values as Python
    # floats (exact), so the comparison is of float64 arithmetic only.
    exact = {k: float(v) for k, v in hyperparams.items()}
    if row.id == "adagrad":
      # Read only by `init`, so not in the state: jopt starts the sum at its
      # default's float32 value, as it keeps every hyperparameter.
      exact["initial_accumulator_value"] = float(np.float32(0.1))
    expected = jax.jit(functools.partial(_run_optax, row, exact))(params)
  # Float64 rounding (ulp 2e-16) compounding over 60 steps stays far below
  # 1e-10; any float32 arithmetic on the float64 path (a hyperparameter not
  # cast to the leaf's dtype) would show up at ~1e-7 and fail.
  chex.assert_trees_all_close(path, expected, rtol=1e-10, atol=1e-10)
