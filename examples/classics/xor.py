"""XOR with a 2-8-1 Flax NNX MLP: the classic non-linearly separable problem.

Several random initialisations train at once: the training run is one
``lax.scan``, and ``nnx.vmap`` over the PRNG keys runs every seed in one
compiled program (Flax's model-ensemble pattern).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx

import jopt

X = jnp.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], jnp.float32)
Y = jnp.array([0.0, 1.0, 1.0, 0.0], jnp.float32)


class MLP(nnx.Module):
  """2 inputs -> ``hidden`` tanh units -> 1 logit."""

  def __init__(self, hidden: int = 8, *, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(2, hidden, rngs=rngs)
    self.out = nnx.Linear(hidden, 1, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.out(jnp.tanh(self.hidden(x)))[..., 0]


def loss_fn(model: MLP) -> jax.Array:
  """Binary cross-entropy from logits on the four XOR points, written stably."""
  logits = model(X)
  return jnp.mean(jnp.logaddexp(0.0, logits) - Y * logits)


def make_fit(hidden: int, learning_rate: float, steps: int):
  """Returns ``fit(key) -> (model, losses [steps], accuracy)``.

  Full-batch Adam (``jopt.adam`` in an ``nnx.Optimizer``); the model is
  created inside from ``key``, so ``fit`` can be vmapped over keys.
  """

  def fit(key):
    model = MLP(hidden, rngs=nnx.Rngs(params=key))
    optimizer = nnx.Optimizer(model, jopt.adam(learning_rate), wrt=nnx.Param)
    # lax.scan carries arrays: split the model and optimizer into a static
    # graph and their state, and merge them back inside each step.
    graphdef, state = nnx.split((model, optimizer))

    def step(state, _):
      model, optimizer = nnx.merge(graphdef, state)
      loss, grads = nnx.value_and_grad(loss_fn)(model)
      optimizer.update(model, grads)
      return nnx.state((model, optimizer)), loss

    state, losses = jax.lax.scan(step, state, length=steps)
    model, _ = nnx.merge(graphdef, state)
    predictions = (model(X) > 0).astype(jnp.float32)
    return model, losses, jnp.mean(predictions == Y)

  return fit


def run(
  out_dir: str,
  *,
  num_seeds: int = 16,
  steps: int = 500,
  learning_rate: float = 0.05,
  hidden: int = 8,
  seed: int = 0,
) -> dict[str, Any]:
  """Trains ``num_seeds`` initialisations at once; prints and plots."""
  # nnx.vmap returns the seeds' models as one model whose every parameter
  # has a leading seed axis.
  fit = nnx.jit(nnx.vmap(make_fit(hidden, learning_rate, steps)))
  keys = jax.random.split(jax.random.key(seed), num_seeds)
  models, losses, accuracy = fit(keys)
  accuracy = np.asarray(accuracy)
  losses = np.asarray(losses)
  solved = int((accuracy == 1.0).sum())
  print(
    f"XOR, {num_seeds} seeds x {steps} Adam steps (lr={learning_rate}): "
    f"{solved}/{num_seeds} seeds reach 100% accuracy; final loss "
    f"median {np.median(losses[:, -1]):.2e}, max {losses[:, -1].max():.2e}"
  )

  os.makedirs(out_dir, exist_ok=True)
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  axes[0].semilogy(losses.T, lw=1, alpha=0.7)
  axes[0].set_xlabel("step")
  axes[0].set_ylabel("binary cross-entropy")
  axes[0].set_title(f"XOR: {num_seeds} seeds trained at once (nnx.vmap)")
  grid = np.linspace(-0.5, 1.5, 101, dtype=np.float32)
  gx, gy = np.meshgrid(grid, grid)
  points = jnp.asarray(np.stack([gx.ravel(), gy.ravel()], axis=1))
  graphdef, state = nnx.split(models)
  first = nnx.merge(graphdef, jax.tree.map(lambda a: a[0], state))
  probs = jax.nn.sigmoid(first(points)).reshape(gx.shape)
  contour = axes[1].contourf(
    gx, gy, np.asarray(probs), levels=20, cmap="RdBu_r", vmin=0.0, vmax=1.0
  )
  fig.colorbar(contour, ax=axes[1], label="P(y = 1)")
  for label, marker in ((0.0, "o"), (1.0, "s")):
    at = np.asarray(Y) == label
    axes[1].scatter(
      X[at, 0],
      X[at, 1],
      marker=marker,
      c="w",
      edgecolors="k",
      s=120,
      label=f"y = {label:g}",
    )
  axes[1].legend(loc="upper center", fontsize=8)
  axes[1].set_title("decision function (seed 0)")
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, "xor.png"), dpi=100)
  plt.close(fig)
  return {"accuracy": accuracy, "solved": solved, "final_loss": losses[:, -1]}
