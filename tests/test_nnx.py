"""jopt inside Flax NNX: nnx.Optimizer's state, its hyperparameters, its
checkpoints, and a sweep over an NNX model."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

import jopt
import jopt.sweep

X = jnp.arange(24.0).reshape(8, 3) / 10.0
Y = jnp.ones((8, 2))


def _loss(model):
  return jnp.mean((model(X) - Y) ** 2)


def _make(learning_rate=0.05):
  model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  tx = jopt.chain(
    jopt.clip_by_global_norm(10.0),
    jopt.adamw(learning_rate, weight_decay=1e-2),
  )
  return model, nnx.Optimizer(model, tx, wrt=nnx.Param)


@nnx.jit
def _step(model, optimizer):
  loss, grads = nnx.value_and_grad(_loss)(model)
  optimizer.update(model, grads)
  return loss


def _params(model):
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def test_set_hyperparams_through_nnx_optimizer_without_recompiling():
  # nnx.Optimizer keeps the jopt state in ``opt_state``, its arrays wrapped
  # in NNX variables: nnx.as_pure gives the plain state, nnx.update writes
  # a changed one back in place.
  model, optimizer = _make(learning_rate=0.05)
  state = nnx.as_pure(optimizer.opt_state)
  assert float(jopt.get_hyperparams(state)["learning_rate"]) == np.float32(0.05)
  nnx.update(
    optimizer.opt_state,
    nnx.state(jopt.set_hyperparams(state, learning_rate=0.01)),
  )
  assert float(
    jopt.get_hyperparams(nnx.as_pure(optimizer.opt_state))["learning_rate"]
  ) == np.float32(0.01)

  traces = []
  step = nnx.jit(lambda m, o: traces.append(1) or _step(m, o))
  losses = [step(model, optimizer) for _ in range(3)]
  # The new value is the one used: the same as an optimizer built with it.
  ref_model, ref_optimizer = _make(learning_rate=0.01)
  ref_losses = [_step(ref_model, ref_optimizer) for _ in range(3)]
  chex.assert_trees_all_equal(losses, ref_losses)
  chex.assert_trees_all_equal(_params(model), _params(ref_model))
  # Freezing the model mid-training is one more value, not one more compile.
  nnx.update(
    optimizer.opt_state,
    nnx.state(
      jopt.set_hyperparams(nnx.as_pure(optimizer.opt_state), learning_rate=0.0)
    ),
  )
  frozen = _params(model)
  step(model, optimizer)
  chex.assert_trees_all_equal(_params(model), frozen)
  assert len(traces) == 1


def test_nnx_optimizer_checkpoint_restores_and_continues_bit_for_bit(tmp_path):
  # Flax's checkpointing recipe: save nnx.state of the model and optimizer
  # with Orbax, restore into an abstract copy, merge.
  model, optimizer = _make()
  for _ in range(3):
    _step(model, optimizer)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(tmp_path / "ckpt", nnx.state((model, optimizer)))
  checkpointer.wait_until_finished()
  uninterrupted = [_step(model, optimizer) for _ in range(3)]

  abstract = nnx.eval_shape(_make)
  graphdef, abstract_state = nnx.split(abstract)
  restored = checkpointer.restore(tmp_path / "ckpt", abstract_state)
  checkpointer.close()
  new_model, new_optimizer = nnx.merge(graphdef, restored)
  assert int(new_optimizer.step[...]) == 3
  chex.assert_trees_all_equal(
    jopt.get_hyperparams(nnx.as_pure(new_optimizer.opt_state)),
    jopt.get_hyperparams(nnx.as_pure(_make()[1].opt_state)),
  )
  resumed = [_step(new_model, new_optimizer) for _ in range(3)]
  chex.assert_trees_all_equal(resumed, uninterrupted)
  chex.assert_trees_all_equal(_params(new_model), _params(model))


def test_sweep_over_an_nnx_model_equals_one_run_per_value():
  # train_fn builds the model and nnx.Optimizer from the trial's values;
  # nnx.split / nnx.merge carry them through lax.scan.
  def train_fn(hparams, key):
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(params=key))
    optimizer = nnx.Optimizer(
      model,
      jopt.adamw(hparams["learning_rate"], weight_decay=1e-2),
      wrt=nnx.Param,
    )
    graphdef, state = nnx.split((model, optimizer))

    def step(state, _):
      model, optimizer = nnx.merge(graphdef, state)
      loss, grads = nnx.value_and_grad(_loss)(model)
      optimizer.update(model, grads)
      return nnx.state((model, optimizer)), loss

    _, losses = jax.lax.scan(step, state, length=10)
    return {"loss": losses}

  space = {"learning_rate": jopt.sweep.choice([0.01, 0.05, 0.2, 0.5])}
  result = jopt.sweep.run(
    train_fn,
    space,
    num_trials=4,
    strategy="grid",
    key=jax.random.key(0),
    progress=False,
  )
  for i in range(4):
    hparams = {"learning_rate": jnp.float32(result.hparams["learning_rate"][i])}
    alone = jax.jit(train_fn)(hparams, jax.random.fold_in(jax.random.key(0), i))
    # vmapped over 4 trials vs one: XLA may pick other kernels for the
    # batched matmul, so the same float32 rounding is not guaranteed;
    # the 3x2 model keeps it within a few ulps.
    np.testing.assert_allclose(
      result.metrics["loss"][i], alone["loss"], rtol=1e-5
    )


def test_get_and_set_hyperparams_directly_on_the_optimizer_state():
  # NNX wraps the state's arrays in variables (callable containers); the
  # hyperparameters are read and written through them, and the written
  # state keeps its variables, so the jitted step does not retrace.
  model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(
    model, jopt.adamw(1e-2, weight_decay=1e-4), wrt=nnx.Param
  )
  x, y = jnp.ones((8, 3)), jnp.zeros((8, 2))
  traces = []

  @nnx.jit
  def step(model, optimizer):
    traces.append(1)
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads)
    return loss

  step(model, optimizer)
  got = jopt.get_hyperparams(optimizer.opt_state)
  assert set(got) >= {"learning_rate", "weight_decay"}
  np.testing.assert_allclose(got["learning_rate"], 1e-2)
  optimizer.opt_state = jopt.set_hyperparams(
    optimizer.opt_state, learning_rate=1e-3
  )
  np.testing.assert_allclose(
    jopt.get_hyperparams(optimizer.opt_state)["learning_rate"], 1e-3
  )
  step(model, optimizer)
  assert len(traces) == 1
