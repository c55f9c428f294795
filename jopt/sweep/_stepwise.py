"""The stepwise form of a training function, run over a whole population.

Adaptive strategies (successive halving, Hyperband, population-based
training) watch training in progress, so they take the training function in
two pieces:

* ``init(hparams, key) -> state``: builds one trial's state (parameters,
  optimizer state, a data key...) from a dict of scalar hyperparameters;
* ``segment(state, hparams) -> (state, metrics)``: advances one trial by a
  fixed number of steps (a ``lax.scan``) and reports metrics (scalars, or
  curves whose last value is used for ranking).

`Population` compiles ``jit(vmap(init))`` and ``jit(vmap(segment))`` once per
population size and shards the trial axis over the local devices.
`run_stepwise` runs a population for a number of segments with per-trial
early stopping: a stopped trial's state is frozen by a select, and since a
vmapped ``cond`` is a select too (it still costs compute), the host stops
calling the segment function as soon as every trial of a chunk has stopped.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jopt import _plateau
from jopt.sweep import _engine, _result, _space

InitFn = Callable[[dict[str, jax.Array], jax.Array], Any]
SegmentFn = Callable[[Any, dict[str, jax.Array]], tuple[Any, dict[str, Any]]]


# --- Trial keys, padding and sharding ----------------------------------------


def trial_keys(key: jax.Array, indices: Any) -> jax.Array:
  """Per-trial keys ``fold_in(key, index)``: independent of chunking."""
  indices = jnp.asarray(np.asarray(indices, np.int32))
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, indices)


def padded_size(n: int) -> int:
  """``n`` rounded up to a multiple of the local devices, two lanes each.

  As in the engine, a device always runs at least `_engine.MIN_LANES`
  trials: a one-lane vmap compiles to different kernels whose rounding
  differs, so a lone survivor would not continue bit-for-bit.
  """
  ndev = jax.local_device_count()
  return int(max(_engine.MIN_LANES, math.ceil(n / ndev)) * ndev)


def shard_trials(tree: Any) -> Any:
  """Places ``tree`` with its leading (trial) axis split over local devices.

  A no-op on one device, or when the axis does not divide evenly (callers
  pad with `pad_rows` first).
  """
  devices = jax.local_devices()
  if len(devices) == 1:
    return tree
  sharding = NamedSharding(Mesh(np.array(devices), (_engine.TRIALS_AXIS,)),
                           PartitionSpec(_engine.TRIALS_AXIS))

  def put(x):
    if not hasattr(x, "shape") or not x.shape or x.shape[0] % len(devices):
      return x
    return jax.device_put(x, sharding)

  return jax.tree.map(put, tree)


def pad_rows(n: int) -> np.ndarray:
  """Rows ``0..n-1`` padded to `padded_size` by repeating the last one."""
  return np.minimum(np.arange(padded_size(n)), n - 1)


def take_trials(tree: Any, indices: Any) -> Any:
  """Gathers trials ``indices`` along the leading axis (``jnp.take``)."""
  idx = jnp.asarray(np.asarray(indices, np.int32))
  return shard_trials(jax.tree.map(lambda x: jnp.take(x, idx, axis=0), tree))


def ranking_values(metrics: Mapping[str, Any], metric: str,
                   mode: str = "min") -> np.ndarray:
  """One score per trial, where lower is better, non-finite scores last.

  A curve metric ([N, T]) is ranked by its last value.
  """
  check_mode(mode)
  check_metric(metrics, metric)
  values = np.asarray(metrics[metric], np.float64)
  values = values.reshape(values.shape[0], -1)[:, -1]
  values = values if mode == "min" else -values
  return np.where(np.isfinite(values), values, np.inf)


def check_mode(mode: Any) -> None:
  """Raises unless ``mode`` is ``"min"`` or ``"max"`` (before any training)."""
  if mode not in ("min", "max"):
    raise ValueError(f"mode must be 'min' or 'max', got {mode!r}.")


def check_metric(metrics: Mapping[str, Any], metric: str) -> None:
  """Raises unless ``metric`` is one of the metrics a segment returned."""
  if metric not in metrics:
    raise ValueError(f"metric {metric!r} is not among the metrics the "
                     f"segment function returns: {sorted(metrics)}.")


def check_space(space: Mapping[str, Any], what: str) -> dict[str, Any]:
  """Validates a space; static choices cannot change in one program."""
  space = _space.validate_space(space)
  for name, dist in space.items():
    if dist.static:
      raise ValueError(
          f"{what} runs every trial in one program, so space[{name!r}] cannot "
          f"be a static choice (one compile per value); make it non-static.")
  return space


def to_device(hparams: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
  return {k: jnp.asarray(v) for k, v in hparams.items()}


# --- The population -------------------------------------------------------------


class Population:
  """``init`` and ``segment`` compiled as ``jit(vmap(...))`` over trials.

  Each function compiles once per population size; `traces` counts the
  compiles, keyed by ``(function name, size)``. Searches get theirs from
  `population_for`, so programs are shared between searches. Inputs are padded to a
  multiple of the local device count and sharded over the devices.

  Args:
    init: ``init(hparams, key) -> state`` for one trial.
    segment: ``segment(state, hparams) -> (state, metrics)`` for one trial.
  """

  def __init__(self, init: InitFn, segment: SegmentFn):
    self.traces: dict[tuple[str, int], int] = {}

    def count(name, tree):
      size = jax.tree.leaves(tree)[0].shape[0]
      self.traces[(name, size)] = self.traces.get((name, size), 0) + 1

    def init_batch(hparams, keys):
      count("init", keys)
      return jax.vmap(init)(hparams, keys)

    def segment_batch(state, hparams):
      count("segment", hparams)
      return jax.vmap(segment)(state, hparams)

    def masked_batch(state, hparams, stopped):
      count("masked_segment", hparams)
      new_state, metrics = jax.vmap(segment)(state, hparams)

      def keep(new, old):
        mask = stopped.reshape(stopped.shape + (1,) * (new.ndim - 1))
        return jnp.where(mask, old, new)

      return jax.tree.map(keep, new_state, state), metrics

    options = _engine.default_compiler_options(jax.local_devices())
    self._init = jax.jit(init_batch, compiler_options=options)
    self._segment = jax.jit(segment_batch, compiler_options=options)
    self._masked = jax.jit(masked_batch, compiler_options=options)

  @property
  def num_compiles(self) -> int:
    """Compiles so far, all functions and population sizes together."""
    return sum(self.traces.values())

  def init(self, hparams: Mapping[str, Any], key: jax.Array,
           indices: Any) -> tuple[Any, dict[str, jax.Array]]:
    """Initial state and device hyperparameters of trials ``indices``.

    ``hparams`` holds one row per trial of ``indices``; both are padded to
    the device count by repeating the last trial.
    """
    rows = pad_rows(len(np.asarray(indices)))
    hp = shard_trials(to_device({k: np.asarray(v)[rows]
                                 for k, v in hparams.items()}))
    keys = shard_trials(trial_keys(key, np.asarray(indices)[rows]))
    return self._init(hp, keys), hp

  def segment(self, state: Any, hparams: Mapping[str, jax.Array],
              stopped: jax.Array | None = None):
    """Runs one segment; trials with ``stopped`` set keep their state."""
    if stopped is None:
      return self._segment(state, hparams)
    return self._masked(state, hparams, stopped)



# --- Results ------------------------------------------------------------------


@dataclasses.dataclass(repr=False)
class AdaptiveResult(_result.SweepResult):
  """A `SweepResult` that also records the compute each trial was given.

  ``hparams`` are the values each trial started with (user values),
  ``metrics`` each trial's last reported metrics; `best` and `top_k` rank by
  the search's ``metric`` and ``mode`` unless told otherwise.

  Attributes (beyond `SweepResult`'s):
    metric: the metric the search ranked by.
    mode: ``"min"`` or ``"max"``.
    segments_run: [N] int: segments each trial was trained for.
    steps_per_segment: steps in one segment (for `member_steps`).
    wall_time: seconds the search took.
    history: per-strategy record (rungs, segment calls...).
    final_trials: indices of the trials trained to the end, and
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
    return (f"{type(self).__name__}(num_trials={len(self)}, "
            f"metric={self.metric!r}, member_steps={self.member_steps}, "
            f"num_compiles={self.num_compiles})")

  @property
  def member_segments(self) -> int:
    """Segments trained, summed over trials."""
    return int(np.sum(self.segments_run))

  @property
  def member_steps(self) -> int:
    """Training steps, summed over trials."""
    return self.member_segments * self.steps_per_segment

  def top_k(self, metric: str | None = None, k: int = 1,
            mode: str | None = None) -> list[_result.Trial]:
    """The ``k`` best trials (default: by the search's metric and mode)."""
    return super().top_k(metric or self.metric, k, mode or self.mode)

  def best(self, metric: str | None = None,
           mode: str | None = None) -> _result.Trial:
    """The best trial (default: by the search's metric and mode)."""
    return super().best(metric or self.metric, mode or self.mode)

  def to_pandas(self):
    """One row per trial, with a ``segments_run`` column."""
    frame = super().to_pandas()
    frame["segments_run"] = self.segments_run
    return frame


def make_result(cls, space, hparams, metrics, **fields):
  """A result from passed hyperparameters (decoded here) and metrics."""
  hparams = {n: space[n].decode(np.asarray(v)) for n, v in hparams.items()}
  metrics = {k: np.asarray(v) for k, v in metrics.items()}
  n = len(next(iter(hparams.values())))
  diverged = np.zeros(n, bool)
  for v in metrics.values():
    if np.issubdtype(v.dtype, np.floating):
      diverged |= ~np.isfinite(v.reshape(n, -1)).all(axis=1)
  return cls(hparams=hparams, metrics=metrics, diverged=diverged,
             space=dict(space), **fields)


# --- A population run with per-trial early stopping ------------------------------


_POPULATIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def population_for(init: InitFn, segment: SegmentFn) -> Population:
  """The `Population` of ``(init, segment)``, shared by every search.

  Sharing it shares the compiled programs: a grid, then successive halving,
  then Hyperband on the same functions compile each population size once.
  """
  by_init = _POPULATIONS.setdefault(segment, weakref.WeakKeyDictionary())
  if init not in by_init:
    by_init[init] = Population(init, segment)
  return by_init[init]


def _make_stopper(early_stopping, mode):
  if early_stopping is None or hasattr(early_stopping, "update"):
    return early_stopping
  return _plateau.early_stopping(early_stopping, mode=mode)


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
) -> AdaptiveResult:
  """Trains sampled trials segment by segment, each stopping on its own.

  Every segment runs ``jit(vmap(segment))`` over a chunk of trials. With
  ``early_stopping`` (a patience, or an object with ``init()``,
  ``update(state, value)`` and ``state.stopped`` such as
  `jopt.early_stopping`) each trial's ``metric`` feeds its own stopping rule;
  a stopped trial keeps its state (a select inside the program), and once
  every trial of the chunk has stopped the host stops calling the segment
  function, so finished chunks cost nothing. Reduce-on-plateau needs no
  support here: `jopt.reduce_on_plateau` in the optimizer is per-trial
  under ``vmap`` already.

  Args:
    init: ``init(hparams, key) -> state`` for one trial.
    segment: ``segment(state, hparams) -> (state, metrics)`` for one trial.
    space: a dict ``name -> distribution``.
    num_segments: the most segments a trial trains for (> 0).
    key: a JAX PRNG key; trial ``i`` gets ``fold_in(key, i)``.
    metric: the metric that early stopping and ranking read.
    mode: ``"min"`` or ``"max"``.
    num_trials: trials to sample (optional for the grid).
    strategy: ``"grid"``, ``"random"`` or ``"quasirandom"``.
    grid_points: points per continuous dimension for the grid.
    early_stopping: a patience in segments, a stopping rule, or None.
    max_parallel: most trials trained at once (chunks run one after another).
    steps_per_segment: steps in a segment, for the member-step count.

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
  import time

  start = time.perf_counter()
  check_mode(mode)
  space = check_space(space, "run_stepwise")
  if not isinstance(num_segments, int) or num_segments < 1:
    raise ValueError(f"num_segments must be an int >= 1, got {num_segments!r}.")
  hparams = _space.sample(space, num_trials, key, strategy,
                          grid_points=grid_points)
  n = len(next(iter(hparams.values())))
  chunk = n if max_parallel is None else int(max_parallel)
  if chunk < 1:
    raise ValueError(f"max_parallel must be >= 1, got {max_parallel!r}.")
  stopper = _make_stopper(early_stopping, mode)
  pop = population_for(init, segment)
  compiles_before = pop.num_compiles
  stop_update = None
  if stopper is not None:
    def stop_update(st, value, stopped):
      new = jax.vmap(stopper.update)(st, value)
      return jax.tree.map(
          lambda a, b: jnp.where(stopped.reshape(stopped.shape + (1,) *
                                                 (a.ndim - 1)), b, a), new, st)
    stop_update = jax.jit(stop_update)

  curves: dict[str, np.ndarray] = {}
  segments_run = np.zeros(n, np.int64)
  calls = 0
  for lo in range(0, n, chunk):
    idx = np.arange(lo, min(lo + chunk, n))
    state, hp = pop.init({k: v[idx] for k, v in hparams.items()}, key, idx)
    size = len(pad_rows(len(idx)))
    stopped = None
    if stopper is not None:
      stop_state = shard_trials(jax.tree.map(
          lambda x, size=size: jnp.broadcast_to(x, (size,) + jnp.shape(x)),
          stopper.init()))
      stopped = stop_state.stopped
    done = 0  # segments this chunk ran
    for s in range(num_segments):
      stopped_host = (np.zeros(len(idx), bool) if stopped is None
                      else np.asarray(stopped)[:len(idx)])
      if stopped_host.all():
        break  # the whole chunk has stopped: spend nothing more on it
      state, metrics = pop.segment(state, hp, stopped)
      if not calls:
        check_metric(metrics, metric)
      calls += 1
      done = s + 1
      segments_run[idx] += ~stopped_host
      for k, v in metrics.items():
        v = np.asarray(v)[:len(idx)]
        last = v.reshape(len(idx), -1)[:, -1]
        c = curves.setdefault(k, np.zeros((n, num_segments), last.dtype))
        prev = c[idx, s - 1] if s else last
        c[idx, s] = np.where(stopped_host, prev, last)
      if stopper is not None:
        value = jnp.asarray(metrics[metric]).reshape(size, -1)[:, -1]
        stop_state = stop_update(stop_state, value, stopped)
        stopped = stop_state.stopped
    for c in curves.values():  # a chunk that stopped early holds its values
      c[idx[:, None], np.arange(done, num_segments)] = c[idx, done - 1][:, None]
  return make_result(
      AdaptiveResult, space, hparams, curves, metric=metric, mode=mode,
      segments_run=segments_run, steps_per_segment=steps_per_segment,
      num_compiles=pop.num_compiles - compiles_before,
      wall_time=time.perf_counter() - start,
      history={"segment_calls": calls})
