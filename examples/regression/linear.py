"""Linear regression by gradient descent: y = 3x + 2 + noise.

The textbook first example: fit a line with `jopt.sgd`, sweep the learning
rate on a grid, and check the answer against the closed-form least-squares
solution. Too large a learning rate diverges, and the sweep reports it.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jopt
from jopt import sweep

TRUE_SLOPE = 3.0
TRUE_INTERCEPT = 2.0


def make_data(
  num_points: int = 100, noise: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
  """Points on y = 3x + 2 with Gaussian noise, x uniform in [0, 2]."""
  rng = np.random.default_rng(seed)
  x = rng.uniform(0.0, 2.0, size=num_points).astype(np.float32)
  y = TRUE_SLOPE * x + TRUE_INTERCEPT + noise * rng.normal(size=num_points)
  return x, y.astype(np.float32)


def least_squares(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
  """The closed-form answer (slope, intercept) from `numpy.linalg.lstsq`."""
  design = np.stack([x, np.ones_like(x)], axis=1).astype(np.float64)
  (slope, intercept), *_ = np.linalg.lstsq(design, y.astype(np.float64))
  return float(slope), float(intercept)


def make_train_fn(x: np.ndarray, y: np.ndarray, steps: int):
  """The sweep's ``train_fn(hparams, key) -> metrics``.

  Full-batch gradient descent from (w, b) = (0, 0) on the mean squared error;
  metrics are the loss curve and the final slope and intercept.
  """
  x, y = jnp.asarray(x), jnp.asarray(y)

  def loss_fn(params):
    pred = params["w"] * x + params["b"]
    return jnp.mean((pred - y) ** 2)

  def train_fn(hparams, key):
    del key  # Deterministic start: the problem is convex.
    params = {"w": jnp.zeros((), jnp.float32), "b": jnp.zeros((), jnp.float32)}
    tx = jopt.sgd(hparams["learning_rate"])
    opt_state = tx.init(params)

    def step(carry, _):
      p, s = carry
      loss, grads = jax.value_and_grad(loss_fn)(p)
      updates, s = tx.update(grads, s, p)
      return (jopt.apply_updates(p, updates), s), loss

    (params, _), losses = jax.lax.scan(step, (params, opt_state), length=steps)
    return {"loss": losses, "w": params["w"], "b": params["b"]}

  return train_fn


LEARNING_RATES = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 0.6)


def run(
  out_dir: str,
  *,
  steps: int = 200,
  learning_rates: tuple[float, ...] = LEARNING_RATES,
  seed: int = 0,
  progress: bool = True,
) -> dict[str, Any]:
  """Grid-sweeps the learning rate, checks against lstsq, prints and plots."""
  x, y = make_data(seed=seed)
  result = sweep.run(
    make_train_fn(x, y, steps),
    {"learning_rate": sweep.choice(list(learning_rates))},
    key=jax.random.key(seed),
    strategy="grid",
    progress=progress,
  )
  print(result.to_pandas().to_string(float_format="{:.4g}".format))
  best = result.best("loss")
  slope, intercept = least_squares(x, y)
  w, b = float(best.metrics["w"]), float(best.metrics["b"])
  lr = best.hparams["learning_rate"]
  print(f"gradient descent (lr={lr:g}, {steps} steps): y = {w:.4f} x + {b:.4f}")
  print(
    f"least squares (numpy.linalg.lstsq):  y = {slope:.4f} x + {intercept:.4f}"
  )
  print(
    f"true line:                         y = {TRUE_SLOPE:.4f} x + "
    f"{TRUE_INTERCEPT:.4f}"
  )
  diverged = [
    float(v) for v in result.hparams["learning_rate"][result.diverged]
  ]
  if diverged:
    print("diverged: learning_rate in", ", ".join(f"{v:g}" for v in diverged))

  os.makedirs(out_dir, exist_ok=True)
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.scatter(x, y, s=10, c="0.6", label="data")
  grid = np.linspace(0.0, 2.0, 2)
  for i, rate in enumerate(result.hparams["learning_rate"]):
    wi, bi = result.metrics["w"][i], result.metrics["b"][i]
    if result.diverged[i] or not np.isfinite(wi * bi):
      continue
    ax.plot(grid, wi * grid + bi, lw=1, alpha=0.8, label=f"GD lr={rate:g}")
  ax.plot(grid, slope * grid + intercept, "k--", lw=2, label="lstsq")
  ax.set_xlabel("x")
  ax.set_ylabel("y")
  ax.set_title(f"y = 3x + 2 + noise: gradient descent after {steps} steps")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, "linear_fit.png"), dpi=100)
  plt.close(fig)

  fig = result.plot_curves("loss", by="learning_rate")
  converged = result.metrics["loss"][~result.diverged]
  ax = fig.axes[0]
  ax.set_yscale("log")
  # Keep the diverged run (dotted) from stretching the axis to 1e38.
  ax.set_ylim(0.5 * converged.min(), 2.0 * converged.max())
  fig.savefig(os.path.join(out_dir, "linear_loss_curves.png"), dpi=100)
  plt.close(fig)
  return {
    "learning_rate": lr,
    "w": w,
    "b": b,
    "lstsq": (slope, intercept),
    "diverged": diverged,
    "result": result,
  }
