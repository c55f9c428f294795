"""Logistic regression on iris: a cross-validated grid search, jopt vs sklearn.

jopt side: softmax regression trained by full-batch gradient descent
(`jopt.sgd`), its L1 / L2 penalty added by `jopt.add_l1` /
`jopt.add_decayed_weights` (weights only, not the bias, like scikit-learn).
`jopt.sweep.run(..., strategy="grid", folds=k)` trains every
(learning rate, penalty, strength) configuration on every fold at once: the
fold is one more vmapped axis, picked inside ``train_fn`` from precomputed
fold masks.

sklearn side: ``GridSearchCV(LogisticRegression(solver="saga"))`` over the
same penalties and strengths, on the SAME folds (one `StratifiedKFold` with a
fixed seed feeds both). The strengths match: scikit-learn minimises
``C * sum(loss) + penalty(w)``, jopt ``mean(loss) + strength * penalty(w)``,
so ``C = 1 / (strength * n_train_fold)``.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
import pandas as pd
from sklearn.datasets import load_iris
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import (
  GridSearchCV,
  StratifiedKFold,
  train_test_split,
)

import jopt
from jopt import sweep

PENALTIES = ("l1", "l2")
STRENGTHS = (1e-4, 1e-3, 1e-2, 1e-1)
LEARNING_RATES = (0.3, 1.0, 3.0)
NUM_CLASSES = 3


def load_data(seed: int = 0, test_size: float = 0.2, folds: int = 5):
  """Iris split into train/test, standardised, with k stratified folds.

  Returns the arrays and ``val_masks``: bool ``[folds, n_train]``, True where
  a training example is in that fold's validation part.
  """
  x, y = load_iris(return_X_y=True)
  x_train, x_test, y_train, y_test = train_test_split(
    x, y, test_size=test_size, stratify=y, random_state=seed
  )
  mean, std = x_train.mean(0), x_train.std(0)
  x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
  splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
  splits = list(splitter.split(x_train, y_train))
  val_masks = np.zeros((folds, len(y_train)), bool)
  for k, (_, val_idx) in enumerate(splits):
    val_masks[k, val_idx] = True
  return {
    "x_train": x_train.astype(np.float32),
    "y_train": y_train.astype(np.int32),
    "x_test": x_test.astype(np.float32),
    "y_test": y_test.astype(np.int32),
    "splits": splits,
    "val_masks": val_masks,
  }


def _logits(params, x):
  return x @ params["w"] + params["b"][None, :]


def make_fit(x: np.ndarray, y: np.ndarray, steps: int):
  """Returns ``fit(learning_rate, l1, l2, weights) -> (params, losses)``.

  ``weights`` [n] (0/1) selects the training examples, so every fold has the
  same shapes. The penalties apply to the weight matrix only.
  """
  x, y = jnp.asarray(x), jnp.asarray(y)
  only_w = {"w": True, "b": False}

  def loss_fn(params, weights):
    per_example = optax.softmax_cross_entropy_with_integer_labels(
      _logits(params, x), y
    )
    return jnp.sum(weights * per_example) / jnp.sum(weights)

  def fit(learning_rate, l1, l2, weights):
    tx = jopt.chain(
      jopt.add_l1(l1, mask=only_w),
      jopt.add_decayed_weights(l2, mask=only_w),
      jopt.sgd(learning_rate),
    )
    params = {
      "w": jnp.zeros((x.shape[1], NUM_CLASSES), jnp.float32),
      "b": jnp.zeros((NUM_CLASSES,), jnp.float32),
    }
    opt_state = tx.init(params)

    def step(carry, _):
      p, s = carry
      loss, grads = jax.value_and_grad(loss_fn)(p, weights)
      updates, s = tx.update(grads, s, p)
      return (jopt.apply_updates(p, updates), s), loss

    (params, _), losses = jax.lax.scan(step, (params, opt_state), length=steps)
    return params, losses

  return fit


def penalty_strengths(hparams) -> tuple[jax.Array, jax.Array]:
  """(l1, l2) from the swept penalty index and strength: one of them is 0."""
  strength = hparams["strength"]
  zero = jnp.zeros_like(strength)
  is_l1 = hparams["penalty"] == PENALTIES.index("l1")
  return jnp.where(is_l1, strength, zero), jnp.where(is_l1, zero, strength)


def make_train_fn(data: dict[str, Any], steps: int):
  """The sweep's ``train_fn(hparams, key, fold) -> metrics``."""
  fit = make_fit(data["x_train"], data["y_train"], steps)
  val_masks = jnp.asarray(data["val_masks"])
  x, y = jnp.asarray(data["x_train"]), jnp.asarray(data["y_train"])

  def train_fn(hparams, key, fold):
    del key  # Zero initialisation: the problem is convex.
    val = val_masks[fold]
    l1, l2 = penalty_strengths(hparams)
    params, losses = fit(
      hparams["learning_rate"], l1, l2, (~val).astype(jnp.float32)
    )
    correct = jnp.argmax(_logits(params, x), axis=-1) == y
    val_f = val.astype(jnp.float32)
    accuracy = jnp.sum(val_f * correct.astype(jnp.float32)) / jnp.sum(val_f)
    return {"val_accuracy": accuracy, "train_loss": losses}

  return train_fn


