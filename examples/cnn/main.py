"""Learning-rate and weight-decay sweep of a CNN on scikit-learn's digits.

    python examples/cnn/main.py                # 16 trials x 400 steps
    python examples/cnn/main.py --quick        # a few seconds of training
    python examples/cnn/main.py --tensorboard  # also for TensorBoard

Every trial trains at once, as one compiled program (see train.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jopt

# One JAX CPU device per core, so that the sweep runs a trial on each core:
# before any JAX work.
jopt.use_cpu_devices()

import pandas as pd  # noqa: E402
import train  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--trials", type=int, help="number of trials")
  parser.add_argument("--steps", type=int, help="optimizer steps per trial")
  parser.add_argument("--batch-size", type=int, help="minibatch size")
  parser.add_argument("--seed", type=int, help="split, sampling and keys")
  parser.add_argument(
    "--seeds", type=int, help="seeds per configuration (ranked by the mean)"
  )
  parser.add_argument(
    "--out", default="out/cnn_sweep", help="folder for the table and plots"
  )
  parser.add_argument(
    "--quick",
    action="store_true",
    help="a tiny configuration, for tests and CI",
  )
  parser.add_argument(
    "--no-progress", action="store_true", help="hide the progress bar"
  )
  parser.add_argument(
    "--tensorboard",
    action="store_true",
    help="also write the trials for TensorBoard (OUT/tensorboard)",
  )
  return parser.parse_args(argv)


def main(argv=None) -> dict:
  args = parse_args(argv)
  config = train.QUICK if args.quick else train.Config()
  overrides = {
    "num_trials": args.trials,
    "num_steps": args.steps,
    "batch_size": args.batch_size,
    "seed": args.seed,
    "seeds": args.seeds,
  }
  config = dataclasses.replace(
    config, **{k: v for k, v in overrides.items() if v is not None}
  )
  print(
    f"Sweeping {config.num_trials} trials x {config.num_steps} steps "
    f"(batch {config.batch_size}) of a CNN on digits."
  )
  start = time.perf_counter()
  summary = train.run(
    config,
    args.out,
    progress=not args.no_progress,
    tensorboard=args.tensorboard,
  )
  columns = [
    "learning_rate",
    "weight_decay",
    "val_loss",
    "val_accuracy",
    "train_loss",
    "diverged",
  ]
  with pd.option_context(
    "display.float_format", "{:.4g}".format, "display.width", 120
  ):
    print(summary["table"][columns].to_string(index=False))
  hparams = ", ".join(
    f"{k}={v:.3g}" for k, v in summary["best_hparams"].items()
  )
  print(
    f"\nBest (lowest validation loss): trial {summary['best_trial']}: {hparams}"
  )
  print(
    f"  validation accuracy {summary['val_accuracy']:.2%}; retrained on "
    f"train + validation: test accuracy {summary['test_accuracy']:.2%}"
  )
  print(
    f"Sweep: {summary['sweep_seconds']:.1f} s; total: "
    f"{time.perf_counter() - start:.1f} s"
  )
  print(
    f"Table and plots written to {args.out}/: "
    + ", ".join(p.rsplit("/", 1)[-1] for p in summary["plots"].values())
  )
  if summary["tensorboard"]:
    print(
      f"TensorBoard runs written to {summary['tensorboard']}/: "
      f"tensorboard --logdir {summary['tensorboard']}"
    )
  return summary


if __name__ == "__main__":
  main()
