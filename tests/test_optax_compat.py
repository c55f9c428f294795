"""Where jopt once parted from Optax on inputs Optax's own tests use.

One test per gap found by running Optax's unit tests against jopt
(benchmarks/optax_suite.py), plus the differences kept on purpose
(docs/optax_differences.md), each pinned here.
"""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt

# Optax is the reference, not under test: it runs with standard promotion.
standard_promotion = jax.numpy_dtype_promotion("standard")


def _python_number_state():
  """An Optax-style transformation whose state holds a Python int."""

  def init(params):
    del params
    return {"foo": 1}

  def update(updates, state, params=None):
    del params
    return updates, state

  return optax.GradientTransformation(init, update)


# --- 1. Non-array leaves in an inner state ----------------------------------


@pytest.mark.parametrize(
  "wrap",
  [
    lambda tx: jopt.apply_if_finite(tx, max_consecutive_errors=2),
    lambda tx: jopt.MultiSteps(tx, every_k_schedule=2),
    lambda tx: jopt.MultiSteps(
      tx, every_k_schedule=2, should_skip_update_fn=jopt.skip_not_finite
    ),
  ],
  ids=["apply_if_finite", "MultiSteps", "MultiSteps_skip"],
)
def test_wrappers_accept_python_numbers_in_the_inner_state(wrap):
  tx = wrap(_python_number_state())
  params = jnp.ones(2)
  state = tx.init(params)
  step = jax.jit(tx.update)
  outputs = []
  for grads in (jnp.full(2, 2.0), jnp.array([jnp.nan, 1.0]), jnp.ones(2)):
    updates, state = step(grads, state, params)
    outputs.append(updates)
  inner = (
    state.inner_state
    if hasattr(state, "inner_state")
    else (state.inner_opt_state)
  )
  assert int(inner["foo"]) == 1
  assert all(u.shape == (2,) for u in outputs)


# --- 2. Python-scalar and integer gradients, Python float params ---------


@pytest.mark.parametrize("name", ["adam", "rmsprop", "lion", "sgd", "adamw"])
def test_python_scalar_gradients_give_optax_updates(name):
  kwargs = {"momentum": 0.9} if name == "sgd" else {}
  params = {"a": 1, "b": 2}
  jtx = getattr(jopt, name)(0.1, **kwargs)
  updates, _ = jtx.update(params, jtx.init(params), params)
  with standard_promotion:
    otx = getattr(optax, name)(0.1, **kwargs)
    expected, _ = otx.update(params, otx.init(params), params)
  for key in params:
    assert jnp.issubdtype(updates[key].dtype, jnp.floating)
  # The same float32 operations as Optax (1 - b2 at full precision).
  chex.assert_trees_all_close(updates, expected, rtol=1e-6)


@pytest.mark.parametrize(
  "make",
  [
    lambda lib: lib.sgd(0.5),
    lambda lib: lib.scale(0.5),
  ],
  ids=["sgd", "scale"],
)
def test_integer_gradients_are_not_truncated(make):
  grads = jnp.array([1, -3], jnp.int32)
  tx = make(jopt)
  updates, _ = tx.update(grads, tx.init(grads))
  with standard_promotion:
    expected, _ = make(optax).update(grads, make(optax).init(grads))
  assert updates.dtype == jnp.float32
  chex.assert_trees_all_close(updates, expected)
  assert float(jnp.abs(updates).sum()) == 2.0


@pytest.mark.parametrize("name", ["adam", "lion", "sgd"])
def test_python_float_params(name):
  params = {"w": 1.5, "v": [2.0, -1.0]}
  tx = getattr(jopt, name)(0.1)
  state = tx.init(params)
  updates, _ = jax.jit(tx.update)(params, state, params)
  new = jopt.apply_updates(params, updates)
  with standard_promotion:
    otx = getattr(optax, name)(0.1)
    o_updates, _ = otx.update(params, otx.init(params), params)
    expected = optax.apply_updates(params, o_updates)
  chex.assert_trees_all_close(new, expected, rtol=1e-6)


# --- 3. A callable pytree as a mask -------------------------------------------


@dataclasses.dataclass
class _CallableModule:
  """A pytree that is also callable, as an Equinox module is."""

  w: object

  def __call__(self, x):
    return self.w * x


