"""`get_hyperparams` / `set_hyperparams`: names, dtypes, batching, numerics."""

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

import jopt
from jopt import _hyperparams, _validation

PARAMS = {
  "w": jnp.array([[1.0, -2.0], [0.5, 3.0]]),
  "b": jnp.array([0.1, -0.2]),
}


def _grads(params):
  return jax.tree.map(lambda p: 2.0 * p + 0.1, params)


def _run(tx, state, params, steps=5):
  for _ in range(steps):
    updates, state = tx.update(_grads(params), state, params)
    params = jopt.apply_updates(params, updates)
  return params, state


_run_jit = jax.jit(_run, static_argnums=(0, 3))


# --- Names ----------------------------------------------------------------------


def test_unique_names_are_bare():
  state = jopt.adam(1e-3).init(PARAMS)
  assert sorted(jopt.get_hyperparams(state)) == [
    "b1",
    "b2",
    "eps",
    "eps_root",
    "learning_rate",
  ]


def test_shared_names_are_qualified_by_chain_position():
  tx = jopt.chain(jopt.trace(0.9), jopt.trace(0.5))
  state = tx.init(PARAMS)
  hp = jopt.get_hyperparams(state)
  assert sorted(hp) == ["0/decay", "1/decay"]
  assert float(hp["0/decay"]) == pytest.approx(0.9)
  assert float(hp["1/decay"]) == pytest.approx(0.5)

  state = jopt.set_hyperparams(state, **{"1/decay": 0.25})
  hp = jopt.get_hyperparams(state)
  assert float(hp["0/decay"]) == pytest.approx(0.9)
  assert float(hp["1/decay"]) == 0.25


def test_qualified_name_accepted_for_a_unique_name():
  tx = jopt.chain(jopt.clip_by_global_norm(1.0), jopt.sgd(0.1))
  state = tx.init(PARAMS)
  assert "learning_rate" in jopt.get_hyperparams(state)
  state = jopt.set_hyperparams(state, **{"1/learning_rate": 0.5})
  assert float(jopt.get_hyperparams(state)["learning_rate"]) == 0.5


def test_ambiguous_bare_name_raises_listing_the_options():
  state = jopt.chain(jopt.trace(0.9), jopt.trace(0.5)).init(PARAMS)
  with pytest.raises(ValueError, match=r"0/decay.*1/decay"):
    jopt.set_hyperparams(state, decay=0.1)


def test_unknown_name_raises_listing_the_available_ones():
  state = jopt.sgd(0.1).init(PARAMS)
  with pytest.raises(ValueError, match=r"'lr'.*learning_rate"):
    jopt.set_hyperparams(state, lr=0.1)


def test_schedules_are_not_hyperparameters():
  state = jopt.sgd(lambda count: 0.1, momentum=0.9).init(PARAMS)
  assert sorted(jopt.get_hyperparams(state)) == ["momentum"]


# --- Dtypes ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_stored_as_float32_whatever_the_params_dtype(dtype):
  params = jax.tree.map(lambda p: p.astype(dtype), PARAMS)
  state = jopt.adamw(1e-3).init(params)
  hp = jopt.get_hyperparams(state)
  assert {v.dtype for v in hp.values()} == {jnp.dtype(jnp.float32)}
  # A set value keeps the stored dtype, whatever it was given as.
  state = jopt.set_hyperparams(state, learning_rate=1, b1=jnp.bfloat16(0.5))
  hp = jopt.get_hyperparams(state)
  assert hp["learning_rate"].dtype == hp["b1"].dtype == jnp.float32


def test_stored_as_float32_under_x64():
  with jax.enable_x64(True):
    params = jnp.zeros(3, jnp.float64)
    state = jopt.sgd(0.1, momentum=0.9).init(params)
    state = jopt.set_hyperparams(state, learning_rate=jnp.float64(0.2))
    for value in jopt.get_hyperparams(state).values():
      assert value.dtype == jnp.float32


# --- Batched (vmapped) states -----------------------------------------------------


def test_scalar_broadcasts_over_a_batched_state():
  lrs = jnp.array([0.1, 0.2, 0.3])
  states = jax.vmap(lambda lr: jopt.adam(lr).init(PARAMS))(lrs)
  chex.assert_shape(jopt.get_hyperparams(states)["learning_rate"], (3,))
  states = jopt.set_hyperparams(states, b1=0.5)
  hp = jopt.get_hyperparams(states)
  chex.assert_trees_all_equal(hp["b1"], jnp.full((3,), 0.5, jnp.float32))
  chex.assert_trees_all_equal(hp["learning_rate"], lrs)

  # The batched state runs under vmap, each member with its values.
  def run(state):
    return _run(jopt.adam(1.0), state, PARAMS)

  final, _ = jax.jit(jax.vmap(run))(states)
  run = jax.jit(run)  # One compile shared by the members.
  for i, lr in enumerate(lrs):
    one, _ = run(jopt.adam(lr, b1=0.5).init(PARAMS))
    # One compiled program against another: float32 fusion ulps only.
    chex.assert_trees_all_close(
      jax.tree.map(lambda x, i=i: x[i], final), one, rtol=1e-6, atol=1e-7
    )


