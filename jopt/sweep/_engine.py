"""The sweep engine: every trial of a search in one compiled, sharded program.

`run` samples the trials, groups them by their static choices, and for each
group compiles ``jit(vmap(train_fn))`` once for a chunk of trials whose trial
axis is sharded over a one-axis `jax.sharding.Mesh` named ``"trials"``. The
same executable runs every chunk of the group (the last one padded), results
come back to the host as numpy, padding removed.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jopt.sweep import _checkpoint, _space
from jopt.sweep._result import SweepResult

# Per-device budget when the device reports no memory limit (CPU): trials of
# one chunk share the host's RAM, and 2 GiB leaves room for the rest.
CPU_MEMORY_BUDGET = 2 << 30
# Share of an accelerator's free memory a chunk may take.
ACCELERATOR_MEMORY_FRACTION = 0.8
TRIALS_AXIS = "trials"


def progress_enabled(progress: bool) -> bool:
  """``progress`` unless the environment sets ``JOPT_PROGRESS=0``."""
  return bool(progress) and os.environ.get("JOPT_PROGRESS", "1") != "0"


def memory_budget(device: jax.Device) -> int:
  """Bytes a chunk may use on ``device`` (see `run` for the rule)."""
  env = os.environ.get("JOPT_SWEEP_MEMORY_BYTES")
  if env:
    return int(env)
  try:
    stats = device.memory_stats()
  except Exception:  # noqa: BLE001  (backends without memory stats)
    stats = None
  if stats and stats.get("bytes_limit"):
    free = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    return int(ACCELERATOR_MEMORY_FRACTION * free)
  return CPU_MEMORY_BUDGET


def compiled_bytes(compiled: Any) -> int | None:
  """Per-device bytes of a compiled program (arguments, outputs, temps)."""
  try:
    ma = compiled.memory_analysis()
  except Exception:  # noqa: BLE001  (not every backend implements it)
    return None
  if ma is None:
    return None
  return int(ma.argument_size_in_bytes + ma.output_size_in_bytes
             + ma.temp_size_in_bytes - ma.alias_size_in_bytes)


def default_compiler_options(devices: Sequence[jax.Device]) -> dict | None:
  """Faster-compiling LLVM settings on CPU (see `run`); XLA's elsewhere."""
  if devices and devices[0].platform == "cpu":
    return {"xla_backend_optimization_level": 1}
  return None


def to_numpy(x: jax.Array) -> np.ndarray:
  """A global array on the host; all-gathered across processes if needed."""
  if getattr(x, "is_fully_addressable", True):
    return np.asarray(x)
  from jax.experimental import multihost_utils

  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _check_metrics(metrics: Any) -> dict[str, jax.Array]:
  if not isinstance(metrics, Mapping) or not all(
      isinstance(k, str) for k in metrics):
    raise ValueError(
        "train_fn must return a dict name -> array of metrics, got "
        f"{type(metrics).__name__}.")
  if not metrics:
    raise ValueError("train_fn returned no metrics.")
  return {k: jnp.asarray(v) for k, v in metrics.items()}


