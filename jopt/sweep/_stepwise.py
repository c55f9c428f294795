"""The stepwise form of a training function, run over a whole population.

Adaptive strategies (successive halving, Hyperband, population-based
training) watch training in progress, so they take the training function in
two pieces:

* ``init(hparams, key) -> state``: builds one trial's state (parameters,
  optimizer state, a data key...) from a dict of scalar hyperparameters;
* ``segment(state, hparams) -> (state, metrics)``: advances one trial by a
  fixed number of steps (a ``lax.scan``) and reports metrics (scalars, or
  curves whose last value is used for ranking).

`Population` runs both over many trials with the shared executor (fixed
lanes per device, sharded over the devices of every process, one compile
per population shape). `run_stepwise` is the simplest strategy over it: a
population trained for a number of segments with per-trial early stopping;
a stopped trial's state is frozen by a select, and since a vmapped ``cond``
is a select too (it still costs compute), the host stops calling the
segment function as soon as every trial of a chunk has stopped.
"""

from __future__ import annotations

import dataclasses
import numbers
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt import _plateau
from jopt.sweep import _checkpoint, _common, _executor, _loop, _result, _space

InitFn = Callable[[dict[str, jax.Array], jax.Array], Any]
SegmentFn = Callable[[Any, dict[str, jax.Array]], tuple[Any, dict[str, Any]]]


# --- Validation shared by the stepwise searches --------------------------------


def check_int(name: str, value: Any, low: int) -> int:
  """``value`` as an int, or a ValueError unless it is an int >= ``low``."""
  if (not isinstance(value, numbers.Integral) or isinstance(value, bool)
      or value < low):
    raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
  return int(value)


def check_common(key: Any, devices: Any, lanes: Any) -> None:
  """The arguments every search takes, checked alike before any work."""
  _space.key_seed(key)
  if devices is not None and not list(devices):
    raise ValueError("devices must be None or a non-empty list of devices.")
  _executor.check_lanes(lanes)


def check_optional_int(name: str, value: Any, low: int) -> int | None:
  return None if value is None else check_int(name, value, low)


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


# --- The population -------------------------------------------------------------