# --- Numerics ----------------------------------------------------------------------


@pytest.mark.parametrize(
  "factory, values",
  [
    (jopt.adam, dict(learning_rate=3e-3, b1=0.8, b2=0.99, eps=1e-6)),
    (jopt.sgd, dict(learning_rate=0.05, momentum=0.5)),
    (jopt.rmsprop, dict(learning_rate=1e-2, decay=0.8)),
  ],
)
def test_set_equals_built_bit_for_bit(factory, values):
  built = factory(**values)
  other = factory(**{k: 0.3 * v for k, v in values.items()})
  state = jopt.set_hyperparams(other.init(PARAMS), **values)
  # The same compiled program (same tx object, same state structure).
  expected, _ = _run_jit(built, built.init(PARAMS), PARAMS, 5)
  got, _ = _run_jit(built, state, PARAMS, 5)
  chex.assert_trees_all_equal(got, expected)
  # And through `other`'s own update: the values come from the state.
  got_other, _ = _run_jit(other, state, PARAMS, 5)
  chex.assert_trees_all_equal(got_other, expected)


def test_set_inside_jit_with_a_traced_value():
  tx = jopt.sgd(0.1)

  @jax.jit
  def step(lr):
    state = jopt.set_hyperparams(tx.init(PARAMS), learning_rate=lr)
    return _run(tx, state, PARAMS, steps=1)[0]

  chex.assert_trees_all_close(
    step(0.2), _run(jopt.sgd(0.2), jopt.sgd(0.2).init(PARAMS), PARAMS, 1)[0]
  )


# --- Optax's inject_hyperparams ----------------------------------------------------


def test_finds_optax_inject_hyperparams_state():
  otx = optax.inject_hyperparams(optax.adam)(learning_rate=0.1)
  state = otx.init(PARAMS)
  hp = jopt.get_hyperparams(state)
  assert {"learning_rate", "b1", "b2"} <= set(hp)
  state = jopt.set_hyperparams(state, learning_rate=0.0)
  # Optax reads the value from its state: a zero learning rate, no update.
  with jax.numpy_dtype_promotion("standard"):
    updates, _ = otx.update(_grads(PARAMS), state, PARAMS)
  chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, PARAMS))


def test_optax_and_jopt_learning_rates_in_one_chain_are_qualified():
  tx = jopt.chain(
    optax.inject_hyperparams(optax.scale_by_learning_rate)(learning_rate=0.1),
    jopt.sgd(0.2),
  )
  hp = jopt.get_hyperparams(tx.init(PARAMS))
  assert {"0/learning_rate", "1/learning_rate"} <= set(hp)


# --- Declaring a constructor's hyperparameters -------------------------------


@_hyperparams.sweepable("factor")
def _scaled(factor):
  """A constructor declared the way code outside the core may declare it:
  the name positionally, the range checked in its body."""
  _validation.check_range("factor", factor, low=0.0)
  return jopt.scale.plain(factor)


@_hyperparams.sweepable(
  factor=_validation.NON_NEGATIVE, decay=_validation.DECAY
)
def _declared(factor, decay=0.5):
  del decay
  return jopt.scale.plain(factor)


@pytest.mark.parametrize("constructor", [_scaled, _declared])
def test_declared_hyperparameters_live_in_the_state(constructor):
  with pytest.raises(ValueError, match="factor"):
    constructor(-1.0)
  tx = constructor(2.0)
  state = jopt.set_hyperparams(tx.init(jnp.ones(2)), factor=3.0)
  chex.assert_trees_all_close(tx.update(jnp.ones(2), state)[0], 3 * jnp.ones(2))
  # The plain form: the body alone, no state of its own.
  plain = constructor.plain(2.0)
  assert plain.init(jnp.ones(2)) == jopt.EmptyState()


@_hyperparams.sweepable(factor=_validation.NON_NEGATIVE)
def _built_with_a_public_part(factor):
  # The mistake: the public `scale` nests its own state, frozen at `factor`.
  return jopt.chain(jopt.scale(factor), jopt.identity())


@pytest.mark.parametrize(
  "call",
  [
    lambda: _built_with_a_public_part(2.0),
    lambda: _built_with_a_public_part.plain(2.0),
    lambda: optax.inject_hyperparams(_built_with_a_public_part.plain)(2.0),
  ],
  ids=["public", "plain", "optax_inject"],
)
def test_public_constructor_inside_a_body_names_it_and_plain(call):
  with pytest.raises(
    RuntimeError,
    match=r"`scale`.*`_built_with_a_public_part`"
    r".*`scale\.plain\(\.\.\.\)`",
  ) as error:
    call().init(jnp.ones(2))
  assert "set_hyperparams" in str(error.value)
  # The refusal does not outlive the call: top-level constructions work.
  state = jopt.scale(2.0).init(jnp.ones(2))
  assert jopt.get_hyperparams(state) == {"step_size": 2.0}


