"""What `sweep.run(..., seeds=3)` costs on the CNN example, and what it buys.

For each of ``--repeats`` sweep keys, the CNN example's sweep
(`examples/cnn`, 16 quasi-random learning-rate x weight-decay trials,
``--steps`` steps) runs twice in one process: once with one seed per
configuration (the pick is the trial with the lowest validation loss) and
once with ``seeds=3`` (the pick has the lowest mean over three keys). Each
pick is then judged by its TRUE quality: its configuration retrained from
three fresh keys, the mean cross-entropy on the test split, which no sweep
sees. Printed: each sweep's wall time (compiles included) and the ratio,
how often the pick changed, and the median true test loss of each kind of
pick.

    python benchmarks/seeds.py                 # 5 keys x 400 steps
    python benchmarks/seeds.py --repeats 2 --steps 100
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import jopt

jopt.use_cpu_devices()  # one CPU device per core, as the example starts

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from jopt import sweep  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples/cnn"))
import data  # noqa: E402
import train  # noqa: E402


def true_loss(config, splits, hparams, retrain) -> float:
  """The mean test loss of ``hparams`` retrained from three fresh keys."""
  losses = []
  for s in range(3):
    key = jax.random.fold_in(jax.random.key(10_000), s)
    model, _ = retrain({k: jnp.float32(v) for k, v in hparams.items()}, key)
    losses.append(
      float(train.evaluate(model, splits.x_test, splits.y_test)["loss"])
    )
  return float(np.mean(losses))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--steps", type=int, default=400)
  args = p.parse_args()
  config = dataclasses.replace(train.Config(), num_steps=args.steps)
  splits = data.load_splits(seed=config.seed)
  train_fn, _ = train.make_train_fn(splits, config)
  retrain = nnx.jit(train.make_train(splits.x_train, splits.y_train, config))
  space = train.search_space(config)
  rows = []
  for r in range(args.repeats):
    row = {}
    for seeds in (None, 3):
      sweep.clear_caches()  # each sweep pays its compile, as a new process
      start = time.perf_counter()
      res = sweep.run(
        train_fn,
        space,
        num_trials=config.num_trials,
        key=jax.random.key(r),
        strategy="quasirandom",
        progress=False,
        seeds=seeds,
      )
      wall = time.perf_counter() - start
      best = res.best("val_loss")
      row[seeds] = (
        wall,
        best.index,
        true_loss(config, splits, best.hparams, retrain),
      )
    rows.append(row)
    print(
      f"key {r}: seeds=1 {row[None][0]:.1f} s pick {row[None][1]} "
      f"true {row[None][2]:.4f} | seeds=3 {row[3][0]:.1f} s pick "
      f"{row[3][1]} true {row[3][2]:.4f}",
      flush=True,
    )
  ratio = [row[3][0] / row[None][0] for row in rows]
  changed = sum(row[3][1] != row[None][1] for row in rows)
  print(
    f"RESULT seeds=3 costs {np.median(ratio):.2f}x the wall time of "
    f"seeds=1 (median over {len(rows)} keys); the pick changed in "
    f"{changed} of {len(rows)}; median true test loss of the pick: "
    f"seeds=1 {np.median([r[None][2] for r in rows]):.4f}, seeds=3 "
    f"{np.median([r[3][2] for r in rows]):.4f}"
  )


if __name__ == "__main__":
  main()