class _Group:
  """The trials sharing one set of static values, and their executable."""

  def __init__(self, train_fn, space, static_values, folds, devices, key,
               counter, compiler_options=None):
    self.static_values = static_values
    self.compiler_options = compiler_options
    self.dyn_names = [n for n, d in space.items() if not d.static]
    names = list(space)
    self.devices = devices
    self.key = key
    self.compiled = None
    self.chunk = 0
    self.compile_time = 0.0
    self.footprint = None

    def one_trial(hp_dyn, index, key):
      hp = {**static_values, **hp_dyn}
      hp = {n: hp[n] for n in names}
      trial_key = jax.random.fold_in(key, index)
      if folds is None:
        return _check_metrics(train_fn(hp, trial_key))
      fold_ids = jnp.arange(folds, dtype=jnp.int32)
      return jax.vmap(
          lambda f: _check_metrics(train_fn(hp, trial_key, f)))(fold_ids)

    def chunk_fn(hp_dyn, index, key):
      counter[0] += 1  # runs once per trace, hence once per compile
      return jax.vmap(one_trial, in_axes=(0, 0, None))(hp_dyn, index, key)

    self.one_trial = one_trial
    self.chunk_fn = chunk_fn

  def program_text(self, passed: dict[str, np.ndarray]) -> str:
    """The lowered program of one trial (StableHLO, no source locations).

    It holds everything that decides a trial's numbers apart from its
    hyperparameters and key: the code, closed-over arrays (as constants),
    ``functools.partial`` arguments, static values.
    """
    hp = {n: jax.ShapeDtypeStruct((), passed[n].dtype) for n in self.dyn_names}
    index = jax.ShapeDtypeStruct((), np.int32)
    return jax.jit(self.one_trial).lower(hp, index, self.key).as_text()

  def build(self, chunk: int, ndev: int, hp_dyn: dict[str, np.ndarray],
            index: np.ndarray):
    """Compiles for ``chunk`` trials per call, sharded over ``ndev``."""
    mesh = Mesh(np.array(self.devices[:ndev]), (TRIALS_AXIS,))
    self.sharding = NamedSharding(mesh, PartitionSpec(TRIALS_AXIS))
    self.replicated = NamedSharding(mesh, PartitionSpec())
    self.key_on_device = jax.device_put(self.key, self.replicated)
    jitted = jax.jit(self.chunk_fn, out_shardings=self.sharding)
    start = time.perf_counter()
    args = self._put({n: v[:chunk] for n, v in hp_dyn.items()}, index[:chunk])
    self.compiled = jitted.lower(*args, self.key_on_device).compile(
        compiler_options=self.compiler_options)
    self.compile_time += time.perf_counter() - start
    self.chunk = chunk
    self.footprint = compiled_bytes(self.compiled)
    return self.footprint

  def _put(self, hp_dyn, index):
    hp = {n: jax.device_put(v, self.sharding) for n, v in hp_dyn.items()}
    return hp, jax.device_put(index, self.sharding)

  def __call__(self, hp_dyn, index) -> dict[str, np.ndarray]:
    out = self.compiled(*self._put(hp_dyn, index), self.key_on_device)
    return {k: to_numpy(v) for k, v in out.items()}


# A device always runs at least this many trials at once: XLA compiles a
# one-lane vmap into matrix-vector kernels whose float32 rounding differs
# from the matrix-matrix kernels of wider chunks, the most common source of
# chunk-dependent last bits.
MIN_LANES = 2


