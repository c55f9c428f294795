"""Successive halving and Hyperband on one vmapped population.

All trials of a bracket train together in one program over the trial axis.
At each rung the best ``1/eta`` by a metric survive: their states are
gathered along the trial axis and go on training from where they were,
never retrained. Every population of a search runs in the rows of the
largest, computing only its live trials, so the search compiles one init
and one segment program, whatever its rungs and brackets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jopt.sweep import _space
from jopt.sweep.runtime import _executor, _loop, _population
from jopt.sweep.strategies import _stepwise


def _check_budget(eta, min_segments, max_segments) -> None:
  _population.check_int("eta", eta, 2)
  _population.check_int("min_segments", min_segments, 1)
  _population.check_int("max_segments", max_segments, 1)
  if min_segments > max_segments:
    raise ValueError(
      f"min_segments ({min_segments}) must be <= max_segments ({max_segments})."
    )


def rung_budgets(eta: int, min_segments: int, max_segments: int) -> list[int]:
  """Segments completed at each rung: ``min * eta**i``, the last one ``max``."""
  budgets = [min_segments]
  while budgets[-1] * eta <= max_segments:
    budgets.append(budgets[-1] * eta)
  budgets[-1] = max_segments
  return budgets


class _Halving(_loop.Strategy):
  """Brackets of successive halving as a strategy: one step is one rung."""

  def __init__(
    self,
    pop,
    ex,
    key,
    space,
    hparams,
    brackets,
    *,
    eta,
    metric,
    mode,
    steps_per_segment,
  ):
    self.pop, self.ex, self.key, self.space = pop, ex, key, space
    self.hparams = hparams
    self.brackets = brackets
    # Every population (each bracket's rungs) runs in the largest one's
    # rows: one init and one segment program for the whole search.
    self.capacity = max(n for n, _ in brackets)
    self.starts = np.cumsum([0] + [n for n, _ in brackets])
    self.total = int(self.starts[-1])
    self.eta, self.metric, self.mode = eta, metric, mode
    self.steps_per_segment = steps_per_segment

  def init(self):
    return _loop.SearchState(
      0,
      {
        "bracket": 0,
        "rung": 0,
        "done": 0,
        "alive": np.arange(self.brackets[0][0]),
        "segments_run": np.zeros(self.total, np.int64),
        "last_metrics": {},
        "rungs": [],
        "final_trials": [],
        "final_states": [],
      },
    )

  def work(self, state):
    return int(np.sum(state.host["segments_run"]))

  def terminate(self, state):
    return state.host["bracket"] >= len(self.brackets)

  def device_template(self, state):
    return {
      "state": self.pop.state_template(self.hparams, self.key),
      "hp": dict.fromkeys(self.hparams, 0),
    }

  def relayout(self, state, tree):
    alive = np.asarray(state.host["alive"])
    place = self.pop.placement(self.ex, len(alive), self.capacity)
    rows = len(jax.tree.leaves(tree)[0])
    if (rows, state.ndev) == (place.size, place.ndev):
      return tree, place.ndev
    # Saved on other devices: the same live trials, this run's rows.
    saved = _executor.Placement(len(alive), rows, state.ndev, self.ex.lanes)
    return jax.tree.map(lambda x: place.spread(saved.live(x)), tree), place.ndev

  def step(self, state, progress):
    h = dict(state.host)
    b, rung = h["bracket"], h["rung"]
    budgets = self.brackets[b][1]
    alive = np.asarray(h["alive"])
    place = self.pop.placement(self.ex, len(alive), self.capacity)
    device = state.device
    if device is None:
      pstate, hp = self.pop.init_live(
        self.ex,
        {k: v[alive] for k, v in self.hparams.items()},
        self.key,
        alive,
        place,
      )
      device = {"state": pstate, "hp": hp}
    pstate = device["state"]
    budget = budgets[rung]
    sign = 1.0 if self.mode == "min" else -1.0
    for _ in range(budget - h["done"]):
      pstate, metrics = self.pop.segment_live(
        self.ex, pstate, device["hp"], place
      )
      metrics = {
        k: place.live(v) for k, v in self.ex.gather(dict(metrics)).items()
      }
      _population.check_metric(metrics, self.metric)  # before more is spent
      progress.advance(
        len(alive), np.asarray(metrics[self.metric]), sign, self.metric
      )
    segments_run = h["segments_run"].copy()
    segments_run[alive] += budget - h["done"]
    last_metrics = {k: v.copy() for k, v in h["last_metrics"].items()}
    for k, v in metrics.items():
      if k not in last_metrics:
        last_metrics[k] = np.full(
          (self.total,) + v.shape[1:],
          np.nan,
          np.result_type(v.dtype, np.float32),
        )
      last_metrics[k][alive] = v
    scores = _population.ranking_values(metrics, self.metric, self.mode)
    keep = np.sort(
      np.argsort(scores, kind="stable")[: max(1, len(alive) // self.eta)]
    )  # survivors keep their order
    last = rung == len(budgets) - 1
    record = {
      "bracket": b,
      "rung": rung,
      "segments": budget,
      "trials": alive.copy(),
      "values": np.asarray(metrics[self.metric], np.float64).reshape(
        len(alive), -1
      )[:, -1],
      "promoted": np.array([], np.int64) if last else alive[keep],
    }
    h.update(
      segments_run=segments_run,
      last_metrics=last_metrics,
      rungs=[*h["rungs"], record],
      done=budget,
    )
    if last:
      final = jax.tree.map(place.live, self.ex.gather(pstate))
      h["final_trials"] = [*h["final_trials"], alive]
      h["final_states"] = [*h["final_states"], jax.tree.leaves(final)]
      nxt = b + 1
      h.update(
        bracket=nxt,
        rung=0,
        done=0,
        alive=(
          np.arange(self.starts[nxt], self.starts[nxt + 1])
          if nxt < len(self.brackets)
          else np.zeros(0, np.int64)
        ),
      )
      return _loop.SearchState(state.step + 1, h, None, place.ndev)
    new = self.pop.placement(self.ex, len(keep), self.capacity)
    device = {
      "state": self.pop.move(self.ex, pstate, place, keep, new),
      "hp": self.pop.move(self.ex, device["hp"], place, keep, new),
    }
    h.update(rung=rung + 1, alive=alive[keep])
    return _loop.SearchState(state.step + 1, h, device, new.ndev)

  def postprocess(self, state):
    h = state.host
    result = _stepwise.make_result(
      _stepwise.AdaptiveResult,
      self.space,
      self.hparams,
      h["last_metrics"],
      self.ex,
      metric=self.metric,
      mode=self.mode,
      segments_run=h["segments_run"],
      steps_per_segment=self.steps_per_segment,
      history={
        "rungs": h["rungs"],
        "brackets": [
          {"num_trials": n, "segments": list(bud)} for n, bud in self.brackets
        ],
        "population_sizes": sorted({len(r["trials"]) for r in h["rungs"]}),
        "capacity": self.capacity,
      },
    )
    result.final_trials = np.concatenate(h["final_trials"])
    treedef = jax.tree.structure(
      self.pop.state_template(self.hparams, self.key)
    )
    states = [
      jax.tree.unflatten(treedef, leaves) for leaves in h["final_states"]
    ]
    result.final_state = _executor.to_host_values(
      jax.tree.map(
        lambda *xs: (
          _executor.HostKeys.concatenate(xs)
          if isinstance(xs[0], _executor.HostKeys)
          else np.concatenate(xs)
        ),
        *states,
      )
    )
    return result


def _search(
  init,
  segment,
  space,
  key,
  brackets,
  *,
  eta,
  metric,
  mode,
  strategy,
  grid_points,
  steps_per_segment,
  name,
  checkpoint_dir,
  progress,
  devices,
  compiler_options,
  lanes,
  per_bracket=False,
):
  _population.check_mode(mode)
  _population.check_common(key, devices, lanes, compiler_options)
  space = _population.check_space(space, name)
  steps_per_segment = _population.check_int(
    "steps_per_segment", steps_per_segment, 1
  )
  total = sum(n for n, _ in brackets)
  if per_bracket and strategy != "grid":
    # Each bracket draws its own trials, so that every bracket (with a
    # quasirandom strategy: a scrambled Sobol set each) spans the space
    # evenly instead of one bracket getting a lopsided slice of one draw.
    draws = [
      _space.sample(space, n, jax.random.fold_in(key, b), strategy)
      for b, (n, _) in enumerate(brackets)
    ]
    hparams = {k: np.concatenate([d[k] for d in draws]) for k in space}
  else:
    hparams = _space.sample(
      space, total, key, strategy, grid_points=grid_points
    )
  ex = _population.executor_for(
    max(n for n, _ in brackets), devices, lanes, compiler_options
  )
  pop = _population.population_for(init, segment)
  key_spec = _executor.KeySpec(key)
  _stepwise.check_segment_metric(pop, hparams, key_spec, metric)
  search = _Halving(
    pop,
    ex,
    key_spec,
    space,
    hparams,
    brackets,
    eta=eta,
    metric=metric,
    mode=mode,
    steps_per_segment=steps_per_segment,
  )
  settings = dict(
    strategy=strategy,
    grid_points=grid_points,
    brackets=brackets,
    eta=eta,
    metric=metric,
    mode=mode,
    layout="capacity",
  )
  work = sum(
    n_r * (b - a)
    for n, budgets in brackets
    for n_r, a, b in zip(
      [max(1, n // eta**i) for i in range(len(budgets))],
      [0, *budgets],
      budgets,
      strict=False,
    )
  )
  return _population.run_search(
    search,
    ex,
    name=name,
    init=init,
    segment=segment,
    hparams=hparams,
    key_spec=key_spec,
    space=space,
    key=key,
    checkpoint_dir=checkpoint_dir,
    progress=progress,
    total=work,
    **settings,
  )


def successive_halving(
  init: _population.InitFn,
  segment: _population.SegmentFn,
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
  checkpoint_dir: str | None = None,
  progress: bool = False,
  devices: Sequence[jax.Device] | None = None,
  compiler_options: Mapping[str, Any] | None = None,
  lanes: int | None = None,
) -> _stepwise.AdaptiveResult:
  """Successive halving: train many trials briefly, promote the best 1/eta.

  Rung ``i`` ends after ``min_segments * eta**i`` segments (the last rung
  after ``max_segments``). At each rung the ``floor(n / eta)`` trials with
  the best ``metric`` (at least one; ties go to the lower trial index) are
  gathered along the trial axis and continue from their state; the rest
  stop. A trial promoted to the last rung has trained exactly as long as it
  would have alone. The search compiles two programs, an init and a
  segment, over ``num_trials`` rows sharded across devices; a rung of
  fewer trials runs in the same rows and computes only its own trials.

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
    checkpoint_dir: a folder where the search state (population, rung,
      history) is saved after every rung; the same call resumes from it to
      the same result, bit for bit; a folder of another search is refused.
    progress: show a progress bar (member-segments).
    devices: devices to shard trials over; default ``jax.devices()``.
    compiler_options: XLA options for the search's programs (see
      `jopt.sweep.run`).
    lanes: trials computed side by side per device (see `jopt.sweep.run`).

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
  num_trials = _population.check_int("num_trials", num_trials, 1)
  budgets = rung_budgets(eta, min_segments, max_segments)
  return _search(
    init,
    segment,
    space,
    key,
    [(num_trials, budgets)],
    eta=eta,
    metric=metric,
    mode=mode,
    strategy=strategy,
    grid_points=grid_points,
    steps_per_segment=steps_per_segment,
    name="successive_halving",
    checkpoint_dir=checkpoint_dir,
    progress=progress,
    devices=devices,
    compiler_options=compiler_options,
    lanes=lanes,
  )