jax.tree_util.register_pytree_node(
  _CallableModule, lambda m: ((m.w,), None), lambda _, c: _CallableModule(*c)
)


@pytest.mark.parametrize("masked_in", [True, False])
def test_callable_pytree_is_a_mask_not_a_function(masked_in):
  module = _CallableModule(jnp.array([1.0, 2.0]))
  tx = jopt.masked(jopt.sgd(1.0), _CallableModule(masked_in))
  updates, _ = tx.update(module, tx.init(module))
  expected = -module.w if masked_in else module.w
  chex.assert_trees_all_close(updates.w, expected)
  # A function mask is still called.
  fn_tx = jopt.masked(jopt.sgd(1.0), lambda p: _CallableModule(masked_in))
  fn_updates, _ = fn_tx.update(module, fn_tx.init(module))
  chex.assert_trees_all_close(fn_updates.w, expected)


def test_weight_decay_accepts_a_callable_pytree_mask():
  module = _CallableModule(jnp.array([1.0, 2.0]))
  tx = jopt.add_decayed_weights(0.5, mask=_CallableModule(True))
  updates, _ = tx.update(module, tx.init(module), module)
  chex.assert_trees_all_close(updates.w, 1.5 * module.w)


# --- 4. optax.tree.map_params on masked / partition states ------------------


PARAMS = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}


@pytest.mark.parametrize(
  "tx",
  [
    jopt.masked(jopt.adam(0.1), {"w": True, "b": False}),
    jopt.masked(jopt.sgd(0.1, momentum=0.9), lambda p: {"w": True, "b": True}),
    jopt.partition(
      {"a": jopt.adam(0.1), "s": jopt.sgd(0.1, momentum=0.5)},
      {"w": "a", "b": "s"},
    ),
    jopt.partition(
      {"a": jopt.adam(0.1), "s": jopt.sgd(0.1, momentum=0.5)},
      lambda p: {"w": "a", "b": "s"},
    ),
  ],
  ids=["masked", "masked_fn", "partition", "partition_fn"],
)
def test_optax_map_params_reaches_masked_states(tx):
  state = tx.init(PARAMS)
  mapped = optax.tree.map_params(
    tx, lambda p: p + 1.0, state, transform_non_params=lambda x: x
  )
  # Every copy of the params in the state (moments, momentum) is shifted.
  before = jax.tree.leaves(state)
  after = jax.tree.leaves(mapped)
  shifted = [
    a
    for b, a in zip(before, after, strict=True)
    if a.shape in ((2, 3), (3,)) and not jnp.array_equal(a, b)
  ]
  moment_leaves = [b for b in before if b.shape in ((2, 3), (3,))]
  assert moment_leaves and len(shifted) == len(moment_leaves)


# --- 5. Step counts beyond int32 in schedules --------------------------------


def test_cosine_decay_takes_step_counts_beyond_int32():
  value = jopt.cosine_decay_schedule(1000.0, decay_steps=10**10)(10**9)
  expected = optax.cosine_decay_schedule(1000.0, decay_steps=10**10)(10**9)
  np.testing.assert_allclose(float(value), 975.528, rtol=1e-6)
  np.testing.assert_allclose(float(value), float(expected), rtol=1e-6)


# --- 6. None leaves -------------------------------------------------------------


def test_apply_updates_keeps_none_params():
  assert jopt.apply_updates(None, jnp.ones(3)) is None
  new = jopt.apply_updates(
    {"a": None, "b": jnp.ones(2)}, {"a": None, "b": jnp.ones(2)}
  )
  assert new["a"] is None
  chex.assert_trees_all_close(new["b"], 2 * jnp.ones(2))


def test_add_decayed_weights_passes_none_updates_through():
  params = (jnp.ones(2), {"a": jnp.ones(2)})
  tx = jopt.add_decayed_weights(0.1)
  state = tx.init(params)
  updates, new_state = tx.update(None, state, params)
  assert updates is None
  chex.assert_trees_all_equal(new_state, state)


# --- 7. Range checks: where jopt follows Optax and where it does not ---------


def test_trace_accepts_decay_one_as_a_running_sum():
  tx = jopt.trace(decay=1.0)
  state = tx.init(jnp.zeros(1))
  for _ in range(3):
    updates, state = tx.update(jnp.ones(1), state)
  chex.assert_trees_all_close(updates, jnp.array([3.0]))


