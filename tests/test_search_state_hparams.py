"""Stepwise searches train with the hyperparameters they record.

The segments here ignore their ``hparams``: the optimizer state built in
``init`` holds a learning rate, and before each segment the search writes
the trial's value into it. They must compute exactly what a segment that
writes the value itself computes.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _quadratic_search import CURVATURE, STEPS, TARGET

import jopt
from jopt import sweep

KEY = jax.random.key(0)
OPTIMIZERS = {
  "jopt": jopt.sgd(0.1),
  "optax": optax.inject_hyperparams(optax.sgd)(learning_rate=0.1),
}


def _loss(w):
  return 0.5 * jnp.sum(jnp.asarray(CURVATURE) * (w - jnp.asarray(TARGET)) ** 2)


def _make(tx, applies_itself):
  def init(hp, key):
    del hp  # the rate in the state is the optimizer's default
    w = jax.random.normal(key, (3,), jnp.float32)
    return {"w": w, "opt": tx.init(w)}

  def segment(state, hp):
    opt = state["opt"]
    if applies_itself:
      opt = jopt.set_hyperparams(opt, learning_rate=hp["learning_rate"])

    def step(carry, _):
      w, opt = carry
      updates, opt = tx.update(jax.grad(_loss)(w), opt, w)
      return (optax.apply_updates(w, updates), opt), None

    (w, opt), _ = jax.lax.scan(step, (state["w"], opt), None, length=STEPS)
    return {"w": w, "opt": opt}, {"loss": _loss(w)}

  return init, segment


@pytest.mark.parametrize("library", sorted(OPTIMIZERS))
def test_run_stepwise_trains_at_the_recorded_rates(library):
  space = {"learning_rate": sweep.choice([0.05, 0.2, 0.6, 1.2])}
  results = [
    sweep.run_stepwise(
      *_make(OPTIMIZERS[library], applies),
      space,
      num_segments=3,
      key=KEY,
      metric="loss",
      strategy="grid",
    )
    for applies in (False, True)
  ]
  ignores, applies = results
  loss = ignores.metrics["loss"][:, -1]
  assert len(set(loss.tolist())) == 4  # one loss per rate
  chex.assert_trees_all_equal(ignores.metrics, applies.metrics)


def test_pbt_members_train_at_their_explored_rates():
  space = {"learning_rate": sweep.uniform(0.01, 1.5)}
  kwargs = dict(
    population=8,
    key=KEY,
    num_rounds=4,
    metric="loss",
    perturb=(0.5, 2.0),
    resample_prob=0.0,
  )
  ignores, applies = [
    sweep.pbt(*_make(OPTIMIZERS["jopt"], a), space, **kwargs)
    for a in (False, True)
  ]
  np.testing.assert_array_equal(ignores.parents, applies.parents)
  chex.assert_trees_all_equal(ignores.metric_history, applies.metric_history)
  chex.assert_trees_all_equal(ignores.final_state, applies.final_state)
  # The state holds the rate of the last round, as the schedule says.
  np.testing.assert_array_equal(
    jopt.get_hyperparams(ignores.final_state["opt"])["learning_rate"],
    ignores.hparam_history["learning_rate"][-1],
  )


def test_a_state_without_those_names_is_passed_as_it_is():
  init, segment = _make(OPTIMIZERS["jopt"], False)
  same_start = lambda hp, key: init(hp, KEY)  # noqa: E731
  # "lr" is not a name of the state: the state keeps its own rate, 0.1.
  res = sweep.run_stepwise(
    same_start,
    segment,
    {"lr": sweep.choice([0.5, 1.0])},
    num_segments=2,
    key=KEY,
    metric="loss",
    strategy="grid",
  )
  assert res.metrics["loss"][0, -1] == res.metrics["loss"][1, -1]


def test_a_name_shared_by_several_parts_is_refused_with_the_fix():
  tx = jopt.chain(jopt.trace(0.9), jopt.trace(0.5))

  def init(hp, key):
    del hp
    w = jax.random.normal(key, (3,), jnp.float32)
    return {"w": w, "opt": tx.init(w)}

  def segment(state, hp):
    updates, opt = tx.update(jax.grad(_loss)(state["w"]), state["opt"])
    w = state["w"] - 0.1 * updates
    return {"w": w, "opt": opt}, {"loss": _loss(w)}

  with pytest.raises(ValueError, match="0/decay"):
    sweep.run_stepwise(
      init,
      segment,
      {"decay": sweep.uniform(0.1, 0.9)},
      num_trials=2,
      num_segments=1,
      key=KEY,
      metric="loss",
    )
  res = sweep.run_stepwise(
    init,
    segment,
    {"1/decay": sweep.choice([0.0])},
    num_segments=1,
    key=KEY,
    metric="loss",
    strategy="grid",
  )
  np.testing.assert_array_equal(
    jopt.get_hyperparams(
      jopt.set_hyperparams(tx.init(jnp.zeros(3)), **{"1/decay": 0.0})
    )["1/decay"],
    0.0,
  )
  assert np.isfinite(res.metrics["loss"]).all()


def test_nnx_recipe_writes_the_values_after_merge():
  # nnx.split keeps the optimizer state as NNX variables under its field
  # names, where the search does not look: the segment writes the trial's
  # values into the merged optimizer itself, as the docs say.
  from flax import nnx

  def make(lr=0.1, key=KEY):
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(key))
    return model, nnx.Optimizer(model, jopt.sgd(lr), wrt=nnx.Param)

  graphdef = nnx.graphdef(nnx.eval_shape(make))
  x = jnp.asarray([CURVATURE, TARGET])

  def init(hp, key):
    return nnx.state(make(hp["learning_rate"], key))

  def segment(state, hp):
    model, optimizer = nnx.merge(graphdef, state)
    optimizer.opt_state = jopt.set_hyperparams(
      optimizer.opt_state, learning_rate=hp["learning_rate"]
    )
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean(m(x) ** 2))(model)
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), {"loss": loss}

  res = sweep.pbt(
    init,
    segment,
    {"learning_rate": sweep.uniform(0.01, 0.2)},
    population=4,
    key=KEY,
    num_rounds=3,
    metric="loss",
    perturb=(0.5, 2.0),
    resample_prob=0.0,
  )
  stored = res.final_state[1]["opt_state"]["hyperparams"]["learning_rate"]
  np.testing.assert_array_equal(
    np.asarray(stored.get_value()), res.hparam_history["learning_rate"][-1]
  )
