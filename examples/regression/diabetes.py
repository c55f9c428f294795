"""A Flax NNX MLP on scikit-learn's diabetes data, with a learning-rate sweep.

The whole training run (full-batch, ``steps`` optimizer steps through an
``nnx.Optimizer`` holding ``jopt.adam``) is one scan inside ``train_fn``
(``jopt.sweep.scan``, so the sweep's progress bar moves while it runs), and
`jopt.sweep.run` vmaps it over the learning rates: every trial trains at
once, in one compile.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import train_test_split

import jopt
from jopt import sweep


def load_data(seed: int = 0) -> dict[str, Any]:
  """Diabetes data (442 patients, 10 features): 60/20/20 train/val/test.

  Features and target are standardised with the training split's statistics,
  so the model trains on unit-scale numbers; ``y_mean``/``y_std`` map
  predictions back to the disease-progression scale. The sweep selects on
  the validation split; the test split is used once, by the best trial.
  """
  x, y = load_diabetes(return_X_y=True)
  x_train, x_test, y_train, y_test = train_test_split(
    x, y, test_size=0.2, random_state=seed
  )
  x_train, x_val, y_train, y_val = train_test_split(
    x_train, y_train, test_size=0.25, random_state=seed
  )
  x_mean, x_std = x_train.mean(0), x_train.std(0)
  y_mean, y_std = y_train.mean(), y_train.std()

  def f32(a):
    return jnp.asarray(a, dtype=jnp.float32)

  data = {"y_mean": float(y_mean), "y_std": float(y_std)}
  for name, xs, ys in (
    ("train", x_train, y_train),
    ("val", x_val, y_val),
    ("test", x_test, y_test),
  ):
    data[f"x_{name}"] = f32((xs - x_mean) / x_std)
    data[f"y_{name}"] = f32((ys - y_mean) / y_std)
  return data


class MLP(nnx.Module):
  """A small fully connected regressor: hidden ReLU layers, one output."""

  def __init__(
    self, in_features: int, features: Sequence[int] = (32,), *, rngs: nnx.Rngs
  ):
    widths = (in_features, *features)
    self.hidden = nnx.List(
      nnx.Linear(a, b, rngs=rngs)
      for a, b in zip(widths[:-1], widths[1:], strict=True)
    )
    self.out = nnx.Linear(widths[-1], 1, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    for layer in self.hidden:
      x = nnx.relu(layer(x))
    return self.out(x)[..., 0]


def _mse(pred: jax.Array, target: jax.Array) -> jax.Array:
  return jnp.mean((pred - target) ** 2)


def make_fit(data: dict[str, Any], features: Sequence[int], steps: int):
  """Returns ``fit(learning_rate, key) -> (model, metrics)``.

  The model is created inside from ``key``, so ``fit`` is a pure function
  of arrays: the sweep vmaps it, and ``nnx.jit`` compiles it alone.
  ``metrics`` holds the per-step ``train_loss`` and ``val_loss`` curves (MSE
  on the standardised target) and the final ``val_r2``.
  """
  x_train, y_train = data["x_train"], data["y_train"]
  x_val, y_val = data["x_val"], data["y_val"]

  def fit(learning_rate, key):
    model = MLP(x_train.shape[-1], features, rngs=nnx.Rngs(params=key))
    # learning_rate is traced (one value per trial under the sweep's vmap):
    # jopt keeps it in the optimizer state, so this is one program for all.
    optimizer = nnx.Optimizer(model, jopt.adam(learning_rate), wrt=nnx.Param)
    # A scan carries arrays: split the model and optimizer into a static
    # graph and their state, and merge them back inside each step.
    graphdef, state = nnx.split((model, optimizer))

    def step(state, _):
      model, optimizer = nnx.merge(graphdef, state)

      def loss_fn(model):
        return _mse(model(x_train), y_train)

      loss, grads = nnx.value_and_grad(loss_fn)(model)
      optimizer.update(model, grads)
      val_loss = _mse(model(x_val), y_val)
      return nnx.state((model, optimizer)), {
        "train_loss": loss,
        "val_loss": val_loss,
      }

    state, curves = sweep.scan(
      step,
      state,
      length=steps,
      # The bar shows the validation loss at the end of each tenth.
      metrics=lambda _, ys: {"val_loss": ys["val_loss"][-1]},
    )
    model, _ = nnx.merge(graphdef, state)
    metrics = {
      **curves,
      "val_r2": 1.0 - curves["val_loss"][-1] / jnp.var(y_val),
    }
    return model, metrics

  return fit


def make_train_fn(data: dict[str, Any], features: Sequence[int], steps: int):
  """The sweep's ``train_fn(hparams, key) -> metrics``."""
  fit = make_fit(data, features, steps)

  def train_fn(hparams, key):
    _, metrics = fit(hparams["learning_rate"], key)
    return metrics

  return train_fn


