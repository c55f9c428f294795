"""reduce_on_plateau and early_stopping: Optax, negative losses, jit, vmap."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt

# Plateaus of 8 steps with small noise: improvements, stalls and reductions.
_RNG = np.random.default_rng(0)
LOSSES = jnp.asarray(
  1.0 / (1 + np.arange(60) // 8) + 0.01 * _RNG.random(60), jnp.float32
)


def _trajectory(tx, losses, inner=lambda s: s):
  """Per-step update of a unit gradient (= the scale) and plateau state."""

  def body(state, loss):
    updates, state = tx.update(jnp.ones(1), state, value=loss)
    s = inner(state)
    return state, (updates[0], s.best_value, s.plateau_count, s.cooldown_count)

  run = jax.jit(lambda ls: jax.lax.scan(body, tx.init(jnp.zeros(1)), ls)[1])
  return jax.tree.map(np.asarray, run(losses))


@pytest.mark.parametrize(
  "kwargs",
  [
    dict(patience=3, factor=0.5),
    dict(patience=2, cooldown=3, factor=0.5, min_scale=0.05),
    dict(patience=2, accumulation_size=3, factor=0.3, rtol=0.0, atol=0.02),
  ],
)
def test_reduce_on_plateau_matches_optax_for_positive_losses(kwargs):
  ours = _trajectory(
    jopt.reduce_on_plateau(**kwargs), LOSSES, lambda s: s.inner_state
  )
  # Optax's implementation does not run under strict dtype promotion.
  with jax.numpy_dtype_promotion("standard"):
    reference = _trajectory(optax.contrib.reduce_on_plateau(**kwargs), LOSSES)
  # The same decisions, so the same float32 products: exactly equal.
  for a, b in zip(ours, reference, strict=True):
    np.testing.assert_array_equal(a, b)
  assert len(np.unique(ours[0])) >= 3  # At least two reductions happened.


def test_negative_losses_plateau_is_detected():
  # A constant negative loss is a plateau. Optax 0.2.8 counts every value as
  # an improvement here ((1 - rtol) * best > best for best < 0, optax#1767)
  # and never reduces.
  scales = _trajectory(
    jopt.reduce_on_plateau(patience=2, factor=0.5),
    jnp.full([7], -1.0),
    lambda s: s.inner_state,
  )[0]
  np.testing.assert_array_equal(scales, [1, 1, 0.5, 0.5, 0.25, 0.25, 0.125])


def test_negative_losses_relative_threshold():
  # best = -100 and rtol = 1e-2: an improvement must go below -101.
  tx = jopt.reduce_on_plateau(patience=5, rtol=1e-2)
  _, _, plateau, _ = _trajectory(
    tx, jnp.array([-100.0, -100.5, -101.5, -102.0]), lambda s: s.inner_state
  )
  np.testing.assert_array_equal(plateau, [0, 1, 0, 1])


def test_patience_cooldown_and_min_scale_closed_form():
  tx = jopt.reduce_on_plateau(factor=0.5, patience=2, cooldown=1, min_scale=0.2)
  scales, _, plateau, cooldown = _trajectory(
    tx, jnp.full([11], 1.0), lambda s: s.inner_state
  )
  # Step 1 sets the best; then every 3 steps: 2 stalls, a reduction and a
  # cooldown step; the third reduction is clipped at min_scale.
  np.testing.assert_allclose(
    scales, [1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.2, 0.2, 0.2], rtol=1e-7
  )
  np.testing.assert_array_equal(plateau, [0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1])
  np.testing.assert_array_equal(cooldown, [0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0])


def test_in_a_chain_with_sgd_and_hyperparameters_in_state():
  tx = jopt.chain(jopt.sgd(0.1), jopt.reduce_on_plateau(patience=1, factor=0.5))
  params = {"w": jnp.ones(2), "b": jnp.ones([], jnp.bfloat16)}
  state = tx.init(params)
  hp = jopt.get_hyperparams(state)
  assert {"learning_rate", "factor", "patience", "min_scale"} <= set(hp)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(params, state, loss):
    grads = jax.tree.map(jnp.ones_like, params)
    updates, state = tx.update(grads, state, params, value=loss)
    return jopt.apply_updates(params, updates), state

  params, state = step(params, state, 1.0)  # Best = 1.
  params, state = step(params, state, 1.0)  # Stall: scale 0.5.
  np.testing.assert_allclose(params["w"], [1 - 0.1 - 0.05] * 2, rtol=1e-6)
  assert params["b"].dtype == jnp.bfloat16
  # Changing a hyperparameter does not recompile (max_traces above).
  state = jopt.set_hyperparams(state, factor=0.1)
  params, state = step(params, state, 1.0)
  np.testing.assert_allclose(params["w"], [0.85 - 0.005] * 2, rtol=1e-6)


def test_factor_swept_under_vmap_equals_loop_and_closed_form():
  def scales(factor, losses):
    tx = jopt.reduce_on_plateau(factor=factor, patience=2)

    def body(state, loss):
      updates, state = tx.update(jnp.ones(1), state, value=loss)
      return state, updates[0]

    return jax.lax.scan(body, tx.init(jnp.zeros(1)), losses)[1]

  factors, losses = jnp.array([0.5, 0.1]), jnp.full([6], 2.0)
  swept = jax.jit(jax.vmap(scales, in_axes=(0, None)))(factors, losses)
  for k, f in enumerate([0.5, 0.1]):
    looped = scales(f, losses)
    # Products of the same float32 factors: equal to rounding.
    np.testing.assert_allclose(swept[k], looped, rtol=1e-7)
    np.testing.assert_allclose(looped, [1, 1, f, f, f * f, f * f], rtol=1e-6)


def test_missing_value_raises():
  tx = jopt.reduce_on_plateau()
  with pytest.raises(ValueError, match="value"):
    tx.update(jnp.ones(1), tx.init(jnp.zeros(1)))


@pytest.mark.parametrize(
  ("kwargs", "argument"),
  [
    (dict(factor=1.0), "factor"),
    (dict(factor=0.0), "factor"),
    (dict(patience=0), "patience"),
    (dict(patience=2.5), "patience"),
    (dict(rtol=-1e-3), "rtol"),
    (dict(rtol=1.5), "rtol"),
    (dict(atol=-1.0), "atol"),
    (dict(cooldown=-1), "cooldown"),
    (dict(accumulation_size=0), "accumulation_size"),
    (dict(min_scale=-0.1), "min_scale"),
  ],
)
def test_reduce_on_plateau_invalid_arguments(kwargs, argument):
  with pytest.raises(ValueError, match=argument):
    jopt.reduce_on_plateau(**kwargs)


# --- Early stopping ---------------------------------------------------------


def test_early_stopping_in_a_python_loop():
  stopper = jopt.early_stopping(patience=2, min_delta=0.05)
  state, stopped_at = stopper.init(), None
  # 1.97 is not 0.05 better than 2.0: a bad step.
  for step, loss in enumerate([3.0, 2.0, 1.97, 1.5, 1.6, 1.6, 0.1, 0.0]):
    state = stopper.update(state, loss)
    if stopped_at is None and state.stopped:
      stopped_at = step
  assert stopped_at == 5
  # Frozen after stopping: later improvements are ignored.
  assert float(state.best) == 1.5 and int(state.bad_steps) == 2


def test_early_stopping_max_mode_and_nan():
  stopper = jopt.early_stopping(patience=1, mode="max")
  state = stopper.update(stopper.init(), 0.5)
  assert not state.stopped and float(state.best) == 0.5
  state = stopper.update(state, jnp.nan)  # nan never improves.
  assert bool(state.stopped)


def test_early_stopping_under_vmap_trials_stop_on_their_own():
  losses = jnp.array(
    [
      [1.0, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99],
      [1.0, 0.9, 0.8, 0.7, 0.6, 0.7, 0.8],
    ]
  )
  patience = jnp.array([2, 1])

  @jax.jit
  def stop_steps(patience, losses):
    stopper = jopt.early_stopping(patience)

    def body(state, loss):
      state = stopper.update(state, loss)
      return state, state.stopped

    return jax.lax.scan(body, stopper.init(), losses)[1]

  stopped = jax.vmap(stop_steps)(patience, losses)
  first = [int(np.argmax(row)) for row in np.asarray(stopped)]
  assert first == [3, 5]  # Trial 0: 2 bad steps from step 2; trial 1: 1 bad.
  for k in range(2):  # vmap == loop.
    np.testing.assert_array_equal(
      stopped[k], stop_steps(patience[k], losses[k])
    )


@pytest.mark.parametrize(
  ("kwargs", "argument"),
  [
    (dict(patience=0), "patience"),
    (dict(patience=1.5), "patience"),
    (dict(patience=3, min_delta=-1.0), "min_delta"),
    (dict(patience=3, mode="avg"), "mode"),
  ],
)
def test_early_stopping_invalid_arguments(kwargs, argument):
  with pytest.raises(ValueError, match=argument):
    jopt.early_stopping(**kwargs)