def run_jopt(
  data: dict[str, Any],
  *,
  steps: int,
  learning_rates,
  strengths,
  progress: bool = True,
) -> dict[str, Any]:
  """The jopt grid search and the refit of its best configuration."""
  space = {
    "learning_rate": sweep.choice(list(learning_rates)),
    "penalty": sweep.choice(list(PENALTIES)),
    "strength": sweep.choice(list(strengths)),
  }
  start = time.perf_counter()
  result = sweep.run(
    make_train_fn(data, steps),
    space,
    key=jax.random.key(0),
    strategy="grid",
    folds=len(data["splits"]),
    progress=progress,
  )
  best = result.best("val_accuracy", mode="max")
  hp = best.hparams
  l1, l2 = (
    (hp["strength"], 0.0) if hp["penalty"] == "l1" else (0.0, hp["strength"])
  )
  fit = jax.jit(make_fit(data["x_train"], data["y_train"], steps))
  params, _ = fit(
    jnp.float32(hp["learning_rate"]),
    jnp.float32(l1),
    jnp.float32(l2),
    jnp.ones(len(data["y_train"]), jnp.float32),
  )
  pred = np.asarray(jnp.argmax(_logits(params, data["x_test"]), axis=-1))
  seconds = time.perf_counter() - start
  return {
    "result": result,
    "best": hp,
    "cv_accuracy": float(best.metrics["val_accuracy"]),
    "test_accuracy": float(np.mean(pred == data["y_test"])),
    "seconds": seconds,
    "fits": len(result.diverged) * len(data["splits"]) + 1,  # + the refit
  }


def run_sklearn(data: dict[str, Any], *, strengths) -> dict[str, Any]:
  """``GridSearchCV(LogisticRegression)`` on the same folds and strengths."""
  n_fold_train = len(data["splits"][0][0])
  grid = {
    "C": [1.0 / (s * n_fold_train) for s in strengths],
    "l1_ratio": [1.0, 0.0],  # L1, L2 (scikit-learn >= 1.8 spelling).
  }
  search = GridSearchCV(
    LogisticRegression(solver="saga", max_iter=5000, tol=1e-5),
    grid,
    cv=data["splits"],
    n_jobs=1,
  )
  start = time.perf_counter()
  with warnings.catch_warnings():
    # Weakly regularised saga fits may stop at max_iter; the accuracy is
    # what is compared.
    warnings.simplefilter("ignore", ConvergenceWarning)
    search.fit(data["x_train"], data["y_train"])
  seconds = time.perf_counter() - start
  best = search.best_params_
  return {
    "search": search,
    "best": {
      "penalty": "l1" if best["l1_ratio"] == 1.0 else "l2",
      "strength": 1.0 / (best["C"] * n_fold_train),
    },
    "cv_accuracy": float(search.best_score_),
    "test_accuracy": float(search.score(data["x_test"], data["y_test"])),
    "seconds": seconds,
    "fits": len(search.cv_results_["params"]) * len(data["splits"]) + 1,
  }


def run(
  out_dir: str,
  *,
  steps: int = 1000,
  learning_rates=LEARNING_RATES,
  strengths=STRENGTHS,
  folds: int = 5,
  seed: int = 0,
  progress: bool = True,
) -> dict[str, Any]:
  """Both grid searches on the same folds; prints the comparison; plots."""
  data = load_data(seed, folds=folds)
  ours = run_jopt(
    data,
    steps=steps,
    learning_rates=learning_rates,
    strengths=strengths,
    progress=progress,
  )
  theirs = run_sklearn(data, strengths=strengths)
  table = ours["result"].to_pandas()
  print(
    table.sort_values("val_accuracy", ascending=False)
    .head(10)
    .to_string(float_format="{:.4g}".format)
  )

  def describe(best):
    return ", ".join(
      f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
      for k, v in best.items()
    )

  comparison = pd.DataFrame(
    {
      "best configuration": [describe(ours["best"]), describe(theirs["best"])],
      "mean CV accuracy": [ours["cv_accuracy"], theirs["cv_accuracy"]],
      "test accuracy": [ours["test_accuracy"], theirs["test_accuracy"]],
      "fits": [ours["fits"], theirs["fits"]],
      "wall time (s)": [ours["seconds"], theirs["seconds"]],
      "of which compiling (s)": [ours["result"].compile_time, 0.0],
    },
    index=[f"jopt.sweep (grid, folds={folds})", "sklearn GridSearchCV"],
  )
  print(comparison.to_string(float_format="{:.4g}".format))

  # CV accuracy against penalty strength: jopt (one line per learning rate)
  # next to scikit-learn on the same folds.
  os.makedirs(out_dir, exist_ok=True)
  cv = theirs["search"].cv_results_
  n_fold_train = len(data["splits"][0][0])
  fig, axes = plt.subplots(1, len(PENALTIES), figsize=(10, 4), sharey=True)
  for ax, penalty in zip(axes, PENALTIES, strict=True):
    rows = table[table["penalty"] == penalty]
    for lr, group in rows.groupby("learning_rate"):
      group = group.sort_values("strength")
      ax.semilogx(
        group["strength"], group["val_accuracy"], "o-", label=f"jopt, lr={lr:g}"
      )
    ratio = 1.0 if penalty == "l1" else 0.0
    picked = [i for i, p in enumerate(cv["params"]) if p["l1_ratio"] == ratio]
    strength = [1.0 / (cv["params"][i]["C"] * n_fold_train) for i in picked]
    order = np.argsort(strength)
    ax.semilogx(
      np.asarray(strength)[order],
      cv["mean_test_score"][picked][order],
      "k--s",
      label="sklearn GridSearchCV",
    )
    ax.set_title(f"{penalty.upper()} penalty")
    ax.set_xlabel("penalty strength")
    ax.grid(alpha=0.3)
  axes[0].set_ylabel(f"mean {folds}-fold CV accuracy")
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, "iris_cv_accuracy.png"), dpi=100)
  plt.close(fig)
  return {"jopt": ours, "sklearn": theirs, "comparison": comparison}
