"""The core protocol: construction inside jit, chain, apply_updates, errors."""

import chex
import jax
import jax.numpy as jnp
import pytest

import jopt


def test_constructors_with_concrete_values_work_inside_jit():
  # Regression: under jit, jnp.asarray of a constant is a tracer, so range
  # checks must read concrete values through numpy, not jnp.
  @jax.jit
  def step(lr, params):
    tx = jopt.chain(jopt.clip_by_global_norm(1.0), jopt.adam(lr, b1=0.8))
    updates, _ = tx.update(params, tx.init(params), params)
    return updates

  out = step(jnp.float32(0.1), jnp.ones(3))
  chex.assert_trees_all_close(out, -0.1 * jnp.ones(3), rtol=1e-5)


def test_concrete_bad_value_inside_jit_still_raises():
  @jax.jit
  def build(params):
    return jopt.adam(-1.0).init(params)

  with pytest.raises(ValueError, match="learning_rate"):
    build(jnp.ones(2))


def test_apply_updates_keeps_param_dtype_and_skips_none():
  params = {"a": jnp.ones(2, jnp.bfloat16), "b": jnp.ones(2)}
  updates = {"a": jnp.full(2, 0.5, jnp.bfloat16), "b": None}
  new = jopt.apply_updates(params, updates)
  assert new["a"].dtype == jnp.bfloat16
  chex.assert_trees_all_equal(new["b"], params["b"])


def test_chain_rejects_non_transformations_and_wrong_state():
  with pytest.raises(TypeError, match="argument 1"):
    jopt.chain(jopt.identity(), 0.1)
  tx = jopt.chain(jopt.identity(), jopt.scale(2.0))
  with pytest.raises(ValueError, match="init"):
    tx.update(jnp.ones(1), (), None)


def test_chain_passes_extra_args_to_parts_that_take_them():
  seen = {}

  def update(updates, state, params=None, **extra_args):
    seen.update(extra_args)
    return updates, state

  probe = jopt.GradientTransformation(lambda p: (), update)
  tx = jopt.chain(jopt.scale(1.0), probe)
  tx.update(jnp.ones(1), tx.init(jnp.ones(1)), value=3.0)
  assert seen == {"value": 3.0}


def test_scale_by_learning_rate_none_is_identity_as_in_optax():
  # Optax 0.2.8: `scale_by_learning_rate(learning_rate=None)` scales nothing.
  tx = jopt.scale_by_learning_rate()
  updates, state = tx.update(jnp.array([2.0, -3.0]), tx.init(jnp.zeros(2)))
  chex.assert_trees_all_equal(updates, jnp.array([2.0, -3.0]))
  assert jopt.get_hyperparams(state) == {}


@pytest.mark.parametrize("nesterov", [False, True])
def test_low_precision_momentum_sums_in_the_wider_dtype(nesterov):
  # A bf16 trace stores the momentum in bf16, but the step's own update is
  # summed in float32, as Optax does: 1.001 must not come out as 1.0.
  import optax

  params, grads = jnp.zeros(1), jnp.array([1.001])
  out = {}
  for lib in (jopt, optax):
    tx = lib.sgd(
      1.0, momentum=0.9, nesterov=nesterov, accumulator_dtype=jnp.bfloat16
    )
    state, steps = tx.init(params), []
    with jax.numpy_dtype_promotion("standard"):
      for _ in range(3):  # step 1 has a zero trace; 2 and 3 use it
        updates, state = tx.update(grads, state, params)
        steps.append(updates)
    assert any(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(state))
    out[lib.__name__] = steps
  # Same operations in the same dtypes as Optax (decay * trace in bf16, the
  # sum in float32): equal bits.
  chex.assert_trees_all_equal(out["jopt"], out["optax"])
  assert out["jopt"][0].dtype == jnp.float32