def test_declared_decay_keeps_its_complement():
  state = _declared(1.0, decay=0.999).init(jnp.ones(1))
  assert set(jopt.get_hyperparams(state)) == {"factor", "decay"}
  assert float(state.complements["decay"]) == float(jnp.float32(1 - 0.999))
  state = jopt.set_hyperparams(state, decay=0.9)
  assert float(state.complements["decay"]) == float(jnp.float32(1 - 0.9))
  with pytest.raises(ValueError, match="decay"):
    _declared(1.0, decay=1.0)


# --- Issue 19: shapes, init-only arguments, complex values ---------------------


def test_a_value_never_adds_a_batch_axis():
  state = jopt.sgd(0.1).init(PARAMS)
  with pytest.raises(
    ValueError,
    match=r"'learning_rate'.*shape \[3\].*"
    r"shape \[\]",
  ):
    jopt.set_hyperparams(state, learning_rate=jnp.array([0.1, 0.2, 0.3]))
  # A batched state (one value per trial, from vmap) takes a value per
  # trial or one for all; another number of trials is refused.
  batched = jax.vmap(lambda lr: jopt.sgd(lr).init(PARAMS))(
    jnp.array([0.1, 0.2, 0.3])
  )
  new = jopt.set_hyperparams(batched, learning_rate=jnp.array([1.0, 2.0, 3.0]))
  chex.assert_trees_all_close(
    jopt.get_hyperparams(new)["learning_rate"], jnp.array([1.0, 2.0, 3.0])
  )
  new = jopt.set_hyperparams(batched, learning_rate=0.5)
  chex.assert_shape(jopt.get_hyperparams(new)["learning_rate"], (3,))
  with pytest.raises(ValueError, match="'learning_rate'"):
    jopt.set_hyperparams(batched, learning_rate=jnp.ones(2))


INIT_ONLY = [
  (
    lambda v: jopt.scale_by_rss(initial_accumulator_value=v),
    "initial_accumulator_value",
    "scale_by_rss",
  ),
  (
    lambda v: jopt.adagrad(0.1, initial_accumulator_value=v),
    "initial_accumulator_value",
    "adagrad",
  ),
  (
    lambda v: jopt.scale_by_rms(initial_scale=v),
    "initial_scale",
    "scale_by_rms",
  ),
  (lambda v: jopt.rmsprop(0.1, initial_scale=v), "initial_scale", "rmsprop"),
]


@pytest.mark.parametrize(
  "make, name, constructor", INIT_ONLY, ids=[c for _, _, c in INIT_ONLY]
)
def test_init_only_arguments_are_not_settable(make, name, constructor):
  # Read only by `init`: a value set in the state later would change
  # nothing, so it is not there, and a write names the constructor.
  tx = make(0.5)
  state = tx.init(PARAMS)
  assert name not in jopt.get_hyperparams(state)
  with pytest.raises(ValueError, match=rf"{name}.*`{constructor}`.*init"):
    jopt.set_hyperparams(state, **{name: 1.0})
  # The constructor's value still starts the state, a traced one too.
  expected, _ = _run(tx, state, PARAMS)

  @jax.jit
  def traced(value):
    tx = make(value)
    return _run(tx, tx.init(PARAMS), PARAMS)[0]

  chex.assert_trees_all_close(traced(0.5), expected, rtol=1e-6)
  assert not jnp.allclose(traced(2.0)["w"], expected["w"])


@pytest.mark.parametrize(
  "build",
  [
    lambda: jopt.sgd(0.1 + 0.2j),
    lambda: jopt.adam(jnp.asarray(1e-3 + 1e-4j)),
    lambda: jopt.scale(1j),
    lambda: jopt.schedule_free_sgd(0.1 + 1j),
    lambda: jopt.prodigy(1.0 + 1j),
  ],
  ids=["sgd", "adam_array", "scale", "schedule_free_sgd", "prodigy"],
)
def test_a_complex_hyperparameter_is_refused(build):
  with pytest.raises(
    ValueError,
    match=r"`(learning_rate|step_size)` must "
    r"be real",
  ):
    build()


def test_set_hyperparams_refuses_a_complex_value():
  state = jopt.sgd(0.1).init(PARAMS)
  with pytest.raises(ValueError, match="`learning_rate` must be real"):
    jopt.set_hyperparams(state, learning_rate=0.1 + 0.1j)
  with pytest.raises(ValueError, match="`learning_rate` must be real"):
    jax.jit(lambda v: jopt.sgd(v).init(PARAMS))(jnp.asarray(0.1 + 0.1j))