def r2_score(pred: np.ndarray, true: np.ndarray) -> float:
  return float(1.0 - np.mean((pred - true) ** 2) / np.var(true))


def sklearn_baseline(data: dict[str, Any]) -> float:
  """Test R^2 of ordinary least squares fitted on the training split."""
  x_train, y_train = np.asarray(data["x_train"]), np.asarray(data["y_train"])
  x_test, y_test = np.asarray(data["x_test"]), np.asarray(data["y_test"])
  return float(LinearRegression().fit(x_train, y_train).score(x_test, y_test))


def run(
  out_dir: str,
  *,
  steps: int = 200,
  num_trials: int = 16,
  features: Sequence[int] = (32,),
  seed: int = 0,
  progress: bool = True,
) -> dict[str, Any]:
  """Sweeps the learning rate, retrains the best, prints and plots.

  Returns a summary (best learning rate, its validation MSE, its test R^2,
  the OLS baseline) for the README table and the smoke test.
  """
  data = load_data(seed)
  key = jax.random.key(seed)
  result = sweep.run(
    make_train_fn(data, tuple(features), steps),
    {"learning_rate": sweep.log_uniform(1e-4, 1.0)},
    num_trials=num_trials,
    key=key,
    strategy="grid",
    grid_points=num_trials,
    progress=progress,
  )
  print(result.to_pandas().to_string(float_format="{:.4g}".format))
  best = result.best("val_loss")
  lr = best.hparams["learning_rate"]

  # Retrain the best trial alone (same per-trial key as in the sweep) to get
  # its model, and evaluate it once on the test split.
  fit = nnx.jit(make_fit(data, tuple(features), steps))
  model, _ = fit(jnp.float32(lr), jax.random.fold_in(key, best.index))
  scale, shift = data["y_std"], data["y_mean"]
  pred = np.asarray(model(data["x_test"])) * scale + shift
  true = np.asarray(data["y_test"]) * scale + shift
  test_r2 = r2_score(pred, true)
  ols_r2 = sklearn_baseline(data)
  print(
    f"best learning rate {lr:.3g}: validation MSE "
    f"{best.metrics['val_loss'][-1]:.3f} (standardised target); "
    f"test R^2 {test_r2:.3f}, RMSE {np.sqrt(np.mean((pred - true) ** 2)):.1f}"
  )
  print(
    f"ordinary least squares (sklearn LinearRegression): test R^2 {ols_r2:.3f}"
  )

  os.makedirs(out_dir, exist_ok=True)
  for metric in ("train_loss", "val_loss"):
    fig = result.plot_curves(metric, by="learning_rate")
    fig.axes[0].set_yscale("log")
    fig.savefig(os.path.join(out_dir, f"diabetes_{metric}_curves.png"), dpi=100)
    plt.close(fig)
  fig = result.plot("val_loss")
  fig.savefig(os.path.join(out_dir, "diabetes_lr_sweep.png"), dpi=100)
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(5, 5))
  ax.scatter(true, pred, s=12, alpha=0.7)
  lims = [min(true.min(), pred.min()), max(true.max(), pred.max())]
  ax.plot(lims, lims, "k--", lw=1, label="y = x")
  ax.set_xlabel("true disease progression (test split)")
  ax.set_ylabel("predicted")
  ax.set_title(f"MLP, lr={lr:.2g}: test R$^2$={test_r2:.2f} (OLS {ols_r2:.2f})")
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, "diabetes_fit.png"), dpi=100)
  plt.close(fig)
  return {
    "learning_rate": lr,
    "val_mse": float(best.metrics["val_loss"][-1]),
    "test_r2": test_r2,
    "ols_test_r2": ols_r2,
    "result": result,
  }