class Population:
  """``init`` and ``segment`` of one trial, run over many by an executor.

  Programs are kept per executor layout and population shape, so searches
  on the same functions share them (`population_for`): a grid, then
  successive halving, then Hyperband compile each shape once.

  Args:
    init: ``init(hparams, key) -> state`` for one trial.
    segment: ``segment(state, hparams) -> (state, metrics)`` for one trial.
  """

  def __init__(self, init: InitFn, segment: SegmentFn):
    self.init_fn = init
    self.segment_fn = segment
    self._programs: dict[Any, Any] = {}

  def _run(self, ex: _executor.Executor, name: str, build, args):
    # Every argument is trial-sharded (or replicated) over the first devices
    # of ``ex``: the leaves' shapes and the devices used decide the program.
    leaves = jax.tree.leaves(args)
    shapes = tuple((x.shape, str(x.dtype)) for x in leaves)
    key = (name, ex.lanes, tuple(d.id for d in ex.devices),
           leaves[0].sharding.mesh.devices.size,
           repr(ex.compiler_options), jax.tree.structure(args), shapes)
    if key not in self._programs:
      self._programs[key] = ex.compile(build(), args)
    program = self._programs[key]
    ex.note_used(program)
    return program(*args)

  def layout(self, ex: _executor.Executor, n: int) -> tuple[int, int]:
    """``(padded size, devices)`` of a population of ``n`` trials."""
    ndev = ex.num_devices_for(n)
    return ex.padded(n, ndev), ndev

  def init(self, ex: _executor.Executor, hparams: Mapping[str, Any],
           key: _executor.KeySpec, indices: Any):
    """``(state, device hparams, ndev)`` of trials ``indices``.

    ``hparams`` holds one row per trial of ``indices``; both are padded to
    whole groups of lanes by repeating the first trial.
    """
    indices = np.asarray(indices, np.int32)
    size, ndev = self.layout(ex, len(indices))
    rows = _executor.pad_rows(len(indices), size)
    hp = ex.put({k: np.asarray(v)[rows] for k, v in hparams.items()}, ndev)
    idx = ex.put(indices[rows], ndev)
    kd = ex.put_replicated(key.data, ndev)
    init = self.init_fn

    def build():
      return ex.per_trial(
          lambda h, i, k: init(h, _executor.trial_key(key.wrap(k), i)),
          ndev, (0, 0, None))

    return self._run(ex, "init", build, (hp, idx, kd)), hp, ndev

  def state_template(self, hparams: Mapping[str, Any],
                     key: _executor.KeySpec) -> Any:
    """The structure of one trial's state (for restoring a checkpoint)."""
    hp = {k: jax.ShapeDtypeStruct((), np.asarray(v).dtype)
          for k, v in hparams.items()}
    kd = jax.ShapeDtypeStruct(key.data.shape, key.data.dtype)
    return jax.eval_shape(
        lambda h, k: self.init_fn(h, _executor.trial_key(key.wrap(k), 0)),
        hp, kd)

  def segment(self, ex: _executor.Executor, state: Any,
              hparams: Mapping[str, jax.Array], ndev: int,
              stopped: jax.Array | None = None):
    """Runs one segment; trials with ``stopped`` set keep their state."""
    segment = self.segment_fn
    if stopped is None:
      return self._run(
          ex, "segment", lambda: ex.per_trial(segment, ndev, (0, 0)),
          (state, hparams))

    def masked(s, h, stop):
      new, metrics = segment(s, h)
      return jax.tree.map(lambda a, b: jnp.where(stop, b, a), new, s), metrics

    return self._run(ex, "masked_segment",
                     lambda: ex.per_trial(masked, ndev, (0, 0, 0)),
                     (state, hparams, stopped))

  def take(self, ex: _executor.Executor, tree: Any, rows: np.ndarray,
           ndev: int) -> Any:
    """Rows ``rows`` of every leaf, placed over ``ndev`` devices.

    Through the host: a rung boundary is rare, the rows are few, and no
    program is compiled per pair of population sizes.
    """
    rows = np.asarray(rows)
    return ex.put(jax.tree.map(lambda x: x[rows], ex.gather(tree)), ndev)


_POPULATIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def population_for(init: InitFn, segment: SegmentFn) -> Population:
  """The `Population` of ``(init, segment)``, shared by every search."""
  by_init = _POPULATIONS.setdefault(segment, weakref.WeakKeyDictionary())
  if init not in by_init:
    by_init[init] = Population(init, segment)
  return by_init[init]


def executor_for(n: int, devices: Sequence[jax.Device] | None,
                 lanes: int | None, compiler_options: Any = None
                 ) -> _executor.Executor:
  """The executor of a search whose largest population is ``n`` trials."""
  if devices is not None and not devices:
    raise ValueError("devices must be None or a non-empty list of devices.")
  _executor.check_lanes(lanes)
  devices = list(devices) if devices is not None else jax.devices()
  return _executor.Executor(
      devices, _executor.lanes_for(n, devices[0].platform, lanes),
      compiler_options)


def checkpoint_for(checkpoint_dir: str | None, search: str, *,
                   space: Mapping[str, Any], key: jax.Array,
                   functions: Sequence[Callable[..., Any]],
                   ex: _executor.Executor, program: str,
                   **settings: Any) -> _checkpoint.Checkpoint | None:
  """The checkpoint folder of a stepwise search (None without a folder)."""
  if checkpoint_dir is None:
    return None
  fields = _checkpoint.fingerprint(
      search=search, space=_checkpoint.space_identity(space),
      key=_space.key_seed(key).tolist(), lanes=ex.lanes,
      functions=[_checkpoint.function_identity(f) for f in functions],
      program=program, **settings)
  return _checkpoint.Checkpoint(checkpoint_dir, fields,
                                writer=jax.process_index() == 0)


