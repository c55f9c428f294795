"""How far jopt's trajectories drift from Optax's, same optimizer, same steps.

Each optimizer trains a small least-squares problem for ``--steps`` steps in
jopt and in Optax, built with the same Python-float hyperparameters (the
unswept case), both jitted the same way. Prints the largest relative
difference of the params along the trajectory, and whether the last params
are bit-identical.

    python benchmarks/optax_drift.py --steps 40
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jopt

OPTIMIZERS = {
  "adam": lambda lib: lib.adam(1e-2),
  "adamw": lambda lib: lib.adamw(1e-2, weight_decay=1e-2),
  "nadam": lambda lib: lib.nadam(1e-2),
  "amsgrad": lambda lib: lib.amsgrad(1e-2),
  "adamax": lambda lib: lib.adamax(1e-2),
  "rmsprop": lambda lib: lib.rmsprop(1e-2),
  "lion": lambda lib: lib.lion(1e-3),
  "sgd_momentum": lambda lib: lib.sgd(1e-2, momentum=0.9),
}


def trajectory(tx, steps: int) -> np.ndarray:
  key_a, key_b = jax.random.split(jax.random.key(0))
  a = jax.random.normal(key_a, (64, 16))
  b = jax.random.normal(key_b, (64,))

  def loss(w):
    return jnp.mean((a @ w - b) ** 2)

  @jax.jit
  def run(w):
    def step(carry, _):
      w, state = carry
      updates, state = tx.update(jax.grad(loss)(w), state, w)
      w = optax.apply_updates(w, updates)
      return (w, state), w

    _, path = jax.lax.scan(step, (w, tx.init(w)), None, length=steps)
    return path

  return np.asarray(run(jnp.zeros(16)))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=40)
  args = parser.parse_args()
  print(f"{'optimizer':14s} {'max rel. diff':>14s}  identical")
  for name, make in OPTIMIZERS.items():
    ours = trajectory(make(jopt), args.steps)
    with jax.numpy_dtype_promotion("standard"):
      theirs = trajectory(make(optax), args.steps)
    scale = np.maximum(np.abs(theirs), 1e-3)
    drift = float(np.max(np.abs(ours - theirs) / scale))
    same = bool(np.array_equal(ours[-1], theirs[-1]))
    print(f"{name:14s} {drift:14.2e}  {same}")


if __name__ == "__main__":
  main()
