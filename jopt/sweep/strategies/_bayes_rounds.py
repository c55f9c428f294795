"""The rounds of `optuna_search`: its two strategies and its result.

`_Optuna` trains each round's trials in one call of ``train_fn``;
`_OptunaStepwise` trains them segment by segment on the stepwise form,
reporting to the study and pruning between segments.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

import jax
import numpy as np

from jopt.sweep import _space
from jopt.sweep.results import _result
from jopt.sweep.runtime import _executor, _loop, _population, _programs
from jopt.sweep.strategies import _stepwise


@dataclasses.dataclass(repr=False)
class OptunaResult(_result.SweepResult):
  """A `SweepResult` of `optuna_search`, with the study and round of trials.

  The attributes below come in addition to `SweepResult`'s.

  Attributes:
    study: the ``optuna.Study`` every trial was told to.
    rounds: [N] int: the round in which each trial was asked.
    metric: the metric the search optimized.
    mode: ``"min"`` or ``"max"``.
    segments_run: [N] int: segments each trial was trained for (the
      stepwise form; None for a one-call ``train_fn``).
    pruned_at: [N] int: the step (segment index) at which the study's
      pruner stopped each trial, -1 for a trial not pruned (the stepwise
      form; None otherwise).
    steps_per_segment: training steps in one segment (for `member_steps`).

  `best` and `top_k` rank the trials that finished, as
  ``study.best_trial`` does: a pruned trial's metrics hold its last
  reported values, which are not comparable with finished ones.

  `save` writes everything but the study (load gives ``study=None``); keep
  a study across sessions with Optuna's own storage (``storage=...``).

  Example: see `optuna_search`; ``res.study.best_params`` and
  ``res.best()`` agree, ``res.to_pandas()`` lists every trial.
  """

  study: Any = None
  rounds: np.ndarray | None = None
  metric: str = ""
  mode: str = "min"
  segments_run: np.ndarray | None = None
  pruned_at: np.ndarray | None = None
  steps_per_segment: int = 1

  _not_saved = ("study",)  # a live study: Optuna's storage persists it

  def __repr__(self) -> str:
    return (
      f"OptunaResult(num_trials={len(self)}, metric={self.metric!r}, "
      f"num_compiles={self.num_compiles})"
    )

  @property
  def pruned(self) -> np.ndarray:
    """[N] bool: the trials the pruner stopped (all False without one)."""
    if self.pruned_at is None:
      return np.zeros(len(self), bool)
    return np.asarray(self.pruned_at) >= 0

  @property
  def member_steps(self) -> int | None:
    """Training steps summed over trials (the stepwise form; else None)."""
    if self.segments_run is None:
      return None
    return int(np.sum(self.segments_run)) * self.steps_per_segment

  def best(self, metric: str | None = None, mode: str | None = None):
    """The best finished trial (default: by the search's metric and mode)."""
    top = self.top_k(metric, 1, mode)
    if not top:
      raise ValueError(
        f"no trial finished with a finite {metric or self.metric!r}."
      )
    return top[0]

  def top_k(
    self, metric: str | None = None, k: int = 1, mode: str | None = None
  ):
    """The ``k`` best finished trials (default: by the search's metric and
    mode); pruned trials are left out."""
    metric, mode = metric or self.metric, mode or self.mode
    pruned = self.pruned
    if not pruned.any():
      return super().top_k(metric, k, mode)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
      raise ValueError(f"k must be an int >= 1, got {k!r}.")
    ranked = super().top_k(metric, len(self), mode)
    return [t for t in ranked if not pruned[t.index]][:k]

  def _info_columns(self) -> dict[str, np.ndarray]:
    """`to_pandas` adds, for the stepwise form, ``segments_run`` and
    ``pruned_at`` columns."""
    info = super()._info_columns()
    if self.segments_run is None:
      return info
    return {
      **info,
      "segments_run": self.segments_run,
      "pruned_at": self.pruned_at,
    }


def _passed(dist, value):
  """The value ``train_fn`` receives for an Optuna parameter value."""
  if isinstance(dist, _space.Choice):
    if not all(isinstance(v, (str, int, float, bool)) for v in dist.values):
      index = value
    else:
      index = dist.values.index(value)
    return dist.from_unit(np.array([(index + 0.5) / len(dist.values)]))[0]
  if isinstance(dist, _space.IntUniform):
    return np.int32(value)
  return np.float32(value)


class _Optuna(_loop.Strategy):
  """Batched ask/train/tell as a strategy: one step is one round.

  The study (with its sampler's random state) is part of the saved state,
  so a resumed search asks exactly what the uninterrupted one asked.
  """

  def __init__(
    self,
    optuna,
    ex,
    key,
    space,
    train_fn,
    study,
    distributions,
    *,
    num_rounds,
    batch_size,
    metric,
    mode,
  ):
    self.optuna, self.ex, self.key, self.space = optuna, ex, key, space
    self.train_fn = train_fn
    self.study = study
    self.distributions = distributions
    self.num_rounds, self.batch_size = num_rounds, batch_size
    self.metric, self.mode = metric, mode

  def _train(self, hp, ids):
    """A round's metrics: its trials in calls that fit the memory budget."""
    return _programs.run_trials(
      self.ex,
      lambda row, kd: self._one(*row, kd),
      (hp, ids),
      self.key.data,
      owner=self.train_fn,
      name="optuna_round",
      key=str(self.key.impl),
    )

  def _one(self, hp, index, kd):
    return self.train_fn(hp, _executor.trial_key(self.key.wrap(kd), index))

  def program_digest(self) -> str:
    hp = {
      n: jax.ShapeDtypeStruct(
        (), np.asarray(_passed(d, _first_value(self.distributions[n]))).dtype
      )
      for n, d in self.space.items()
    }
    kd = jax.ShapeDtypeStruct(self.key.data.shape, self.key.data.dtype)
    return _programs.digest(
      (self._one, (hp, jax.ShapeDtypeStruct((), np.int32), kd))
    )

  def init(self):
    return _loop.SearchState(
      0, {"passed": {n: [] for n in self.space}, "metrics": {}, "rounds": []}
    )

  def _ask(self):
    """A round's trials, the values their train functions get, their ids."""
    trials = [
      self.study.ask(self.distributions) for _ in range(self.batch_size)
    ]
    hp = {
      n: np.array([_passed(d, t.params[n]) for t in trials])
      for n, d in self.space.items()
    }
    return trials, hp, np.array([t.number for t in trials], np.int32)

  def work(self, state):
    return state.step * self.batch_size

  def terminate(self, state):
    return state.step >= self.num_rounds

  def device_template(self, state):
    return None

  def step(self, state, progress):
    optuna = self.optuna
    study = self.study
    trials, hp, ids = self._ask()
    out = self._train(hp, ids)
    _population.check_metric(out, self.metric)
    values = _population.ranking_values(out, self.metric, "min")  # inf = bad
    raw = np.asarray(out[self.metric], np.float64).reshape(self.batch_size, -1)[
      :, -1
    ]
    for t, v, ok in zip(trials, raw, np.isfinite(values), strict=True):
      if ok:
        study.tell(t, float(v))
      else:
        study.tell(t, state=optuna.trial.TrialState.FAIL)
    h = state.host
    metrics = {k: [*h["metrics"].get(k, []), v] for k, v in out.items()}
    host = {
      "passed": {n: [*h["passed"][n], hp[n]] for n in self.space},
      "metrics": metrics,
      "rounds": [*h["rounds"], np.full(self.batch_size, state.step)],
      "study": np.frombuffer(_pickle_study(study), np.uint8),
    }
    return _loop.SearchState(state.step + 1, host)

  def restore(self, state):
    """Continues the study of this call from the one saved with ``state``.

    The saved trials this call's study lacks are added to it, and it takes
    the saved sampler (with its random state), so the study the caller
    holds receives every trial and asks what the uninterrupted search
    asked. A study holding trials the saved one does not is refused.
    """
    if "study" not in state.host:
      return
    import pickle

    saved = pickle.loads(state.host["study"].tobytes())
    mine = self.study.get_trials(deepcopy=False)
    theirs = saved.get_trials(deepcopy=False)
    if len(mine) > len(theirs) or any(
      (a.number, a.state, a.params, a.values)
      != (b.number, b.state, b.params, b.values)
      for a, b in zip(mine, theirs, strict=False)
    ):
      raise ValueError(
        f"the study passed holds trials that the study saved in the "
        f"checkpoint does not ({len(mine)} trials, the checkpoint's "
        f"{len(theirs)}); resume with the study the search started with "
        f"(or a new one), or use a new checkpoint_dir."
      )
    self.study.add_trials(theirs[len(mine) :])
    self.study.sampler = saved.sampler

  def postprocess(self, state):
    h = state.host
    hparams = {n: np.concatenate(v) for n, v in h["passed"].items()}
    return _stepwise.make_result(
      OptunaResult,
      self.space,
      hparams,
      {k: np.concatenate(v) for k, v in h["metrics"].items()},
      self.ex,
      study=self.study,
      rounds=np.concatenate(h["rounds"]),
      metric=self.metric,
      mode=self.mode,
    )


class _OptunaStepwise(_Optuna):
  """Batched ask/tell on the stepwise form, with the study's pruner.

  One step is one round: its trials start together and train segment by
  segment. After each segment every live trial reports its ``metric`` to
  its Optuna trial (step = the segment's index) and asks
  ``trial.should_prune()``; pruned and failed trials leave the population
  (`Population.move`), so later segments compute only the trials still
  live, in the rows of the full batch (one init and one segment program).
  """

  def __init__(
    self,
    optuna,
    ex,
    key,
    space,
    pop,
    study,
    distributions,
    *,
    num_rounds,
    batch_size,
    num_segments,
    steps_per_segment,
    metric,
    mode,
  ):
    super().__init__(
      optuna,
      ex,
      key,
      space,
      None,
      study,
      distributions,
      num_rounds=num_rounds,
      batch_size=batch_size,
      metric=metric,
      mode=mode,
    )
    self.pop = pop
    self.num_segments, self.steps_per_segment = (
      num_segments,
      steps_per_segment,
    )

  def hparams_template(self):
    """One value of each hyperparameter, as ``init`` receives it."""
    return {
      n: np.asarray([_passed(d, _first_value(self.distributions[n]))])
      for n, d in self.space.items()
    }

  def program_digest(self) -> str:
    return _population.program_digest(
      self.pop, self.hparams_template(), self.key
    )

  def init(self):
    state = super().init()
    state.host.update(segments_run=[], pruned_at=[])
    return state

  def work(self, state):
    return int(sum(np.sum(r) for r in state.host["segments_run"]))

  def step(self, state, progress):
    ex, pop, study = self.ex, self.pop, self.study
    states = self.optuna.trial.TrialState
    n, last = self.batch_size, self.num_segments - 1
    trials, hp, ids = self._ask()
    place = pop.placement(ex, n, n)
    pstate, dhp = pop.init_live(ex, hp, self.key, ids, place)
    live = np.arange(n)  # the batch positions of the live trials
    curves: dict[str, np.ndarray] = {}
    segments_run = np.zeros(n, np.int64)
    pruned_at = np.full(n, -1, np.int64)
    for s in range(self.num_segments):
      pstate, metrics = pop.segment_live(ex, pstate, dhp, place)
      values = _stepwise.last_values(
        {k: place.live(v) for k, v in ex.gather(dict(metrics)).items()},
        len(live),
      )
      _population.check_metric(values, self.metric)
      for k, v in values.items():
        curves.setdefault(k, np.zeros((n, self.num_segments), v.dtype))[
          live, s
        ] = v
      segments_run[live] += 1
      value = np.asarray(values[self.metric], np.float64)
      progress.advance(
        len(live), value, 1.0 if self.mode == "min" else -1.0, self.metric
      )
      finite = np.isfinite(value)
      for j in np.flatnonzero(finite):  # every report, then every question
        trials[live[j]].report(float(value[j]), s)
      stop = np.zeros(len(live), bool)
      for j, t in enumerate(trials[i] for i in live):
        if not finite[j]:
          study.tell(t, state=states.FAIL)
          stop[j] = True
        elif s == last:
          study.tell(t, float(value[j]))
        elif t.should_prune():
          study.tell(t, state=states.PRUNED)
          pruned_at[live[j]] = s
          stop[j] = True
      if s == last or stop.all():
        break
      if stop.any():
        keep = np.flatnonzero(~stop)
        new = pop.placement(ex, len(keep), n)
        pstate = pop.move(ex, pstate, place, keep, new)
        dhp = pop.move(ex, dhp, place, keep, new)
        place, live = new, live[keep]
    for c in curves.values():  # a stopped trial holds its last values
      c[:] = np.take_along_axis(
        c,
        np.minimum(
          np.arange(self.num_segments)[None], segments_run[:, None] - 1
        ),
        axis=1,
      )
    h = state.host
    host = {
      "passed": {k: [*h["passed"][k], hp[k]] for k in self.space},
      "metrics": {k: [*h["metrics"].get(k, []), v] for k, v in curves.items()},
      "rounds": [*h["rounds"], np.full(n, state.step)],
      "segments_run": [*h["segments_run"], segments_run],
      "pruned_at": [*h["pruned_at"], pruned_at],
      "study": np.frombuffer(_pickle_study(study), np.uint8),
    }
    return _loop.SearchState(state.step + 1, host)

  def postprocess(self, state):
    result = super().postprocess(state)
    result.segments_run = np.concatenate(state.host["segments_run"])
    result.pruned_at = np.concatenate(state.host["pruned_at"])
    result.steps_per_segment = self.steps_per_segment
    return result


def _pickle_study(study) -> bytes:
  import pickle

  try:
    return pickle.dumps(study)
  except Exception as e:  # noqa: BLE001  (storages that hold connections)
    raise ValueError(
      "checkpoint_dir needs a study that can be pickled (an in-memory "
      "one); a study with a database storage= persists itself: resume it "
      "by passing it again, without checkpoint_dir."
    ) from e


def _first_value(dist):
  """A value of an Optuna distribution (for the dtype of what is passed)."""
  if hasattr(dist, "choices"):
    return dist.choices[0]
  return dist.low
