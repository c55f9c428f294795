"""The race: jopt's searches against Optuna as its users run it, by TRUE quality.

Task: the Flax NNX CNN of ``examples/cnn`` (smaller channels, no dropout:
see `Budget`) on scikit-learn's digits, AdamW; searched: learning rate,
weight decay (log-uniform, the example's ranges) and Adam's ``b1``. A trial
is ``segments`` segments of ``segment_steps`` steps, each followed by the
validation loss; every search gets the same full budget per trial.

Contestants (each repeated with ``repeats`` keys):

* jopt: quasirandom `jopt.sweep.run` (at several sizes), successive halving,
  Hyperband, PBT, batched `jopt.sweep.optuna_search`;
* Optuna, segment compiled once (jopt's style): one sequential study,
  ``TPESampler`` with ``HyperbandPruner`` and with ``MedianPruner``, the
  validation loss reported after every segment; its init and segment (a
  ``lax.scan`` of steps) are jitted ONCE with the hyperparameters as
  arrays, so no trial recompiles (the one compile is charged to every
  study, as a user running a study in a fresh process pays it). This is
  Optuna at its best, and the reference of the ratios;
* Optuna as its users write it (``race_optuna.UserLoopOptuna``): TPE +
  ``MedianPruner`` over an objective that is a plain Flax NNX training
  loop: per trial a fresh model and ``nnx.Optimizer(model,
  optax.adamw(lr, b1=..., weight_decay=...), wrt=nnx.Param)``, host-drawn
  minibatches, one ``@nnx.jit`` train step per call (retraced and compiled
  in every trial: the trial's optimizer is part of its cache key), the
  validation loss reported after every segment; with ``n_jobs=1`` and
  with ``n_jobs=os.cpu_count()`` (Optuna's threads);
* Ray Tune when ``ray[tune]`` is importable (otherwise skipped, said so):
  ``ASHAScheduler`` with Ray's ``OptunaSearch`` (TPE), the trial budget of
  the Optuna studies, one compile per Ray worker (``race_ray.py``).

The measure is the TRUE quality of a search's pick: its configuration (PBT:
its best member's schedule) retrained from 3 fresh seeds at the full budget,
the mean cross-entropy on the TEST split, which no search sees. Reported:
median and interquartile range over repeats, against wall-clock (compiles
included) and member-steps (training steps summed over trials); Optuna's
and Ray's anytime curves (the incumbent after every trial); the wall-clock
to reach Optuna's final median true quality, and each user-loop study's
and Ray's own; Optuna's and Ray's per-trial overhead; where a speed-up can come from on this machine (compile once,
vmap, budget). The plot goes to ``out/race/anytime.png``; the ratios are
printed LAST.

    python benchmarks/race.py            # the race (< 15 min on 2 cores)
    python benchmarks/race.py --quick    # a smoke run for CI
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jopt
from jopt import sweep

sys.path.insert(0, str(Path(__file__).resolve().parent))
from race_optuna import SequentialOptuna, UserLoopOptuna  # noqa: E402
from race_report import anytime, at, plot, quartiles  # noqa: E402
from race_task import NAMES, QUICK, ROOT, Budget, Task  # noqa: E402

# --- Contestants: each returns {"wall", "steps", "pick"} ----------------------


def _timed(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def cold_start():
  """Empties jopt's and JAX's caches: the next search runs as in a new process."""
  sweep.clear_caches()
  jax.clear_caches()


def jopt_run(task, key, n):
  res, wall = _timed(
    lambda: sweep.run(
      task.train_fn,
      task.space,
      num_trials=n,
      key=key,
      strategy="quasirandom",
      progress=False,
    )
  )
  b = task.budget
  return {
    "wall": wall,
    "steps": n * b.segments * b.segment_steps,
    "pick": res.best("val_loss").hparams,
  }


def jopt_halving(task, key):
  b = task.budget
  res, wall = _timed(
    lambda: sweep.successive_halving(
      task.init,
      task.segment,
      task.space,
      num_trials=b.sh_trials,
      key=key,
      max_segments=b.segments,
      metric="val_loss",
      eta=3,
      min_segments=1,
      strategy="quasirandom",
      steps_per_segment=b.segment_steps,
    )
  )
  return {"wall": wall, "steps": res.member_steps, "pick": res.best().hparams}


def jopt_hyperband(task, key):
  b = task.budget
  res, wall = _timed(
    lambda: sweep.hyperband(
      task.init,
      task.segment,
      task.space,
      key=key,
      max_segments=b.segments,
      metric="val_loss",
      eta=3,
      min_segments=1,
      iterations=b.hb_iterations,
      steps_per_segment=b.segment_steps,
    )
  )
  return {"wall": wall, "steps": res.member_steps, "pick": res.best().hparams}


def jopt_pbt(task, key):
  b = task.budget
  res, wall = _timed(
    lambda: sweep.pbt(
      task.init,
      task.segment,
      task.space,
      population=b.population,
      key=key,
      num_rounds=b.segments,
      metric="val_loss",
      steps_per_segment=b.segment_steps,
    )
  )
  # PBT's answer is its best member's schedule (one value per round).
  return {
    "wall": wall,
    "steps": res.member_steps,
    "pick": res.schedule(res.best().index),
  }


def jopt_optuna(task, key, rounds, size):
  b = task.budget
  res, wall = _timed(
    lambda: sweep.optuna_search(
      task.train_fn,
      task.space,
      num_rounds=rounds,
      batch_size=size,
      key=key,
      metric="val_loss",
    )
  )
  return {
    "wall": wall,
    "steps": rounds * size * b.segments * b.segment_steps,
    "pick": res.best().hparams,
  }


def ray_contestant():
  """The Ray Tune contestant's module and None, or None and why it skips."""
  try:
    import race_ray
  except Exception as e:  # noqa: BLE001  (any import failure skips Ray)
    return None, f"{type(e).__name__}: {e}"
  return race_ray, None


