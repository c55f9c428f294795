"""Clipping, masking, partition, apply_if_finite and MultiSteps.

Optax is the reference: each jopt wrapper runs side by side with its Optax
namesake over several steps, with `jopt.sgd(0.1, momentum=0.9)` (and
`optax.sgd(0.1, momentum=0.9)`) inside.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt

# The jopt and Optax versions do the same float32 operations in the same
# order (up to XLA fusion), so they agree to float32 rounding over 6 steps.
RTOL = 1e-6
ATOL = 1e-6

LR, MOMENTUM = 0.1, 0.9
PARAMS = {
  "w": jnp.arange(6, dtype=jnp.float32).reshape(3, 2) / 6.0,
  "b": jnp.array([0.5, -0.5], jnp.float32),
}
MASK = {"w": True, "b": False}
LABELS = {"w": "fast", "b": "slow"}


def grads_sequence(num_steps, scale=2.0, seed=0):
  """Gradients large enough that clipping is active on most steps."""
  keys = jax.random.split(jax.random.key(seed), num_steps)
  return [
    jax.tree.map(
      lambda p, k=k: scale * jax.random.normal(k, p.shape, p.dtype), PARAMS
    )
    for k in keys
  ]


GRADS = grads_sequence(6)


def run(tx, grads=GRADS, params=PARAMS, jit=True):
  """Returns the params after each step and the final state.

  The step is jitted by default: eagerly, every `lax.cond` in a wrapper
  compiles anew at each step, which is what makes eager runs slow.
  """

  def step(params, state, g):
    updates, state = tx.update(g, state, params)
    return jopt.apply_updates(params, updates), state

  step = jax.jit(step) if jit else step
  state = tx.init(params)
  trajectory = []
  for g in grads:
    params, state = step(params, state, g)
    trajectory.append(params)
  return trajectory, state


def run_optax(tx, grads=GRADS, params=PARAMS):
  # Optax's own MultiSteps mixes int32 and float32 (its running-mean
  # divisor), which the strict promotion of this test suite refuses.
  with jax.numpy_dtype_promotion("standard"):
    return run(tx, grads, params)


def jopt_sgd():
  return jopt.sgd(LR, momentum=MOMENTUM)


def optax_sgd():
  return optax.sgd(LR, momentum=MOMENTUM)


CASES = {
  "clip": (
    lambda: jopt.chain(jopt.clip(0.5), jopt_sgd()),
    lambda: optax.chain(optax.clip(0.5), optax_sgd()),
  ),
  "clip_by_global_norm": (
    lambda: jopt.chain(jopt.clip_by_global_norm(1.0), jopt_sgd()),
    lambda: optax.chain(optax.clip_by_global_norm(1.0), optax_sgd()),
  ),
  "masked_tree": (
    lambda: jopt.masked(jopt_sgd(), MASK),
    lambda: optax.masked(optax_sgd(), MASK),
  ),
  "masked_callable": (
    lambda: jopt.masked(jopt_sgd(), lambda p: {"w": True, "b": False}),
    lambda: optax.masked(optax_sgd(), lambda p: {"w": True, "b": False}),
  ),
  "partition": (
    lambda: jopt.partition(
      {"fast": jopt_sgd(), "slow": jopt.sgd(0.01)}, LABELS
    ),
    lambda: optax.partition(
      {"fast": optax_sgd(), "slow": optax.sgd(0.01)}, LABELS
    ),
  ),
  "partition_callable": (
    lambda: jopt.partition(
      {"fast": jopt_sgd(), "slow": jopt.sgd(0.01)},
      lambda p: {k: "fast" if v.ndim == 2 else "slow" for k, v in p.items()},
    ),
    lambda: optax.partition(
      {"fast": optax_sgd(), "slow": optax.sgd(0.01)},
      lambda p: {k: "fast" if v.ndim == 2 else "slow" for k, v in p.items()},
    ),
  ),
  "apply_if_finite": (
    lambda: jopt.apply_if_finite(jopt_sgd(), max_consecutive_errors=2),
    lambda: optax.apply_if_finite(optax_sgd(), max_consecutive_errors=2),
  ),
  "multi_steps_constant": (
    lambda: jopt.MultiSteps(jopt_sgd(), 3),
    lambda: optax.MultiSteps(optax_sgd(), 3),
  ),
  "multi_steps_growing": (
    lambda: jopt.MultiSteps(jopt_sgd(), lambda j: 2**j),
    lambda: optax.MultiSteps(optax_sgd(), lambda j: 2**j),
  ),
  # Adam's eps and running moments exercise a stateful inner optimizer
  # whose hyperparameters are not all learning rates.
  "partition_adam": (
    lambda: jopt.partition(
      {"fast": jopt.adam(0.01), "slow": jopt_sgd()}, LABELS
    ),
    lambda: optax.partition(
      {"fast": optax.adam(0.01), "slow": optax_sgd()}, LABELS
    ),
  ),
  "multi_steps_adam": (
    lambda: jopt.MultiSteps(jopt.adam(0.01), 2),
    lambda: optax.MultiSteps(optax.adam(0.01), 2),
  ),
  "multi_steps_sum": (
    lambda: jopt.MultiSteps(jopt_sgd(), 2, use_grad_mean=False),
    lambda: optax.MultiSteps(optax_sgd(), 2, use_grad_mean=False),
  ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_optax(name):
  make_jopt, make_optax = CASES[name]
  ours, _ = run(make_jopt())
  theirs, _ = run_optax(make_optax())
  for step, (a, b) in enumerate(zip(ours, theirs, strict=True)):
    chex.assert_trees_all_close(a, b, rtol=RTOL, atol=ATOL, custom_message=step)
  # The test must be able to fail: the optimizer moved the params.
  assert not np.allclose(ours[-1]["w"], PARAMS["w"])


def test_masked_and_partition_accept_optax_inner():
  ours, _ = run(jopt.masked(optax_sgd(), MASK))
  theirs, _ = run_optax(optax.masked(optax_sgd(), MASK))
  chex.assert_trees_all_close(ours, theirs, rtol=RTOL, atol=ATOL)
  ours, _ = run(
    jopt.partition({"fast": optax_sgd(), "slow": jopt_sgd()}, LABELS)
  )
  theirs, _ = run_optax(
    optax.partition({"fast": optax_sgd(), "slow": optax_sgd()}, LABELS)
  )
  chex.assert_trees_all_close(ours, theirs, rtol=RTOL, atol=ATOL)


def test_masked_with_a_prefix_mask_matches_optax():
  params = {"enc": PARAMS, "dec": {"w": PARAMS["w"] + 1.0}}
  grads = [{"enc": g, "dec": {"w": -g["w"]}} for g in GRADS[:3]]
  mask = {"enc": True, "dec": False}  # A prefix of the params' structure.
  ours, _ = run(jopt.masked(jopt_sgd(), mask), grads, params)
  theirs, _ = run_optax(optax.masked(optax_sgd(), mask), grads, params)
  chex.assert_trees_all_close(ours, theirs, rtol=RTOL, atol=ATOL)
  # The masked-out subtree received the raw gradients.
  expected_dec = params["dec"]["w"] + sum(g["dec"]["w"] for g in grads)
  # Three float32 additions of the same values in the same order.
  np.testing.assert_allclose(ours[-1]["dec"]["w"], expected_dec, rtol=1e-6)


def test_masked_leaves_pass_through_unchanged():
  tx = jopt.masked(jopt_sgd(), MASK)
  state = tx.init(PARAMS)
  updates, state = tx.update(GRADS[0], state, PARAMS)
  # Exactly the input gradient, not a transformed one.
  np.testing.assert_array_equal(updates["b"], GRADS[0]["b"])
  # The inner state keeps nothing for the masked-out leaf.
  momentum = state.inner_state.inner_state[0].trace
  assert isinstance(momentum["b"], jopt.MaskedNode)
  chex.assert_shape(momentum["w"], (3, 2))


def test_clip_values_and_bf16():
  g = {"a": jnp.array([3.0, -0.5, -2.0], jnp.bfloat16)}
  out, _ = jopt.clip(1.0).update(g, jopt.clip(1.0).init(g))
  assert out["a"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(out["a"].astype(jnp.float32), [1.0, -0.5, -1.0])
  tx = jopt.clip_by_global_norm(1.0)
  g = {"a": jnp.array([3.0], jnp.bfloat16), "b": jnp.array([4.0], jnp.float32)}
  out, _ = tx.update(g, tx.init(g))
  assert out["a"].dtype == jnp.bfloat16 and out["b"].dtype == jnp.float32
  # 0.6 is not exact in bf16 (8 bits of mantissa): within 2^-8 relative.
  np.testing.assert_allclose(out["a"].astype(jnp.float32), [0.6], rtol=2**-8)
  np.testing.assert_allclose(out["b"], [0.8], rtol=1e-6)
  # Below the threshold, updates are returned as they are.
  small = {"a": jnp.array([0.3]), "b": jnp.array([0.4])}
  out, _ = tx.update(small, tx.init(small))
  chex.assert_trees_all_equal(out, small)


def test_multi_steps_growing_batch_matches_closed_form():
  """k = 1, 2, 4: the inner SGD sees the mean of each group of gradients."""
  grads = grads_sequence(1 + 2 + 4, seed=1)
  trajectory, state = run(jopt.MultiSteps(jopt_sgd(), lambda j: 2**j), grads)

  p = {k: np.asarray(v, np.float64) for k, v in PARAMS.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  expected, start = [], 0
  for k in (1, 2, 4):
    group = grads[start : start + k]
    start += k
    for key in p:
      mean = np.mean([np.asarray(g[key], np.float64) for g in group], axis=0)
      m[key] = MOMENTUM * m[key] + mean
      p[key] = p[key] - LR * m[key]
    expected.append({key: v.copy() for key, v in p.items()})
  # Group ends are after minibatches 1, 3 and 7; between them, zero updates
  # leave the params where the last group end put them.
  ends = [0, 2, 6]
  for i, e in zip(ends, expected, strict=True):
    # float32 running means vs a float64 reference.
    chex.assert_trees_all_close(trajectory[i], e, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_equal(trajectory[3], trajectory[2])
  chex.assert_trees_all_equal(trajectory[5], trajectory[2])
  assert int(state.gradient_step) == 3 and int(state.mini_step) == 0


def test_multi_steps_has_updated_and_gradient_transformation():
  ms = jopt.MultiSteps(jopt_sgd(), 2)
  tx = ms.gradient_transformation()
  assert isinstance(tx, jopt.GradientTransformation)
  update = jax.jit(tx.update)
  state = tx.init(PARAMS)
  flags = []
  for g in GRADS[:4]:
    updates, state = update(g, state, PARAMS)
    flags.append(bool(ms.has_updated(state)))
  assert flags == [False, True, False, True]


def test_multi_steps_skip_not_finite_matches_optax():
  grads = list(GRADS)
  grads[2] = {"w": grads[2]["w"].at[0, 0].set(jnp.inf), "b": grads[2]["b"]}
  ours, state = run(
    jopt.MultiSteps(jopt_sgd(), 2, should_skip_update_fn=jopt.skip_not_finite),
    grads,
  )
  theirs, _ = run_optax(
    optax.MultiSteps(
      optax_sgd(), 2, should_skip_update_fn=optax.skip_not_finite
    ),
    grads,
  )
  chex.assert_trees_all_close(ours, theirs, rtol=RTOL, atol=ATOL)
  chex.assert_tree_all_finite(ours)
  # 6 minibatches, one skipped: 2 full groups and one pending minibatch.
  assert int(state.gradient_step) == 2 and int(state.mini_step) == 1


def test_apply_if_finite_matches_optax_across_nan_steps():
  grads = list(GRADS)
  for i in (1, 2):  # Two in a row: both skipped with max_consecutive_errors=2.
    grads[i] = jax.tree.map(lambda g: g.at[0].set(jnp.nan), grads[i])
  ours, state = run(jopt.apply_if_finite(jopt_sgd(), 2), grads)
  theirs, _ = run_optax(optax.apply_if_finite(optax_sgd(), 2), grads)
  chex.assert_tree_all_finite(ours)
  chex.assert_trees_all_close(ours, theirs, rtol=RTOL, atol=ATOL)
  assert int(state.total_notfinite) == 2


def test_apply_if_finite_skips_nan_then_gives_up():
  tx = jopt.apply_if_finite(jopt_sgd(), max_consecutive_errors=1)
  state = tx.init(PARAMS)
  _, state = tx.update(GRADS[0], state, PARAMS)
  momentum = state.inner_state.inner_state[0].trace
  nan_grads = jax.tree.map(lambda g: g.at[0].set(jnp.nan), GRADS[1])

  updates, state = tx.update(nan_grads, state, PARAMS)
  chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, PARAMS))
  chex.assert_trees_all_equal(state.inner_state.inner_state[0].trace, momentum)
  assert not bool(state.last_finite)
  assert int(state.notfinite_count) == 1 and int(state.total_notfinite) == 1

  # The second NaN in a row exceeds max_consecutive_errors=1: it goes through.
  updates, state = tx.update(nan_grads, state, PARAMS)
  assert np.isnan(np.asarray(updates["w"])).any()
  assert int(state.notfinite_count) == 2 and int(state.total_notfinite) == 2

  _, state = tx.update(GRADS[2], state, PARAMS)
  assert bool(state.last_finite)
  assert int(state.notfinite_count) == 0 and int(state.total_notfinite) == 2


def test_hyperparams_found_and_set_through_wrappers():
  cases = {
    "masked": jopt.masked(jopt_sgd(), MASK),
    "apply_if_finite": jopt.apply_if_finite(jopt_sgd(), 3),
    "multi_steps": jopt.MultiSteps(jopt_sgd(), 1).gradient_transformation(),
  }
  for name, tx in cases.items():
    state = tx.init(PARAMS)
    hp = jopt.get_hyperparams(state)
    assert sorted(hp) == ["learning_rate", "momentum"], name
    np.testing.assert_allclose(hp["learning_rate"], LR)
    # learning_rate 0: the update of every transformed leaf is zero.
    state = jopt.set_hyperparams(state, learning_rate=0.0)
    updates, state = tx.update(GRADS[0], state, PARAMS)
    np.testing.assert_array_equal(updates["w"], np.zeros((3, 2)), err_msg=name)
    assert float(jopt.get_hyperparams(state)["learning_rate"]) == 0.0


def test_partition_hyperparams_are_qualified_by_label():
  tx = jopt.partition(
    {"fast": jopt_sgd(), "slow": jopt.chain(jopt.clip(0.1), jopt.sgd(0.01))},
    LABELS,
  )
  state = tx.init(PARAMS)
  hp = jopt.get_hyperparams(state)
  assert sorted(hp) == [
    "fast/learning_rate",
    "max_delta",
    "momentum",
    "slow/1/learning_rate",
  ]
  with pytest.raises(ValueError, match="fast/learning_rate"):
    jopt.set_hyperparams(state, learning_rate=0.0)
  state = jopt.set_hyperparams(state, **{"slow/1/learning_rate": 0.0})
  updates, _ = tx.update(GRADS[0], state, PARAMS)
  np.testing.assert_array_equal(updates["b"], np.zeros(2))
  np.testing.assert_allclose(updates["w"], -LR * GRADS[0]["w"], rtol=1e-6)


def test_clip_thresholds_are_sweepable():
  tx = jopt.chain(jopt.clip(0.5), jopt.clip_by_global_norm(2.0))
  state = tx.init(PARAMS)
  hp = jopt.get_hyperparams(state)
  assert sorted(hp) == ["max_delta", "max_norm"]
  state = jopt.set_hyperparams(state, max_delta=0.25)
  updates, _ = tx.update(GRADS[0], state, PARAMS)
  assert float(jnp.max(jnp.abs(updates["w"]))) <= 0.25


def test_vmap_over_apply_if_finite_matches_loop():
  """A vmapped lax.cond is a select: each member still skips its own NaN."""
  lrs = jnp.array([0.01, 0.1, 1.0])
  grads = [GRADS[0], jax.tree.map(lambda g: g * jnp.nan, GRADS[1]), GRADS[2]]

  def train(lr):
    tx = jopt.apply_if_finite(jopt.sgd(lr, momentum=MOMENTUM), 2)
    return run(tx, grads)[0][-1]

  swept = jax.vmap(train)(lrs)
  for i, lr in enumerate(lrs.tolist()):
    looped = train(lr)
    # Same operations, batched: float32 rounding only.
    chex.assert_trees_all_close(
      jax.tree.map(lambda x, i=i: x[i], swept), looped, rtol=RTOL, atol=ATOL
    )


def test_multi_steps_jit_equals_no_jit_without_retracing():
  ms = jopt.MultiSteps(jopt_sgd(), lambda j: 2**j)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(params, state, g):
    updates, state = ms.update(g, state, params)
    return jopt.apply_updates(params, updates), state

  params, state = PARAMS, ms.init(PARAMS)
  jitted = []
  for g in GRADS:
    params, state = step(params, state, g)
    jitted.append(params)
  eager, _ = run(ms, jit=False)
  # XLA may fuse the jitted arithmetic differently: float32 rounding.
  chex.assert_trees_all_close(jitted, eager, rtol=RTOL, atol=ATOL)


def test_multi_steps_keeps_bf16():
  params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), PARAMS)
  grads = [jax.tree.map(lambda g: g.astype(jnp.bfloat16), g) for g in GRADS[:2]]
  trajectory, state = run(jopt.MultiSteps(jopt_sgd(), 2), grads, params)
  assert trajectory[-1]["w"].dtype == jnp.bfloat16
  assert state.acc_grads["w"].dtype == jnp.float32


@pytest.mark.parametrize(
  "build, match",
  [
    (lambda: jopt.clip(-1.0), "max_delta"),
    (lambda: jopt.clip_by_global_norm(0.0), "max_norm"),
    (lambda: jopt.clip_by_global_norm(-1.0), "max_norm"),
    (lambda: jopt.apply_if_finite(jopt_sgd(), -1), "max_consecutive_errors"),
    (lambda: jopt.MultiSteps(jopt_sgd(), 0), "every_k_schedule"),
    (
      lambda: jopt.partition({"fast": jopt_sgd()}, LABELS).init(PARAMS),
      "'slow'",
    ),
  ],
)
def test_bad_values_raise(build, match):
  with pytest.raises(ValueError, match=match):
    build()


def test_bad_types_raise():
  with pytest.raises(TypeError, match="not a gradient transformation"):
    jopt.masked(0.1, MASK)
  with pytest.raises(TypeError, match="max_consecutive_errors"):
    jopt.apply_if_finite(jopt_sgd(), 2.5)
  with pytest.raises(TypeError, match="every_k_schedule"):
    jopt.MultiSteps(jopt_sgd(), 2.0)


def test_clip_zero_max_delta_is_allowed():
  tx = jopt.clip(0.0)
  out, _ = tx.update(GRADS[0], tx.init(PARAMS))
  chex.assert_trees_all_equal(out, jax.tree.map(jnp.zeros_like, PARAMS))


def test_multi_steps_object_inside_chain_gets_extra_args():
  # `MultiSteps` is a class, not a GradientTransformation; chain must still
  # hand it `value=` for the reduce_on_plateau inside.
  params = jnp.ones(2)
  inner = jopt.chain(jopt.sgd(0.1), jopt.reduce_on_plateau(patience=1))
  tx = jopt.chain(jopt.MultiSteps(inner, 1), jopt.identity())
  updates, _ = tx.update(jnp.ones(2), tx.init(params), params, value=1.0)
  chex.assert_trees_all_close(updates, jnp.full(2, -0.1))


def test_numpy_integer_counts_are_accepted():
  # Counts read from a numpy or pandas table are numpy ints.
  params = jnp.ones(2)
  for tx in (
    jopt.MultiSteps(jopt.sgd(0.1), np.int64(2)),
    jopt.apply_if_finite(jopt.sgd(0.1), np.int64(2)),
  ):
    updates, _ = tx.update(jnp.ones(2), tx.init(params), params)
    chex.assert_shape(updates, (2,))
