"""What the fixed lane width costs: the MLP sweep at several widths.

Every device computes its trials in vmapped groups of ``lanes`` (a
``lax.map`` over groups), so results do not depend on the device count or
chunking. A narrower group gives up some of vmap's batching; this script
measures how much, on the DESIGN "Performance 1" sweep (MLP 64-256-10 on
digits, Adam, K log-spaced learning rates), in the process as started (no
XLA flags unless you set them), best of ``--repeats`` runs after a warm-up.

  python benchmarks/lanes.py                 # K = 32, widths 1 ... 32
  python benchmarks/lanes.py --steps 100 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import sweep as bench  # noqa: E402  (benchmarks/sweep.py)

import jopt  # noqa: E402
from jopt import sweep  # noqa: E402


def main():
  jopt.use_cpu_devices()  # one CPU device per core: trials shard over them
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--k", type=int, default=32)
  p.add_argument("--steps", type=int, default=300)
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--widths", default="1,2,4,8,16,32")
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args()
  x, y, idx = bench.load_data(args.steps, args.batch)
  train = bench.make_train(x, y, idx, jopt.adam)
  lrs = np.geomspace(1e-4, 1e-1, args.k).astype(np.float32)
  space = {"lr": sweep.choice(lrs.tolist())}
  root = jax.random.key(0)
  print(
    f"jax {jax.__version__}, {jax.devices()[0].device_kind} x "
    f"{len(jax.devices())} devices, {os.cpu_count()} cores; K={args.k}, "
    f"steps={args.steps}"
  )

  def run(width):
    return sweep.run(
      lambda h, k: {"loss": train(h["lr"], k)},
      space,
      key=root,
      strategy="grid",
      progress=False,
      lanes=width,
    )

  widths = [int(w) for w in args.widths.split(",")]
  for w in widths:  # compile (and warm) each width once
    run(w)
  times = {w: [] for w in widths}
  for _ in range(args.repeats):  # interleaved, so load hits all alike
    for w in widths:
      start = time.perf_counter()
      run(w)
      times[w].append(time.perf_counter() - start)
  best = {w: min(t) for w, t in times.items()}
  widest = best[max(widths)]
  print("\nlanes   run s   vs widest")
  for w in widths:
    print(f"{w:5d} {best[w]:7.3f}   {widest / best[w]:6.2f}x")


if __name__ == "__main__":
  main()
