"""The learning-rate-free, schedule-free and hypergradient optimizers, through
the invariants of `test_optimizers`.

Each row builds one optimizer and says which hyperparameter its sweep checks
vary; its reference is optax.contrib's version (given jopt's float32
hyperparameter values, so only the arithmetic is compared) or, for the
hypergradient methods Optax lacks, the paper's update rule written out in
NumPy float64 below. The problem, loss and trajectory helper are the
shared ones in `_helpers`; jitted runners are built once per row.
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
  stack,
  trajectory,
)
from jax.flatten_util import ravel_pytree

import jopt

NUM_STEPS = 40
SWEEP_FACTORS = (0.5, 1.0, 2.0)


@dataclasses.dataclass(frozen=True)
class Row:
  id: str
  make: Callable[..., Any]  # (**hyperparams) -> jopt transformation
  sweep: tuple[str, float]  # the hyperparameter the sweep checks vary
  # jopt's hyperparameters -> the Optax transformation, or None.
  optax_make: Callable[[dict], Any] | None = None
  # (hyperparams, flat params [n], steps) -> flat trajectory [steps, n].
  reference: Callable[..., np.ndarray] | None = None
  # Per-row tolerance against the reference (see `_TOLERANCES`).
  tol: float = 1e-5


def _f(hp, name):
  return hp[name]


# --- The paper's hypergradient rules, in float64 -----------------------------


def _grad_flat(x):
  # d/dx of `loss`'s 0.5 x^2 + 0.3 sin(3x), elementwise.
  return x + 0.9 * np.cos(3.0 * x)


def _sgd_hd_reference(hp, x, steps, momentum=None, nesterov=False):
  """Baydin et al. (2018), Algorithm 1 (SGD-HD) and 2 (SGDN-HD)."""
  x = np.asarray(x, np.float64)
  alpha, beta = float(hp["learning_rate"]), float(hp["hypergrad_lr"])
  d_prev, v = np.zeros_like(x), np.zeros_like(x)
  path = []
  for _ in range(steps):
    g = _grad_flat(x)
    alpha = alpha + beta * float(g @ d_prev)  # alpha - beta * (-g . d_prev)
    if momentum is None:
      d = g
    else:
      mu = float(hp["momentum"])
      v = mu * v + g
      d = g + mu * v if nesterov else v
    x = x - alpha * d
    d_prev = d
    path.append(x)
  return np.stack(path)


def _adam_hd_reference(hp, x, steps):
  """Baydin et al. (2018), Algorithm 3 (Adam-HD)."""
  x = np.asarray(x, np.float64)
  alpha, beta = float(hp["learning_rate"]), float(hp["hypergrad_lr"])
  b1, b2, eps = (float(hp[k]) for k in ("b1", "b2", "eps"))
  m, v, d_prev = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
  path = []
  for t in range(1, steps + 1):
    g = _grad_flat(x)
    alpha = alpha + beta * float(g @ d_prev)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    d = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    x = x - alpha * d
    d_prev = d
    path.append(x)
  return np.stack(path)


ROWS = [
  Row(
    "schedule_free_sgd",
    lambda learning_rate=0.1: jopt.schedule_free_sgd(
      learning_rate, warmup_steps=5, weight_decay=1e-3
    ),
    ("learning_rate", 0.1),
    lambda hp: optax.contrib.schedule_free_sgd(
      hp["learning_rate"],
      warmup_steps=5,
      b1=hp["b1"],
      weight_decay=hp["weight_decay"],
      weight_lr_power=hp["weight_lr_power"],
    ),
  ),
  Row(
    "schedule_free_adamw",
    lambda learning_rate=0.05: jopt.schedule_free_adamw(
      learning_rate, warmup_steps=5, weight_decay=1e-3
    ),
    ("learning_rate", 0.05),
    lambda hp: optax.contrib.schedule_free_adamw(
      hp["learning_rate"],
      warmup_steps=5,
      b1=hp["b1"],
      b2=hp["b2"],
      eps=hp["eps"],
      weight_decay=hp["weight_decay"],
      weight_lr_power=hp["weight_lr_power"],
    ),
  ),
  Row(
    "prodigy",
    lambda learning_rate=1.0: jopt.prodigy(learning_rate, weight_decay=1e-3),
    ("learning_rate", 1.0),
    lambda hp: optax.contrib.prodigy(
      hp["learning_rate"],
      betas=(hp["b1"], hp["b2"]),
      eps=hp["eps"],
      estim_lr0=hp["estim_lr0"],
      estim_lr_coef=hp["estim_lr_coef"],
      weight_decay=hp["weight_decay"],
    ),
  ),
  # The sweep varies estim_lr0, which the state reads at the first update.
  Row(
    "dadapt_adamw",
    lambda estim_lr0=1e-6: jopt.dadapt_adamw(
      estim_lr0=estim_lr0, weight_decay=1e-3
    ),
    ("estim_lr0", 1e-6),
    lambda hp: optax.contrib.dadapt_adamw(
      hp["learning_rate"],
      betas=(hp["b1"], hp["b2"]),
      eps=hp["eps"],
      estim_lr0=hp["estim_lr0"],
      weight_decay=hp["weight_decay"],
    ),
  ),
  Row(
    "dog",
    lambda learning_rate=1.0: jopt.dog(learning_rate, weight_decay=1e-3),
    ("learning_rate", 1.0),
    lambda hp: optax.contrib.dog(
      hp["learning_rate"],
      init_step=("heuristic", hp["init_step_value"]),
      eps=hp["eps"],
      weight_decay=hp["weight_decay"],
    ),
  ),
  Row(
    "dog_distance",
    lambda init_step_value=1e-2: jopt.dog(
      init_step=("distance", init_step_value)
    ),
    ("init_step_value", 1e-2),
    lambda hp: optax.contrib.dog(
      hp["learning_rate"],
      init_step=("distance", hp["init_step_value"]),
      eps=hp["eps"],
    ),
  ),
  Row(
    "mechanize_sgd",
    lambda s_init=1e-6: jopt.mechanize(jopt.sgd(1.0), s_init=s_init),
    ("s_init", 1e-6),
    lambda hp: optax.contrib.mechanize(
      optax.sgd(hp["learning_rate"]),
      weight_decay=hp["weight_decay"],
      eps=hp["eps"],
      s_init=hp["s_init"],
    ),
  ),
  Row(
    "mechanize_adam",
    lambda learning_rate=1.0: jopt.mechanize(jopt.adam(learning_rate)),
    ("learning_rate", 1.0),
    lambda hp: optax.contrib.mechanize(
      optax.adam(
        hp["learning_rate"],
        b1=hp["b1"],
        b2=hp["b2"],
        eps=hp["base_optimizer_state/eps"],
      ),
      weight_decay=hp["weight_decay"],
      eps=hp["eps"],
      s_init=hp["s_init"],
    ),
    tol=1e-4,
  ),
  Row(
    "sgd_hd",
    lambda learning_rate=0.05: jopt.sgd_hd(learning_rate, 1e-2),
    ("learning_rate", 0.05),
    reference=_sgd_hd_reference,
    tol=1e-5,
  ),
  Row(
    "sgd_hd_nesterov",
    lambda hypergrad_lr=1e-3: jopt.sgd_hd(
      0.02, hypergrad_lr, momentum=0.9, nesterov=True
    ),
    ("hypergrad_lr", 1e-3),
    reference=functools.partial(_sgd_hd_reference, momentum=0.9, nesterov=True),
    tol=1e-5,
  ),
  Row(
    "adam_hd",
    lambda hypergrad_lr=1e-3: jopt.adam_hd(0.05, hypergrad_lr),
    ("hypergrad_lr", 1e-3),
    reference=_adam_hd_reference,
    tol=1e-5,
  ),
]
# Tolerances against the reference, measured over the 40 steps on CPU:
# * Optax rows: the same arithmetic given the same float32 hyperparameters.
#   Schedule-free, Prodigy, D-Adaptation and DoG agree to <= 7.2e-7 (a few
#   float32 ulps at O(1) params); Mechanic's scale feeds back into itself,
#   so an ulp of fusion grows to 3e-6 (and to 3.4e-6 between jit and vmap
#   for Prodigy). 1e-5 covers that; a wrong formula (an off-by-one step
#   count in a bias correction, a beta in place of another) moves the path
#   by >= 1e-3.
# * mechanize_adam: Adam's own 1-ulp differences between jopt and Optax are
#   amplified by Mechanic's scale (measured 1.6e-5); 1e-4 still catches a
#   wrong sign or beta (>= 1e-2).
# * Hypergradient rows: float32 jopt against the float64 paper rule; the
#   learning rate feeds back through <g_t, d_{t-1}>, so float32 rounding
#   compounds (measured <= 1.6e-6); a missing bias correction or an update
#   with the previous rather than the new rate moves it by >= 1e-2.


@pytest.fixture(params=ROWS, ids=[r.id for r in ROWS])
def row(request) -> Row:
  return request.param


@dataclasses.dataclass
class Runners:
  tx: Any
  run: Callable  # jitted (state, params) -> (path, state); one trace only
  run_raw: Callable


@functools.cache
def _runners(row: Row) -> Runners:
  tx = row.make()

  def run_raw(state, params):
    return trajectory(tx, jopt.apply_updates, loss, params, state, NUM_STEPS)

  run = jit_traced_once(run_raw, f"lr_free_run_{row.id}")
  return Runners(tx, run, run_raw)


@functools.cache
def _jopt_path(row: Row):
  r = _runners(row)
  return r.run(r.tx.init(init_params()), init_params())


def _reference_path(row: Row, hyperparams: dict):
  """The reference trajectory for these hyperparameter values."""
  params = init_params()
  if row.optax_make is not None:
    otx = row.optax_make(hyperparams)

    @jax.jit
    def run(params):
      with jax.numpy_dtype_promotion("standard"):
        return trajectory(
          otx,
          optax.apply_updates,
          loss,
          params,
          otx.init(params),
          NUM_STEPS,
        )[0]

    return run(params)
  flat, unravel = ravel_pytree(params)
  path = row.reference(hyperparams, np.asarray(flat), NUM_STEPS)
  return jax.vmap(unravel)(jnp.asarray(path, jnp.float32))


def _hyperparams(row: Row, **changes):
  """The row's hyperparameters for the reference, as the row computes them.

  A decay given as a Python number keeps its exact ``1 - b`` in the state
  (as Optax computes it from the number); the reference gets a float whose
  ``1 - b`` rounds to that same float32.
  """
  state = _runners(row).tx.init(init_params())
  values = jopt.get_hyperparams(state)
  for name, complement in (getattr(state, "complements", None) or {}).items():
    values[name] = 1.0 - float(complement)
  return {**values, **changes}


# --- numerics against optax.contrib or the paper -----------------------------


def test_matches_reference(row):
  path, _ = _jopt_path(row)
  chex.assert_trees_all_close(
    path,
    _reference_path(row, _hyperparams(row)),
    rtol=row.tol,
    atol=row.tol,
  )
  # The run moved the params: a comparison of two frozen paths proves nothing.
  moved = path["dense"]["w"][-1] - init_params()["dense"]["w"]
  assert float(jnp.max(jnp.abs(moved))) > 1e-2


def test_hypergradient_adapts_the_learning_rate():
  r = _runners(ROWS[[x.id for x in ROWS].index("adam_hd")])
  _, state = r.run(r.tx.init(init_params()), init_params())
  # Far from 0.05: the rate is learned, not fixed.
  assert abs(float(state.inner_state.learning_rate) - 0.05) > 1e-3


# --- jit == eager, no retrace, set_hyperparams --------------------------------


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
    stack(eager),
    jax.tree.map(lambda x: x[:3], jitted),
    rtol=1e-6,
    atol=1e-7,
  )


def test_no_retrace_on_second_call(row):
  r = _runners(row)
  _, state = _jopt_path(row)
  chex.assert_trees_all_equal_shapes_and_dtypes(state, r.tx.init(init_params()))
  r.run(state, init_params())  # assert_max_traces(n=1) raises on retrace


def test_set_hyperparams_takes_effect_without_recompiling(row):
  name, value = row.sweep
  r = _runners(row)
  params = init_params()
  state = jopt.set_hyperparams(r.tx.init(params), **{name: 0.5 * value})
  path, _ = r.run(state, params)  # no retrace
  expected = _reference_path(row, _hyperparams(row, **{name: 0.5 * value}))
  chex.assert_trees_all_close(path, expected, rtol=row.tol, atol=row.tol)
  # And it changed the path (some rows reach the same minimum by the end).
  old = _jopt_path(row)[0]["dense"]["w"]
  assert float(jnp.max(jnp.abs(path["dense"]["w"] - old))) > 1e-4


# --- vmap over a hyperparameter == a Python loop --------------------------------


def _looped(row: Row, values):
  r = _runners(row)
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
  r = _runners(row)
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
  updates, state, new_params = run_in_bfloat16(_runners(row).tx)
  for tree in (updates, new_params):
    assert {x.dtype for x in jax.tree.leaves(tree)} == {jnp.dtype(jnp.bfloat16)}
  chex.assert_tree_all_finite(updates)
  for name, value in jopt.get_hyperparams(state).items():
    assert value.dtype == jnp.float32, (name, value.dtype)
  # bf16 keeps 8 significant bits (2**-8 = 3.9e-3 relative on O(1) params);
  # three steps of rounding stay within 3e-2 of the float32 run.
  reference = jax.tree.map(lambda x: x[BF16_STEPS - 1], _jopt_path(row)[0])
  chex.assert_trees_all_close(
    jax.tree.map(lambda x: x.astype(jnp.float32), new_params),
    reference,
    rtol=3e-2,
    atol=3e-2,
  )


# --- Optax's names, signatures and defaults -------------------------------------


@pytest.mark.parametrize(
  "name",
  [
    "schedule_free",
    "schedule_free_sgd",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "prodigy",
    "dadapt_adamw",
    "dog",
    "scale_by_dog",
    "mechanize",
  ],
)
def test_signature_matches_optax_contrib(name):
  ours = inspect.signature(getattr(jopt, name)).parameters
  # scale_by_dog is not re-exported by optax.contrib.
  reference = getattr(optax.contrib, name, None) or getattr(
    optax.contrib._dog, name
  )
  theirs = inspect.signature(reference).parameters
  assert list(ours) == list(theirs)
  for key, p in theirs.items():
    assert ours[key].default == p.default, (name, key)


@pytest.mark.parametrize("name", ["dadapt_adamw", "prodigy", "dog"])
def test_constant_schedule_matches_its_value(name):
  # Optax's contrib suite checks this only for a `learning_rate` annotated
  # with Optax's own alias, so it skips jopt's constructors.
  params = init_params()
  runs = []
  for learning_rate in (optax.constant_schedule(0.5), 0.5):
    tx = getattr(jopt, name)(learning_rate=learning_rate)
    p, state = params, tx.init(params)
    for _ in range(5):
      updates, state = tx.update(jax.grad(loss)(p), state, p)
      p = optax.apply_updates(p, updates)
    runs.append(p)
  chex.assert_trees_all_equal(*runs)
  moved = jax.tree.map(lambda a, b: not jnp.array_equal(a, b), runs[0], params)
  assert all(jax.tree.leaves(moved))


def test_default_hyperparameters_in_state():
  params = init_params()
  hp = jopt.get_hyperparams(jopt.prodigy().init(params))
  assert hp == {
    "learning_rate": 1.0,
    "b1": np.float32(0.9),
    "b2": np.float32(0.999),
    "eps": np.float32(1e-8),
    "estim_lr0": np.float32(1e-6),
    "estim_lr_coef": 1.0,
    "weight_decay": 0.0,
  }
  hp = jopt.get_hyperparams(jopt.dog().init(params))
  assert set(hp) == {"learning_rate", "init_step_value", "eps"}
  hp = jopt.get_hyperparams(jopt.adam_hd().init(params))
  assert hp["hypergrad_lr"] == np.float32(1e-7)
  assert hp["learning_rate"] == np.float32(1e-3)


# --- Schedule-Free evaluation params ---------------------------------------------


def test_schedule_free_eval_params_match_optax():
  for row in ROWS[:2]:
    path, state = _jopt_path(row)
    params = jax.tree.map(lambda x: x[-1], path)
    otx = row.optax_make(_hyperparams(row))
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


def test_schedule_free_eval_params_inside_a_chain_and_errors():
  params = {"w": jnp.ones(3)}
  tx = jopt.chain(jopt.clip_by_global_norm(1.0), jopt.schedule_free_sgd(0.1))
  state = tx.init(params)
  updates, state = tx.update({"w": jnp.ones(3)}, state, params)
  new = jopt.apply_updates(params, updates)
  # First step: x = z = y, so the evaluation params are the params.
  chex.assert_trees_all_close(jopt.schedule_free_eval_params(state, new), new)
  with pytest.raises(ValueError, match="state"):
    jopt.schedule_free_eval_params(jopt.sgd(0.1).init(params), params)


def test_schedule_free_wrapper_qualifies_shared_names():
  tx = jopt.schedule_free(jopt.sgd(0.1), learning_rate=0.1)
  hp = jopt.get_hyperparams(tx.init(jnp.zeros(2)))
  assert {"b1", "weight_lr_power"} <= set(hp)
  assert sum(name.endswith("learning_rate") for name in hp) == 2


# --- Bad inputs -------------------------------------------------------------------


_SGD = jopt.sgd(1.0)

BAD_INPUTS = [
  (lambda: jopt.schedule_free_sgd(b1=0.0), "b1"),
  (lambda: jopt.schedule_free_sgd(b1=1.5), "b1"),
  (lambda: jopt.schedule_free_sgd(learning_rate=-1.0), "learning_rate"),
  (lambda: jopt.schedule_free_sgd(warmup_steps=0), "warmup_steps"),
  (lambda: jopt.schedule_free_sgd(weight_lr_power=-1.0), "weight_lr_power"),
  (lambda: jopt.schedule_free_adamw(b2=1.0), "b2"),
  (lambda: jopt.schedule_free_adamw(eps=-1.0), "eps"),
  (lambda: jopt.schedule_free_adamw(weight_decay=-1.0), "weight_decay"),
  (lambda: jopt.schedule_free(None, 0.1), "base_optimizer"),
  (lambda: jopt.prodigy(betas=(0.9,)), "betas"),
  (lambda: jopt.prodigy(betas=(1.0, 0.999)), r"betas\[0\]"),
  (lambda: jopt.prodigy(estim_lr0=0.0), "estim_lr0"),
  (lambda: jopt.prodigy(beta3=1.0), "beta3"),
  (lambda: jopt.prodigy(estim_lr_coef=-1.0), "estim_lr_coef"),
  (lambda: jopt.dadapt_adamw(learning_rate=-1.0), "learning_rate"),
  (lambda: jopt.dadapt_adamw(betas=(0.9, 1.0)), r"betas\[1\]"),
  (lambda: jopt.dadapt_adamw(weight_decay=-1.0), "weight_decay"),
  (lambda: jopt.dog(init_step=("bogus", 1.0)), "init_step"),
  (lambda: jopt.dog(init_step=("distance", -1.0)), "init_step"),
  (lambda: jopt.dog(eps=-1.0), "eps"),
  (lambda: jopt.scale_by_dog(("heuristic", -1.0)), "init_step"),
  (lambda: jopt.mechanize(_SGD, num_betas=0), "num_betas"),
  (lambda: jopt.mechanize(_SGD, s_init=0.0), "s_init"),
  (lambda: jopt.mechanize(_SGD, weight_decay=-1.0), "weight_decay"),
  (lambda: jopt.mechanize("adam"), "base_optimizer"),
  (lambda: jopt.sgd_hd(hypergrad_lr=-1.0), "hypergrad_lr"),
  (lambda: jopt.sgd_hd(momentum=1.0), "momentum"),
  (lambda: jopt.adam_hd(learning_rate=-1.0), "learning_rate"),
  (lambda: jopt.adam_hd(b1=1.0), "b1"),
]


@pytest.mark.parametrize("build, argument", BAD_INPUTS)
def test_bad_inputs_raise_value_error_naming_the_argument(build, argument):
  with pytest.raises(ValueError, match=f"`?{argument}"):
    build()


@pytest.mark.parametrize(
  "make",
  [
    jopt.schedule_free_sgd,
    jopt.prodigy,
    jopt.dadapt_adamw,
    jopt.dog,
    lambda: jopt.mechanize(jopt.sgd(1.0)),
  ],
  ids=["schedule_free_sgd", "prodigy", "dadapt_adamw", "dog", "mechanize"],
)
def test_update_without_params_raises(make):
  tx = make()
  state = tx.init(jnp.ones(2))
  with pytest.raises(ValueError, match="params"):
    tx.update(jnp.ones(2), state)


# --- Issue 19: integer params, tuple params, Optax at Python defaults ----------


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