def _plan_chunk(n, num_devices, max_parallel):
  """The chunk size for ``n`` trials (a multiple of the devices used)."""
  cap = max_parallel or MIN_LANES * num_devices
  ndev = max(1, min(num_devices, -(-n // MIN_LANES), cap // MIN_LANES))
  full = max(MIN_LANES * ndev, -(-n // ndev) * ndev)
  if max_parallel is None:
    return full
  return min(full, max(MIN_LANES * ndev, max_parallel // ndev * ndev))


def _devices_for(chunk, num_devices):
  """The most devices (up to ``num_devices``) that split ``chunk`` evenly."""
  return max(d for d in range(1, min(chunk, num_devices) + 1)
             if chunk % d == 0 and chunk // d >= MIN_LANES)


def _pad(values: np.ndarray, size: int) -> np.ndarray:
  if len(values) == size:
    return values
  # Padding repeats the first trial: real values, so nothing can fail in the
  # padded lanes; their results are dropped.
  return np.concatenate([values, np.repeat(values[:1], size - len(values))])


def _validate(train_fn, key, max_parallel, folds, devices):
  if not callable(train_fn):
    raise ValueError(f"train_fn must be callable, got {train_fn!r}.")
  if key is None:
    raise ValueError("run needs key=, a JAX PRNG key.")
  _space.key_seed(key)
  for name, v in (("max_parallel", max_parallel), ("folds", folds)):
    if v is not None and (not _space._is_int(v) or v < 1):
      raise ValueError(f"{name} must be None or an int >= 1, got {v!r}.")
  if devices is not None and not devices:
    raise ValueError("devices must be None or a non-empty list of devices.")


def run(
    train_fn: Callable[..., Mapping[str, Any]],
    space: Mapping[str, _space.Distribution],
    *,
    num_trials: int | None = None,
    key: jax.Array,
    strategy: str = "random",
    max_parallel: int | None = None,
    progress: bool = True,
    checkpoint_dir: str | None = None,
    folds: int | None = None,
    grid_points: int | Mapping[str, int] | None = None,
    devices: Sequence[jax.Device] | None = None,
    compiler_options: Mapping[str, Any] | None = None,
) -> SweepResult:
  """Trains every trial of a hyperparameter search as one compiled program.

  ``train_fn(hparams, key) -> metrics`` is a pure JAX function of one
  trial: ``hparams`` maps each name of ``space`` to a scalar array (a Python
  value for ``choice(..., static=True)``), ``metrics`` maps names to arrays
  (scalars, or curves such as a loss per step). The engine vmaps it over
  trials and runs the trials in chunks of ``max_parallel``, the trial axis
  sharded over ``devices``. Trial ``i`` gets the key
  ``jax.random.fold_in(key, i)``, so its result depends neither on chunking
  nor on sharding, up to float32 rounding: XLA may pick different kernels
  for different per-device widths (a vector unit's width, a matrix-vector
  product for a single lane), which can change the last bits. Equal chunk
  shapes give bit-identical results, and a resumed checkpoint reuses the
  recorded chunk size, so resuming is bit-exact.

  Memory: with ``max_parallel=None`` the engine compiles one chunk holding
  every trial of a group, reads its per-device footprint from
  ``compiled.memory_analysis()`` (arguments + outputs + temporaries) and
  compares it with the budget: ``0.8 * (bytes_limit - bytes_in_use)`` from
  ``device.memory_stats()`` on accelerators, 2 GiB per device on CPU (or
  ``JOPT_SWEEP_MEMORY_BYTES`` when set). When it does not fit, the chunk
  shrinks in proportion and is compiled again, then along the line through
  the last two footprints (a fixed part plus a part per trial) until it
  fits; usually one or two extra compiles. Chunks are multiples of the
  devices used, with at least two trials per device (``max_parallel=1``
  still runs two lanes, one of them padding), since a one-lane vmap
  compiles to matrix-vector kernels that round differently.

  Divergence: a trial whose metrics contain NaN or Inf is flagged in
  ``result.diverged``; trials are independent lanes of a vmap, so it never
  changes another trial's numbers, and `SweepResult.best` skips it.

  Args:
    train_fn: ``train_fn(hparams, key) -> dict of metrics``; with ``folds``,
      ``train_fn(hparams, key, fold)`` where ``fold`` is an int32 scalar.
    space: a dict ``name -> distribution`` (`choice`, `uniform`,
      `log_uniform`, `int_uniform`).
    num_trials: the number of trials (> 0); optional for the grid.
    key: a JAX PRNG key, the root of every trial's key and of sampling.
    strategy: ``"grid"``, ``"random"`` or ``"quasirandom"`` (see `sample`).
    max_parallel: the most trials in flight at once, over all devices;
      None chooses it from the devices' memory as above.
    progress: show a tqdm bar advanced once per chunk (the environment
      variable ``JOPT_PROGRESS=0`` turns it off).
    checkpoint_dir: a folder to save each finished chunk in; rerunning the
      same call skips the finished chunks and returns the same result as an
      uninterrupted run. A folder made by a different call (space, key,
      strategy, number of trials, folds or training function) is refused
      with a ValueError. The function is compared by its lowered program
      (one trial's StableHLO), so a change to its code, to arrays it closes
      over or to ``functools.partial`` arguments is caught. That costs one
      trace and lowering per call, even when every chunk is already done,
      plus about 30 ms per MB of closed-over arrays (hashed as text).
    folds: k-fold cross-validation: the folds are one more vmapped axis
      inside the trials. Every fold gets the trial's key. Each metric comes
      back averaged over folds (``name``) and per fold (``name_per_fold``,
      shape [N, k, ...]).
    grid_points: points per continuous dimension for ``strategy="grid"``.
    devices: the devices to shard trials over; default ``jax.devices()``.
    compiler_options: XLA options for compiling the sweep. None chooses:
      on CPU ``{"xla_backend_optimization_level": 1}``, XLA's defaults
      elsewhere. On CPU, LLVM's full optimisation dominates the compile of a
      vmapped training loop; at level 1 the MLP sweep of
      ``benchmarks/sweep.py`` compiled 2.5x faster (1.5 s instead of 3.7 s)
      and ran 5-8% slower, with bit-identical results, which pays off for
      any sweep that runs for less than about half a minute per compile.
      Pass ``{}`` for XLA's defaults (long CPU sweeps).

  Returns:
    A `SweepResult` with ``hparams``, ``metrics``, ``diverged``,
    ``num_compiles`` and ``compile_time``.

  Example:
    >>> import jax, jax.numpy as jnp, jopt
    >>> def train_fn(hparams, key):
    ...   w = jnp.float32(5.0)
    ...   for _ in range(20):
    ...     w = w - hparams["lr"] * 2 * w
    ...   return {"loss": w ** 2}
    >>> space = {"lr": jopt.sweep.choice([0.01, 0.1, 0.4])}
    >>> result = jopt.sweep.run(train_fn, space, key=jax.random.key(0),
    ...                         strategy="grid", progress=False)
    >>> result.best("loss").hparams
    {'lr': 0.4}
    >>> result.num_compiles
    1
  """
  space = _space.validate_space(space)
  if strategy not in _space.STRATEGIES:
    raise ValueError(
        f"strategy must be one of {_space.STRATEGIES}, got {strategy!r}.")
  _space.check_num_trials(num_trials, strategy)
  _validate(train_fn, key, max_parallel, folds, devices)
  devices = list(devices) if devices is not None else jax.devices()
  passed = _space.sample(space, num_trials, key, strategy,
                         grid_points=grid_points)
  n = len(next(iter(passed.values())))

  static_names = [k for k, d in space.items() if d.static]
  groups: dict[tuple, list[int]] = {}
  for i in range(n):
    groups.setdefault(tuple(passed[k][i].item() for k in static_names),
                      []).append(i)

  options = (default_compiler_options(devices) if compiler_options is None
             else dict(compiler_options))
  counter = [0]
  group_objs = []
  for static_key in groups:
    static_values = {
        name: space[name].python_value(v)
        for name, v in zip(static_names, static_key, strict=True)}
    group_objs.append(_Group(train_fn, space, static_values, folds, devices,
                             key, counter, options))

  ckpt = None
  if checkpoint_dir is not None:
    program = hashlib.sha256()
    for group in group_objs:
      program.update(group.program_text(passed).encode())
    fields = _checkpoint.fingerprint(
        space=_checkpoint.space_identity(space),
        key=_space.key_seed(key).tolist(), strategy=strategy,
        num_trials=n, folds=folds, grid_points=grid_points,
        train_fn=_checkpoint.function_identity(train_fn),
        program=program.hexdigest()[:16])
    ckpt = _checkpoint.Checkpoint(checkpoint_dir, fields,
                                  writer=jax.process_index() == 0)

  bar = None
  if progress_enabled(progress):
    from tqdm.auto import tqdm

    bar = tqdm(total=n, unit="trial", desc="jopt.sweep")
  compile_time = 0.0
  memory = None
  per_trial: list[dict[str, np.ndarray] | None] = [None] * len(groups)
  try:
    for g, (group, members) in enumerate(
        zip(group_objs, groups.values(), strict=True)):
      per_trial[g] = _run_group(group, g, members, passed, max_parallel,
                                ckpt, bar)
      compile_time += group.compile_time
      if group.footprint is not None:
        memory = max(memory or 0, group.footprint)
  finally:
    if bar is not None:
      bar.close()

  metrics = _assemble(per_trial, list(groups.values()), n)
  diverged = np.zeros(n, bool)
  for v in metrics.values():
    if np.issubdtype(v.dtype, np.inexact):
      diverged |= ~np.isfinite(v.reshape(n, -1)).all(axis=1)
  if folds is not None:
    metrics = _fold_means(metrics)
  hparams = {k: space[k].decode(v) for k, v in passed.items()}
  return SweepResult(hparams=hparams, metrics=metrics, diverged=diverged,
                     space=space, num_compiles=counter[0],
                     compile_time=compile_time, memory_bytes=memory)


def _run_group(group, g, members, passed, max_parallel, ckpt, bar):
  """Runs (or loads) every chunk of one group; results in member order."""
  n = len(members)
  index = np.asarray(members, np.int32)
  hp_dyn = {k: passed[k][index] for k in group.dyn_names}
  stored = ckpt.chunk_sizes.get(g) if ckpt is not None else None
  if stored is not None:
    if max_parallel is not None and stored != _plan_chunk(
        n, len(group.devices), max_parallel):
      raise ValueError(
          f"checkpoint_dir was written with chunks of {stored} trials; pass "
          f"max_parallel={stored} (or None) to resume it.")
    chunk = stored
  else:
    chunk = _plan_chunk(n, len(group.devices), max_parallel)
  num_chunks = -(-n // chunk)
  loaded = [ckpt.load(g, c) if ckpt is not None else None
            for c in range(num_chunks)]
  if any(x is None for x in loaded):
    size = num_chunks * chunk
    hp_pad = {k: _pad(v, size) for k, v in hp_dyn.items()}
    idx_pad = _pad(index, size)
    ndev = _devices_for(chunk, len(group.devices))
    footprint = group.build(chunk, ndev, hp_pad, idx_pad)
    if stored is None and max_parallel is None and footprint:
      budget = memory_budget(group.devices[0])
      points = [(chunk // ndev, footprint)]
      while footprint > budget and chunk // ndev > MIN_LANES:
        lanes, used = points[-1]
        if len(points) == 1:  # proportional: memory ~ lanes
          new_lanes = int(lanes * budget / used)
        else:  # a line through the last two footprints: fixed + per-lane
          (l0, f0), (l1, f1) = points[-2:]
          slope = max((f0 - f1) / max(l0 - l1, 1), 1.0)
          new_lanes = int(l1 + (budget - f1) / slope)
        new_lanes = max(MIN_LANES, min(new_lanes, lanes - 1))
        chunk = new_lanes * ndev
        num_chunks = -(-n // chunk)
        loaded = [None] * num_chunks  # no chunk size stored: none on disk
        size = num_chunks * chunk
        hp_pad = {k: _pad(v, size) for k, v in hp_dyn.items()}
        idx_pad = _pad(index, size)
        footprint = group.build(chunk, ndev, hp_pad, idx_pad)
        points.append((new_lanes, footprint))
  if ckpt is not None and stored is None:
    ckpt.set_chunk_size(g, chunk)
  outs = []
  for c in range(num_chunks):
    out = loaded[c]
    real = min(chunk, n - c * chunk)
    if out is None:
      sl = slice(c * chunk, (c + 1) * chunk)
      out = group({k: v[sl] for k, v in hp_pad.items()}, idx_pad[sl])
      out = {k: v[:real] for k, v in out.items()}
      if ckpt is not None:
        ckpt.save(g, c, out)
    outs.append(out)
    if bar is not None:
      bar.update(real)
  return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def _assemble(per_group, members, n):
  """Scatters each group's results back to trial order."""
  first = per_group[0]
  metrics = {}
  for name, v in first.items():
    out = np.empty((n, *v.shape[1:]), v.dtype)
    for res, idx in zip(per_group, members, strict=True):
      if name not in res or res[name].shape[1:] != v.shape[1:]:
        raise ValueError(
            f"metric {name!r} must have the same shape for every static "
            f"choice; got {v.shape[1:]} and "
            f"{res[name].shape[1:] if name in res else 'missing'}.")
      out[np.asarray(idx)] = res[name]
    metrics[name] = out
  return metrics


def _fold_means(metrics):
  out = {}
  for name, v in metrics.items():
    mean = v.mean(axis=1)
    out[name] = mean.astype(v.dtype) if np.issubdtype(
        v.dtype, np.floating) else mean
    out[f"{name}_per_fold"] = v
  return out
