"""What live progress costs: `jopt.sweep.report` inside the MLP sweep.

The DESIGN "Performance 1" sweep (MLP 64-256-10 on digits, Adam, K = 32
log-spaced learning rates, 300 steps) run three ways in one process, as a
user starts it (no XLA flags), after warm-up, best of ``--repeats``
interleaved runs: progress off (``report`` compiles to nothing), progress
on with ``report`` at every step, and at every 10th step. Prints the time
ratios to the run without reporting last.

  python benchmarks/report_overhead.py
  python benchmarks/report_overhead.py --steps 100 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import sweep as bench  # noqa: E402  (benchmarks/sweep.py)

import jopt  # noqa: E402
from jopt import sweep  # noqa: E402


def make_train(x, y, idx, every):
  x, y, idx = jnp.asarray(x), jnp.asarray(y), jnp.asarray(idx)
  steps = len(idx)

  def train(lr, key):
    tx = jopt.adam(lr)
    params = bench.init_params(key)

    def step(carry, inputs):
      t, batch_idx = inputs
      params, state = carry
      loss, grads = jax.value_and_grad(bench.loss_fn)(
          params, x[batch_idx], y[batch_idx])
      updates, state = tx.update(grads, state, params)
      if every:
        sweep.report(t, num_steps=steps, every=every, loss=loss)
      return (jopt.apply_updates(params, updates), state), loss

    _, losses = jax.lax.scan(step, (params, tx.init(params)),
                             (jnp.arange(steps), idx))
    return losses

  return train


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--k", type=int, default=32)
  p.add_argument("--steps", type=int, default=300)
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args()
  os.environ["JOPT_PROGRESS"] = "1"
  x, y, idx = bench.load_data(args.steps, args.batch)
  lrs = np.geomspace(1e-4, 1e-1, args.k).astype(np.float32)
  space = {"lr": sweep.choice(lrs.tolist())}
  root = jax.random.key(0)
  print(f"jax {jax.__version__}, {jax.devices()[0].device_kind} x "
        f"{len(jax.devices())} devices, {os.cpu_count()} cores; K={args.k}, "
        f"steps={args.steps}")
  variants = {"off": (0, False), "every step": (1, True),
              "every 10th step": (10, True)}
  trains = {name: make_train(x, y, idx, every)
            for name, (every, _) in variants.items()}

  def run(name):
    progress = variants[name][1]
    return sweep.run(lambda h, k: {"loss": trains[name](h["lr"], k)}, space,
                     key=root, strategy="grid", progress=progress)

  results = {name: run(name) for name in variants}  # compile and warm up
  times = {name: [] for name in variants}
  for _ in range(args.repeats):
    for name in variants:
      start = time.perf_counter()
      run(name)
      times[name].append(time.perf_counter() - start)
  same = all(np.array_equal(results[n].metrics["loss"],
                            results["off"].metrics["loss"]) for n in variants)
  best = {n: min(t) for n, t in times.items()}
  print(f"\nresults identical with and without reporting: {same}")
  for name in variants:
    print(f"{name:>16}: {best[name]:.3f} s   "
          f"{best[name] / best['off']:.3f}x the run without reporting")


if __name__ == "__main__":
  main()
