"""The classic small cases: XOR, iris grid search vs sklearn, random search.

    python examples/classics/main.py                  # all three
    python examples/classics/main.py --case iris      # one of xor|iris|tuner
    python examples/classics/main.py --quick          # tiny smoke config

Plots go to ``--out`` (default ``./outputs/classics``), printed at the end.
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

import iris  # noqa: E402
import tuner  # noqa: E402
import xor  # noqa: E402

QUICK = {
  "xor": {"num_seeds": 4, "steps": 300},
  "iris": {
    "steps": 100,
    "learning_rates": (1.0,),
    "strengths": (1e-3, 1e-1),
    "folds": 3,
  },
  "tuner": {"num_trials": 4, "steps": 30, "hidden": 16},
}


def main(argv: list[str] | None = None) -> dict[str, dict]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument(
    "--case", choices=("all", "xor", "iris", "tuner"), default="all"
  )
  parser.add_argument("--out", default=os.path.join("outputs", "classics"))
  parser.add_argument(
    "--quick", action="store_true", help="a tiny configuration (smoke test)"
  )
  parser.add_argument("--no-progress", action="store_true")
  args = parser.parse_args(argv)
  out = os.path.abspath(args.out)
  progress = not args.no_progress
  cases = {
    "xor": ("XOR: a 2-8-1 NNX MLP, seeds vmapped (jopt.adam)", xor.run, {}),
    "iris": (
      "iris: cross-validated grid search, jopt.sweep vs GridSearchCV",
      iris.run,
      {"progress": progress},
    ),
    "tuner": (
      "digits: random search over optimizer, learning rate, batch "
      "size and activation",
      tuner.run,
      {"progress": progress},
    ),
  }
  summary = {}
  for name, (title, run, kwargs) in cases.items():
    if args.case not in ("all", name):
      continue
    print(f"== {title} ==")
    start = time.perf_counter()
    summary[name] = run(out, **kwargs, **(QUICK[name] if args.quick else {}))
    print(f"[{name}: {time.perf_counter() - start:.1f} s]")
  print(f"plots written to {out}")
  return summary


if __name__ == "__main__":
  main()
