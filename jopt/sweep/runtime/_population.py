"""The population: a stepwise training function run over many trials.

Adaptive searches take the training function in two pieces, ``init(hparams,
key) -> state`` and ``segment(state, hparams) -> (state, metrics)`` (see
`jopt.sweep.run_stepwise`). `Population` runs both over many trials with
the shared executor: fixed lanes per device, sharded over the devices of
every process, one compile per population shape (a population that
shrinks, as successive halving's does, runs in its largest shape's rows:
`Population.placement`). The checks and the
checkpoint fingerprint every stepwise search shares live here too.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt import _cpu_devices
from jopt.sweep import _space
from jopt.sweep.runtime import (
  _caches,
  _checkpoint,
  _executor,
  _loop,
  _programs,
  _state_hparams,
)

InitFn = Callable[[dict[str, jax.Array], jax.Array], Any]
SegmentFn = Callable[[Any, dict[str, jax.Array]], tuple[Any, dict[str, Any]]]


# --- Validation shared by the stepwise searches --------------------------------


def check_int(name: str, value: Any, low: int) -> int:
  """``value`` as an int, or a ValueError unless it is an int >= ``low``."""
  if (
    not isinstance(value, numbers.Integral)
    or isinstance(value, bool)
    or value < low
  ):
    raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
  return int(value)


def check_common(
  key: Any, devices: Any, lanes: Any, compiler_options: Any
) -> None:
  """The arguments every search takes, checked alike before any work."""
  _space.key_seed(key)
  if devices is not None and not list(devices):
    raise ValueError("devices must be None or a non-empty list of devices.")
  _executor.check_lanes(lanes)
  _executor.check_compiler_options(compiler_options)


def check_optional_int(name: str, value: Any, low: int) -> int | None:
  return None if value is None else check_int(name, value, low)


def ranking_values(
  metrics: Mapping[str, Any], metric: str, mode: str = "min"
) -> np.ndarray:
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
    raise ValueError(
      f"metric {metric!r} is not among the metrics the "
      f"segment function returns: {sorted(metrics)}."
    )


def check_space(space: Mapping[str, Any], what: str) -> dict[str, Any]:
  """Validates a space; static choices cannot change in one program."""
  space = _space.validate_space(space)
  for name, dist in space.items():
    if dist.static:
      raise ValueError(
        f"{what} runs every trial in one program, so space[{name!r}] cannot "
        f"be a static choice (one compile per value); make it non-static."
      )
  return space


# --- The population -------------------------------------------------------------


class Population:
  """``init`` and ``segment`` of one trial, run over many by an executor.

  Programs are kept per executor layout and population shape, so searches
  on the same functions share them (`population_for`): a grid, then
  successive halving, then Hyperband compile each shape once (halving and
  Hyperband one shape each: their largest population's, see `placement`).

  Before each segment, the trial's values of the hyperparameters that its
  state holds under the same names are written into the state
  (`jopt.sweep.runtime._state_hparams`): a search trains with what it records.

  Args:
    init: ``init(hparams, key) -> state`` for one trial.
    segment: ``segment(state, hparams) -> (state, metrics)`` for one trial.
  """

  def __init__(self, init: InitFn, segment: SegmentFn):
    self.init_fn = init
    self.segment_fn = _state_hparams.applying_hparams(segment)

  def run(self, ex: _executor.Executor, name: str, build, args):
    """Runs this population's program ``name`` (``build()`` compiled for
    ``args`` through `_programs.get`, shared by every search on it)."""
    program = _programs.get(ex, build, args, owner=self, name=name)
    return _programs.call(ex, program, *args)

  def segment_program(
    self,
    ex: _executor.Executor,
    hparams: Mapping[str, Any],
    key: _executor.KeySpec,
    n: int,
    masked: bool = False,
  ) -> Any:
    """The compiled segment over ``n`` trials (to size a chunk by).

    It is the program that `segment` will run, so sizing a population
    costs no extra compile when it fits.
    """
    size, ndev = self.layout(ex, n)
    sharding = ex.sharding(ndev)

    def abstract(shape, dtype):
      return jax.ShapeDtypeStruct((size, *shape), dtype, sharding=sharding)

    state = jax.tree.map(
      lambda s: abstract(s.shape, s.dtype), self.state_template(hparams, key)
    )
    hp = {k: abstract((), np.asarray(v).dtype) for k, v in hparams.items()}
    if masked:
      args = (state, hp, abstract((), np.dtype(bool)))
      return _programs.get(
        ex,
        lambda: ex.per_trial(self._masked_segment, ndev, (0, 0, 0)),
        args,
        owner=self,
        name="masked_segment",
      )
    return _programs.get(
      ex,
      lambda: ex.per_trial(self.segment_fn, ndev, (0, 0)),
      (state, hp),
      owner=self,
      name="segment",
    )

  def _masked_segment(self, s, h, stop):
    new, metrics = self.segment_fn(s, h)
    return jax.tree.map(lambda a, b: jnp.where(stop, b, a), new, s), metrics

  def layout(self, ex: _executor.Executor, n: int) -> tuple[int, int]:
    """``(padded size, devices)`` of a population of ``n`` trials."""
    ndev = ex.num_devices_for(n)
    return ex.padded(n, ndev), ndev

  def init(
    self,
    ex: _executor.Executor,
    hparams: Mapping[str, Any],
    key: _executor.KeySpec,
    indices: Any,
  ):
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
        ndev,
        (0, 0, None),
      )

    return self.run(ex, "init", build, (hp, idx, kd)), hp, ndev

  def state_template(
    self, hparams: Mapping[str, Any], key: _executor.KeySpec
  ) -> Any:
    """The structure of one trial's state (for restoring a checkpoint)."""
    hp = {
      k: jax.ShapeDtypeStruct((), np.asarray(v).dtype)
      for k, v in hparams.items()
    }
    kd = jax.ShapeDtypeStruct(key.data.shape, key.data.dtype)
    return jax.eval_shape(
      lambda h, k: self.init_fn(h, _executor.trial_key(key.wrap(k), 0)), hp, kd
    )

  def segment(
    self,
    ex: _executor.Executor,
    state: Any,
    hparams: Mapping[str, jax.Array],
    ndev: int,
    stopped: jax.Array | None = None,
  ):
    """Runs one segment; trials with ``stopped`` set keep their state."""
    if stopped is None:
      return self.run(
        ex,
        "segment",
        lambda: ex.per_trial(self.segment_fn, ndev, (0, 0)),
        (state, hparams),
      )
    return self.run(
      ex,
      "masked_segment",
      lambda: ex.per_trial(self._masked_segment, ndev, (0, 0, 0)),
      (state, hparams, stopped),
    )

  # A population that shrinks runs in a fixed capacity: one program each.

  def placement(
    self, ex: _executor.Executor, n: int, capacity: int
  ) -> _executor.Placement:
    """Where ``n`` live trials sit in a population of ``capacity`` trials.

    The layout (rows, devices) is the one `layout` gives ``capacity``
    trials, so every population up to it runs the same programs.
    """
    size, ndev = self.layout(ex, capacity)
    return _executor.Placement(n, size, ndev, ex.lanes)

  def _counts(self, ex: _executor.Executor, place: _executor.Placement):
    return ex.put(place.counts, place.ndev)

  def init_live(
    self,
    ex: _executor.Executor,
    hparams: Mapping[str, Any],
    key: _executor.KeySpec,
    indices: Any,
    place: _executor.Placement,
  ):
    """``(state, device hparams)`` of trials ``indices``, placed by ``place``.

    ``hparams`` holds one row per trial of ``indices``; idle rows are not
    initialized (zeros).
    """
    indices = np.asarray(indices, np.int32)
    hp = ex.put(
      {k: place.spread(np.asarray(v)) for k, v in hparams.items()}, place.ndev
    )
    idx = ex.put(place.spread(indices), place.ndev)
    kd = ex.put_replicated(key.data, place.ndev)
    init = self.init_fn

    def build():
      return ex.per_trial_live(
        lambda h, i, k: init(h, _executor.trial_key(key.wrap(k), i)),
        place.ndev,
        (0, 0, None),
      )

    return self.run(
      ex, "init_live", build, (hp, idx, kd, self._counts(ex, place))
    ), hp

  def segment_live(
    self,
    ex: _executor.Executor,
    state: Any,
    hparams: Mapping[str, jax.Array],
    place: _executor.Placement,
  ):
    """One segment of the live trials of ``place`` (idle rows: zeros)."""
    return self.run(
      ex,
      "segment_live",
      lambda: ex.per_trial_live(self.segment_fn, place.ndev, (0, 0)),
      (state, hparams, self._counts(ex, place)),
    )

  def move(
    self,
    ex: _executor.Executor,
    tree: Any,
    old: _executor.Placement,
    keep: np.ndarray,
    new: _executor.Placement,
  ) -> Any:
    """The live trials ``keep`` (positions in ``old``) of every leaf, placed
    by ``new``.

    Through the host: a rung boundary is rare and the rows are few.
    """
    keep = np.asarray(keep)
    return ex.put(
      jax.tree.map(lambda x: new.spread(old.live(x)[keep]), ex.gather(tree)),
      new.ndev,
    )


