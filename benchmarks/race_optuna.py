"""The race's Optuna contestants: one sequential study each.

* `SequentialOptuna`: Optuna at its best, written jopt's way: the task's
  ``init`` and ``segment`` (a ``lax.scan`` of steps) jitted ONCE with the
  hyperparameters as arrays, so no trial recompiles.
* `UserLoopOptuna`: Optuna as its users write it: the objective builds a
  fresh Flax NNX model and ``nnx.Optimizer(model, optax.adamw(...))`` per
  trial and trains it with a Python loop of ``@nnx.jit`` steps, so every
  trial traces and compiles its step again (the optimizer, with the
  trial's ``optax`` transformation, is part of what ``nnx.jit`` keys its
  cache on). Run with ``n_jobs=1`` and ``n_jobs=os.cpu_count()``.

Both report the validation loss after every segment for pruning.
"""

from __future__ import annotations

import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from race_task import DEFAULTS, NAMES, cnn_model, cnn_train

from jopt import sweep


class SequentialOptuna:
  """One Optuna study per repeat over jopt's segment, compiled once."""

  def __init__(self, task):
    self.task = task
    self.init = jax.jit(task.init)
    self.segment = jax.jit(task.segment)
    self.warm()

  def warm(self):
    """Compiles init and segment (once per process); times it."""
    hp = {k: jnp.float32(0.5) for k in NAMES}
    start = time.perf_counter()
    state = self.init(hp, jax.random.key(0))
    jax.block_until_ready(self.segment(state, hp))
    self.compile_seconds = time.perf_counter() - start

  def study(self, seed, pruner_name):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    b, task = self.task.budget, self.task
    pruner = _pruner(optuna, pruner_name, b.segments)
    # HyperbandPruner picks a trial's bracket from a hash of the study's
    # name; a fixed name makes a rerun prune the same trials.
    study = optuna.create_study(
      study_name=f"race-{pruner_name}-{seed}",
      sampler=optuna.samplers.TPESampler(seed=seed),
      pruner=pruner,
    )
    jax_seconds, steps, timeline = 0.0, 0, []

    def objective(trial):
      nonlocal jax_seconds, steps
      hp = {}
      for name, dist in task.space.items():
        hp[name] = jnp.float32(
          trial.suggest_float(
            name, dist.low, dist.high, log=isinstance(dist, sweep.LogUniform)
          )
        )
      start = time.perf_counter()
      key = jax.random.fold_in(jax.random.key(seed), trial.number)
      state = self.init(hp, key)
      value = np.inf
      for s in range(b.segments):
        state, m = self.segment(state, hp)
        value = float(m["val_loss"])  # What a user reports: a host value.
        steps += b.segment_steps
        trial.report(value, s)
        if trial.should_prune():
          jax_seconds += time.perf_counter() - start
          raise optuna.TrialPruned()
      jax_seconds += time.perf_counter() - start
      return value

    begin = time.perf_counter()

    def record(study, trial):
      done = [
        t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
      ]
      pick = min(done, key=lambda t: t.value).params if done else None
      timeline.append(
        (time.perf_counter() - begin + self.compile_seconds, steps, pick)
      )

    study.optimize(objective, n_trials=b.optuna_trials, callbacks=[record])
    wall = time.perf_counter() - begin + self.compile_seconds
    overhead = (wall - self.compile_seconds - jax_seconds) / b.optuna_trials
    return {
      "wall": wall,
      "steps": steps,
      "pick": timeline[-1][2],
      "timeline": timeline,
      "overhead": overhead,
      "jax_per_trial": jax_seconds / b.optuna_trials,
    }


def _pruner(optuna, name, segments):
  if name == "hyperband":
    return optuna.pruners.HyperbandPruner(
      min_resource=1, max_resource=segments, reduction_factor=3
    )
  return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)


def _loss(model, x, y):
  return cnn_model.cross_entropy(model(x), y)


def train_step(model, optimizer, x, y):
  """One AdamW step, as in Flax's examples (``nnx.jit`` per study)."""
  loss, grads = nnx.value_and_grad(_loss)(model, x, y)
  optimizer.update(model, grads)
  return loss


class UserLoopOptuna:
  """A study whose objective is a plain Flax NNX training loop.

  Each trial: a fresh model (the task's initialisation from the trial's
  key), a fresh ``nnx.Optimizer(model, optax.adamw(lr, b1=...,
  weight_decay=...), wrt=nnx.Param)``, minibatches drawn on the host with
  NumPy, one ``train_step`` call per step and the validation loss reported
  after each segment. ``n_jobs`` trials run at once in Optuna's threads.
  """

  def __init__(self, task, n_jobs):
    self.task, self.n_jobs = task, n_jobs
    self.x_tr, self.y_tr = np.asarray(task.x_tr), np.asarray(task.y_tr)
    self.x_va, self.y_va = task.x_va, task.y_va

  def study(self, seed):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    b, task = self.task.budget, self.task
    study = optuna.create_study(
      study_name=f"race-user-loop-{self.n_jobs}-{seed}",
      sampler=optuna.samplers.TPESampler(seed=seed),
      pruner=_pruner(optuna, "median", b.segments),
    )
    lock = threading.Lock()
    steps, timeline = 0, []
    # Jitted afresh for each study, as in the fresh process of a user's
    # study: nothing compiled by an earlier repeat is reused.
    step_fn, eval_fn = nnx.jit(train_step), nnx.jit(_loss)

    def objective(trial):
      nonlocal steps
      hp = dict(DEFAULTS)
      for name, dist in task.space.items():
        hp[name] = trial.suggest_float(
          name, dist.low, dist.high, log=isinstance(dist, sweep.LogUniform)
        )
      key = jax.random.fold_in(jax.random.key(seed), trial.number)
      model = cnn_train.create_model(task.cfg, jax.random.split(key)[0])
      optimizer = nnx.Optimizer(
        model,
        optax.adamw(
          hp["learning_rate"], b1=hp["b1"], weight_decay=hp["weight_decay"]
        ),
        wrt=nnx.Param,
      )
      rng = np.random.default_rng([seed, trial.number])
      value = np.inf
      for s in range(b.segments):
        for _ in range(b.segment_steps):
          idx = rng.integers(0, len(self.x_tr), b.batch_size)
          step_fn(model, optimizer, self.x_tr[idx], self.y_tr[idx])
        value = float(eval_fn(model, self.x_va, self.y_va))
        with lock:
          steps += b.segment_steps
        trial.report(value, s)
        if trial.should_prune():
          raise optuna.TrialPruned()
      return value

    begin = time.perf_counter()

    def record(study, trial):
      with lock:
        done = [
          t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
        ]
        pick = min(done, key=lambda t: t.value).params if done else None
        timeline.append((time.perf_counter() - begin, steps, pick))

    study.optimize(
      objective,
      n_trials=b.optuna_trials,
      n_jobs=self.n_jobs,
      callbacks=[record],
    )
    wall = time.perf_counter() - begin
    timeline.sort(key=lambda p: p[0])
    return {
      "wall": wall,
      "steps": steps,
      "pick": timeline[-1][2],
      "timeline": timeline,
    }
