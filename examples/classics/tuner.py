"""A Keras-Tuner-style random search, as one jopt sweep, on sklearn's digits.

Four hyperparameters of different kinds in one search space:

* ``optimizer``: "sgd" (momentum 0.9), "adam" or "rmsprop". A string choice
  reaches ``train_fn`` as an int32 index; `switch` makes the three one
  transformation for the ``nnx.Optimizer``: it carries all three states
  and `jax.lax.switch` applies the chosen one.
* ``learning_rate``: log-uniform.
* ``batch_size``: a numeric choice, swept by MASKING inside the largest
  batch: every step draws ``max(BATCH_SIZES)`` examples
  (`jopt.sample_batch`) and averages the loss over the first ``batch_size``
  of them (`jopt.masked_mean`). Shapes never change, so all trials share one
  compiled program. (The alternative, ``sweep.choice(..., static=True)``,
  would compile one program per batch size; masking costs the compute of the
  largest batch for every trial, which is negligible here.)
* ``activation``: "relu" or "tanh", through `jax.lax.switch` as well.

The model is a Flax NNX MLP trained through ``nnx.Optimizer``; the training
loop is ``jopt.sweep.scan``, so the sweep's progress bar moves while every
trial trains. Trials are ranked by validation accuracy; the test split is
only reported.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import jopt
from jopt import sweep

OPTIMIZERS = ("sgd", "adam", "rmsprop")
ACTIVATIONS = ("relu", "tanh")
BATCH_SIZES = (16, 32, 64, 128)
NUM_CLASSES = 10


def load_data(seed: int = 0) -> dict[str, jax.Array]:
  """Digits (1,797 8x8 images) scaled to [0, 1], split 60/20/20."""
  x, y = load_digits(return_X_y=True)
  x = (x / 16.0).astype(np.float32)
  y = y.astype(np.int32)
  x_train, x_test, y_train, y_test = train_test_split(
    x, y, test_size=0.2, stratify=y, random_state=seed
  )
  x_train, x_val, y_train, y_val = train_test_split(
    x_train, y_train, test_size=0.25, stratify=y_train, random_state=seed
  )
  return {
    name: jnp.asarray(value)
    for name, value in (
      ("x_train", x_train),
      ("y_train", y_train),
      ("x_val", x_val),
      ("y_val", y_val),
      ("x_test", x_test),
      ("y_test", y_test),
    )
  }


class MLP(nnx.Module):
  """One hidden layer whose activation is picked by a (traced) index."""

  def __init__(self, in_features: int, hidden: int = 64, *, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(in_features, hidden, rngs=rngs)
    self.out = nnx.Linear(hidden, NUM_CLASSES, rngs=rngs)

  def __call__(self, x: jax.Array, activation: jax.Array) -> jax.Array:
    x = jax.lax.switch(activation, [nnx.relu, jnp.tanh], self.hidden(x))
    return self.out(x)


class SwitchState(NamedTuple):
  """The chosen index and the states of all the transformations."""

  index: jax.Array
  states: tuple[Any, ...]


def switch(
  index: jax.Array, transformations: Sequence[jopt.GradientTransformation]
) -> jopt.GradientTransformation:
  """The transformation ``transformations[index]``, for a traced ``index``.

  Every state is carried, so the state's shape does not depend on the
  choice and trials that chose different optimizers vmap together; the
  update runs the chosen transformation through `jax.lax.switch` (under
  vmap, every branch runs and each trial keeps its own). The index lives
  in the state, as jopt keeps hyperparameters there.
  """
  transformations = tuple(transformations)

  def init(params):
    return SwitchState(
      jnp.asarray(index, jnp.int32),
      tuple(tx.init(params) for tx in transformations),
    )

  def branch(i):
    def update(updates, states, params, extra_args):
      updates, new = transformations[i].update(
        updates, states[i], params, **extra_args
      )
      return updates, states[:i] + (new,) + states[i + 1 :]

    return update

  branches = [branch(i) for i in range(len(transformations))]

  def update(updates, state, params=None, **extra_args):
    updates, states = jax.lax.switch(
      state.index, branches, updates, state.states, params, extra_args
    )
    return updates, SwitchState(state.index, states)

  return jopt.GradientTransformation(init, update)


def make_optimizer(
  hparams: dict[str, jax.Array],
) -> jopt.GradientTransformation:
  """The trial's optimizer; its (traced) learning rate goes to all three."""
  learning_rate = hparams["learning_rate"]
  return switch(
    hparams["optimizer"],
    (
      jopt.sgd(learning_rate, momentum=0.9),
      jopt.adam(learning_rate),
      jopt.rmsprop(learning_rate),
    ),
  )


