"""Search efficiency on CNN-digits: grid vs successive halving, Hyperband, PBT.

Every method searches the Adam learning rate of a small CNN on scikit-learn's
digits (the model and split of ``examples/cnn``; an MLP and a local split if
that example cannot be imported). One segment is ``--segment-steps`` Adam
steps followed by the validation loss; a trial's full budget is
``--max-segments`` segments.

* grid: ``--grid`` log-spaced learning rates, each trained to the full
  budget (``jopt.sweep.run_stepwise``);
* successive halving over the same grid (eta 3);
* Hyperband (eta 3, per-bracket quasirandom learning rates, the smallest
  budget ``--hb-min-segments``, ``--hb-iterations`` runs of its brackets);
* PBT: ``--population`` members trained to the full budget, exploiting and
  exploring every ``--pbt-every`` segments.

Member-steps count every training step of every trial. For each method the
script records, after each rung / round / segment, the best validation loss
seen so far against the member-steps spent so far, and prints LAST the
fraction of the grid's member-steps each method needed to come within 1% of
the grid's best validation loss.

    python benchmarks/search_efficiency.py            # the full comparison
    python benchmarks/search_efficiency.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jopt
from jopt import sweep

ROOT = Path(__file__).resolve().parents[1]


def load_task(batch_size: int, model: str):
  """``(init, segment_factory, description)`` for the CNN-digits task."""
  try:
    if model != "cnn":
      raise ImportError("--model mlp")
    sys.path.insert(0, str(ROOT / "examples" / "cnn"))
    import data as cnn_data
    import model as cnn_model

    splits = cnn_data.load_splits(seed=0)
    x_tr, y_tr, x_va, y_va = (splits.x_train, splits.y_train, splits.x_val,
                              splits.y_val)
    net = cnn_model.CNN(features=(8, 16), dropout_rate=0.0)
    what = "CNN (examples/cnn, features 8-16)"
  except Exception as e:  # the example is optional: fall back to an MLP
    import flax.linen as nn
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if model == "cnn":
      print(f"[examples/cnn not importable ({e!r}); using an MLP]")
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int32)
    x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=0.25,
                                              stratify=y, random_state=0)

    class MLP(nn.Module):
      @nn.compact
      def __call__(self, x):
        x = x.reshape(x.shape[:-3] + (-1,))
        return nn.Dense(10)(nn.relu(nn.Dense(128)(x)))

    net = MLP()
    what = "MLP 64-128-10"
  x_tr, y_tr = jnp.asarray(x_tr), jnp.asarray(y_tr)
  x_va, y_va = jnp.asarray(x_va), jnp.asarray(y_va)

  def xent(params, x, y):
    logits = net.apply({"params": params}, x)
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))

  # Built once with a placeholder rate: each trial's rate lives in its
  # optimizer state (set_hyperparams), so PBT can change it between rounds.
  tx = jopt.adam(1e-3)

  def init(hp, key):
    k_init, k_data = jax.random.split(key)
    params = net.init(k_init, x_tr[:1])["params"]
    opt_state = jopt.set_hyperparams(tx.init(params), learning_rate=hp["lr"])
    return params, opt_state, k_data

  def make_segment(steps):
    def segment(state, hp):
      params, opt_state, key = state
      opt_state = jopt.set_hyperparams(opt_state, learning_rate=hp["lr"])

      def step(carry, k):
        params, opt_state = carry
        idx = jax.random.randint(k, (batch_size,), 0, x_tr.shape[0])
        loss, g = jax.value_and_grad(xent)(params, x_tr[idx], y_tr[idx])
        updates, opt_state = tx.update(g, opt_state, params)
        return (jopt.apply_updates(params, updates), opt_state), loss

      key, sub = jax.random.split(key)
      (params, opt_state), losses = jax.lax.scan(
          step, (params, opt_state), jax.random.split(sub, steps))
      val = xent(params, x_va, y_va)
      return (params, opt_state, key), {"val_loss": val,
                                        "train_loss": jnp.mean(losses)}
    return segment

  return init, make_segment, what


def trace_of_rungs(res, steps):
  """(cumulative member-steps, best val loss so far) after each rung."""
  spent, best, points = 0, np.inf, []
  seen = {}
  for rung in res.history["rungs"]:
    for t, v in zip(rung["trials"], rung["values"], strict=True):
      spent += (rung["segments"] - seen.get(int(t), 0)) * steps
      seen[int(t)] = rung["segments"]
      best = min(best, v) if np.isfinite(v) else best
    points.append((spent, best))
  return points


def first_within(points, target):
  for spent, best in points:
    if best <= target:
      return spent
  return None


def seed_spread(init, segment, space, args, finals, lrs) -> str:
  """The grid rerun with other keys: how much of "the best" is the seed.

  Every trial draws its initialization and batch order from its key, so a
  grid's best validation loss is the luckiest of its trials. The same grid
  with other keys shows the spread that a "within 1%" target sits inside.
  """
  if args.noise_seeds <= 0:
    return ""
  rows = [finals]
  for s in range(1, args.noise_seeds + 1):
    g = sweep.run_stepwise(
        init, segment, space, num_segments=args.max_segments,
        key=jax.random.key(args.seed + s), metric="val_loss",
        strategy="grid", grid_points=args.grid,
        steps_per_segment=args.segment_steps)
    rows.append(g.metrics["val_loss"][:, -1])
  finals = np.stack(rows)  # [seeds, grid]
  bests = np.nanmin(finals, axis=1)
  mean = np.nanmean(finals, axis=0)
  i = int(np.nanargmin(mean))
  at_best = finals[:, i]
  return "\n".join([
      f"Seed-to-seed spread: the same {args.grid}-rate grid with keys "
      f"{args.seed}..{args.seed + args.noise_seeds}:",
      "  best final val loss per key: "
      + ", ".join(f"{b:.4f}" for b in bests)
      + f" (the largest is {bests.max() / bests.min() - 1:.0%} above the "
        "smallest)",
      f"  at lr {lrs[i]:.3g} (best mean over keys): mean {mean[i]:.4f}, "
      f"sd {at_best.std():.4f} ({at_best.std() / mean[i]:.0%} of the mean), "
      f"range {at_best.min():.4f}-{at_best.max():.4f}",
  ])


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true",
                 help="a smoke run: 16 configs, 9 segments of 5 steps")
  p.add_argument("--grid", type=int, default=64, help="grid size")
  p.add_argument("--max-segments", type=int, default=27)
  p.add_argument("--segment-steps", type=int, default=10)
  p.add_argument("--batch-size", type=int, default=64)
  p.add_argument("--sh-min-segments", type=int, default=3,
                 help="segments before the first halving rung")
  p.add_argument("--hb-min-segments", type=int, default=3,
                 help="Hyperband's smallest budget, in segments")
  p.add_argument("--hb-iterations", type=int, default=2,
                 help="Hyperband iterations (each runs every bracket)")
  p.add_argument("--population", type=int, default=16)
  p.add_argument("--pbt-every", type=int, default=3,
                 help="segments per PBT round")
  p.add_argument("--lr-range", type=float, nargs=2, default=(1e-4, 1.0))
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--noise-seeds", type=int, default=3,
                 help="grids rerun with keys seed+1..seed+N to measure the "
                      "seed-to-seed spread (0 skips)")
  p.add_argument("--model", choices=("cnn", "mlp"), default="cnn",
                 help="the examples/cnn CNN (8-16 channels) or an MLP")
  args = p.parse_args(argv)
  if args.quick:
    args.grid, args.max_segments, args.segment_steps = 16, 9, 5
    args.population, args.sh_min_segments, args.hb_min_segments = 8, 1, 1
  steps = args.segment_steps
  init, make_segment, what = load_task(args.batch_size, args.model)
  segment = make_segment(steps)
  space = {"lr": sweep.log_uniform(*args.lr_range)}
  key = jax.random.key(args.seed)
  full = args.max_segments * steps
  print(f"task: {what} on digits, Adam, batch {args.batch_size}; segment = "
        f"{steps} steps, full budget = {args.max_segments} segments "
        f"({full} steps); devices: {jax.devices()}")

  rows = []  # name, best val, member-steps, wall, compiles, trace

  # Grid: every learning rate at the full budget.
  grid = sweep.run_stepwise(
      init, segment, space, num_segments=args.max_segments, key=key,
      metric="val_loss", strategy="grid", grid_points=args.grid,
      steps_per_segment=steps)
  curves = grid.metrics["val_loss"]
  grid_trace = [(args.grid * (s + 1) * steps,
                 np.nanmin(curves[:, : s + 1])) for s in range(curves.shape[1])]
  grid_best = float(np.nanmin(curves[:, -1]))
  best_fixed = grid.best()
  rows.append(("grid", grid_best, grid.member_steps, grid.wall_time,
               grid.num_compiles, grid_trace))
  print(f"grid: best final val loss {grid_best:.4f} at lr "
        f"{best_fixed.hparams['lr']:.3g}")
  noise = seed_spread(init, segment, space, args, curves[:, -1],
                      grid.hparams["lr"])

  sh = sweep.successive_halving(
      init, segment, space, num_trials=args.grid, key=key, eta=3,
      min_segments=args.sh_min_segments, max_segments=args.max_segments,
      metric="val_loss", strategy="grid",
      grid_points=args.grid, steps_per_segment=steps)
  rows.append(("successive halving", float(sh.best().metrics["val_loss"]),
               sh.member_steps, sh.wall_time, sh.num_compiles,
               trace_of_rungs(sh, steps)))

  hb = sweep.hyperband(
      init, segment, space, key=jax.random.fold_in(key, 1), eta=3,
      min_segments=args.hb_min_segments, max_segments=args.max_segments,
      iterations=args.hb_iterations, metric="val_loss",
      steps_per_segment=steps)
  rows.append(("hyperband", float(hb.best().metrics["val_loss"]),
               hb.member_steps, hb.wall_time, hb.num_compiles,
               trace_of_rungs(hb, steps)))

  rounds = args.max_segments // args.pbt_every
  pb = sweep.pbt(
      init, segment, space, population=args.population,
      key=jax.random.fold_in(key, 2), num_rounds=rounds,
      segments_per_round=args.pbt_every, metric="val_loss",
      steps_per_segment=steps, resample_prob=0.1)
  pbt_trace = [(args.population * (r + 1) * args.pbt_every * steps,
                float(np.nanmin(pb.metric_history[: r + 1])))
               for r in range(rounds)]
  pbt_best = float(pb.best().metrics["val_loss"])
  rows.append(("PBT", pbt_best, pb.member_steps, pb.wall_time,
               pb.num_compiles, pbt_trace))

  target = 1.01 * grid_best
  print()
  print(f"{'method':<20}{'best val loss':>14}{'member-steps':>14}"
        f"{'fraction':>10}{'wall s':>9}{'compiles':>10}")
  for name, best, spent, wall, compiles, _ in rows:
    print(f"{name:<20}{best:>14.4f}{spent:>14d}"
          f"{spent / grid.member_steps:>10.3f}{wall:>9.1f}{compiles:>10d}")

  # PBT against fixed learning rates at EQUAL member-steps: as many
  # log-spaced rates over the same range as PBT has members, each trained
  # for as many steps as a PBT member, with the same per-member keys
  # (initializations and data order) as PBT's members.
  sched = pb.schedule(pb.best().index)["lr"]
  print()
  print(f"PBT best member's lr schedule (per round of {args.pbt_every} "
        f"segments): " + ", ".join(f"{v:.2g}" for v in sched))
  fixed = sweep.run_stepwise(
      init, segment, space, num_segments=rounds * args.pbt_every,
      key=jax.random.fold_in(key, 2), metric="val_loss", strategy="grid",
      grid_points=args.population, steps_per_segment=steps)
  sub_final = fixed.metrics["val_loss"][:, -1]
  sub_best = float(np.nanmin(sub_final))
  sub_lr = fixed.hparams["lr"][int(np.nanargmin(sub_final))]
  assert fixed.member_steps == pb.member_steps
  for label, ref, steps_ref in (
      (f"the best of {len(sub_final)} fixed rates (EQUAL member-steps)",
       sub_best, fixed.member_steps),
      (f"the best of all {args.grid} fixed rates", grid_best,
       grid.member_steps)):
    verdict = "matches/beats" if pbt_best <= ref * 1.01 else "is behind"
    print(f"PBT ({pb.member_steps} member-steps) {verdict} {label} "
          f"({steps_ref} member-steps): {pbt_best:.4f} vs {ref:.4f}")
  print(f"(best of the {len(sub_final)} fixed rates: lr {sub_lr:.3g})")

  if noise:
    print()
    print(noise)
  print()
  print(f"Fraction of the grid's member-steps ({grid.member_steps}) needed to "
        f"come within 1% of the grid's best validation loss "
        f"({grid_best:.4f} -> target {target:.4f}):")
  for name, _, _, _, _, trace in rows:
    spent = first_within(trace, target)
    shown = ("not reached" if spent is None
             else f"{spent / grid.member_steps:.3f}")
    print(f"  {name:<20}{shown}")


if __name__ == "__main__":
  start = time.perf_counter()
  main()
  print(f"[total {time.perf_counter() - start:.0f} s]")