# The population of each pair of functions, so searches on the same
# functions share their programs. Entries live no longer than their owner.
_POPULATIONS = _caches.Cache("populations by functions", 32)


def population_for(init: InitFn, segment: SegmentFn) -> Population:
  """The `Population` of ``(init, segment)``, shared by every search."""
  population = _POPULATIONS.get(id(init), owner=segment)
  if population is None or population.init_fn is not init:
    population = Population(init, segment)
    _POPULATIONS.put(id(init), population, owner=segment)
  return population


def executor_for(
  n: int,
  devices: Sequence[jax.Device] | None,
  lanes: int | None,
  compiler_options: Any = None,
) -> _executor.Executor:
  """The executor of a search whose largest population is ``n`` trials."""
  if devices is not None and not devices:
    raise ValueError("devices must be None or a non-empty list of devices.")
  _executor.check_lanes(lanes)
  devices = list(devices) if devices is not None else jax.devices()
  _cpu_devices.hint_if_one_cpu_device(devices)
  return _executor.Executor(
    devices,
    _executor.lanes_for(n, devices[0].platform, lanes),
    compiler_options,
  )


def checkpoint_for(
  checkpoint_dir: str | None,
  search: str,
  *,
  space: Mapping[str, Any],
  key: jax.Array,
  functions: Sequence[Callable[..., Any]],
  ex: _executor.Executor,
  program: str | Callable[[], str],
  **settings: Any,
) -> _checkpoint.Checkpoint | None:
  """The checkpoint folder of a stepwise search (None without a folder).

  ``program``: the digest of the search's programs, or a function that
  computes it (called only when there is a folder: it lowers them).
  """
  if checkpoint_dir is None:
    return None
  if callable(program):
    program = program()
  fields = _checkpoint.fingerprint(
    search=search,
    space=_checkpoint.space_identity(space),
    key=_space.key_seed(key).tolist(),
    lanes=ex.lanes,
    functions=[_checkpoint.function_identity(f) for f in functions],
    program=program,
    compiler_options=sorted((ex.compiler_options or {}).items()),
    **settings,
  )
  return _checkpoint.Checkpoint(
    checkpoint_dir, fields, writer=jax.process_index() == 0
  )


