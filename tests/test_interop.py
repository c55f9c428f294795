"""jopt with Optax and Flax: mixed chains, nnx.Optimizer, linen TrainState."""

import functools

import chex
import jax
import jax.numpy as jnp
import optax
import pytest
from flax import linen, nnx
from flax.training import train_state

import jopt

PARAMS = {
  "w": jnp.array([[0.5, -1.0], [2.0, 0.3]]),
  "b": jnp.array([0.1, -0.4]),
}
STEPS = 4
# Optax code is the reference here, not under test: it runs with standard
# dtype promotion wherever it takes part.
standard_promotion = jax.numpy_dtype_promotion("standard")


def _grads(params):
  return jax.tree.map(lambda p: jnp.sin(3.0 * p) + p, params)


@functools.partial(jax.jit, static_argnums=0)
def _run(tx, params):
  state = tx.init(params)
  for _ in range(STEPS):
    updates, state = tx.update(_grads(params), state, params)
    params = optax.apply_updates(params, updates)
  return params


# Same algorithm, separately compiled: float32 ulps over a few steps, plus
# jopt's float32 storage of b2: 1 - float32(0.999) differs from Optax's
# float32(1 - 0.999) by 1.3e-5 relative, ~7e-6 relative in each Adam update
# (see tests/test_optimizers.py, which also compares with equal values).
TOL = dict(rtol=2e-5, atol=1e-5)


def test_jopt_inside_optax_chain():
  with standard_promotion:
    mixed = _run(
      optax.chain(
        jopt.clip_by_global_norm(0.5), optax.scale_by_adam(), jopt.scale(-0.1)
      ),
      PARAMS,
    )
    reference = _run(
      optax.chain(
        optax.clip_by_global_norm(0.5), optax.scale_by_adam(), optax.scale(-0.1)
      ),
      PARAMS,
    )
  chex.assert_trees_all_close(mixed, reference, **TOL)


def test_optax_inside_jopt_chain():
  with standard_promotion:
    mixed = _run(
      jopt.chain(optax.clip_by_global_norm(0.5), jopt.adam(0.1)), PARAMS
    )
    reference = _run(
      optax.chain(optax.clip_by_global_norm(0.5), optax.adam(0.1)), PARAMS
    )
  chex.assert_trees_all_close(mixed, reference, **TOL)


def _plain(lib, name):
  # Optax's inject_hyperparams keeps the values itself: it takes the plain
  # form of a jopt constructor (docs/optax_differences.md).
  constructor = getattr(lib, name)
  return constructor.plain if lib is jopt else constructor


def _factory(lib, name):
  if name == "clipped_sgd":  # the jopt constructor called by the user's code
    return lambda learning_rate: lib.chain(
      _plain(lib, "clip")(10.0), _plain(lib, "sgd")(learning_rate)
    )
  return _plain(lib, name)


@pytest.mark.parametrize("name", ["sgd", "adam", "clipped_sgd"])
def test_optax_inject_hyperparams_drives_a_jopt_constructor(name):
  # Optax's inject_hyperparams keeps the values in its own state: a schedule
  # it evaluates, or a value written into that state, must apply to the
  # jopt optimizer as to Optax's. Both get the same float32 arrays from
  # Optax's state, so only float32 ulps of the two implementations differ.
  grads = _grads(PARAMS)
  schedule = optax.linear_schedule(0.3, 0.0, 3)
  outputs = {}
  with standard_promotion:
    for lib in (optax, jopt):
      factory = _factory(lib, name)
      tx = optax.inject_hyperparams(factory)(learning_rate=schedule)
      state = tx.init(PARAMS)
      step = jax.jit(tx.update)
      out = []
      for _ in range(3):
        updates, state = step(grads, state, PARAMS)
        out.append(updates)
      state.hyperparams["learning_rate"] = jnp.asarray(0.5)  # a fixed value
      fixed = optax.inject_hyperparams(factory)(learning_rate=0.1)
      fixed_state = fixed.init(PARAMS)
      fixed_state.hyperparams["learning_rate"] = jnp.asarray(0.5)
      out.append(jax.jit(fixed.update)(grads, fixed_state, PARAMS)[0])
      outputs[lib.__name__] = out
  chex.assert_trees_all_close(
    outputs["jopt"], outputs["optax"], rtol=1e-6, atol=1e-7
  )
  if name != "adam":  # the rates used: the schedule's 0.3, 0.2, 0.1, then 0.5
    for out, lr in zip(outputs["jopt"], (0.3, 0.2, 0.1, 0.5), strict=True):
      chex.assert_trees_all_close(
        out, jax.tree.map(lambda g, lr=lr: -lr * g, grads), rtol=1e-6
      )


