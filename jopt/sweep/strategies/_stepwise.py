"""The stepwise form of a training function, run over a whole population.

Adaptive strategies (successive halving, Hyperband, population-based
training) watch training in progress, so they take the training function in
two pieces:

* ``init(hparams, key) -> state``: builds one trial's state (parameters,
  optimizer state, a data key...) from a dict of scalar hyperparameters;
* ``segment(state, hparams) -> (state, metrics)``: advances one trial by a
  fixed number of steps (a ``lax.scan``) and reports metrics (scalars, or
  curves whose last value is used for ranking).

A search trains with the hyperparameters it records: before each segment,
a dimension of the space named as a hyperparameter of the state (a jopt
optimizer state or Optax's ``inject_hyperparams`` one, named as
`jopt.get_hyperparams` names it) is written into the state, so a segment
that builds nothing from ``hparams`` still trains at the trial's values
(a PBT member at its explored rate). A state split by Flax NNX
(``nnx.state((model, optimizer))``) holds the optimizer state as NNX
variables, out of the search's sight: after ``nnx.merge``, the segment
writes the values itself, ``optimizer.opt_state = jopt.set_hyperparams(
optimizer.opt_state, learning_rate=hparams["learning_rate"])``.

`jopt.sweep.runtime._population.Population` runs both over many trials with the
shared executor. `run_stepwise` is the simplest strategy over it: a
population trained for a number of segments with per-trial early stopping;
a stopped trial's state is frozen by a select, and since a vmapped ``cond``
is a select too (it still costs compute), the host stops calling the
segment function as soon as every trial of a chunk has stopped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt.sweep import _common, _space
from jopt.sweep.results import _result
from jopt.sweep.runtime import _checkpoint, _executor, _loop, _programs
from jopt.sweep.runtime._population import (
  InitFn,
  SegmentFn,
  check_common,
  check_int,
  check_metric,
  check_mode,
  check_optional_int,
  check_space,
  executor_for,
  population_for,
  run_search,
)
from jopt.transforms import _plateau

# --- Results ------------------------------------------------------------------


@dataclasses.dataclass(repr=False)
class AdaptiveResult(_result.SweepResult):
  """A `SweepResult` that also records the compute each trial was given.

  ``hparams`` are the values each trial started with (user values),
  ``metrics`` each trial's last reported metrics; `best` and `top_k` rank by
  the search's ``metric`` and ``mode`` unless told otherwise, and only the
  trials trained to the end (``final_trials``) unless
  ``full_budget=False``. The attributes below come in addition to
  `SweepResult`'s.

  Attributes:
    metric: the metric the search ranked by.
    mode: ``"min"`` or ``"max"``.
    segments_run: [N] int: segments each trial was trained for.
    steps_per_segment: steps in one segment (for `member_steps`).
    wall_time: seconds the search took.
    history: per-strategy record (rungs, segment calls...).
    final_trials: indices of the trials trained to the end.
    final_state: their states, stacked along the leading axis (None when
      not kept).

  `save` and `load` keep everything above but ``final_state`` (a training
  state: save it with your checkpointing library); it loads as None.

  Example:
    >>> import jax, jax.numpy as jnp, jopt
    >>> init = lambda hp, key: jnp.ones(())
    >>> def segment(x, hp):
    ...   x = x * (1 - hp["lr"])
    ...   return x, {"loss": x * x}
    >>> res = jopt.sweep.successive_halving(
    ...     init, segment, {"lr": jopt.sweep.choice([0.1, 0.2, 0.4])},
    ...     num_trials=3, key=jax.random.key(0), max_segments=3,
    ...     metric="loss", strategy="grid", steps_per_segment=10)
    >>> res.segments_run.tolist(), res.member_steps, res.best().hparams
    ([1, 1, 3], 50, {'lr': 0.4})
  """

  metric: str = ""
  mode: str = "min"
  segments_run: np.ndarray | None = None
  steps_per_segment: int = 1
  wall_time: float = 0.0
  history: dict[str, Any] = dataclasses.field(default_factory=dict)
  final_trials: np.ndarray | None = None
  final_state: Any = None

  _not_saved = ("final_state",)

  def __repr__(self) -> str:
    return (
      f"{type(self).__name__}(num_trials={len(self)}, "
      f"metric={self.metric!r}, member_steps={self.member_steps}, "
      f"num_compiles={self.num_compiles})"
    )

  @property
  def member_segments(self) -> int:
    """Segments trained, summed over trials."""
    return int(np.sum(self.segments_run))

  @property
  def member_steps(self) -> int:
    """Training steps, summed over trials."""
    return self.member_segments * self.steps_per_segment

  def top_k(
    self,
    metric: str | None = None,
    k: int = 1,
    mode: str | None = None,
    *,
    full_budget: bool = True,
  ) -> list[_result.Trial]:
    """The ``k`` best trials (default: by the search's metric and mode).

    Args:
      metric: a metric name (default: the search's).
      k: how many trials (fewer when fewer qualify).
      mode: ``"min"`` or ``"max"`` (default: the search's).
      full_budget: rank only the ``final_trials``, those trained to the
        end (as Optuna's ``best_trial`` ignores pruned trials); a trial
        stopped at a lower rung reports its metric at a smaller budget,
        which a metric that rises late (an overfitting validation loss)
        makes look better than it is, and it has no final state. False
        ranks every trial by its last value, whatever its budget. Results
        without ``final_trials`` (`run_stepwise`) rank every trial.

    Returns:
      Trials, best first; ties keep trial order.
    """
    metric, mode = metric or self.metric, mode or self.mode
    if not full_budget or self.final_trials is None:
      return super().top_k(metric, k, mode)
    ranked = super().top_k(metric, k, mode)  # checks the arguments
    if len(ranked) == k:
      ranked = super().top_k(metric, len(self), mode)
    final = set(np.asarray(self.final_trials).tolist())
    return [t for t in ranked if t.index in final][:k]

  def best(
    self,
    metric: str | None = None,
    mode: str | None = None,
    *,
    full_budget: bool = True,
  ) -> _result.Trial:
    """The best trial (default: by the search's metric and mode).

    Only trials trained to the end count, unless ``full_budget=False``
    (see `top_k`).
    """
    metric = metric or self.metric
    top = self.top_k(metric, 1, mode, full_budget=full_budget)
    if top:
      return top[0]
    if full_budget and self.final_trials is not None:
      raise ValueError(
        f"no trial trained to the full budget has a finite {metric!r}; "
        f"best(full_budget=False) ranks the trials stopped earlier too."
      )
    raise ValueError(f"no trial has a finite {metric!r}: all diverged.")

  def _info_columns(self) -> dict[str, np.ndarray]:
    """`to_pandas` adds a ``segments_run`` column."""
    return {**super()._info_columns(), "segments_run": self.segments_run}


def make_result(cls, space, hparams, metrics, ex, **fields):
  """A result from passed hyperparameters (decoded here) and metrics.

  Its compile statistics are those of ``ex``, the search's executor.
  """
  hparams = {n: space[n].decode(np.asarray(v)) for n, v in hparams.items()}
  metrics = {k: np.asarray(v) for k, v in metrics.items()}
  n = len(next(iter(hparams.values())))
  return cls(
    hparams=hparams,
    metrics=metrics,
    diverged=_common.diverged_mask(metrics, n),
    space=dict(space),
    **_result.compile_stats(ex),
    **fields,
  )


def last_values(metrics: Mapping[str, Any], n: int) -> dict[str, np.ndarray]:
  """Each metric's last value per trial (a curve's last point), ``n`` rows."""
  out = {}
  for k, v in metrics.items():
    v = np.asarray(v)[:n]
    out[k] = v.reshape(n, -1)[:, -1] if v.ndim > 1 else v
  return out


def check_segment_metric(pop, hparams, key, metric):
  """Raises before any training unless the segment returns ``metric``.

  Reads the segment's metrics from its trace (`jax.eval_shape`), so a
  misspelt metric costs no compile and no training.
  """
  state = pop.state_template(hparams, key)
  hp = {
    k: jax.ShapeDtypeStruct((), np.asarray(v).dtype) for k, v in hparams.items()
  }
  _, metrics = jax.eval_shape(pop.segment_fn, state, hp)
  check_metric(metrics, metric)


# --- A population run with per-trial early stopping ------------------------------


def _make_stopper(early_stopping, mode):
  if early_stopping is None or hasattr(early_stopping, "update"):
    return early_stopping
  return _plateau.early_stopping(early_stopping, mode=mode)


class _RunStepwise(_loop.Strategy):
  """`run_stepwise` as a strategy: one step is one segment of one chunk."""

  def __init__(
    self,
    pop,
    ex,
    key,
    space,
    hparams,
    *,
    max_parallel,
    num_segments,
    metric,
    mode,
    stopper,
    steps_per_segment,
  ):
    self.pop, self.ex, self.key, self.space = pop, ex, key, space
    self.hparams = hparams
    self.n = len(next(iter(hparams.values())))
    self.max_parallel = max_parallel
    self.chunk: int | None = None  # sized when the first chunk starts
    self.num_segments = num_segments
    self.metric, self.mode = metric, mode
    self.stopper = stopper
    self.steps_per_segment = steps_per_segment

  def _indices(self, h):
    """The trials of the chunk in training (``h["end"]`` set as it starts).

    A chunk's bounds are saved with it, so a search resumed with another
    chunk size (another memory fit, other devices) finishes the chunk it
    saved and then cuts its own: results do not depend on chunking.
    """
    return np.arange(h["start"], h["end"])

  def init(self):
    return _loop.SearchState(
      0,
      {
        "start": 0,
        "end": 0,
        "segment": 0,
        "calls": 0,
        "curves": {},
        "segments_run": np.zeros(self.n, np.int64),
      },
    )

  def work(self, state):
    return int(np.sum(state.host["segments_run"]))

  def terminate(self, state):
    return state.host["start"] >= self.n

  def device_template(self, state):
    template = {
      "state": self.pop.state_template(self.hparams, self.key),
      "hp": dict.fromkeys(self.hparams, 0),
    }
    if self.stopper is not None:
      template["stop"] = self.stopper.init()
    return template

  def relayout(self, state, tree):
    # The saved chunk's trials are its first rows (then padding).
    n = len(self._indices(state.host))
    return _loop.packed_relayout(self.ex, n, tree, state.ndev)

  def _stop_program(self):
    stopper, metric = self.stopper, self.metric

    def update(st, metrics):
      value = jnp.ravel(metrics[metric])[-1]
      new = stopper.update(st, value)
      return jax.tree.map(lambda a, b: jnp.where(st.stopped, b, a), new, st)

    return update

  def step(self, state, progress):
    h = dict(state.host)
    device, ndev = state.device, state.ndev
    if device is None and self.chunk is None:
      # A chunk is whole groups of lanes: the lane width is the search's,
      # so results do not depend on max_parallel (or on the memory fit).
      self.chunk, _ = _programs.fit(
        self.ex,
        self.n,
        self.max_parallel,
        lambda size, ndev: self.pop.segment_program(
          self.ex, self.hparams, self.key, size, masked=self.stopper is not None
        ),
      )
    if device is None:
      h["end"] = min(h["start"] + self.chunk, self.n)
    idx = self._indices(h)
    if device is None:
      # A last, smaller chunk is padded to a whole chunk (repeating its
      # first trial), so it runs the programs the other chunks compiled.
      rows = idx[_executor.pad_rows(len(idx), max(len(idx), self.chunk))]
      pstate, hp, ndev = self.pop.init(
        self.ex, {k: v[rows] for k, v in self.hparams.items()}, self.key, rows
      )
      device = {"state": pstate, "hp": hp}
      if self.stopper is not None:
        size = len(jax.tree.leaves(hp)[0])
        device["stop"] = self.ex.put(
          jax.tree.map(
            lambda x: np.broadcast_to(np.asarray(x), (size,) + np.shape(x)),
            self.stopper.init(),
          ),
          ndev,
        )
    stop = device.get("stop")
    stopped_host = (
      np.zeros(len(idx), bool)
      if stop is None
      else self.ex.gather(stop.stopped)[: len(idx)]
    )
    pstate, metrics = self.pop.segment(
      self.ex,
      device["state"],
      device["hp"],
      ndev,
      None if stop is None else stop.stopped,
    )
    host_metrics = self.ex.gather(dict(metrics))
    if not h["calls"]:
      check_metric(host_metrics, self.metric)
    progress.advance(
      int((~stopped_host).sum()),
      last_values(host_metrics, len(idx))[self.metric][~stopped_host],
      1.0 if self.mode == "min" else -1.0,
      self.metric,
    )
    h["calls"] += 1
    s = h["segment"]
    segments_run = h["segments_run"].copy()
    segments_run[idx] += ~stopped_host
    curves = {k: v.copy() for k, v in h["curves"].items()}
    for k, last in last_values(host_metrics, len(idx)).items():
      c = curves.setdefault(
        k, np.zeros((self.n, self.num_segments), last.dtype)
      )
      prev = c[idx, s - 1] if s else last
      c[idx, s] = np.where(stopped_host, prev, last)
    device = {**device, "state": pstate}
    all_stopped = False
    if stop is not None:
      args = (stop, metrics)
      program = _programs.get(
        self.ex,
        lambda: self.ex.per_trial(self._stop_program(), ndev, (0, 0)),
        args,
        owner=self.stopper,
        name="stop_update",
        key=self.metric,
      )
      device["stop"] = _programs.call(self.ex, program, *args)
      all_stopped = bool(
        self.ex.gather(device["stop"].stopped)[: len(idx)].all()
      )
    h.update(segment=s + 1, segments_run=segments_run, curves=curves)
    if s + 1 == self.num_segments or all_stopped:
      for c in curves.values():  # a chunk that stopped early holds its values
        c[idx[:, None], np.arange(s + 1, self.num_segments)] = c[idx, s][
          :, None
        ]
      h.update(start=h["end"], segment=0)
      device = None
    return _loop.SearchState(state.step + 1, h, device, ndev)

  def postprocess(self, state):
    h = state.host
    return make_result(
      AdaptiveResult,
      self.space,
      self.hparams,
      h["curves"],
      self.ex,
      metric=self.metric,
      mode=self.mode,
      segments_run=h["segments_run"],
      steps_per_segment=self.steps_per_segment,
      history={"segment_calls": h["calls"]},
    )


def run_stepwise(
  init: InitFn,
  segment: SegmentFn,
  space: Mapping[str, Any],
  *,
  num_segments: int,
  key: jax.Array,
  metric: str,
  mode: str = "min",
  num_trials: int | None = None,
  strategy: str = "random",
  grid_points: Any = None,
  early_stopping: Any = None,
  max_parallel: int | None = None,
  steps_per_segment: int = 1,
  checkpoint_dir: str | None = None,
  progress: bool = False,
  devices: Sequence[jax.Device] | None = None,
  compiler_options: Mapping[str, Any] | None = None,
  lanes: int | None = None,
) -> AdaptiveResult:
  """Trains sampled trials segment by segment, each stopping on its own.

  Every segment runs ``segment`` over a chunk of trials (vmapped at a fixed
  lane width, sharded over ``devices``). With ``early_stopping`` (a
  patience, or an object with ``init()``, ``update(state, value)`` and
  ``state.stopped`` such as `jopt.early_stopping`) each trial's ``metric``
  feeds its own stopping rule; a stopped trial keeps its state (a select
  inside the program), and once every trial of the chunk has stopped the
  host stops calling the segment function, so finished chunks cost
  nothing. Reduce-on-plateau needs no support here: `jopt.reduce_on_plateau`
  in the optimizer is per-trial under ``vmap`` already.

  Args:
    init: ``init(hparams, key) -> state`` for one trial.
    segment: ``segment(state, hparams) -> (state, metrics)`` for one trial;
      the state's hyperparameters named as a dimension of ``space`` are
      set to the trial's values before it runs (see the module docs).
    space: a dict ``name -> distribution``.
    num_segments: the most segments a trial trains for (> 0).
    key: a JAX PRNG key; trial ``i`` gets ``fold_in(key, i)``.
    metric: the metric that early stopping and ranking read.
    mode: ``"min"`` or ``"max"``.
    num_trials: trials to sample (optional for the grid).
    strategy: ``"grid"``, ``"random"`` or ``"quasirandom"``.
    grid_points: points per continuous dimension for the grid.
    early_stopping: a patience in segments, a stopping rule, or None.
    max_parallel: most trials trained at once (chunks run one after
      another, rounded up to whole groups of ``lanes``); an int >= 1, or
      None: as many as fit the memory budget (all at once when they fit;
      read from the compiled segment, as `jopt.sweep.run` does).
    steps_per_segment: steps in a segment, for the member-step count.
    checkpoint_dir: a folder where the search state is saved after every
      segment; the same call resumes from it to the same result, bit for
      bit (with any ``max_parallel``, on any devices), and a folder of
      another search is refused.
    progress: show a progress bar (member-segments).
    devices: devices to shard trials over; default ``jax.devices()``.
    compiler_options: XLA options for the search's programs (see
      `jopt.sweep.run`).
    lanes: trials computed side by side per device (see `jopt.sweep.run`).

  Returns:
    An `AdaptiveResult` whose ``metrics`` hold, per metric, a [N,
    num_segments] curve of the value after each segment (held after a stop),
    and whose ``history["segment_calls"]`` counts segment-function calls.

  Example:
    >>> import jax, jax.numpy as jnp, jopt
    >>> init = lambda hp, key: jnp.ones(())
    >>> def segment(x, hp):
    ...   x = x * (1 - hp["lr"])
    ...   return x, {"loss": x * x}
    >>> res = jopt.sweep.run_stepwise(
    ...     init, segment, {"lr": jopt.sweep.choice([0.0, 0.5])},
    ...     num_segments=10, key=jax.random.key(0), metric="loss",
    ...     strategy="grid", early_stopping=2)
    >>> res.segments_run.tolist()
    [3, 10]
  """
  check_mode(mode)
  check_common(key, devices, lanes, compiler_options)
  space = check_space(space, "run_stepwise")
  num_segments = check_int("num_segments", num_segments, 1)
  max_parallel = check_optional_int("max_parallel", max_parallel, 1)
  steps_per_segment = check_int("steps_per_segment", steps_per_segment, 1)
  hparams = _space.sample(
    space, num_trials, key, strategy, grid_points=grid_points
  )
  n = len(next(iter(hparams.values())))
  ex = executor_for(n, devices, lanes, compiler_options)
  pop = population_for(init, segment)
  key_spec = _executor.KeySpec(key)
  check_segment_metric(pop, hparams, key_spec, metric)
  stopper = _make_stopper(early_stopping, mode)
  strategy_obj = _RunStepwise(
    pop,
    ex,
    key_spec,
    space,
    hparams,
    max_parallel=max_parallel,
    num_segments=num_segments,
    metric=metric,
    mode=mode,
    stopper=stopper,
    steps_per_segment=steps_per_segment,
  )
  return run_search(
    strategy_obj,
    ex,
    name="run_stepwise",
    init=init,
    segment=segment,
    hparams=hparams,
    key_spec=key_spec,
    space=space,
    key=key,
    checkpoint_dir=checkpoint_dir,
    progress=progress,
    total=n * num_segments,
    strategy=strategy,
    num_trials=n,
    grid_points=grid_points,
    num_segments=num_segments,
    metric=metric,
    mode=mode,
    early_stopping=_checkpoint.rule_identity(early_stopping),
    layout="whole chunks",
  )
