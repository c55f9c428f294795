"""The stepwise "model" of the search tests: gradient descent on a quadratic.

Its loss after k steps has a closed form (`reference_loss`), so references
are exact, and everything compiles in seconds.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jopt import sweep

CURVATURE = np.array([1.0, 0.5, 0.1], np.float32)
TARGET = np.array([1.0, -2.0, 0.5], np.float32)
STEPS = 3  # gradient steps per segment


def quad_init(hp, key):
  del hp
  return {
    "w": jax.random.normal(key, (3,), jnp.float32),
    "t": jnp.zeros((), jnp.int32),
  }


def quad_segment(state, hp):
  c, target = jnp.asarray(CURVATURE), jnp.asarray(TARGET)

  def step(w, _):
    return w - hp["lr"] * c * (w - target), None

  w, _ = jax.lax.scan(step, state["w"], None, length=STEPS)
  loss = 0.5 * jnp.sum(c * (w - target) ** 2)
  return {"w": w, "t": state["t"] + STEPS}, {"loss": loss}


def reference_loss(lr, w0, segments):
  """Closed-form loss of GD on the quadratic after ``segments`` segments."""
  k = segments * STEPS
  w = TARGET + (1 - np.float64(lr) * CURVATURE) ** k * (w0 - TARGET)
  return 0.5 * np.sum(CURVATURE * (w - TARGET) ** 2)


def initial_w(key, trial):
  return np.asarray(
    quad_init(None, jax.random.fold_in(key, trial))["w"], np.float64
  )


SPACE = {"lr": sweep.uniform(0.05, 1.9)}