def program_digest(population: Population, hparams: Mapping[str, Any],
                   key: _executor.KeySpec) -> str:
  """A hash of one trial's lowered init and segment programs."""
  import hashlib

  hp = {k: jax.ShapeDtypeStruct((), np.asarray(v).dtype)
        for k, v in hparams.items()}
  kd = jax.ShapeDtypeStruct(key.data.shape, key.data.dtype)
  init = population.init_fn
  text = jax.jit(
      lambda h, k: init(h, _executor.trial_key(key.wrap(k), 0))).lower(
          hp, kd).as_text(debug_info=False)
  state = population.state_template(hparams, key)
  text += jax.jit(population.segment_fn).lower(state, hp).as_text(
      debug_info=False)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


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

  def _info_columns(self) -> dict[str, np.ndarray]:
    """`to_pandas` adds a ``segments_run`` column."""
    return {**super()._info_columns(), "segments_run": self.segments_run}


def make_result(cls, space, hparams, metrics, **fields):
  """A result from passed hyperparameters (decoded here) and metrics."""
  hparams = {n: space[n].decode(np.asarray(v)) for n, v in hparams.items()}
  metrics = {k: np.asarray(v) for k, v in metrics.items()}
  n = len(next(iter(hparams.values())))
  return cls(hparams=hparams, metrics=metrics,
             diverged=_common.diverged_mask(metrics, n),
             space=dict(space), **fields)


def last_values(metrics: Mapping[str, Any], n: int) -> dict[str, np.ndarray]:
  """Each metric's last value per trial (a curve's last point), ``n`` rows."""
  out = {}
  for k, v in metrics.items():
    v = np.asarray(v)[:n]
    out[k] = v.reshape(n, -1)[:, -1] if v.ndim > 1 else v
  return out


# --- A population run with per-trial early stopping ------------------------------


def _make_stopper(early_stopping, mode):
  if early_stopping is None or hasattr(early_stopping, "update"):
    return early_stopping
  return _plateau.early_stopping(early_stopping, mode=mode)


