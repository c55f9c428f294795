"""Population-based training on one vmapped population.

A fixed population trains with the population's segment program, the one
every stepwise search on the same functions shares. Between rounds the
members are ranked by the previous round's metric on the host; each member
of the bottom quantile copies the state (on the devices, one small gather
program) and hyperparameters of a random member of the top quantile
(exploit), then perturbs or resamples its hyperparameters (explore, drawn
with numpy from the search's key and the round). Shapes never change, so
PBT compiles three programs: init, segment and the copy. The parent of
every member in every round is recorded, so the hyperparameter schedule
each final member followed can be traced back and plotted.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt.sweep import _space
from jopt.sweep.results import _plots
from jopt.sweep.runtime import _executor, _loop, _population, _programs
from jopt.sweep.strategies import _stepwise


@dataclasses.dataclass(repr=False)
class PBTResult(_stepwise.AdaptiveResult):
  """An `AdaptiveResult` with the lineage of population-based training.

  Its ``hparams`` and ``metrics`` are the final round's. The attributes
  below come in addition to `AdaptiveResult`'s.

  Attributes:
    parents: [R, P] int: ``parents[r, i]`` is the member whose state and
      hyperparameters member ``i`` took at the start of round ``r`` (itself
      when it was not replaced; round 0 is the identity).
    hparam_history: name -> [R, P] values used in each round (decoded).
    metric_history: [R, P] the metric's last value after each round.
    segments_per_round: segments between two exploit steps.

  Example: see `pbt`; ``res.schedule(res.best().index)`` is the best final
  member's hyperparameters round by round, ``res.plot_schedules()`` draws
  every member's.
  """

  parents: np.ndarray | None = None
  hparam_history: dict[str, np.ndarray] = dataclasses.field(
    default_factory=dict
  )
  metric_history: np.ndarray | None = None
  segments_per_round: int = 1

  def lineage(self, member: int) -> np.ndarray:
    """[R] the member index, round by round, whose state ``member`` carries."""
    rounds = self.parents.shape[0]
    path = np.empty(rounds, np.int64)
    path[-1] = member
    for r in range(rounds - 1, 0, -1):
      path[r - 1] = self.parents[r, path[r]]
    return path

  def schedule(self, member: int) -> dict[str, np.ndarray]:
    """name -> [R] the hyperparameters final ``member`` trained with."""
    path = self.lineage(member)
    rounds = np.arange(len(path))
    return {n: h[rounds, path] for n, h in self.hparam_history.items()}

  def plot_schedules(
    self,
    name: str | None = None,
    *,
    path: str | None = None,
    members: Sequence[int] | None = None,
  ):
    """Plots the schedule of hyperparameter ``name`` each final member followed.

    Args:
      name: a hyperparameter (default: the first one in the space).
      path: save the figure there as a PNG when given.
      members: final members to draw (default: all); the best is drawn bold.

    Returns:
      A matplotlib Figure.
    """
    name = name or next(iter(self.hparam_history))
    members = range(self.parents.shape[1]) if members is None else members
    best = self.best().index
    rounds_x = np.arange(self.parents.shape[0] + 1) * self.segments_per_round
    fig = _plots._figure(width=6.0, height=4.0, what="plot_schedules")
    ax = fig.add_subplot()
    for m in members:
      values = self.schedule(m)[name]
      ax.step(
        rounds_x,
        np.append(values, values[-1]),
        where="post",
        color="C3" if m == best else "0.6",
        lw=2.5 if m == best else 0.8,
        zorder=3 if m == best else 2,
        label=f"best (member {best})" if m == best else None,
      )
    if getattr(self.space.get(name), "log", False):
      ax.set_yscale("log")
    ax.set_xlabel("segment")
    ax.set_ylabel(name)
    ax.set_title(f"PBT schedules of {name}")
    ax.legend()
    return _plots._finish(fig, path, dpi=120)


def _explore_one(
  dist, value, replaced, rng, pool_value, perturb, resample_prob
):
  """New value of one hyperparameter for every member (replaced ones move).

  On the host, with numpy: a handful of values per member and round, and
  drawing them in a compiled program would cost more compile time (JAX's
  counter-based generator) than the round trains for on a small model.
  ``rng`` is a ``numpy.random.Generator``; ``value`` has one row per real
  member (never padding), so the draws do not depend on the devices.
  """
  value = np.asarray(value)
  n = value.shape[0]
  factors = np.asarray(perturb, np.float32)
  factor = factors[rng.integers(0, len(perturb), n)]
  if isinstance(dist, _space.Choice):
    count = len(dist.values)
    if dist.numeric:
      table = np.asarray(dist.values, np.float64).astype(value.dtype)
      index = np.argmin(np.abs(table[None, :] - value[:, None]), axis=1)
    elif dist.boolean:
      table = np.asarray(dist.values, bool)
      index = np.argmax(table[None, :] == value[:, None], axis=1)
    else:
      index = value
    # An ordered move: up when the factor grows the value, down otherwise.
    index = np.clip(index + np.where(factor > 1, 1, -1), 0, count - 1)
    moved = (
      table[index]
      if dist.numeric or dist.boolean
      else index.astype(value.dtype)
    )
  elif isinstance(dist, _space.IntUniform):
    # Scaled and rounded, but at least one step in the factor's direction:
    # rounding alone would leave small values (1 * 1.25, 2 * 0.8) in place.
    current = value.astype(np.float64)  # int32's whole range, exactly
    # factor > 1 grows the magnitude: up for positive values, down for
    # negative ones (and up from zero); factor < 1 shrinks it.
    grow = np.where(factor > 1, 1.0, np.where(factor < 1, -1.0, 0.0))
    step = grow * np.where(current < 0, -1.0, 1.0)
    scaled = np.round(current * factor)
    moved = np.where(
      step > 0,
      np.maximum(scaled, current + step),
      np.minimum(scaled, current + step),
    )
    moved = np.where(step == 0, current, moved)
    moved = np.clip(moved, dist.low, dist.high).astype(value.dtype)
  else:
    moved = np.clip(value * factor, dist.low, dist.high).astype(value.dtype)
  resample = rng.random(n) < resample_prob
  moved = np.where(resample, np.asarray(pool_value), moved)
  return np.where(replaced, moved, value).astype(value.dtype)


def _exploit(
  space,
  rng,
  *,
  score,
  hparams,
  pool,
  population,
  num_quantile,
  exploit,
  perturb,
  resample_prob,
):
  """Exploit and explore on the host: ``(parent, hparams)`` of the members.

  The bottom ``num_quantile`` members (by ``score``, lower is better) copy
  a member drawn from the top ``num_quantile`` and move its values. Only
  a member with a finite score is ever a parent: with fewer finite members
  than ``num_quantile`` the parents are drawn from those, and with none
  nothing is copied (nor explored) this round.
  ``score``, ``hparams`` and ``pool`` hold one row per real member.
  """
  members = np.arange(population)
  parent = members.copy()
  if exploit:
    score = np.asarray(score)
    order = np.argsort(score, kind="stable")
    top = order[:num_quantile]
    top = top[np.isfinite(score[top])]
    bottom = order[population - num_quantile :]
    if len(top):
      parent[bottom] = top[rng.integers(0, len(top), num_quantile)]
  replaced = parent != members
  return parent, {
    name: _explore_one(
      dist,
      np.asarray(hparams[name])[parent],
      replaced,
      rng,
      pool[name],
      perturb,
      resample_prob,
    )
    for name, dist in space.items()
  }


def _round_score(
  values: list[np.ndarray], rank_window: int, mode: str
) -> np.ndarray:
  """Each member's score (lower is better, non-finite last).

  The mean of the last ``rank_window`` segments' values: one validation
  value is noisy, and a greedy exploit on noise copies lucky members.
  """
  value = np.mean(np.stack(values[-rank_window:]), axis=0, dtype=np.float32)
  sign = np.float32(1.0 if mode == "min" else -1.0)
  return np.where(np.isfinite(value), sign * value, np.float32(np.inf)).astype(
    np.float32
  )


def _take_rows(state, parent, *, sharding):
  """Row ``parent[i]`` of every leaf as row ``i``, trial-sharded as before."""
  return jax.tree.map(
    lambda x: jax.lax.with_sharding_constraint(
      jnp.take(x, parent, axis=0), sharding
    ),
    state,
  )


class _PBT(_loop.Strategy):
  """Population-based training as a strategy: one step is one round."""

  def __init__(
    self,
    pop,
    ex,
    key,
    space,
    hparams,
    pool,
    *,
    population,
    num_rounds,
    round_key,
    settings,
    metric,
    mode,
    segments_per_round,
    steps_per_segment,
  ):
    self.pop, self.ex, self.key, self.space = pop, ex, key, space
    self.hparams, self.pool = hparams, pool
    self.population, self.num_rounds = population, num_rounds
    self.round_key = _executor.KeySpec(round_key)
    self.settings = settings
    self.metric, self.mode = metric, mode
    self.segments_per_round = segments_per_round
    self.steps_per_segment = steps_per_segment

  def init(self):
    state, hp, ndev = self.pop.init(
      self.ex, self.hparams, self.key, np.arange(self.population)
    )
    size = len(jax.tree.leaves(hp)[0])
    score = self.ex.put(np.zeros(size, np.float32), ndev)
    return _loop.SearchState(
      0,
      {
        "parents": [],
        "history": {n: [] for n in self.space},
        "scores": [],
        "final": {},
      },
      {"state": state, "hp": hp, "score": score},
      ndev,
    )

  def work(self, state):
    return state.step * self.population * self.segments_per_round

  def terminate(self, state):
    return state.step >= self.num_rounds

  def device_template(self, state):
    return {
      "state": self.pop.state_template(self.hparams, self.key),
      "hp": dict.fromkeys(self.hparams, 0),
      "score": 0,
    }

  def relayout(self, state, tree):
    return _loop.packed_relayout(self.ex, self.population, tree, state.ndev)

  def step(self, state, progress):
    r, ndev, ex = state.step, state.ndev, self.ex
    d = state.device
    size = len(d["score"])
    p = self.population
    rows = _executor.pad_rows(p, size)
    # This round's draws: from the search's round key and the round alone.
    rng = np.random.default_rng([*np.ravel(self.round_key.data).tolist(), r])
    prev_score, prev_hp = ex.gather((d["score"], d["hp"]))
    parent, hp_new = _exploit(
      self.space,
      rng,
      score=prev_score[:p],
      hparams={n: v[:p] for n, v in prev_hp.items()},
      pool={n: v.reshape(self.num_rounds, p)[r] for n, v in self.pool.items()},
      population=p,
      num_quantile=self.settings["num_quantile"],
      exploit=r > 0,
      perturb=self.settings["perturb"],
      resample_prob=self.settings["resample_prob"],
    )
    hp = ex.put({n: v[rows] for n, v in hp_new.items()}, ndev)
    pstate = d["state"]
    if r > 0:
      # The copies of the state stay on the devices: one small program.
      # The old states are not needed after it: their buffers are donated.
      args = (pstate, ex.put(parent[rows].astype(np.int32), ndev))
      program = _programs.get(
        ex,
        lambda: functools.partial(_take_rows, sharding=ex.sharding(ndev)),
        args,
        name="take_rows",
        donate=(0,),
      )
      pstate = _programs.call(ex, program, *args)
    sign = 1.0 if self.mode == "min" else -1.0
    values = []
    for _ in range(self.segments_per_round):
      pstate, metrics = self.pop.segment(ex, pstate, hp, ndev)
      metrics = ex.gather(dict(metrics))
      _population.check_metric(metrics, self.metric)
      last = np.asarray(metrics[self.metric]).reshape(size, -1)[:, -1]
      values.append(last.astype(np.float32))
      progress.advance(p, last[:p], sign, self.metric)
    score = ex.put(
      _round_score(values, self.settings["rank_window"], self.mode), ndev
    )
    h = dict(state.host)
    h["parents"] = [*h["parents"], parent.astype(np.int32)]
    h["history"] = {n: [*v, hp_new[n]] for n, v in h["history"].items()}
    h["scores"] = [
      *h["scores"],
      np.asarray(metrics[self.metric]).reshape(size, -1)[:p, -1],
    ]
    h["final"] = {k: v[:p] for k, v in metrics.items()}
    return _loop.SearchState(
      r + 1, h, {"state": pstate, "hp": hp, "score": score}, ndev
    )

  def postprocess(self, state):
    h, p = state.host, self.population
    final_state = _executor.to_host_values(
      jax.tree.map(lambda x: x[:p], self.ex.gather(state.device["state"]))
    )
    return _stepwise.make_result(
      PBTResult,
      self.space,
      {n: v[-1] for n, v in h["history"].items()},
      h["final"],
      self.ex,
      metric=self.metric,
      mode=self.mode,
      segments_run=np.full(p, self.num_rounds * self.segments_per_round),
      steps_per_segment=self.steps_per_segment,
      final_trials=np.arange(p),
      final_state=final_state,
      parents=np.stack(h["parents"]),
      hparam_history={
        n: self.space[n].decode(np.stack(v)) for n, v in h["history"].items()
      },
      metric_history=np.stack(h["scores"]),
      segments_per_round=self.segments_per_round,
    )


def pbt(
  init: _population.InitFn,
  segment: _population.SegmentFn,
  space: Mapping[str, Any],
  *,
  population: int,
  key: jax.Array,
  num_rounds: int,
  metric: str,
  mode: str = "min",
  segments_per_round: int = 1,
  rank_window: int | None = None,
  quantile: float = 0.25,
  perturb: Sequence[float] = (0.8, 1.25),
  resample_prob: float = 0.25,
  strategy: str = "quasirandom",
  grid_points: Any = None,
  steps_per_segment: int = 1,
  checkpoint_dir: str | None = None,
  progress: bool = False,
  devices: Sequence[jax.Device] | None = None,
  compiler_options: Mapping[str, Any] | None = None,
  lanes: int | None = None,
) -> PBTResult:
  """Population-based training: members copy the best and explore, in rounds.

  Every round trains all members for ``segments_per_round`` segments. From
  the second round on, the round first ranks the members by ``metric``
  averaged over the last ``rank_window`` segments of the previous round
  (non-finite values last; one validation value is noisy, and ranking on it
  copies members that were merely lucky); each of the ``floor(quantile * population)``
  worst copies the state and hyperparameters of a member drawn uniformly
  from as many best ones, then explores. A member whose score is not
  finite (diverged) is never a parent: when fewer members than that are
  finite, the parents are drawn from the finite ones alone, and when none
  is finite the round copies nothing. Replaced members explore: with
  probability ``resample_prob`` a hyperparameter is redrawn from its
  distribution, otherwise it is multiplied by a factor drawn from
  ``perturb`` and clipped to its range (a choice moves to the next value
  up or down; an int is rounded).

  Args:
    init: ``init(hparams, key) -> state`` for one member.
    segment: ``segment(state, hparams) -> (state, metrics)`` for one member.
      Before it runs, the state's jopt or Optax-injected hyperparameters
      named as a dimension of ``space`` are set to the member's values, so
      a copied state trains at its explored values (an NNX state split
      with ``nnx.state`` is not searched: see `jopt.sweep.run_stepwise`).
    space: a dict ``name -> distribution`` (no static choices).
    population: members (>= 2, and ``quantile * population >= 1``).
    key: a JAX PRNG key; member ``i`` is initialized with ``fold_in(key, i)``.
    num_rounds: rounds (>= 1).
    metric: the metric to rank by (a curve's last value).
    mode: ``"min"`` or ``"max"``.
    segments_per_round: segments between two exploit steps (>= 1); every
      member trains this long between two exploits (the "ready" interval).
    rank_window: segments at the end of a round whose ``metric`` (a curve's
      last value each) is averaged for ranking, in ``[1,
      segments_per_round]``; default all of the round's segments.
    quantile: the fraction replaced each round, in ``(0, 0.5]``.
    perturb: multiplicative factors to draw from (> 0).
    resample_prob: probability of redrawing instead of perturbing.
    strategy: how the initial population is sampled (by default a
      scrambled Sobol set, spread evenly over the space).
    grid_points: points per continuous dimension for the grid.
    steps_per_segment: steps in one segment, for ``member_steps``.
    checkpoint_dir: a folder where the population, its hyperparameters and
      the lineage are saved after every round; the same call resumes from
      it to the same result, bit for bit; a folder of another search is
      refused.
    progress: show a progress bar (member-segments).
    devices: devices to shard members over; default ``jax.devices()``.
    compiler_options: XLA options for the search's programs (see
      `jopt.sweep.run`).
    lanes: members computed side by side per device (see `jopt.sweep.run`).

  Returns:
    A `PBTResult`.

  Example:
    >>> import jax, jax.numpy as jnp, jopt
    >>> init = lambda hp, key: jnp.ones(())
    >>> def segment(x, hp):
    ...   x = x * (1 - hp["lr"])
    ...   return x, {"loss": x * x}
    >>> res = jopt.sweep.pbt(
    ...     init, segment, {"lr": jopt.sweep.uniform(0.0, 0.5)},
    ...     population=8, key=jax.random.key(0), num_rounds=5, metric="loss")
    >>> res.parents.shape, res.schedule(res.best().index)["lr"].shape
    ((5, 8), (5,))

  References:
    Jaderberg et al., `Population based training of neural networks
    <https://arxiv.org/abs/1711.09846>`_, 2017.
  """
  _population.check_mode(mode)
  _population.check_common(key, devices, lanes, compiler_options)
  space = _population.check_space(space, "pbt")
  for name, value, low in (
    ("population", population, 2),
    ("num_rounds", num_rounds, 1),
    ("segments_per_round", segments_per_round, 1),
  ):
    if (
      not isinstance(value, numbers.Integral)
      or isinstance(value, bool)
      or value < low
    ):
      raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
  if rank_window is None:
    rank_window = segments_per_round
  if (
    not isinstance(rank_window, numbers.Integral)
    or isinstance(rank_window, bool)
    or not 1 <= rank_window <= segments_per_round
  ):
    raise ValueError(
      f"rank_window must be an int in [1, segments_per_round="
      f"{segments_per_round}], got {rank_window!r}."
    )
  if not 0.0 < quantile <= 0.5:
    raise ValueError(f"quantile must be in (0, 0.5], got {quantile!r}.")
  num_quantile = int(np.floor(quantile * population + 1e-9))
  if num_quantile < 1:
    raise ValueError(
      f"population={population} is too small for quantile={quantile}: "
      f"need population >= {int(np.ceil(1 / quantile))} so that at least "
      f"one member is replaced per round."
    )
  perturb = tuple(float(f) for f in perturb)
  if not perturb or min(perturb) <= 0:
    raise ValueError(f"perturb must be non-empty factors > 0, got {perturb!r}.")
  if not 0.0 <= resample_prob <= 1.0:
    raise ValueError(f"resample_prob must be in [0, 1], got {resample_prob!r}.")

  k_sample, k_pool, k_rounds = jax.random.split(key, 3)
  hparams = _space.sample(
    space, population, k_sample, strategy, grid_points=grid_points
  )
  pool = _space.sample(space, num_rounds * population, k_pool, "random")
  ex = _population.executor_for(population, devices, lanes, compiler_options)
  pop = _population.population_for(init, segment)
  key_spec = _executor.KeySpec(key)
  _stepwise.check_segment_metric(pop, hparams, key_spec, metric)
  settings = dict(
    num_quantile=num_quantile,
    segments_per_round=segments_per_round,
    metric=metric,
    mode=mode,
    perturb=perturb,
    resample_prob=resample_prob,
    rank_window=int(rank_window),
  )
  search = _PBT(
    pop,
    ex,
    key_spec,
    space,
    hparams,
    pool,
    population=population,
    num_rounds=num_rounds,
    round_key=k_rounds,
    settings=settings,
    metric=metric,
    mode=mode,
    segments_per_round=segments_per_round,
    steps_per_segment=steps_per_segment,
  )
  return _population.run_search(
    search,
    ex,
    name="pbt",
    init=init,
    segment=segment,
    hparams=hparams,
    key_spec=key_spec,
    space=space,
    key=key,
    checkpoint_dir=checkpoint_dir,
    progress=progress,
    total=num_rounds * population * segments_per_round,
    strategy=strategy,
    grid_points=grid_points,
    population=population,
    num_rounds=num_rounds,
    explore="host numpy",
    **settings,
  )
