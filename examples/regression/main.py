"""Regression examples: learning-rate sweeps with jopt.

    python examples/regression/main.py                 # both tasks
    python examples/regression/main.py --task linear   # y = 3x + 2 only
    python examples/regression/main.py --quick         # tiny smoke config

Plots go to ``--out`` (default ``./outputs/regression``), printed at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import matplotlib

matplotlib.use("Agg")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jopt  # noqa: E402

# One JAX CPU device per core, so that the sweeps run a trial on each core:
# before any JAX work (the modules below build arrays when imported).
jopt.use_cpu_devices()

import diabetes  # noqa: E402
import linear  # noqa: E402

QUICK = {
  "linear": {"steps": 100, "learning_rates": (0.01, 0.3, 0.6)},
  "diabetes": {"steps": 60, "num_trials": 4, "features": (16,)},
}


def main(argv: list[str] | None = None) -> dict[str, dict]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument(
    "--task", choices=("all", "linear", "diabetes"), default="all"
  )
  parser.add_argument("--out", default=os.path.join("outputs", "regression"))
  parser.add_argument(
    "--quick", action="store_true", help="a tiny configuration (smoke test)"
  )
  parser.add_argument("--no-progress", action="store_true")
  args = parser.parse_args(argv)
  out = os.path.abspath(args.out)
  progress = not args.no_progress
  cases = {
    "linear": ("linear regression by gradient descent (jopt.sgd)", linear.run),
    "diabetes": (
      "Flax NNX MLP on diabetes (jopt.adam), learning-rate sweep",
      diabetes.run,
    ),
  }
  summary = {}
  for name, (title, run) in cases.items():
    if args.task not in ("all", name):
      continue
    print(f"== {title} ==")
    start = time.perf_counter()
    kwargs = QUICK[name] if args.quick else {}
    summary[name] = run(out, progress=progress, **kwargs)
    print(f"[{name}: {time.perf_counter() - start:.1f} s]")
  print(f"plots written to {out}")
  return summary


if __name__ == "__main__":
  main()
