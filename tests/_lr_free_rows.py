"""The table of learning-rate-free, schedule-free and hypergradient
optimizers that test_lr_free_parity and test_lr_free_invariants share.

Each row builds one optimizer and says which hyperparameter its sweep checks
vary; its reference is optax.contrib's version (given jopt's float32
hyperparameter values, so only the arithmetic is compared) or, for the
hypergradient methods Optax lacks, the paper's update rule written out in
NumPy float64 below. The problem, loss and trajectory helper are the
shared ones in `_helpers`; jitted runners are built once per row.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _helpers import init_params, jit_traced_once, loss, trajectory
from jax.flatten_util import ravel_pytree

import jopt

NUM_STEPS = 40


@dataclasses.dataclass(frozen=True)
class Row:
  id: str
  make: Callable[..., Any]  # (**hyperparams) -> jopt transformation
  sweep: tuple[str, float]  # the hyperparameter the sweep checks vary
  # jopt's hyperparameters -> the Optax transformation, or None.
  optax_make: Callable[[dict], Any] | None = None
  # (hyperparams, flat params [n], steps) -> flat trajectory [steps, n].
  reference: Callable[..., np.ndarray] | None = None
  # Per-row tolerance against the reference (see the note after ROWS).
  tol: float = 1e-5


# --- The paper's hypergradient rules, in float64 -----------------------------


def _grad_flat(x):
  # d/dx of `loss`'s 0.5 x^2 + 0.3 sin(3x), elementwise.
  return x + 0.9 * np.cos(3.0 * x)


def _sgd_hd_reference(hp, x, steps, momentum=None, nesterov=False):
  """Baydin et al. (2018), Algorithm 1 (SGD-HD) and 2 (SGDN-HD)."""
  x = np.asarray(x, np.float64)
  alpha, beta = float(hp["learning_rate"]), float(hp["hypergrad_lr"])
  d_prev, v = np.zeros_like(x), np.zeros_like(x)
  path = []
  for _ in range(steps):
    g = _grad_flat(x)
    alpha = alpha + beta * float(g @ d_prev)  # alpha - beta * (-g . d_prev)
    if momentum is None:
      d = g
    else:
      mu = float(hp["momentum"])
      v = mu * v + g
      d = g + mu * v if nesterov else v
    x = x - alpha * d
    d_prev = d
    path.append(x)
  return np.stack(path)


def _adam_hd_reference(hp, x, steps):
  """Baydin et al. (2018), Algorithm 3 (Adam-HD)."""
  x = np.asarray(x, np.float64)
  alpha, beta = float(hp["learning_rate"]), float(hp["hypergrad_lr"])
  b1, b2, eps = (float(hp[k]) for k in ("b1", "b2", "eps"))
  m, v, d_prev = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
  path = []
  for t in range(1, steps + 1):
    g = _grad_flat(x)
    alpha = alpha + beta * float(g @ d_prev)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    d = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    x = x - alpha * d
    d_prev = d
    path.append(x)
  return np.stack(path)


ROWS = [
  Row(
    "schedule_free_sgd",
    lambda learning_rate=0.1: jopt.schedule_free_sgd(
      learning_rate, warmup_steps=5, weight_decay=1e-3
    ),
    ("learning_rate", 0.1),
    lambda hp: optax.contrib.schedule_free_sgd(
      hp["learning_rate"],
      warmup_steps=5,
      b1=hp["b1"],
      weight_decay=hp["weight_decay"],
      weight_lr_power=hp["weight_lr_power"],
    ),
  ),
  Row(
    "schedule_free_adamw",
    lambda learning_rate=0.05: jopt.schedule_free_adamw(
      learning_rate, warmup_steps=5, weight_decay=1e-3
    ),
    ("learning_rate", 0.05),
    lambda hp: optax.contrib.schedule_free_adamw(
      hp["learning_rate"],
      warmup_steps=5,
      b1=hp["b1"],
      b2=hp["b2"],
      eps=hp["eps"],
      weight_decay=hp["weight_decay"],
      weight_lr_power=hp["weight_lr_power"],
    ),
  ),
  Row(
    "prodigy",
    lambda learning_rate=1.0: jopt.prodigy(learning_rate, weight_decay=1e-3),
    ("learning_rate", 1.0),
    lambda hp: optax.contrib.prodigy(
      hp["learning_rate"],
      betas=(hp["b1"], hp["b2"]),
      eps=hp["eps"],
      estim_lr0=hp["estim_lr0"],
      estim_lr_coef=hp["estim_lr_coef"],
      weight_decay=hp["weight_decay"],
    ),
  ),
  # The sweep varies estim_lr0, which the state reads at the first update.
  Row(
    "dadapt_adamw",
    lambda estim_lr0=1e-6: jopt.dadapt_adamw(
      estim_lr0=estim_lr0, weight_decay=1e-3
    ),
    ("estim_lr0", 1e-6),
    lambda hp: optax.contrib.dadapt_adamw(
      hp["learning_rate"],
      betas=(hp["b1"], hp["b2"]),
      eps=hp["eps"],
      estim_lr0=hp["estim_lr0"],
      weight_decay=hp["weight_decay"],
    ),
  ),
  Row(
    "dog",
    lambda learning_rate=1.0: jopt.dog(learning_rate, weight_decay=1e-3),
    ("learning_rate", 1.0),
    lambda hp: optax.contrib.dog(
      hp["learning_rate"],
      init_step=("heuristic", hp["init_step_value"]),
      eps=hp["eps"],
      weight_decay=hp["weight_decay"],
    ),
  ),
  Row(
    "dog_distance",
    lambda init_step_value=1e-2: jopt.dog(
      init_step=("distance", init_step_value)
    ),
    ("init_step_value", 1e-2),
    lambda hp: optax.contrib.dog(
      hp["learning_rate"],
      init_step=("distance", hp["init_step_value"]),
      eps=hp["eps"],
    ),
  ),
  Row(
    "mechanize_sgd",
    lambda s_init=1e-6: jopt.mechanize(jopt.sgd(1.0), s_init=s_init),
    ("s_init", 1e-6),
    lambda hp: optax.contrib.mechanize(
      optax.sgd(hp["learning_rate"]),
      weight_decay=hp["weight_decay"],
      eps=hp["eps"],
      s_init=hp["s_init"],
    ),
  ),
  Row(
    "mechanize_adam",
    lambda learning_rate=1.0: jopt.mechanize(jopt.adam(learning_rate)),
    ("learning_rate", 1.0),
    lambda hp: optax.contrib.mechanize(
      optax.adam(
        hp["learning_rate"],
        b1=hp["b1"],
        b2=hp["b2"],
        eps=hp["base_optimizer_state/eps"],
      ),
      weight_decay=hp["weight_decay"],
      eps=hp["eps"],
      s_init=hp["s_init"],
    ),
    tol=1e-4,
  ),
  Row(
    "sgd_hd",
    lambda learning_rate=0.05: jopt.sgd_hd(learning_rate, 1e-2),
    ("learning_rate", 0.05),
    reference=_sgd_hd_reference,
    tol=1e-5,
  ),
  Row(
    "sgd_hd_nesterov",
    lambda hypergrad_lr=1e-3: jopt.sgd_hd(
      0.02, hypergrad_lr, momentum=0.9, nesterov=True
    ),
    ("hypergrad_lr", 1e-3),
    reference=functools.partial(_sgd_hd_reference, momentum=0.9, nesterov=True),
    tol=1e-5,
  ),
  Row(
    "adam_hd",
    lambda hypergrad_lr=1e-3: jopt.adam_hd(0.05, hypergrad_lr),
    ("hypergrad_lr", 1e-3),
    reference=_adam_hd_reference,
    tol=1e-5,
  ),
]
# Tolerances against the reference, measured over the 40 steps on CPU:
# * Optax rows: the same arithmetic given the same float32 hyperparameters.
#   Schedule-free, Prodigy, D-Adaptation and DoG agree to <= 7.2e-7 (a few
#   float32 ulps at O(1) params); Mechanic's scale feeds back into itself,
#   so an ulp of fusion grows to 3e-6 (and to 3.4e-6 between jit and vmap
#   for Prodigy). 1e-5 covers that; a wrong formula (an off-by-one step
#   count in a bias correction, a beta in place of another) moves the path
#   by >= 1e-3.
# * mechanize_adam: Adam's own 1-ulp differences between jopt and Optax are
#   amplified by Mechanic's scale (measured 1.6e-5); 1e-4 still catches a
#   wrong sign or beta (>= 1e-2).
# * Hypergradient rows: float32 jopt against the float64 paper rule; the
#   learning rate feeds back through <g_t, d_{t-1}>, so float32 rounding
#   compounds (measured <= 1.6e-6); a missing bias correction or an update
#   with the previous rather than the new rate moves it by >= 1e-2.


@dataclasses.dataclass
class Runners:
  tx: Any
  run: Callable  # jitted (state, params) -> (path, state); one trace only
  run_raw: Callable


@functools.cache
def runners(row: Row) -> Runners:
  tx = row.make()

  def run_raw(state, params):
    return trajectory(tx, jopt.apply_updates, loss, params, state, NUM_STEPS)

  run = jit_traced_once(run_raw, f"lr_free_run_{row.id}")
  return Runners(tx, run, run_raw)


@functools.cache
def jopt_path(row: Row):
  r = runners(row)
  return r.run(r.tx.init(init_params()), init_params())


def reference_path(row: Row, hyperparams: dict):
  """The reference trajectory for these hyperparameter values."""
  params = init_params()
  if row.optax_make is not None:
    otx = row.optax_make(hyperparams)

    @jax.jit
    def run(params):
      with jax.numpy_dtype_promotion("standard"):
        return trajectory(
          otx,
          optax.apply_updates,
          loss,
          params,
          otx.init(params),
          NUM_STEPS,
        )[0]

    return run(params)
  flat, unravel = ravel_pytree(params)
  path = row.reference(hyperparams, np.asarray(flat), NUM_STEPS)
  return jax.vmap(unravel)(jnp.asarray(path, jnp.float32))


def row_hyperparams(row: Row, **changes):
  """The row's hyperparameters for the reference, as the row computes them.

  A decay given as a Python number keeps its exact ``1 - b`` in the state
  (as Optax computes it from the number); the reference gets a float whose
  ``1 - b`` rounds to that same float32.
  """
  state = runners(row).tx.init(init_params())
  values = jopt.get_hyperparams(state)
  for name, complement in (getattr(state, "complements", None) or {}).items():
    values[name] = 1.0 - float(complement)
  return {**values, **changes}
