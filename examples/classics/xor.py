"""XOR with a 2-8-1 MLP: the classic non-linearly separable problem.

Several random initialisations train at once: the training run is one
``lax.scan``, and ``jax.vmap`` over the PRNG keys runs every seed in one
compiled program.
"""

from __future__ import annotations

import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jopt

X = jnp.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], jnp.float32)
Y = jnp.array([0.0, 1.0, 1.0, 0.0], jnp.float32)


class MLP(nn.Module):
  """2 inputs -> ``hidden`` tanh units -> 1 logit."""

  hidden: int = 8

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = jnp.tanh(nn.Dense(self.hidden)(x))
    return nn.Dense(1)(x)[..., 0]


def make_fit(model: nn.Module, learning_rate: float, steps: int):
  """Returns ``fit(key) -> (params, losses [steps], accuracy)``.

  Full-batch Adam on the binary cross-entropy of the four XOR points.
  """
  tx = jopt.adam(learning_rate)

  def loss_fn(params):
    logits = model.apply(params, X)
    # Binary cross-entropy from logits, written stably.
    return jnp.mean(jnp.logaddexp(0.0, logits) - Y * logits)

  def fit(key):
    params = model.init(key, X)
    opt_state = tx.init(params)

    def step(carry, _):
      p, s = carry
      loss, grads = jax.value_and_grad(loss_fn)(p)
      updates, s = tx.update(grads, s, p)
      return (jopt.apply_updates(p, updates), s), loss

    (params, _), losses = jax.lax.scan(step, (params, opt_state), length=steps)
    predictions = (model.apply(params, X) > 0).astype(jnp.float32)
    return params, losses, jnp.mean(predictions == Y)

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
  model = MLP(hidden)
  fit = jax.jit(jax.vmap(make_fit(model, learning_rate, steps)))
  keys = jax.random.split(jax.random.key(seed), num_seeds)
  params, losses, accuracy = fit(keys)
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
  axes[0].set_title(f"XOR: {num_seeds} seeds trained at once (vmap)")
  grid = np.linspace(-0.5, 1.5, 101, dtype=np.float32)
  gx, gy = np.meshgrid(grid, grid)
  points = jnp.asarray(np.stack([gx.ravel(), gy.ravel()], axis=1))
  first = jax.tree.map(lambda a: a[0], params)
  probs = jax.nn.sigmoid(model.apply(first, points)).reshape(gx.shape)
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
