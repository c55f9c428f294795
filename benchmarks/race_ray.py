"""The race's Ray Tune contestant: ASHA with Optuna's TPE, as Ray users run it.

Importing this module needs ``ray[tune]`` (an optional extra: ``race.py``
skips the contestant, and says why, when the import fails).

A study is one ``tune.Tuner``: ``OptunaSearch`` with a seeded
``TPESampler`` proposes the trials, ``ASHAScheduler`` stops them early
(grace period one segment, reduction factor 3 as jopt's halving and
Optuna's ``HyperbandPruner`` use, ``max_t`` the full trial), and every
trial reports the validation loss after each segment with ``tune.report``.
It gets the trial budget of the sequential Optuna studies.

Trials run in Ray worker processes. Each worker builds the task and jits
its ``init`` and ``segment`` once, with the hyperparameters passed as
arrays, and keeps them for every later trial it runs (``reuse_actors``), so
no trial recompiles: Ray pays what its users pay, a worker start and one
compile per worker per study, plus ``ray.init`` once per process.

    python benchmarks/race_ray.py --quick   # one quick study, for CI
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import time
import warnings
import zlib
from pathlib import Path

# Tune's console output prints a configuration box per study even at
# verbose=0; the older reporter honours it.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Ray starts its workers at niceness 15, below the driver. On a user's idle
# machine that changes nothing; on this shared one it would hand the trials'
# CPU to other users' processes, which the other contestants compete with
# at niceness 0.
os.environ.setdefault("RAY_worker_niceness", "0")
import jax
import jax.numpy as jnp
import numpy as np
import optuna
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from jopt import sweep

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from race_task import NAMES, QUICK, ROOT, Budget, Task  # noqa: E402

# Worker processes import this module to run `trainable`; they keep the
# compiled task here between the trials they run.
_WORKER: dict[Budget, tuple] = {}


def _worker_task(budget: Budget):
  """The jitted init and segment of this worker, compiled on first use."""
  if budget not in _WORKER:
    start = time.perf_counter()
    task = Task(budget)
    init, segment = jax.jit(task.init), jax.jit(task.segment)
    hp = {k: jnp.float32(0.5) for k in NAMES}
    jax.block_until_ready(segment(init(hp, jax.random.key(0)), hp))
    _WORKER[budget] = (init, segment, time.perf_counter() - start, time.time())
  return _WORKER[budget]


def trainable(config, budget: Budget, seed: int):
  """One trial: ``segments`` segments, the validation loss after each."""
  init, segment, compile_s, ready_at = _worker_task(budget)
  hp = {k: jnp.float32(config[k]) for k in NAMES}
  # Ray's trial ids are random; a key from the configuration makes a rerun
  # of the same study train each trial on the same batches.
  tag = zlib.crc32(repr([config[k] for k in NAMES]).encode()) % 2**31
  start = time.perf_counter()
  state = init(hp, jax.random.fold_in(jax.random.key(seed), tag))
  for _ in range(budget.segments):
    state, m = segment(state, hp)
    value = float(m["val_loss"])  # What a user reports: a host value.
    jax_s = time.perf_counter() - start
    tune.report(
      {
        "val_loss": value,
        "jax_s": jax_s,
        "compile_s": compile_s,
        "ready_at": ready_at,
        "pid": os.getpid(),
      }
    )
    start = time.perf_counter()


class _Recorder(tune.Callback):
  """The study's anytime curve, seen from the driver.

  After every finished trial (run to the end or stopped by ASHA) it records
  the wall since the study began, the member-steps so far and the pick: the
  best final validation loss among the trials that ran the full budget, as
  Optuna's curve takes the best COMPLETE trial (a trial ASHA stopped early
  has only a short-horizon loss to offer).
  """

  def __init__(self, budget: Budget, begin: float, offset: float):
    self.budget, self.begin, self.offset = budget, begin, offset
    self.steps, self.jax_s, self.workers = 0, 0.0, {}
    self.full: list[tuple[float, dict]] = []
    self.trials = 0
    self.timeline: list[tuple] = []

  def on_trial_result(self, iteration, trials, trial, result, **info):
    self.steps += self.budget.segment_steps
    self.jax_s += result["jax_s"]
    self.workers[result["pid"]] = (result["compile_s"], result["ready_at"])

  def on_trial_complete(self, iteration, trials, trial, **info):
    self.trials += 1
    last = trial.last_result
    if last.get("training_iteration") == self.budget.segments:
      self.full.append(
        (last["val_loss"], {k: float(trial.config[k]) for k in NAMES})
      )
    pick = min(self.full, key=lambda x: x[0])[1] if self.full else None
    self.timeline.append(
      (time.perf_counter() - self.begin + self.offset, self.steps, pick)
    )


class RayTune:
  """``ray.init`` once per process, then one ASHA study per call."""

  def __init__(
    self, space: dict, budget: Budget, storage: Path, concurrency: int = 1
  ):
    self.space, self.budget, self.concurrency = space, budget, concurrency
    self.storage = storage
    start = time.perf_counter()
    # Workers import this module and race_task by name.
    path = os.pathsep.join(
      [str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")]
    )
    with warnings.catch_warnings():
      # JAX warns of any fork; Ray's daemons are forked and exec'd at once.
      warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
      ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        configure_logging=True,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
      )
    self.init_seconds = time.perf_counter() - start

  def study(self, seed: int) -> dict:
    """One study; its wall carries ``ray.init``, as a fresh process's."""
    b = self.budget
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {
      name: (
        tune.loguniform if isinstance(d, sweep.LogUniform) else tune.uniform
      )(d.low, d.high)
      for name, d in self.space.items()
    }
    begin, begin_epoch = time.perf_counter(), time.time()
    recorder = _Recorder(b, begin, self.init_seconds)
    tuner = tune.Tuner(
      tune.with_parameters(trainable, budget=b, seed=seed),
      param_space=space,
      tune_config=tune.TuneConfig(
        metric="val_loss",
        mode="min",
        num_samples=b.optuna_trials,
        search_alg=OptunaSearch(sampler=optuna.samplers.TPESampler(seed=seed)),
        scheduler=ASHAScheduler(
          time_attr="training_iteration",
          max_t=b.segments,
          grace_period=1,
          reduction_factor=3,
        ),
        max_concurrent_trials=self.concurrency,
        reuse_actors=True,
      ),
      run_config=tune.RunConfig(
        name=f"race-asha-{seed}",
        storage_path=str(self.storage),
        verbose=0,
        callbacks=[recorder],
      ),
    )
    tuner.fit()
    fit = time.perf_counter() - begin
    # Before its first worker has compiled, a study can run no trial.
    setup = min(r for _, r in recorder.workers.values()) - begin_epoch
    # Trials run at once overlap their JAX work.
    jax_wall = recorder.jax_s / self.concurrency
    return {
      "wall": fit + self.init_seconds,
      "warm": fit - setup,
      "steps": recorder.steps,
      "pick": recorder.timeline[-1][2],
      "timeline": recorder.timeline,
      "trials": recorder.trials,
      "setup": setup,
      "workers": len(recorder.workers),
      "compile": max(c for c, _ in recorder.workers.values()),
      "overhead": (fit - setup - jax_wall) / recorder.trials,
      "jax_per_trial": recorder.jax_s / recorder.trials,
    }

  def close(self):
    ray.shutdown()


