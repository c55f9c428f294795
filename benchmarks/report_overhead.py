"""What live progress costs: `jopt.sweep.report` inside the MLP sweep.

The DESIGN "Performance 1" sweep (MLP 64-256-10 on digits, Adam, K = 32
log-spaced learning rates, 300 steps) run three ways in one process, as a
user starts it (no XLA flags), after warm-up, best of ``--repeats``
interleaved runs: progress off (``report`` compiles to nothing), progress
on with ``report`` at every step, and at every 10th step, and the loop run
by `jopt.sweep.scan` with 10 reports per trial (and with progress off).
Prints the time ratios to the run without reporting last.

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


def make_train(x, y, idx, every, reports=None):
  """The sweep's train; ``every`` > 0 calls `report` in the loop body,
  ``reports`` runs the loop with `jopt.sweep.scan` instead."""
  x, y, idx = jnp.asarray(x), jnp.asarray(y), jnp.asarray(idx)
  steps = len(idx)

  def train(lr, key):
    tx = jopt.adam(lr)
    params = bench.init_params(key)

    def step(carry, inputs):
      t, batch_idx = inputs
      params, state = carry
      loss, grads = jax.value_and_grad(bench.loss_fn)(
        params, x[batch_idx], y[batch_idx]
      )
      updates, state = tx.update(grads, state, params)
      if every:
        sweep.report(t, num_steps=steps, every=every, loss=loss)
      return (jopt.apply_updates(params, updates), state), loss

    if reports:
      _, losses = sweep.scan(
        step,
        (params, tx.init(params)),
        (jnp.arange(steps), idx),
        num_reports=reports,
      )
    else:
      _, losses = jax.lax.scan(
        step, (params, tx.init(params)), (jnp.arange(steps), idx)
      )
    return losses

  return train


def main():
  jopt.use_cpu_devices()  # one CPU device per core: trials shard over them
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
  print(
    f"jax {jax.__version__}, {jax.devices()[0].device_kind} x "
    f"{len(jax.devices())} devices, {os.cpu_count()} cores; K={args.k}, "
    f"steps={args.steps}"
  )
  # name: (report every, jopt.sweep.scan reports, progress on)
  variants = {
    "off": (0, None, False),
    "report every step": (1, None, True),
    "report every 10th step": (10, None, True),
    "sweep.scan, 10 reports": (0, 10, True),
    "sweep.scan, progress off": (0, 10, False),
  }
  trains = {
    name: make_train(x, y, idx, every, reports)
    for name, (every, reports, _) in variants.items()
  }

  def run(name):
    progress = variants[name][2]
    return sweep.run(
      lambda h, k: {"loss": trains[name](h["lr"], k)},
      space,
      key=root,
      strategy="grid",
      progress=progress,
    )

  results = {name: run(name) for name in variants}  # compile and warm up
  times = {name: [] for name in variants}
  for _ in range(args.repeats):
    for name in variants:
      start = time.perf_counter()
      run(name)
      times[name].append(time.perf_counter() - start)

  def same(a, b):
    return np.array_equal(
      results[a].metrics["loss"], results[b].metrics["loss"]
    )

  best = {n: min(t) for n, t in times.items()}
  print(
    "\nresults identical with and without reporting: "
    f"report {same('report every step', 'off')}, "
    f"sweep.scan {same('sweep.scan, 10 reports', 'sweep.scan, progress off')}"
  )
  for name in variants:
    print(
      f"{name:>26}: {best[name]:.3f} s   "
      f"{best[name] / best['off']:.3f}x the run without reporting"
    )


if __name__ == "__main__":
  main()
