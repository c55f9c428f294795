"""The learning-rate-free, schedule-free and hypergradient optimizers'
interface: Optax's names, signatures and defaults, the Schedule-Free
evaluation params inside a chain, and the checks of bad arguments.
"""

from __future__ import annotations

import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import init_params, loss

import jopt

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


# --- Schedule-Free evaluation params in a chain, the wrapper's names ---------


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