def studies(
  space: dict, budget: Budget, concurrency: int, t0: float
) -> list[dict]:
  """``budget.repeats`` studies (seeds 0, 1, ...) in one Ray session.

  Tune's files (results, trial logs) go to a temporary folder: the race
  keeps what it needs from the driver's callback.
  """
  runs = []
  with tempfile.TemporaryDirectory() as tmp:
    tuner = RayTune(space, budget, Path(tmp), concurrency=concurrency)
    try:
      for r in range(budget.repeats):
        runs.append(tuner.study(r))
        print(
          f"Ray repeat {r}: {runs[-1]['wall']:.1f} s "
          f"({runs[-1]['trials']} trials, first worker ready after "
          f"{runs[-1]['setup']:.1f} s)"
          f"  [{time.perf_counter() - t0:.0f} s]",
          flush=True,
        )
    finally:
      tuner.close()
  med = {
    k: float(np.median([x[k] for x in runs])) for k in ("setup", "compile")
  }
  print(
    f"Ray Tune ASHA: ray.init {tuner.init_seconds:.1f} s (charged to "
    f"every study, as a fresh process pays it); per study the first "
    f"worker's start + compile {med['setup']:.1f} s (of which building "
    f"the task and compiling its init + segment {med['compile']:.1f} s); "
    f"{concurrency} trial(s) at once"
  )
  return runs


def main(argv=None):
  """One quick study: a smoke run of the contestant alone."""
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true", help="the quick budget")
  p.add_argument("--concurrency", type=int, default=1)
  args = p.parse_args(argv)
  b = dataclasses.replace(QUICK if args.quick else Budget(), repeats=1)
  (run,) = studies(Task(b).space, b, args.concurrency, time.perf_counter())
  print(
    f"study wall {run['wall']:.1f} s, warm {run['warm']:.1f} s; "
    f"{run['trials']} trials, {run['steps']} member-steps; "
    f"{run['workers']} worker(s)"
  )
  print(
    f"per-trial overhead {run['overhead'] * 1e3:.1f} ms, JAX work "
    f"{run['jax_per_trial'] * 1e3:.0f} ms per trial"
  )
  print(f"steps per finished trial: {[t[1] for t in run['timeline']]}")
  print(f"pick: {run['pick']}")


if __name__ == "__main__":
  main()