def hyperband_brackets(
  eta: int, min_segments: int, max_segments: int
) -> list[tuple[int, list[int]]]:
  """``(num_trials, rung budgets)`` of each Hyperband bracket, boldest first."""
  _check_budget(eta, min_segments, max_segments)
  s_max = len(rung_budgets(eta, min_segments, max_segments)) - 1
  brackets = []
  for s in range(s_max, -1, -1):
    n = math.ceil((s_max + 1) / (s + 1) * eta**s)
    budgets = [
      max(min_segments, round(max_segments / eta ** (s - i)))
      for i in range(s + 1)
    ]
    brackets.append((n, sorted(set(budgets))))
  return brackets


def hyperband(
  init: _population.InitFn,
  segment: _population.SegmentFn,
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
  checkpoint_dir: str | None = None,
  progress: bool = False,
  devices: Sequence[jax.Device] | None = None,
  compiler_options: Mapping[str, Any] | None = None,
  lanes: int | None = None,
) -> _stepwise.AdaptiveResult:
  """Hyperband: successive halving brackets from bold to conservative.

  With ``s_max = floor(log_eta(max_segments / min_segments))``, bracket
  ``s = s_max, ..., 0`` starts ``ceil((s_max + 1) / (s + 1) * eta**s)`` fresh
  trials at ``max_segments * eta**-s`` segments and runs successive halving
  up to ``max_segments``: the first bracket explores widely with little
  training, the last trains a few trials fully. Every bracket and rung runs
  in the rows of the largest bracket, computing only its own trials, so the
  search compiles one init and one segment program. The
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
    checkpoint_dir: a folder where the search state (population, rung,
      history) is saved after every rung; the same call resumes from it to
      the same result, bit for bit; a folder of another search is refused.
    progress: show a progress bar (member-segments).
    devices: devices to shard trials over; default ``jax.devices()``.
    compiler_options: XLA options for the search's programs (see
      `jopt.sweep.run`).
    lanes: trials computed side by side per device (see `jopt.sweep.run`).

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
  iterations = _population.check_int("iterations", iterations, 1)
  if strategy == "grid":
    raise ValueError(
      "hyperband samples each bracket: strategy must be "
      "'random' or 'quasirandom', got 'grid'."
    )
  brackets = hyperband_brackets(eta, min_segments, max_segments) * iterations
  return _search(
    init,
    segment,
    space,
    key,
    brackets,
    eta=eta,
    metric=metric,
    mode=mode,
    strategy=strategy,
    grid_points=None,
    steps_per_segment=steps_per_segment,
    name="hyperband",
    checkpoint_dir=checkpoint_dir,
    progress=progress,
    devices=devices,
    compiler_options=compiler_options,
    lanes=lanes,
    per_bracket=True,
  )
