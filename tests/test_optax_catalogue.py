"""Every Optax optimizer that takes a learning rate, swept by jopt.

``optax.inject_hyperparams(optax.<name>)(learning_rate=...)`` keeps the
rate in the optimizer state, where `jopt.get_hyperparams` and
`jopt.set_hyperparams` read and write it, and where `jopt.sweep.run` can
vary it across vmapped trials. The catalogue is discovered from Optax's
namespace, so an optimizer Optax adds is tested without editing this file.
"""

import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from jopt import sweep

# Optax is the code under test here, and it is written for standard dtype
# promotion (the suite's default is strict).
standard_promotion = jax.numpy_dtype_promotion("standard")


def _optimizers_taking_a_learning_rate():
  names = []
  for name in dir(optax):
    obj = getattr(optax, name)
    # Building blocks (scale_by_*) are not optimizers; classes are states.
    if name.startswith(("_", "scale_by")) or inspect.isclass(obj):
      continue
    if not callable(obj):
      continue
    try:
      parameters = inspect.signature(obj).parameters
    except (TypeError, ValueError):  # typing aliases exported by Optax
      continue
    if "learning_rate" in parameters:
      names.append(name)
  return sorted(names)


OPTIMIZERS = _optimizers_taking_a_learning_rate()

# What Optax 0.2.8 offers; the discovery must find at least these, so that
# a change in how Optax exports them cannot empty the test silently.
KNOWN = {
  "adabelief",
  "adadelta",
  "adafactor",
  "adagrad",
  "adam",
  "adamax",
  "adamaxw",
  "adamw",
  "adan",
  "amsgrad",
  "fromage",
  "lamb",
  "lars",
  "lbfgs",
  "lion",
  "nadam",
  "nadamw",
  "noisy_sgd",
  "novograd",
  "optimistic_adam_v2",
  "optimistic_gradient_descent",
  "radam",
  "rmsprop",
  "rprop",
  "sgd",
  "sign_sgd",
  "signum",
  "sm3",
  "yogi",
}

# Arguments an optimizer needs beyond its rate. L-BFGS's default zoom
# line search takes the loss and its function as extra update arguments
# and picks the step itself; without it, the learning rate is the step.
# Noisy SGD warns when it is given no key for its noise.
EXTRA_ARGS = {"lbfgs": {"linesearch": None}, "noisy_sgd": {"key": 0}}

# `inject_hyperparams` puts every numeric argument in the state, defaults
# included, as a traced array once the state is; Adafactor branches in
# Python on this one (whether a dimension is large enough to factor), and
# L-BFGS on its memory size (which also sets its state's shapes).
STATIC_ARGS = {
  "adafactor": ("min_dim_size_to_factor",),
  "lbfgs": ("memory_size",),
  "noisy_sgd": ("key",),
}  # a seed, not a hyperparameter

# Rprop's learning rate is its initial step size: `init` writes it into the
# state and `update` never reads it again, so a rate set after `init`
# shows in `get_hyperparams` but does not change training.
READ_AT_INIT = {"rprop"}

PARAMS = {"w": jnp.array([0.5, -1.0, 2.0]), "m": jnp.ones((2, 3))}
STEPS = 4


def _loss(params):
  return jnp.sum((params["w"] - 1.0) ** 2) + jnp.sum(params["m"] ** 2)


def _optimizer(name, learning_rate):
  factory = optax.inject_hyperparams(
    getattr(optax, name), static_args=STATIC_ARGS.get(name, ())
  )
  return factory(learning_rate=learning_rate, **EXTRA_ARGS.get(name, {}))


def _train(tx, params, opt_state):
  def step(carry, _):
    params, opt_state = carry
    loss, grads = jax.value_and_grad(_loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  (params, _), losses = jax.lax.scan(step, (params, opt_state), length=STEPS)
  return {"loss": losses, "w": params["w"], "m": params["m"]}


def _perturbed(key):
  return jax.tree.map(
    lambda p: p + 0.1 * jax.random.normal(key, p.shape), PARAMS
  )


def _train_from_scratch(name, learning_rate, key):
  params = _perturbed(key)
  tx = _optimizer(name, learning_rate)
  return _train(tx, params, tx.init(params))


def test_the_catalogue_is_discovered():
  assert KNOWN <= set(OPTIMIZERS), KNOWN - set(OPTIMIZERS)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_the_learning_rate_is_a_hyperparameter_jopt_sweeps(name):
  key = jax.random.key(0)
  rates = [0.003, 0.1]
  with standard_promotion:
    # One compiled training loop serves every check below: the optimizer
    # object's own rate (0.1) is not what `update` uses, the state's is.
    train_from = jax.jit(
      lambda params, state: _train(_optimizer(name, 0.1), params, state)
    )

    # get_hyperparams sees the rate; set_hyperparams changes what trains.
    state = _optimizer(name, 0.1).init(PARAMS)
    chex.assert_trees_all_close(
      jopt.get_hyperparams(state)["learning_rate"], jnp.float32(0.1)
    )
    changed = jopt.set_hyperparams(state, learning_rate=0.05)
    chex.assert_trees_all_close(
      jopt.get_hyperparams(changed)["learning_rate"], jnp.float32(0.05)
    )
    expected_rate = 0.1 if name in READ_AT_INIT else 0.05
    chex.assert_trees_all_close(
      train_from(PARAMS, changed),
      train_from(PARAMS, _optimizer(name, expected_rate).init(PARAMS)),
      rtol=1e-6,
    )

    # A vmapped sweep over the rate equals a Python loop over the rates.
    result = sweep.run(
      lambda hparams, key: _train_from_scratch(name, hparams["lr"], key),
      {"lr": sweep.choice(rates)},
      strategy="grid",
      key=key,
      progress=False,
      devices=jax.devices()[:1],
    )
    for trial, lr in enumerate(result.hparams["lr"]):
      params = _perturbed(jax.random.fold_in(key, trial))
      state = _optimizer(name, jnp.float32(lr)).init(params)
      expected = train_from(params, state)
      got = {k: result.metrics[k][trial] for k in expected}
      # The sweep's program is not the loop's (vmapped, init compiled in),
      # and XLA may fuse it differently (Adan's last bits differ): a
      # float32 rounding tolerance, not bits.
      chex.assert_trees_all_close(got, expected, rtol=1e-6, atol=1e-7)
  # The rate reaches the computation: the two trials differ.
  assert not np.allclose(result.metrics["loss"][0], result.metrics["loss"][1])


def test_adafactor_needs_its_min_dim_size_static():
  with standard_promotion:
    traced = optax.inject_hyperparams(optax.adafactor)(learning_rate=0.1)
    state = traced.init(PARAMS)
    assert "min_dim_size_to_factor" in jopt.get_hyperparams(state)
    with pytest.raises(jax.errors.TracerBoolConversionError):
      jax.jit(lambda s: _train(traced, PARAMS, s))(state)

    static = _optimizer("adafactor", 0.1)
    state = static.init(PARAMS)
    assert "min_dim_size_to_factor" not in jopt.get_hyperparams(state)
    chex.assert_tree_all_finite(
      jax.jit(lambda s: _train(static, PARAMS, s))(state)
    )