def test_sgd_refuses_momentum_one():
  # Deliberate difference (docs/optax_differences.md): momentum 1 never
  # forgets a gradient; Optax accepts it.
  with pytest.raises(ValueError, match="momentum"):
    jopt.sgd(0.1, momentum=1.0)


@pytest.mark.parametrize(
  "make, name",
  [
    (
      lambda: jopt.polynomial_schedule(1.0, 0.0, 1, transition_steps=0),
      "transition_steps",
    ),
    (
      lambda: jopt.linear_schedule(1.0, 0.0, transition_steps=-1),
      "transition_steps",
    ),
    (
      lambda: jopt.exponential_decay(1.0, transition_steps=0, decay_rate=0.5),
      "transition_steps",
    ),
    (
      lambda: jopt.exponential_decay(1.0, transition_steps=10, decay_rate=0.0),
      "decay_rate",
    ),
  ],
)
def test_degenerate_schedules_raise_where_optax_falls_back(make, name):
  # Deliberate difference (docs/optax_differences.md): Optax logs a warning
  # and returns a constant schedule.
  with pytest.raises(ValueError, match=name):
    make()


# --- 8. Centered RMSprop with bias correction -------------------------------


def _centered_rmsprop_run(decay):
  params = jnp.array([0.3, -1.2, 2.0, 0.7, -0.1, 5.0, -3.3, 1e-3])
  grads = [jnp.sin(params * k) + params for k in (1.0, 2.0, 3.0)]
  tx = jopt.rmsprop(0.1, decay=decay, centered=True, bias_correction=True)
  state, out = tx.init(params), []
  for g in grads:
    updates, state = tx.update(g, state, params)
    out.append(updates)
  with standard_promotion:
    otx = optax.rmsprop(0.1, decay=0.9, centered=True, bias_correction=True)
    ostate, expected = otx.init(params), []
    for g in grads:
      updates, ostate = otx.update(g, ostate, params)
      expected.append(updates)
  return out, expected


def test_centered_rmsprop_with_bias_correction_matches_optax():
  # Unswept: the same float32 operations as Optax, hence its values.
  out, expected = _centered_rmsprop_run(0.9)
  chex.assert_trees_all_close(out, expected, rtol=1e-6)


def test_swept_centered_rmsprop_with_bias_correction_is_finite():
  # Swept (a float32 decay): after one gradient the bias-corrected variance
  # is 0 up to rounding, which could fall below 0 and give NaN; it is
  # clamped at 0, so the first step is g / sqrt(eps + rounding noise).
  out, expected = _centered_rmsprop_run(jnp.float32(0.9))
  chex.assert_tree_all_finite(out)
  # Later steps have a real variance: float32 rounding of the first step's
  # near-zero variance persists at ~1e-4 relative.
  chex.assert_trees_all_close(out[1:], expected[1:], rtol=1e-3)


# --- Structure: Optax's types, one meaning per constructor call -----------


def test_jopt_transformations_are_optax_transformations():
  for tx in (
    jopt.adam(0.1),
    jopt.chain(jopt.clip(1.0), jopt.sgd(0.1)),
    jopt.masked(jopt.sgd(0.1), {"w": True}),
  ):
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    assert isinstance(tx, optax.GradientTransformation)


def test_optax_chain_passes_extra_args_to_jopt_parts():
  tx = optax.chain(jopt.sgd(1.0), jopt.reduce_on_plateau(patience=1))
  params = jnp.zeros(1)
  state = tx.init(params)
  for _ in range(3):  # no improvement after the first value
    updates, state = tx.update(jnp.ones(1), state, params, value=1.0)
  chex.assert_trees_all_close(updates, jnp.array([-0.01]))


def _called_from_a_module_named_like_optax_inject():
  namespace = {"__name__": "optax.schedules._inject", "jopt": jopt}
  exec("def build():\n  return jopt.sgd(0.1)\n", namespace)  # noqa: S102
  return namespace["build"]()