class _RunStepwise:
  """`run_stepwise` as a strategy: one step is one segment of one chunk."""

  def __init__(self, pop, ex, key, space, hparams, *, chunk, num_segments,
               metric, mode, stopper, steps_per_segment):
    self.pop, self.ex, self.key, self.space = pop, ex, key, space
    self.hparams = hparams
    self.n = len(next(iter(hparams.values())))
    self.chunk = chunk
    self.num_chunks = -(-self.n // chunk)
    self.num_segments = num_segments
    self.metric, self.mode = metric, mode
    self.stopper = stopper
    self.steps_per_segment = steps_per_segment

  def _indices(self, c):
    return np.arange(c * self.chunk, min((c + 1) * self.chunk, self.n))

  def init(self):
    return _loop.SearchState(0, {
        "chunk": 0, "segment": 0, "calls": 0, "curves": {},
        "segments_run": np.zeros(self.n, np.int64)})

  def work(self, state):
    return int(np.sum(state.host["segments_run"]))

  def terminate(self, state):
    return state.host["chunk"] >= self.num_chunks

  def device_template(self, state):
    template = {"state": self.pop.state_template(self.hparams, self.key),
                "hp": dict.fromkeys(self.hparams, 0)}
    if self.stopper is not None:
      template["stop"] = self.stopper.init()
    return template

  def _stop_program(self):
    stopper, metric = self.stopper, self.metric

    def update(st, metrics):
      value = jnp.ravel(metrics[metric])[-1]
      new = stopper.update(st, value)
      return jax.tree.map(lambda a, b: jnp.where(st.stopped, b, a), new, st)

    return update

  def step(self, state):
    h = dict(state.host)
    idx = self._indices(h["chunk"])
    device, ndev = state.device, state.ndev
    if device is None:
      pstate, hp, ndev = self.pop.init(
          self.ex, {k: v[idx] for k, v in self.hparams.items()}, self.key, idx)
      device = {"state": pstate, "hp": hp}
      if self.stopper is not None:
        size = len(jax.tree.leaves(hp)[0])
        device["stop"] = self.ex.put(jax.tree.map(
            lambda x: np.broadcast_to(np.asarray(x), (size,) + np.shape(x)),
            self.stopper.init()), ndev)
    stop = device.get("stop")
    stopped_host = (np.zeros(len(idx), bool) if stop is None else
                    self.ex.gather(stop.stopped)[:len(idx)])
    pstate, metrics = self.pop.segment(
        self.ex, device["state"], device["hp"], ndev,
        None if stop is None else stop.stopped)
    host_metrics = self.ex.gather(dict(metrics))
    if not h["calls"]:
      check_metric(host_metrics, self.metric)
    h["calls"] += 1
    s = h["segment"]
    segments_run = h["segments_run"].copy()
    segments_run[idx] += ~stopped_host
    curves = {k: v.copy() for k, v in h["curves"].items()}
    for k, last in last_values(host_metrics, len(idx)).items():
      c = curves.setdefault(k, np.zeros((self.n, self.num_segments),
                                        last.dtype))
      prev = c[idx, s - 1] if s else last
      c[idx, s] = np.where(stopped_host, prev, last)
    device = {**device, "state": pstate}
    all_stopped = False
    if stop is not None:
      device["stop"] = self.pop._run(
          self.ex, "stop_update",
          lambda: self.ex.per_trial(self._stop_program(), ndev, (0, 0)),
          (stop, metrics))
      all_stopped = bool(self.ex.gather(device["stop"].stopped)[
          :len(idx)].all())
    h.update(segment=s + 1, segments_run=segments_run, curves=curves)
    if s + 1 == self.num_segments or all_stopped:
      for c in curves.values():  # a chunk that stopped early holds its values
        c[idx[:, None], np.arange(s + 1, self.num_segments)] = c[idx, s][
            :, None]
      h.update(chunk=h["chunk"] + 1, segment=0)
      device = None
    return _loop.SearchState(state.step + 1, h, device, ndev)

  def postprocess(self, state):
    h = state.host
    return make_result(
        AdaptiveResult, self.space, self.hparams, h["curves"],
        metric=self.metric, mode=self.mode, segments_run=h["segments_run"],
        steps_per_segment=self.steps_per_segment,
        num_compiles=self.ex.num_compiles,
        history={"segment_calls": h["calls"]})


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
    max_parallel: most trials trained at once (chunks run one after
      another, rounded up to whole groups of ``lanes``); an int >= 1 or
      None (all at once).
    steps_per_segment: steps in a segment, for the member-step count.
    checkpoint_dir: a folder where the search state is saved after every
      segment; the same call resumes from it to the same result, bit for
      bit, and a folder of another search is refused.
    progress: show a progress bar (member-segments).
    devices: devices to shard trials over; default ``jax.devices()``.
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
  check_common(key, devices, lanes)
  space = check_space(space, "run_stepwise")
  num_segments = check_int("num_segments", num_segments, 1)
  max_parallel = check_optional_int("max_parallel", max_parallel, 1)
  steps_per_segment = check_int("steps_per_segment", steps_per_segment, 1)
  hparams = _space.sample(space, num_trials, key, strategy,
                          grid_points=grid_points)
  n = len(next(iter(hparams.values())))
  ex = executor_for(n, devices, lanes)
  # A chunk is whole groups of lanes: the lane width is the search's, so
  # results do not depend on max_parallel.
  chunk = n if max_parallel is None else min(
      n, -(-max_parallel // ex.lanes) * ex.lanes)
  pop = population_for(init, segment)
  key_spec = _executor.KeySpec(key)
  stopper = _make_stopper(early_stopping, mode)
  strategy_obj = _RunStepwise(
      pop, ex, key_spec, space, hparams, chunk=chunk,
      num_segments=num_segments, metric=metric, mode=mode, stopper=stopper,
      steps_per_segment=steps_per_segment)
  ckpt = checkpoint_for(
      checkpoint_dir, "run_stepwise", space=space, key=key,
      functions=[init, segment], ex=ex,
      program=program_digest(pop, hparams, key_spec) if checkpoint_dir
      else "", strategy=strategy, num_trials=n, grid_points=grid_points,
      num_segments=num_segments, metric=metric, mode=mode,
      early_stopping=repr(early_stopping), chunk=chunk)
  result, wall = _loop.iterate(strategy_obj, ex, checkpoint=ckpt,
                               progress=progress, total=n * num_segments,
                               desc="jopt.sweep.run_stepwise")
  result.wall_time = wall
  return result
