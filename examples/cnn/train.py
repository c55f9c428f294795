"""Training the CNN as one pure function, and the learning-rate sweep.

``train(hparams, key)`` runs the whole training in one scan
(``jopt.sweep.scan``: ``lax.scan`` that moves the sweep's progress bar ten
times per trial, with the running best loss): the minibatches are drawn
inside the graph from the trial's key, so the function is pure and
``jopt.sweep.run`` vmaps it over trials (and shards trials over devices) in
a single compile.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import data
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import model as model_lib
import numpy as np
from flax import nnx

import jopt
import jopt.sweep


@dataclasses.dataclass(frozen=True)
class Config:
  """What the sweep trains and searches.

  Attributes:
    num_trials: trials in the sweep (a power of two suits the quasi-random
      sampler).
    num_steps: optimizer steps per trial.
    batch_size: examples per minibatch (drawn with replacement).
    learning_rate: the (low, high) range, searched on a log scale.
    weight_decay: the (low, high) range, searched on a log scale.
    features: channels of the two convolutions.
    dropout_rate: dropout before the dense layer.
    curve_every: the loss curve holds the mean training loss of every
      ``curve_every`` steps.
    seed: fixes the data split, the trials' hyperparameters and keys.
    seeds: trains every configuration with this many seeds (one program)
      and ranks configurations by the mean validation loss; 1 trains each
      once.
  """

  num_trials: int = 16
  num_steps: int = 400
  batch_size: int = 64
  learning_rate: tuple[float, float] = (1e-4, 1e-1)
  weight_decay: tuple[float, float] = (1e-5, 1e-1)
  features: tuple[int, int] = (16, 32)
  dropout_rate: float = 0.25
  curve_every: int = 10
  seed: int = 0
  seeds: int = 1


QUICK = Config(num_trials=4, num_steps=20, batch_size=32, curve_every=5)


def search_space(config: Config) -> dict[str, Any]:
  """Learning rate and weight decay, both log-uniform."""
  return {
    "learning_rate": jopt.sweep.log_uniform(*config.learning_rate),
    "weight_decay": jopt.sweep.log_uniform(*config.weight_decay),
  }


def make_optimizer(learning_rate, weight_decay) -> jopt.GradientTransformation:
  """AdamW; both arguments may be traced (one value per trial under vmap)."""
  return jopt.adamw(learning_rate, weight_decay=weight_decay)


def create_model(config: Config, key: jax.Array) -> model_lib.CNN:
  """The CNN with its parameters and its dropout stream drawn from ``key``."""
  init_key, dropout_key = jax.random.split(key)
  # The layers' own initialisers get a fixed key: init_params replaces
  # what they draw (see its docstring for why).
  model = model_lib.CNN(
    config.features,
    dropout_rate=config.dropout_rate,
    rngs=nnx.Rngs(params=0, dropout=dropout_key),
  )
  model_lib.init_params(model, init_key)
  return model


def make_train(x_train, y_train, config: Config):
  """Returns ``train(hparams, key) -> (model, per-step training losses)``.

  A pure function of arrays (the model is created inside and returned), so
  it can be vmapped over trials and jitted with ``nnx.jit``.
  """
  x_train = jnp.asarray(x_train)
  y_train = jnp.asarray(y_train)
  num_train = x_train.shape[0]

  def train(hparams, key):
    model_key, steps_key = jax.random.split(key)
    model = create_model(config, model_key)
    model.train()  # Dropout on.
    tx = make_optimizer(hparams["learning_rate"], hparams["weight_decay"])
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    # lax.scan carries arrays: split the model and optimizer into a static
    # graph and their state, and merge them back inside each step.
    graphdef, state = nnx.split((model, optimizer))

    def step(state, batch_key):
      model, optimizer = nnx.merge(graphdef, state)
      idx = jax.random.randint(batch_key, (config.batch_size,), 0, num_train)

      def loss_fn(model):
        return model_lib.cross_entropy(model(x_train[idx]), y_train[idx])

      loss, grads = nnx.value_and_grad(loss_fn)(model)
      optimizer.update(model, grads)
      return nnx.state((model, optimizer)), loss

    batch_keys = jax.random.split(steps_key, config.num_steps)
    state, losses = jopt.sweep.scan(step, state, batch_keys)
    model, _ = nnx.merge(graphdef, state)
    return model, losses

  return train


def evaluate(model: model_lib.CNN, x, y) -> dict[str, jax.Array]:
  """Loss and accuracy of ``model`` on ``(x, y)``, without dropout."""
  model.eval()
  logits = model(jnp.asarray(x))
  y = jnp.asarray(y)
  return {
    "loss": model_lib.cross_entropy(logits, y),
    "accuracy": model_lib.accuracy(logits, y),
  }


def make_train_fn(splits: data.Splits, config: Config):
  """The sweep's ``train_fn(hparams, key) -> metrics``, and ``train``.

  Metrics: ``val_loss`` and ``val_accuracy`` (on the validation split,
  after training) and ``train_loss``, the training-loss curve. The test
  split plays no part in the sweep.
  """
  train = make_train(splits.x_train, splits.y_train, config)
  every = min(config.curve_every, config.num_steps)
  points = config.num_steps // every

  def train_fn(hparams, key):
    model, losses = train(hparams, key)
    val = evaluate(model, splits.x_val, splits.y_val)
    curve = losses[: points * every].reshape(points, every)
    return {
      "val_loss": val["loss"],
      "val_accuracy": val["accuracy"],
      "train_loss": jnp.mean(curve, axis=1),
    }

  return train_fn, train


def run(
  config: Config,
  out_dir: str | Path,
  progress: bool = True,
  tensorboard: bool = False,
) -> dict:
  """Sweeps learning rate and weight decay; writes the table and the plots.

  The best trial is chosen by validation loss; its configuration is then
  retrained on the training and validation splits together (same steps,
  same key) and scored once on the test split.

  Args:
    config: what to train and search.
    out_dir: folder for ``results.csv``, ``summary.json`` and the plots.
    progress: show the sweep's progress bar.
    tensorboard: also write every trial to ``out_dir/tensorboard`` for
      TensorBoard's HParams dashboard (needs ``jopt[tensorboard]``).

  Returns:
    The summary written to ``summary.json``, plus the sorted pandas table
    under ``"table"`` and the `jopt.sweep.SweepResult` under ``"result"``.
  """
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  splits = data.load_splits(seed=config.seed)
  train_fn, _ = make_train_fn(splits, config)

  start = time.perf_counter()
  result = jopt.sweep.run(
    train_fn,
    search_space(config),
    num_trials=config.num_trials,
    key=jax.random.key(config.seed),
    strategy="quasirandom",
    progress=progress,
    progress_metric="val_loss",
    seeds=None if config.seeds == 1 else config.seeds,
  )
  sweep_seconds = time.perf_counter() - start

  best = result.best("val_loss")
  final_train = make_train(
    np.concatenate([splits.x_train, splits.x_val]),
    np.concatenate([splits.y_train, splits.y_val]),
    config,
  )
  best_hparams = {k: jnp.float32(v) for k, v in best.hparams.items()}
  final_model, _ = nnx.jit(final_train)(
    best_hparams, jax.random.fold_in(jax.random.key(config.seed), best.index)
  )
  test = evaluate(final_model, splits.x_test, splits.y_test)
  table = result.to_pandas().sort_values("val_loss")
  table.to_csv(out_dir / "results.csv", index=False)
  plots = {
    "val_loss_vs_hparams": out_dir / "val_loss_vs_hparams.png",
    "val_accuracy_vs_hparams": out_dir / "val_accuracy_vs_hparams.png",
    "loss_curves": out_dir / "loss_curves.png",
  }
  figures = [
    result.plot("val_loss", path=plots["val_loss_vs_hparams"]),
    result.plot("val_accuracy", path=plots["val_accuracy_vs_hparams"]),
    result.plot_curves(
      "train_loss", by="learning_rate", path=plots["loss_curves"]
    ),
  ]
  for fig in figures:
    plt.close(fig)
  summary = {
    "config": dataclasses.asdict(config),
    "best_trial": best.index,
    "best_hparams": best.hparams,
    "val_loss": float(best.metrics["val_loss"]),
    "val_accuracy": float(best.metrics["val_accuracy"]),
    "test_accuracy": float(test["accuracy"]),
    "sweep_seconds": sweep_seconds,
    "diverged": int(np.sum(result.diverged)),
    "plots": {k: str(v) for k, v in plots.items()},
    "tensorboard": None,
  }
  if tensorboard:
    logdir = out_dir / "tensorboard"
    shutil.rmtree(logdir, ignore_errors=True)  # This run replaces the last.
    every = min(config.curve_every, config.num_steps)
    points = result.metrics["train_loss"].shape[1]
    # A point of the curve is the mean over the `every` steps ending there.
    result.to_tensorboard(logdir, steps=every * np.arange(1, points + 1))
    summary["tensorboard"] = str(logdir)
  (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
  return {**summary, "table": table, "result": result}