def test_a_constructor_means_the_same_whoever_calls_it():
  direct = jopt.sgd(0.1).init(jnp.zeros(2))
  assert isinstance(direct, jopt.HyperparamsState)
  indirect = _called_from_a_module_named_like_optax_inject().init(jnp.zeros(2))
  chex.assert_trees_all_equal_structs(indirect, direct)
  # The plain form keeps no hyperparameters of its own.
  plain = jopt.sgd.plain(0.1).init(jnp.zeros(2))
  assert jopt.get_hyperparams(plain) == {}


def _adam_updates(b2):
  params = jnp.array([0.5, -1.5, 2.0])
  tx = jopt.adam(0.1, b2=b2)
  state = tx.init(params)
  for k in (1.0, 2.0, 3.0):
    updates, state = tx.update(jnp.sin(k * params), state, params)
  return updates


def test_swept_decay_keeps_float32_complement():
  values = np.array([0.99, 0.999, 0.9999], np.float32)
  swept = jax.vmap(_adam_updates)(jnp.asarray(values))
  # A Python float equal to each float32 value: the same bits.
  looped = jnp.stack([_adam_updates(float(v)) for v in values])
  chex.assert_trees_all_equal(swept, looped)
  # The Python float 0.999 itself is Optax's value, not float32's.
  assert not jnp.array_equal(_adam_updates(0.999), looped[1])


def test_states_hold_optax_node_types():
  assert jopt.EmptyState is optax.EmptyState
  assert jopt.MaskedNode is optax.MaskedNode
  tx = jopt.masked(jopt.sgd.plain(0.1, momentum=0.5), {"w": True, "b": False})
  state = tx.init(PARAMS)
  # Optax's own tree utilities recognise the masked-out leaves.
  mapped = optax.tree.map_params(
    tx,
    lambda p: None if isinstance(p, optax.MaskedNode) else p.shape,
    state,
    is_leaf=lambda v: isinstance(v, optax.MaskedNode),
    transform_non_params=lambda v: None,
  )
  assert mapped.inner_state[0].trace == {"w": (2, 3), "b": None}


def test_add_decayed_weights_takes_any_sign_as_in_optax():
  # Optax's fromage adds a negative decay; the optimizers still refuse one.
  tx = jopt.add_decayed_weights(-0.5)
  updates, _ = tx.update(jnp.zeros(2), tx.init(jnp.ones(2)), jnp.ones(2))
  chex.assert_trees_all_close(updates, -0.5 * jnp.ones(2))
  with pytest.raises(ValueError, match="weight_decay"):
    jopt.adamw(0.1, weight_decay=-0.5)


def _contrib_pairs():
  """The same contrib optimizer in jopt and in Optax."""
  plateau = dict(patience=2, cooldown=1, min_scale=0.01)
  return {
    "mechanize": (
      jopt.mechanize(optax.sgd(0.1), s_init=1e-8),
      optax.contrib.mechanize(optax.sgd(0.1), s_init=1e-8),
    ),
    "schedule_free": (
      jopt.schedule_free(optax.sgd(1.0), 1.0, state_dtype=jnp.bfloat16),
      optax.contrib.schedule_free(
        optax.sgd(1.0), 1.0, state_dtype=jnp.bfloat16
      ),
    ),
    "reduce_on_plateau": (
      jopt.reduce_on_plateau(**plateau),
      optax.contrib.reduce_on_plateau(**plateau),
    ),
  }


@pytest.mark.parametrize(
  "name", ["mechanize", "schedule_free", "reduce_on_plateau"]
)
def test_contrib_states_keep_optax_state_in_inner_state(name):
  # Optax's contrib tests read `state.m`, `state.z` or unpack
  # `scale, best_value, ... = state`; in jopt these are in `inner_state`.
  ours, theirs = _contrib_pairs()[name]
  params = jnp.array([1.0, -2.0])
  grads = jnp.array([0.5, 0.25])
  states = []
  for tx in (ours, theirs):
    with standard_promotion:
      state = tx.init(params)
      for _ in range(4):  # a plateau: the value never improves
        _, state = tx.update(grads, state, params, value=jnp.array(1.0))
    states.append(state)
  assert isinstance(states[0], jopt.HyperparamsState)
  assert type(states[0].inner_state).__name__ == type(states[1]).__name__
  chex.assert_trees_all_close(tuple(states[0].inner_state), tuple(states[1]))
  chex.assert_trees_all_equal_dtypes(
    tuple(states[0].inner_state), tuple(states[1])
  )
