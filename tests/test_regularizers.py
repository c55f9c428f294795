"""The regularizers: `add_decayed_weights` against Optax (masks, schedules)
and NEW `add_l1` against its closed form."""

import chex
import jax
import jax.numpy as jnp
import optax
import pytest
from _helpers import NESTED_PARAMS, gradient_sequence, run_updates

import jopt


def test_add_l1_closed_form():
  params = {"a": jnp.array([2.0, 0.0, -0.5]), "b": jnp.array(-3.0)}
  grads = {"a": jnp.array([0.1, 0.2, 0.3]), "b": jnp.array(1.0)}
  tx = jopt.chain(jopt.add_l1(0.25), jopt.sgd(0.5))
  updates, _ = tx.update(grads, tx.init(params), params)
  # -lr * (g + l1 * sign(p)); sign(0) = 0, so a zero weight only sees g.
  expected = {
    "a": jnp.array([-0.5 * (0.1 + 0.25), -0.5 * 0.2, -0.5 * (0.3 - 0.25)]),
    "b": jnp.array(-0.5 * (1.0 - 0.25)),
  }
  chex.assert_trees_all_close(updates, expected, rtol=1e-6)


def test_add_l1_mask_and_schedule():
  params = {"a": jnp.array([2.0, -1.0]), "b": jnp.array([-3.0])}
  zeros = jax.tree.map(jnp.zeros_like, params)
  tx = jopt.add_l1(
    lambda count: 0.1 * (count.astype(jnp.float32) + 1),
    mask={"a": True, "b": False},
  )
  state = tx.init(params)
  for step in range(3):
    updates, state = tx.update(zeros, state, params)
    chex.assert_trees_all_close(
      updates,
      {"a": 0.1 * (step + 1) * jnp.array([1.0, -1.0]), "b": zeros["b"]},
      rtol=1e-6,
    )


MASKS = {
  "tree": {"w": True, "inner": {"b": False, "s": True}},
  "prefix": {"w": False, "inner": True},
  "callable": lambda tree: jax.tree.map(lambda x: jnp.ndim(x) != 1, tree),
  "none": None,
}


@pytest.mark.parametrize("mask", sorted(MASKS))
def test_add_decayed_weights_mask_matches_optax(mask):
  grads = gradient_sequence(2, NESTED_PARAMS)
  ours, _ = run_updates(jopt.add_decayed_weights(0.3, MASKS[mask]), grads)
  theirs, _ = run_updates(
    optax.add_decayed_weights(0.3, MASKS[mask]), grads, standard=True
  )
  chex.assert_trees_all_close(ours, theirs, rtol=1e-6)
  if mask == "tree":  # A masked-out leaf passes through unchanged.
    chex.assert_trees_all_equal(ours[0]["inner"]["b"], grads[0]["inner"]["b"])


def test_add_decayed_weights_schedule_matches_optax():
  schedule = optax.linear_schedule(0.5, 0.0, 4)
  grads = gradient_sequence(5, NESTED_PARAMS)
  ours, _ = run_updates(jopt.add_decayed_weights(schedule), grads)
  theirs, _ = run_updates(
    optax.add_decayed_weights(schedule), grads, standard=True
  )
  chex.assert_trees_all_close(ours, theirs, rtol=1e-6)


@pytest.mark.parametrize("factory", [jopt.add_decayed_weights, jopt.add_l1])
def test_regularizers_need_params(factory):
  tx = factory(0.1)
  with pytest.raises(ValueError, match="params"):
    tx.update(NESTED_PARAMS, tx.init(NESTED_PARAMS))
