"""Search efficiency on noise-aware terms: grid vs halving, Hyperband, PBT.

Every method searches the AdamW learning rate of the CNN of ``examples/cnn``
(the race's task, ``benchmarks/race_task.py``: 8-16 channels, no dropout,
weight decay and ``b1`` fixed) on scikit-learn's digits. A segment is
``--segment-steps`` steps followed by the validation loss; a full trial is
``--max-segments`` segments.

* grid: ``--grid`` log-spaced learning rates, each trained to the full
  budget (``jopt.sweep.run_stepwise``);
* successive halving over the same grid (eta 3);
* Hyperband (eta 3, per-bracket quasirandom rates);
* PBT: ``--population`` members exploiting and exploring every
  ``--pbt-every`` segments, against as many fixed log-spaced rates trained
  as long (EQUAL member-steps), the best chosen by validation.

What counts is the TRUE quality of a pick, not the noisy validation value a
search saw: the chosen rate (PBT: its best member's schedule) is retrained
from 3 fresh seeds at the full budget and scored by the mean loss on the
TEST split, which no search sees. Every search is repeated with
``--repeats`` keys. Targets (printed LAST):

* successive halving and Hyperband reach the grid's median true quality
  within one standard error of it (sd over repeats / sqrt(repeats)), using
  at most 1/3 of the grid's member-steps (median over repeats);
* PBT's median true quality beats that of the best fixed rate at equal
  member-steps.

When a target is missed, the script shows where that search's budget went
(rungs, survivors, the true quality of every grid rate).

    python benchmarks/search_efficiency.py            # the full comparison
    python benchmarks/search_efficiency.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import jax
import numpy as np

import jopt
from jopt import sweep

sys.path.insert(0, str(Path(__file__).resolve().parent))
import race_task as race  # noqa: E402


def quartiles(xs):
  return np.nanpercentile(np.asarray(xs, np.float64), [25, 50, 75])


def budget_of_rungs(res, steps):
  """Lines: per rung, trials ranked, segments reached, member-steps spent."""
  lines, seen = [], {}
  for rung in res.history["rungs"]:
    spent = 0
    for t in rung["trials"]:
      spent += (rung["segments"] - seen.get(int(t), 0)) * steps
      seen[int(t)] = rung["segments"]
    lrs = res.hparams["learning_rate"][np.asarray(rung["trials"], int)]
    lines.append(
      f"{len(rung['trials']):>4} trials to {rung['segments']:>3} "
      f"segments: {spent:>6} member-steps, rates "
      f"{lrs.min():.2g}..{lrs.max():.2g}"
    )
  return lines


def main(argv=None):
  jopt.use_cpu_devices()  # one CPU device per core: trials shard over them
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true", help="a smoke run")
  p.add_argument("--grid", type=int, default=27, help="grid size")
  p.add_argument("--max-segments", type=int, default=27)
  p.add_argument("--segment-steps", type=int, default=10)
  p.add_argument("--sh-min-segments", type=int, default=3)
  p.add_argument("--hb-min-segments", type=int, default=3)
  p.add_argument("--population", type=int, default=9)
  p.add_argument(
    "--pbt-every", type=int, default=3, help="segments per PBT round"
  )
  p.add_argument("--lr-range", type=float, nargs=2, default=(1e-4, 0.3))
  p.add_argument("--repeats", type=int, default=5)
  args = p.parse_args(argv)
  if args.quick:
    args.grid, args.max_segments, args.segment_steps = 9, 3, 4
    args.population, args.pbt_every, args.repeats = 4, 1, 2
    args.sh_min_segments = args.hb_min_segments = 1
  t0 = time.perf_counter()
  steps, full = args.segment_steps, args.max_segments
  budget = dataclasses.replace(
    race.QUICK if args.quick else race.Budget(),
    segment_steps=steps,
    segments=full,
    repeats=args.repeats,
  )
  task = race.Task(budget, {"learning_rate": sweep.log_uniform(*args.lr_range)})
  print(
    f"task: CNN {budget.features[0]}-{budget.features[1]} on digits, "
    f"AdamW learning rate in {tuple(args.lr_range)}; segment = {steps} "
    f"steps, full = {full} segments; {args.repeats} repeats; true "
    f"quality = test loss retrained from {budget.seeds} fresh seeds"
  )
  common = {
    "metric": "val_loss",
    "steps_per_segment": steps,
    "max_segments": full,
  }
  rounds = full // args.pbt_every
  names = (
    "grid",
    "successive halving",
    "hyperband",
    "PBT",
    f"{args.population} fixed rates (PBT's member-steps)",
  )
  runs = {n: [] for n in names}
  for r in range(args.repeats):
    key = jax.random.key(r)
    grid = sweep.run_stepwise(
      task.init,
      task.segment,
      task.space,
      num_segments=full,
      key=key,
      metric="val_loss",
      strategy="grid",
      grid_points=args.grid,
      steps_per_segment=steps,
    )
    sh = sweep.successive_halving(
      task.init,
      task.segment,
      task.space,
      num_trials=args.grid,
      key=key,
      eta=3,
      min_segments=args.sh_min_segments,
      strategy="grid",
      grid_points=args.grid,
      **common,
    )
    hb = sweep.hyperband(
      task.init,
      task.segment,
      task.space,
      key=jax.random.fold_in(key, 1),
      eta=3,
      min_segments=args.hb_min_segments,
      **common,
    )
    pb = sweep.pbt(
      task.init,
      task.segment,
      task.space,
      population=args.population,
      key=jax.random.fold_in(key, 2),
      num_rounds=rounds,
      segments_per_round=args.pbt_every,
      metric="val_loss",
      steps_per_segment=steps,
    )
    fixed = sweep.run_stepwise(
      task.init,
      task.segment,
      task.space,
      num_segments=rounds * args.pbt_every,
      key=jax.random.fold_in(key, 2),
      metric="val_loss",
      strategy="grid",
      grid_points=args.population,
      steps_per_segment=steps,
    )
    assert fixed.member_steps == pb.member_steps
    sched = pb.schedule(pb.best().index)["learning_rate"]
    # A round's rate holds for its segments; the retrain runs them all.
    sched = np.resize(np.repeat(sched, args.pbt_every), full)
    for n, res, pick in zip(
      names,
      (grid, sh, hb, pb, fixed),
      (
        grid.best().hparams,
        sh.best().hparams,
        hb.best().hparams,
        {"learning_rate": sched},
        fixed.best().hparams,
      ),
      strict=True,
    ):
      runs[n].append({"res": res, "pick": pick, "steps": res.member_steps})
    print(f"repeat {r}: done [{time.perf_counter() - t0:.0f} s]", flush=True)

  for n in names:
    for x, q in zip(
      runs[n], task.true_quality([x["pick"] for x in runs[n]]), strict=True
    ):
      x["true"] = q
  # Every grid rate's true quality (the grid is the same in every repeat).
  lrs = runs["grid"][0]["res"].hparams["learning_rate"]
  oracle = task.true_quality([{"learning_rate": v} for v in lrs])
  print(f"judging: {task.judge_seconds:.0f} s")

  grid_steps = np.median([x["steps"] for x in runs["grid"]])
  print()
  print(
    f"{'method':<40}{'true test loss: median [IQR]':>30}"
    f"{'member-steps':>14}{'fraction':>10}"
  )
  for n in names:
    q = quartiles([x["true"] for x in runs[n]])
    s = np.median([x["steps"] for x in runs[n]])
    print(
      f"{n:<40}{q[1]:>12.4f} [{q[0]:.4f}, {q[2]:.4f}]{int(s):>14d}"
      f"{s / grid_steps:>10.3f}"
    )
  print(
    "true test loss of every grid rate (3 fresh seeds): "
    + ", ".join(f"{v:.2g}: {q:.3f}" for v, q in zip(lrs, oracle, strict=True))
  )
  best_i = int(np.nanargmin(oracle))
  print(
    f"oracle: the best grid rate by true quality is {lrs[best_i]:.3g} "
    f"({oracle[best_i]:.4f}); the grid's picks: "
    + ", ".join(f"{x['pick']['learning_rate']:.3g}" for x in runs["grid"])
  )

  g = np.asarray([x["true"] for x in runs["grid"]])
  se = float(np.std(g, ddof=1) / np.sqrt(len(g))) if len(g) > 1 else 0.0
  target = float(np.median(g)) + se
  verdicts = []
  for n in ("successive halving", "hyperband"):
    q = float(np.median([x["true"] for x in runs[n]]))
    frac = np.median([x["steps"] for x in runs[n]]) / grid_steps
    ok = q <= target and frac <= 1 / 3
    verdicts.append(
      f"{n}: median true loss {q:.4f} vs the grid's "
      f"{np.median(g):.4f} + 1 SE {se:.4f} = {target:.4f}, "
      f"{frac:.3f} of the grid's member-steps (<= 0.333): "
      f"{'MET' if ok else 'MISSED'}"
    )
    if not ok:
      print(f"\nWhere {n}'s budget went: its pick in every repeat")
      for i, x in enumerate(runs[n]):
        best = x["res"].best()
        val = float(np.ravel(best.metrics["val_loss"])[-1])
        print(
          f"  repeat {i}: rate {best.hparams['learning_rate']:.3g}, "
          f"validation loss {val:.4f}, true loss {x['true']:.4f}"
        )
      worst = int(np.argmax([x["true"] for x in runs[n]]))
      print(f"and its rungs in repeat {worst}, its worst:")
      for line in budget_of_rungs(runs[n][worst]["res"], steps):
        print("  " + line)
  pq = float(np.median([x["true"] for x in runs["PBT"]]))
  fq = float(np.median([x["true"] for x in runs[names[-1]]]))
  if pq >= fq:
    pb = runs["PBT"][0]["res"]
    print(
      f"\nWhere PBT's budget went (repeat 0): {pb.member_steps} "
      f"member-steps over {args.population} members x {rounds} rounds; "
      f"its best member's rate per round: "
      + ", ".join(
        f"{v:.2g}" for v in pb.schedule(pb.best().index)["learning_rate"]
      )
    )
  verdicts.append(
    f"PBT: median true loss {pq:.4f} vs {fq:.4f} for the best "
    f"of {args.population} fixed rates at equal member-steps: "
    f"{'MET' if pq < fq else 'MISSED'}"
  )
  print(f"\n[total {time.perf_counter() - t0:.0f} s]")
  print(f"\nTARGETS (median over {args.repeats} repeats):")
  for v in verdicts:
    print("  " + v)


if __name__ == "__main__":
  main()