# --- Reporting (quartiles, anytime curves, the plot: race_report.py) ---------


def speed_bound(task, seq):
  """Seconds per member-step: sequential jitted segment vs 8 vmapped lanes."""
  b = task.budget
  hp = {k: jnp.float32(0.5) for k in NAMES}
  state = seq.init(hp, jax.random.key(0))
  jax.block_until_ready(seq.segment(state, hp))
  calls = 3 if b is QUICK else 20
  start = time.perf_counter()
  for _ in range(calls):
    state, m = seq.segment(state, hp)
    float(m["val_loss"])
  per_seq = (time.perf_counter() - start) / (calls * b.segment_steps)
  lanes = 8
  vinit, vseg = jax.jit(jax.vmap(task.init)), jax.jit(jax.vmap(task.segment))
  hps = {k: jnp.full((lanes,), 0.5, jnp.float32) for k in NAMES}
  start = time.perf_counter()
  vstate = vinit(hps, jax.random.split(jax.random.key(0), lanes))
  jax.block_until_ready(vseg(vstate, hps))
  vcompile = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(max(1, calls // 4)):
    vstate, m = vseg(vstate, hps)
    np.asarray(m["val_loss"])
  per_vmap = (time.perf_counter() - start) / (
    max(1, calls // 4) * lanes * b.segment_steps
  )
  return per_seq, per_vmap, vcompile


def main(argv=None):
  jopt.use_cpu_devices()  # one CPU device per core: trials shard over them
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true", help="a smoke run for CI")
  p.add_argument("--repeats", type=int, default=None)
  p.add_argument("--out", default=str(ROOT / "out" / "race"))
  p.add_argument(
    "--ray-concurrency",
    type=int,
    default=1,
    help="Ray Tune trials at once (1: measured fastest here)",
  )
  args = p.parse_args(argv)
  b = QUICK if args.quick else Budget()
  if args.repeats:
    b = dataclasses.replace(b, repeats=args.repeats)
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  task = Task(b)
  full = b.segments * b.segment_steps
  print(
    f"task: CNN {b.features[0]}-{b.features[1]} (examples/cnn, Flax NNX) "
    f"on digits, AdamW; searched: {', '.join(NAMES)}; full trial = "
    f"{b.segments} segments x {b.segment_steps} steps = {full} steps, "
    f"batch {b.batch_size}; {b.repeats} repeats; devices "
    f"{jax.devices()}; load average {np.round(os_load(), 2).tolist()}"
  )

  contestants = [
    (f"jopt run quasirandom {n}", lambda t, k, n=n: jopt_run(t, k, n))
    for n in b.run_trials
  ]
  contestants += [
    ("jopt successive halving", jopt_halving),
    ("jopt hyperband", jopt_hyperband),
    ("jopt PBT", jopt_pbt),
  ]
  contestants += [
    (
      f"jopt optuna_search {r}x{s}",
      lambda t, k, r=r, s=s: jopt_optuna(t, k, r, s),
    )
    for r, s in b.batched
  ]
  optuna_names = tuple(
    f"Optuna TPE+{p}Pruner, segment compiled once (jopt's style)"
    for p in ("Hyperband", "Median")
  )
  # Optuna as its users write it: a Python loop of nnx.jit steps.
  users = {
    f"Optuna TPE+MedianPruner, nnx.jit loop, n_jobs={j}": UserLoopOptuna(
      task, j
    )
    for j in sorted({1, os.cpu_count() or 1})
  }
  user_names = tuple(users)
  results = {name: [] for name, _ in contestants}
  results.update({name: [] for name in optuna_names + user_names})
  seq = SequentialOptuna(task)
  # A user runs one search per process and pays its compiles. Repeat 0
  # clears every cache before each search (so it pays them, cold); later
  # repeats reuse the executables (warm). A search's fresh-process wall is
  # its warm wall plus its compile cost (cold minus the median warm wall),
  # both measured; Optuna's study wall likewise carries its one compile.
  cold = {}
  for r in range(b.repeats):
    key = jax.random.key(r)
    for name, fn in contestants:
      if r == 0:
        cold_start()
        results[name].append(fn(task, key))
        cold[name] = results[name][0]["wall"]
      else:
        results[name].append(fn(task, key))
    if r == 0:
      # Each cold start emptied the programs of the searches before it:
      # compile them again, untimed, so later repeats run warm.
      if b.repeats > 1:
        for _, fn in contestants:
          fn(task, key)
      seq.warm()  # Its executables were cleared with the others'.
    for name, pruner in zip(optuna_names, ("hyperband", "median"), strict=True):
      results[name].append(seq.study(r, pruner))
    for name, user in users.items():  # every trial compiles its own step
      results[name].append(user.study(r))
    print(
      f"repeat {r}: "
      + ", ".join(
        f"{n.split(' ', 1)[1]} {v[-1]['wall']:.1f} s"
        for n, v in results.items()
      )
      + f"  [{time.perf_counter() - t0:.0f} s]",
      flush=True,
    )
  for name in cold:
    runs = results[name]
    warm = [x["wall"] for x in runs[1:]] or [cold[name]]
    compile_s = max(0.0, cold[name] - float(np.median(warm)))
    for x in runs[1:]:
      x["warm"] = x["wall"]
      x["wall"] += compile_s
    runs[0]["warm"] = float(np.median(warm))
    runs[0]["compile"] = compile_s
  print(
    "compile cost per search (cold minus warm wall, repeat 0): "
    + ", ".join(
      f"{n.split(' ', 1)[1]} {results[n][0]['compile']:.1f} s" for n in cold
    )
    + f"; Optuna (segment compiled once) {seq.compile_seconds:.1f} s"
  )
  race_ray, ray_skip = ray_contestant()
  ray_names = ()
  if race_ray is None:
    print("Ray Tune ASHA: skipped, " + ray_skip)
  else:
    # After the others, so Ray's daemons idle beside none of them.
    ray_names = ("Ray Tune TPE+ASHA",)
    results[ray_names[0]] = race_ray.studies(
      task.space, b, args.ray_concurrency, t0
    )
  curves = optuna_names + user_names + ray_names

  # Judge every pick (and every incumbent of the Optuna studies) at once.
  for runs in results.values():
    for run_, q in zip(
      runs, task.true_quality([x["pick"] for x in runs]), strict=True
    ):
      run_["true"] = q
    for run_ in runs:
      if "timeline" in run_:
        picks = [x[2] for x in run_["timeline"] if x[2] is not None]
        qs = iter(task.true_quality(picks))
        run_["timeline"] = [
          (*x, next(qs) if x[2] is not None else np.inf)
          for x in run_["timeline"]
        ]
  print(
    f"judging (retraining picks from {b.seeds} fresh seeds): "
    f"{task.judge_seconds:.1f} s"
  )

  print()
  width = max(map(len, results)) + 2
  print(
    f"{'search':<{width}}{'true test loss: median [IQR]':>30}"
    f"{'wall s':>9}{'warm s':>9}{'member-steps':>14}"
  )
  for name, runs in results.items():
    q = quartiles([x["true"] for x in runs])
    # A user's loop compiles inside every trial: it has no warm wall.
    warm = "-"
    if name not in user_names:
      warm = np.median(
        [x.get("warm", x["wall"] - seq.compile_seconds) for x in runs]
      )
      warm = f"{warm:.1f}"
    print(
      f"{name:<{width}}{q[1]:>12.4f} [{q[0]:.4f}, {q[2]:.4f}]"
      f"{np.median([x['wall'] for x in runs]):>9.1f}{warm:>9}"
      f"{int(np.median([x['steps'] for x in runs])):>14d}"
    )
  print(
    "(wall: a fresh process, compiles included; warm: compiles "
    "excluded, executables already in the process; the nnx.jit loops "
    "compile their step in every trial)"
  )
  png = out / "anytime.png"
  plot(png, results, curves)
  print(f"anytime curves: {png}")

  per_seq, per_vmap, vcompile = speed_bound(task, seq)
  overhead = np.median(
    [x["overhead"] for n in optuna_names for x in results[n]]
  )
  jax_trial = np.median(
    [x["jax_per_trial"] for n in optuna_names for x in results[n]]
  )
  print()
  print(
    f"Optuna per-trial overhead (sampler, pruner, storage; the wall "
    f"outside JAX calls): {overhead * 1e3:.1f} ms per trial, against "
    f"{jax_trial * 1e3:.0f} ms of JAX work per trial"
  )
  for n in ray_names:
    print(
      f"Ray Tune per-trial overhead (the study's wall outside ray.init, "
      f"the first worker's start and compile, and JAX calls): "
      f"{np.median([x['overhead'] for x in results[n]]) * 1e3:.1f} ms per "
      f"trial, against "
      f"{np.median([x['jax_per_trial'] for x in results[n]]) * 1e3:.0f} "
      f"ms of JAX work per trial"
    )
  print(
    f"compute per member-step: sequential jitted segment "
    f"{per_seq * 1e6:.0f} us, vmapped 8 lanes {per_vmap * 1e6:.0f} us "
    f"(vmap gain {per_seq / per_vmap:.2f}x); one compile of init + "
    f"segment: {seq.compile_seconds:.1f} s sequential, {vcompile:.1f} s "
    f"vmapped"
  )

  # Optuna's reference: the stronger of its two setups.
  finals = {
    n: quartiles([x["true"] for x in results[n]])[1] for n in optuna_names
  }
  ref = min(finals, key=finals.get)
  target = finals[ref]
  grid, (_, med, _) = anytime(results[ref], 0)
  reach = grid[np.argmax(med <= target)]
  jopt_names = [n for n in results if n not in curves]
  print(
    f"{ref}: final median true quality {target:.4f}, reached by its "
    f"median curve at {reach:.1f} s "
    f"(median study wall {np.median([x['wall'] for x in results[ref]]):.1f}"
    f" s, {int(np.median([x['steps'] for x in results[ref]]))} "
    f"member-steps)"
  )
  print()
  print(
    "Where a jopt search's wall-clock goes (median over repeats): "
    "member-steps x the vmapped rate, the rest compiles and host work"
  )
  rows = []
  for n in jopt_names:
    wall = np.median([x["wall"] for x in results[n]])
    steps = np.median([x["steps"] for x in results[n]])
    q = quartiles([x["true"] for x in results[n]])[1]
    compute = steps * per_vmap
    rows.append((n, q, wall))
    print(
      f"  {n:<34} wall {wall:6.1f} s = compute ~{compute:5.1f} s + "
      f"other {wall - compute:5.1f} s; Optuna's median at that wall: "
      f"{show(at(grid, med, wall))} vs {q:.4f}"
    )
  opt_steps = np.median([x["steps"] for x in results[ref]])
  print(
    f"Bound: without any compile, a search of M member-steps needs "
    f"M x {per_vmap * 1e6:.0f} us; Optuna needs {reach:.1f} s, so a 10x "
    f"needs M <= {reach / 10 / per_vmap:.0f} member-steps "
    f"(Optuna spent {opt_steps:.0f}); compiling once saves at most "
    f"{seq.compile_seconds:.1f} s per search and vmap "
    f"{per_seq / per_vmap:.2f}x per member-step."
  )
  print(f"[total {time.perf_counter() - t0:.0f} s]")
  print()
  print(f"RATIOS (against {ref}, median over {b.repeats} repeats):")
  good = [(n, q, w) for n, q, w in rows if q <= target]
  for n, q, w in rows + [
    (
      n,
      quartiles([x["true"] for x in results[n]])[1],
      np.median([x["wall"] for x in results[n]]),
    )
    for n in ray_names
  ]:
    speed = reach / w
    print(
      f"  {n:<34} wall-clock ratio {speed:6.2f}x; "
      f"{'reaches' if q <= target else 'does NOT reach'} Optuna's final "
      f"median true quality ({q:.4f} vs {target:.4f}); at equal "
      f"wall-clock {'at least as good' if q <= at(grid, med, w) else 'worse'}"
    )
  warm_reach = reach - seq.compile_seconds
  for n, _, _ in rows:
    warm = np.median([x["warm"] for x in results[n]])
    print(
      f"  compiles excluded: {n:<34} {warm_reach / warm:6.2f}x "
      f"(Optuna {warm_reach:.1f} s vs {warm:.1f} s)"
    )
  for n in user_names + ray_names:
    # The users' loops and Ray, each its own reference, as Optuna's: its
    # final median true quality and when its median anytime curve first
    # reaches it.
    rq = quartiles([x["true"] for x in results[n]])[1]
    rgrid, (_, rmed, _) = anytime(results[n], 0)
    rreach = rgrid[np.argmax(rmed <= rq)]
    hit = [(m, w) for m, q, w in rows if q <= rq]
    m, w = min(hit, key=lambda r: r[1]) if hit else (None, None)
    print(
      f"  against {n} (final median true quality {rq:.4f} at "
      f"{rreach:.1f} s): "
      + (
        f"best jopt strategy {m} reaches it {rreach / w:.2f}x sooner"
        if hit
        else "no jopt strategy reaches it"
      )
    )
  if good:
    n, q, w = min(good, key=lambda r: r[2])
    print(
      f"RESULT: best jopt strategy {n} reaches Optuna's final median true "
      f"quality {reach / w:.2f}x sooner in wall-clock (target 10x)"
    )
  else:
    n, q, w = min(rows, key=lambda r: r[1])
    print(
      f"RESULT: no jopt strategy reaches Optuna's final median true "
      f"quality {target:.4f}; the best, {n}, gets {q:.4f} in {w:.1f} s "
      f"({reach / w:.2f}x Optuna's time to its final quality)"
    )


def show(q):
  return "no finished trial yet" if not np.isfinite(q) else f"{q:.4f}"


def os_load():
  return os.getloadavg()


if __name__ == "__main__":
  main()