def test_extra_args_reach_optax_parts_that_take_them():
  seen = {}

  def update(updates, state, params=None, **extra_args):
    seen.update(extra_args)
    return updates, state

  recorder = optax.GradientTransformationExtraArgs(
    lambda params: optax.EmptyState(), update
  )
  tx = jopt.chain(jopt.sgd(0.1), recorder)
  tx.update(PARAMS, tx.init(PARAMS), PARAMS, value=jnp.float32(3.0))
  assert float(seen["value"]) == 3.0


# --- Flax NNX --------------------------------------------------------------------


def _nnx_train(tx):
  model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  x = jnp.arange(12.0).reshape(4, 3) / 10.0
  y = jnp.ones((4, 2))

  @nnx.jit
  def step(model, optimizer):
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads)
    return loss

  losses = [float(step(model, optimizer)) for _ in range(STEPS)]
  return losses, nnx.state(model, nnx.Param), optimizer


def test_nnx_optimizer_matches_optax():
  losses, params, _ = _nnx_train(jopt.adam(0.05))
  with standard_promotion:
    ref_losses, ref_params, _ = _nnx_train(optax.adam(0.05))
  assert losses[-1] < losses[0]
  chex.assert_trees_all_close(losses, ref_losses, **TOL)
  chex.assert_trees_all_close(
    jax.tree.leaves(params), jax.tree.leaves(ref_params), **TOL
  )


# --- Flax linen TrainState ------------------------------------------------------


def _linen_train(tx):
  model = linen.Dense(2)
  x = jnp.arange(12.0).reshape(4, 3) / 10.0
  y = jnp.ones((4, 2))
  params = model.init(jax.random.key(0), x)
  state = train_state.TrainState.create(
    apply_fn=model.apply, params=params, tx=tx
  )

  @jax.jit
  def step(state):
    def loss_fn(p):
      return jnp.mean((state.apply_fn(p, x) - y) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss

  losses = []
  for _ in range(STEPS):
    state, loss = step(state)
    losses.append(float(loss))
  return losses, state


def test_linen_train_state_matches_optax():
  losses, state = _linen_train(jopt.adam(0.05))
  with standard_promotion:
    ref_losses, ref_state = _linen_train(optax.adam(0.05))
  assert losses[-1] < losses[0]
  chex.assert_trees_all_close(losses, ref_losses, **TOL)
  chex.assert_trees_all_close(state.params, ref_state.params, **TOL)
  # A hyperparameter set in the TrainState's opt_state takes effect.
  frozen = state.replace(
    opt_state=jopt.set_hyperparams(state.opt_state, learning_rate=0.0)
  )
  grads = jax.tree.map(jnp.ones_like, frozen.params)
  chex.assert_trees_all_equal(
    frozen.apply_gradients(grads=grads).params, frozen.params
  )


# --- Mismatched pytrees -----------------------------------------------------------


@pytest.mark.parametrize(
  "tx",
  [jopt.adam(0.1), jopt.sgd(0.1, momentum=0.9), jopt.rmsprop(0.1)],
  ids=["adam", "sgd_momentum", "rmsprop"],
)
def test_mismatched_updates_raise_a_clear_error(tx):
  state = tx.init(PARAMS)
  wrong = {"w": PARAMS["w"]}  # "b" missing
  with pytest.raises(ValueError, match="does not match the structure"):
    tx.update(wrong, state, wrong)
