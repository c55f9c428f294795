"""Successive halving and Hyperband on one vmapped population.

All trials of a bracket train together with ``jit(vmap(segment))``. At each
rung the best ``1/eta`` by a metric survive: their states are gathered along
the trial axis (``jnp.take``) and go on training from where they were, never
retrained. The program compiles once per distinct population size.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt.sweep import _space, _stepwise


def _check_int(name: str, value: Any, low: int) -> int:
  if (not isinstance(value, numbers.Integral) or isinstance(value, bool)
      or value < low):
    raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
  return int(value)


def _check_budget(eta, min_segments, max_segments) -> None:
  _check_int("eta", eta, 2)
  _check_int("min_segments", min_segments, 1)
  _check_int("max_segments", max_segments, 1)
  if min_segments > max_segments:
    raise ValueError(f"min_segments ({min_segments}) must be <= max_segments "
                     f"({max_segments}).")


def rung_budgets(eta: int, min_segments: int, max_segments: int) -> list[int]:
  """Segments completed at each rung: ``min * eta**i``, the last one ``max``."""
  budgets = [min_segments]
  while budgets[-1] * eta <= max_segments:
    budgets.append(budgets[-1] * eta)
  budgets[-1] = max_segments
  return budgets


def _run_bracket(pop, hparams, trial_ids, key, budgets, *, eta, metric, mode,
                 bracket, segments_run, last_metrics, rungs):
  """Trains trials ``trial_ids``, keeping the best 1/eta at each rung."""
  state, hp = pop.init(hparams, key, trial_ids)
  alive = np.asarray(trial_ids)
  done = 0
  for rung, budget in enumerate(budgets):
    for _ in range(budget - done):
      state, metrics = pop.segment(state, hp)
      _stepwise.check_metric(metrics, metric)  # before more is spent
    segments_run[alive] += budget - done
    done = budget
    metrics = {k: np.asarray(v)[:len(alive)] for k, v in metrics.items()}
    for k, v in metrics.items():
      if k not in last_metrics:
        last_metrics[k] = np.full((len(segments_run),) + v.shape[1:], np.nan,
                                  np.result_type(v.dtype, np.float32))
      last_metrics[k][alive] = v
    scores = _stepwise.ranking_values(metrics, metric, mode)
    order = np.argsort(scores, kind="stable")
    keep = order[:max(1, len(alive) // eta)]
    last = rung == len(budgets) - 1
    rungs.append({
        "bracket": bracket, "rung": rung, "segments": budget,
        "trials": alive.copy(),
        "values": np.asarray(metrics[metric], np.float64).reshape(
            len(alive), -1)[:, -1],
        "promoted": np.array([], np.int64) if last else alive[np.sort(keep)],
    })
    if last:
      return alive, _stepwise.take_trials(state, np.arange(len(alive)))
    keep = np.sort(keep)  # survivors keep their relative order
    alive = alive[keep]
    rows = keep[_stepwise.pad_rows(len(keep))]
    state = _stepwise.take_trials(state, rows)
    hp = _stepwise.take_trials(hp, rows)


def _search(init, segment, space, key, brackets, *, eta, metric, mode,
            strategy, grid_points, steps_per_segment, name,
            per_bracket=False):
  start = time.perf_counter()
  _stepwise.check_mode(mode)
  space = _stepwise.check_space(space, name)
  total = sum(n for n, _ in brackets)
  if per_bracket and strategy != "grid":
    # Each bracket draws its own trials, so that every bracket (with a
    # quasirandom strategy: a scrambled Sobol set each) spans the space
    # evenly instead of one bracket getting a lopsided slice of one draw.
    draws = [_space.sample(space, n, jax.random.fold_in(key, b), strategy)
             for b, (n, _) in enumerate(brackets)]
    hparams = {k: np.concatenate([d[k] for d in draws]) for k in space}
  else:
    hparams = _space.sample(space, total, key, strategy,
                            grid_points=grid_points)
  pop = _stepwise.population_for(init, segment)
  compiles_before = pop.num_compiles
  segments_run = np.zeros(total, np.int64)
  last_metrics: dict[str, np.ndarray] = {}
  rungs: list[dict[str, Any]] = []
  lo = 0
  finals = []
  for b, (n, budgets) in enumerate(brackets):
    ids = np.arange(lo, lo + n)
    finals.append(_run_bracket(
        pop, {k: v[ids] for k, v in hparams.items()}, ids, key, budgets,
        eta=eta, metric=metric, mode=mode, bracket=b,
        segments_run=segments_run, last_metrics=last_metrics, rungs=rungs))
    lo += n
  result = _stepwise.make_result(
      _stepwise.AdaptiveResult, space, hparams, last_metrics, metric=metric, mode=mode,
      segments_run=segments_run, steps_per_segment=steps_per_segment,
      num_compiles=pop.num_compiles - compiles_before, wall_time=time.perf_counter() - start,
      history={"rungs": rungs,
               "brackets": [{"num_trials": n, "segments": list(bud)}
                            for n, bud in brackets],
               "population_sizes": sorted(
                   {_stepwise.padded_size(len(r["trials"])) for r in rungs})})
  result.final_trials = np.concatenate([t for t, _ in finals])
  result.final_state = jax.tree.map(lambda *xs: jnp.concatenate(xs),
                                    *[st for _, st in finals])
  return result


def successive_halving(
    init: _stepwise.InitFn,
    segment: _stepwise.SegmentFn,
    space: Mapping[str, Any],
    *,
    num_trials: int,
    key: jax.Array,
    max_segments: int,
    metric: str,
    mode: str = "min",
    eta: int = 3,
    min_segments: int = 1,
    strategy: str = "random",
    grid_points: Any = None,
    steps_per_segment: int = 1,
) -> _stepwise.AdaptiveResult:
  """Successive halving: train many trials briefly, promote the best 1/eta.

  Rung ``i`` ends after ``min_segments * eta**i`` segments (the last rung
  after ``max_segments``). At each rung the ``floor(n / eta)`` trials with
  the best ``metric`` (at least one; ties go to the lower trial index) are
  gathered along the trial axis and continue from their state; the rest
  stop. A trial promoted to the last rung has trained exactly as long as it
  would have alone. The population functions compile once per population
  size (``num_trials``, ``num_trials // eta``...), padded to a multiple of
  the local device count and sharded across devices.

  Args:
    init: ``init(hparams, key) -> state`` for one trial.
    segment: ``segment(state, hparams) -> (state, metrics)`` for one trial.
    space: a dict ``name -> distribution`` (no static choices).
    num_trials: trials in the first rung (>= 1).
    key: a JAX PRNG key; trial ``i`` is initialized with ``fold_in(key, i)``.
    max_segments: segments the survivors are trained for (>= 1).
    metric: the metric to rank by (a curve's last value).
    mode: ``"min"`` or ``"max"``.
    eta: the reduction factor (an int >= 2).
    min_segments: segments before the first rung (>= 1).
    strategy: how to sample the trials: ``"random"``, ``"quasirandom"`` or
      ``"grid"``.
    grid_points: points per continuous dimension for the grid.
    steps_per_segment: steps in one segment, for ``member_steps``.

  Returns:
    An `AdaptiveResult`; ``history["rungs"]`` lists, per rung, the trials,
    their metric values, the segments done and the promoted trials;
    ``final_state`` holds the trained state of the ``final_trials`` that
    reached the last rung (stacked along the leading axis).

  Example:
    >>> import jax, jax.numpy as jnp, jopt
    >>> init = lambda hp, key: jnp.ones(())
    >>> def segment(x, hp):
    ...   x = x * (1 - hp["lr"])
    ...   return x, {"loss": x * x}
    >>> res = jopt.sweep.successive_halving(
    ...     init, segment, {"lr": jopt.sweep.uniform(0.0, 0.5)},
    ...     num_trials=9, key=jax.random.key(0), max_segments=9,
    ...     metric="loss")
    >>> res.segments_run.tolist()  # budgets 1, 3, 9 segments
    [1, 1, 1, 1, 3, 9, 1, 3, 1]

  References:
    Jamieson & Talwalkar, `Non-stochastic best arm identification and
    hyperparameter optimization <https://arxiv.org/abs/1502.07943>`_, 2016.
  """
  _check_budget(eta, min_segments, max_segments)
  num_trials = _check_int("num_trials", num_trials, 1)
  budgets = rung_budgets(eta, min_segments, max_segments)
  return _search(init, segment, space, key, [(num_trials, budgets)], eta=eta,
                 metric=metric, mode=mode, strategy=strategy,
                 grid_points=grid_points, steps_per_segment=steps_per_segment,
                 name="successive_halving")


def hyperband_brackets(eta: int, min_segments: int,
                       max_segments: int) -> list[tuple[int, list[int]]]:
  """``(num_trials, rung budgets)`` of each Hyperband bracket, boldest first."""
  _check_budget(eta, min_segments, max_segments)
  s_max = len(rung_budgets(eta, min_segments, max_segments)) - 1
  brackets = []
  for s in range(s_max, -1, -1):
    n = math.ceil((s_max + 1) / (s + 1) * eta**s)
    budgets = [max(min_segments, round(max_segments / eta**(s - i)))
               for i in range(s + 1)]
    brackets.append((n, sorted(set(budgets))))
  return brackets


def hyperband(
    init: _stepwise.InitFn,
    segment: _stepwise.SegmentFn,
    space: Mapping[str, Any],
    *,
    key: jax.Array,
    max_segments: int,
    metric: str,
    mode: str = "min",
    eta: int = 3,
    min_segments: int = 1,
    iterations: int = 1,
    strategy: str = "quasirandom",
    steps_per_segment: int = 1,
) -> _stepwise.AdaptiveResult:
  """Hyperband: successive halving brackets from bold to conservative.

  With ``s_max = floor(log_eta(max_segments / min_segments))``, bracket
  ``s = s_max, ..., 0`` starts ``ceil((s_max + 1) / (s + 1) * eta**s)`` fresh
  trials at ``max_segments * eta**-s`` segments and runs successive halving
  up to ``max_segments``: the first bracket explores widely with little
  training, the last trains a few trials fully. Brackets share the compiled
  population functions (one compile per distinct population size). The
  whole set of brackets is run ``iterations`` times with fresh trials (the
  outer loop of the paper).

  Each bracket samples its own trials, by default from a scrambled Sobol
  sequence, so every bracket covers the space evenly: with one random draw
  shared by all brackets, a bracket of three or four trials often misses
  the good region altogether. ``min_segments`` is the smallest budget a
  trial is ranked at, and so the least training a configuration gets before
  it can be dropped: set it to the point where the metric starts to rank
  configurations as they rank at the end (on a short horizon, large
  learning rates look best and the ones best at ``max_segments`` are
  dropped).

  Args:
    init: ``init(hparams, key) -> state`` for one trial.
    segment: ``segment(state, hparams) -> (state, metrics)`` for one trial.
    space: a dict ``name -> distribution`` (no static choices).
    key: a JAX PRNG key; trial ``i`` (numbered across brackets) is
      initialized with ``fold_in(key, i)``.
    max_segments: the most segments one trial trains for (>= 1).
    metric: the metric to rank by (a curve's last value).
    mode: ``"min"`` or ``"max"``.
    eta: the reduction factor (an int >= 2).
    min_segments: the smallest budget, in segments (>= 1).
    iterations: how many times the whole set of brackets runs (>= 1).
    strategy: ``"quasirandom"`` (per-bracket scrambled Sobol) or
      ``"random"`` sampling.
    steps_per_segment: steps in one segment, for ``member_steps``.

  Returns:
    An `AdaptiveResult` over the trials of every bracket;
    ``history["rungs"]`` records each bracket's rungs.

  Example:
    >>> import jax, jax.numpy as jnp, jopt
    >>> init = lambda hp, key: jnp.ones(())
    >>> def segment(x, hp):
    ...   x = x * (1 - hp["lr"])
    ...   return x, {"loss": x * x}
    >>> res = jopt.sweep.hyperband(
    ...     init, segment, {"lr": jopt.sweep.uniform(0.0, 0.5)},
    ...     key=jax.random.key(0), max_segments=9, metric="loss")
    >>> [b["num_trials"] for b in res.history["brackets"]]
    [9, 5, 3]

  References:
    Li et al., `Hyperband: a novel bandit-based approach to hyperparameter
    optimization <https://arxiv.org/abs/1603.06560>`_, JMLR 2018.
  """
  iterations = _check_int("iterations", iterations, 1)
  if strategy == "grid":
    raise ValueError("hyperband samples each bracket: strategy must be "
                     "'random' or 'quasirandom', got 'grid'.")
  brackets = hyperband_brackets(eta, min_segments, max_segments) * iterations
  return _search(init, segment, space, key, brackets, eta=eta, metric=metric,
                 mode=mode, strategy=strategy, grid_points=None,
                 steps_per_segment=steps_per_segment, name="hyperband",
                 per_bracket=True)