def make_train_fn(data: dict[str, jax.Array], *, steps: int, hidden: int = 64):
  """The sweep's ``train_fn(hparams, key) -> metrics``."""
  max_batch = max(BATCH_SIZES)
  x_train, y_train = data["x_train"], data["y_train"]

  cross_entropy = optax.softmax_cross_entropy_with_integer_labels

  def evaluate(model, activation, x, y):
    logits = model(x, activation)
    accuracy = jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32))
    return jnp.mean(cross_entropy(logits, y)), accuracy

  def train_fn(hparams, key):
    activation = hparams["activation"]
    init_key, data_key = jax.random.split(key)
    model = MLP(x_train.shape[-1], hidden, rngs=nnx.Rngs(params=init_key))
    optimizer = nnx.Optimizer(model, make_optimizer(hparams), wrt=nnx.Param)
    # A scan carries arrays: split the model and optimizer into a static
    # graph and their state, and merge them back inside each step.
    graphdef, state = nnx.split((model, optimizer))

    def loss_fn(model, xb, yb, mask):
      per_example = cross_entropy(model(xb, activation), yb)
      return jopt.masked_mean(per_example, mask)

    def step(state, step_key_and_index):
      model, optimizer = nnx.merge(graphdef, state)
      step_key, index = step_key_and_index
      idx, mask = jopt.sample_batch(
        step_key, x_train.shape[0], index, hparams["batch_size"], max_batch
      )
      loss, grads = nnx.value_and_grad(loss_fn)(
        model, x_train[idx], y_train[idx], mask
      )
      optimizer.update(model, grads)
      return nnx.state((model, optimizer)), loss

    step_keys = jax.random.split(data_key, steps)
    state, losses = sweep.scan(step, state, (step_keys, jnp.arange(steps)))
    model, _ = nnx.merge(graphdef, state)
    val_loss, val_accuracy = evaluate(
      model, activation, data["x_val"], data["y_val"]
    )
    _, test_accuracy = evaluate(
      model, activation, data["x_test"], data["y_test"]
    )
    return {
      "train_loss": losses,
      "val_loss": val_loss,
      "val_accuracy": val_accuracy,
      "test_accuracy": test_accuracy,
    }

  return train_fn


def run(
  out_dir: str,
  *,
  num_trials: int = 32,
  steps: int = 300,
  hidden: int = 64,
  seed: int = 0,
  progress: bool = True,
) -> dict[str, Any]:
  """The random search: prints the ranked table and the best trial; plots."""
  space = {
    "optimizer": sweep.choice(list(OPTIMIZERS)),
    "learning_rate": sweep.log_uniform(1e-4, 1.0),
    "batch_size": sweep.choice(list(BATCH_SIZES)),
    "activation": sweep.choice(list(ACTIVATIONS)),
  }
  result = sweep.run(
    make_train_fn(load_data(seed), steps=steps, hidden=hidden),
    space,
    num_trials=num_trials,
    key=jax.random.key(seed),
    strategy="random",
    progress=progress,
  )
  table = result.to_pandas().sort_values("val_accuracy", ascending=False)
  print(table.to_string(float_format="{:.4g}".format))
  best = result.best("val_accuracy", mode="max")
  print(
    f"best trial {best.index}: {best.hparams}: validation accuracy "
    f"{float(best.metrics['val_accuracy']):.4f}, test accuracy "
    f"{float(best.metrics['test_accuracy']):.4f}"
  )
  by_optimizer = table.groupby("optimizer")["val_accuracy"].max()
  print(
    "best validation accuracy per optimizer:",
    {k: round(float(v), 4) for k, v in by_optimizer.items()},
  )

  os.makedirs(out_dir, exist_ok=True)
  fig = result.plot("val_accuracy")
  fig.savefig(os.path.join(out_dir, "tuner_val_accuracy.png"), dpi=100)
  plt.close(fig)
  fig = result.plot_parallel("val_accuracy")
  fig.savefig(os.path.join(out_dir, "tuner_parallel.png"), dpi=100)
  plt.close(fig)
  return {
    "best": best.hparams,
    "val_accuracy": float(best.metrics["val_accuracy"]),
    "test_accuracy": float(best.metrics["test_accuracy"]),
    "result": result,
  }