def run_search(
  search: Any,
  ex: _executor.Executor,
  /,
  *,
  name: str,
  init: InitFn,
  segment: SegmentFn,
  hparams: Mapping[str, Any],
  key_spec: _executor.KeySpec,
  space: Mapping[str, Any],
  key: jax.Array,
  checkpoint_dir: str | None,
  progress: bool,
  total: int,
  **settings: Any,
) -> Any:
  """Runs ``search`` (a `Strategy` on a population) on the loop; its
  result, with ``wall_time``.

  The checkpoint's fingerprint holds the search's ``name``, space, key,
  ``settings`` and the digest of one trial's init and segment programs.
  """
  pop = population_for(init, segment)
  ckpt = checkpoint_for(
    checkpoint_dir,
    name,
    space=space,
    key=key,
    functions=[init, segment],
    ex=ex,
    program=lambda: program_digest(pop, hparams, key_spec),
    **settings,
  )
  result, wall = _loop.iterate(
    search,
    ex,
    checkpoint=ckpt,
    progress=progress,
    total=total,
    desc=f"jopt.sweep.{name}",
  )
  result.wall_time = wall
  return result


def program_digest(
  population: Population, hparams: Mapping[str, Any], key: _executor.KeySpec
) -> str:
  """The fingerprint of one trial's init and segment programs."""
  hp = {
    k: jax.ShapeDtypeStruct((), np.asarray(v).dtype) for k, v in hparams.items()
  }
  kd = jax.ShapeDtypeStruct(key.data.shape, key.data.dtype)
  init = population.init_fn
  state = population.state_template(hparams, key)
  return _programs.digest(
    (lambda h, k: init(h, _executor.trial_key(key.wrap(k), 0)), (hp, kd)),
    (population.segment_fn, (state, hp)),
  )
