"""Should a default CPU process expose one JAX device per core?

Each configuration runs in a fresh process, started as a user starts one
(no XLA flags); the only difference is ``jopt.use_cpu_devices(n)`` right
after ``import jopt``. Each process times

* ordinary JAX code, which runs on device 0 whatever the count: one
  compiled ``lax.scan`` training run (the DESIGN "Performance 1" MLP,
  300 Adam steps) called K times, and a 2048 x 2048 matmul;
* ``jopt.sweep.run`` over K = 32 learning rates, end to end with its
  compile (a fresh process compiles), and again (a new ``train_fn``
  object with the same program: traced, not compiled).

Processes alternate between the configurations ``--repeats`` times (load
then hits both alike) and the best time of each is kept. Ratios last.

  python benchmarks/cpu_devices.py
  python benchmarks/cpu_devices.py --steps 100 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r"""
import json, os, sys, time
n = int(sys.argv[1]); k = int(sys.argv[2]); steps = int(sys.argv[3])
sys.path.insert(0, sys.argv[4]); sys.path.insert(0, os.path.dirname(sys.argv[4]))
import jax
import jopt
jopt.use_cpu_devices(n)
import jax.numpy as jnp, numpy as np
import sweep as bench
from jopt import sweep
x, y, idx = bench.load_data(steps, 128)
train = bench.make_train(x, y, idx, jopt.adam)
lrs = np.geomspace(1e-4, 1e-1, k).astype(np.float32)
root = jax.random.key(0)
out = {"devices": len(jax.devices())}
start = time.perf_counter()
res = sweep.run(lambda h, kk: {"loss": train(h["lr"], kk)},
                {"lr": sweep.choice(lrs.tolist())}, key=root,
                strategy="grid", progress=False)
out["sweep_end_to_end"] = time.perf_counter() - start
start = time.perf_counter()
sweep.run(lambda h, kk: {"loss": train(h["lr"], kk)},
          {"lr": sweep.choice(lrs.tolist())}, key=root, strategy="grid",
          progress=False)
out["sweep_again"] = time.perf_counter() - start
scan = jax.jit(train).lower(lrs[0], root).compile()
keys = [jax.random.fold_in(root, i) for i in range(k)]
jax.block_until_ready(scan(lrs[0], keys[0]))
start = time.perf_counter()
jax.block_until_ready([scan(lr, kk) for lr, kk in zip(lrs, keys)])
out["ordinary_scan"] = time.perf_counter() - start
a = jnp.ones((2048, 2048), jnp.float32)
mm = jax.jit(lambda a: a @ a)
jax.block_until_ready(mm(a))
start = time.perf_counter()
for _ in range(5):
  jax.block_until_ready(mm(a))
out["ordinary_matmul"] = (time.perf_counter() - start) / 5
print("RESULT " + json.dumps(out))
"""


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--k", type=int, default=32)
  p.add_argument("--steps", type=int, default=300)
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--devices", default=f"1,{os.cpu_count() or 1}")
  args = p.parse_args()
  counts = [int(c) for c in args.devices.split(",")]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  best: dict[int, dict[str, float]] = {}
  for _ in range(args.repeats):
    for n in counts:
      proc = subprocess.run(
        [
          sys.executable,
          "-c",
          CHILD,
          str(n),
          str(args.k),
          str(args.steps),
          HERE,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
      )
      line = [
        ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")
      ][-1]
      got = json.loads(line[len("RESULT ") :])
      mine = best.setdefault(n, {})
      for name, value in got.items():
        mine[name] = min(mine.get(name, value), value)
  base = counts[0]
  print(
    f"{os.cpu_count()} cores; K={args.k}, steps={args.steps}; best of "
    f"{args.repeats} processes per configuration; seconds"
  )
  names = [
    "sweep_end_to_end",
    "sweep_again",
    "ordinary_scan",
    "ordinary_matmul",
  ]
  print(f"{'devices':>8} " + " ".join(f"{n:>17}" for n in names))
  for n in counts:
    print(f"{n:>8} " + " ".join(f"{best[n][m]:>17.3f}" for m in names))
  for n in counts[1:]:
    print(f"\n{n} devices vs {base}: time ratio (< 1 is faster)")
    for m in names:
      print(f"  {m:>17}: {best[n][m] / best[base][m]:.3f}x")


if __name__ == "__main__":
  main()
