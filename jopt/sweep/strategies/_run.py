"""The sweep engine: every trial of a search in one compiled, sharded program.

`run` samples the trials, groups them by their static choices, and for each
group compiles ``jit(vmap(train_fn))`` once for a chunk of trials whose trial
axis is sharded over a one-axis `jax.sharding.Mesh` named ``"trials"``. The
same executable runs every chunk of the group (the last one padded), results
come back to the host as numpy, padding removed.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt import _cpu_devices
from jopt.sweep import _common, _space
from jopt.sweep.results._result import SweepResult
from jopt.sweep.runtime import _caches, _checkpoint, _executor, _report

TRIALS_AXIS = _executor.TRIALS_AXIS
# Kept importable under their old names.
memory_budget = _executor.memory_budget
compiled_bytes = _executor.compiled_bytes
default_compiler_options = _executor.default_compiler_options


def _describe(value: Any) -> str:
  """What ``value`` is, in the user's terms (no tracer internals)."""
  if value is None:
    return "None"
  if isinstance(value, (jax.Array, np.ndarray, np.generic)):
    return f"an array of shape {tuple(value.shape)} ({value.dtype})"
  return f"a {type(value).__name__}"


def _check_metrics(metrics: Any) -> dict[str, jax.Array]:
  if not isinstance(metrics, Mapping) or not all(
    isinstance(k, str) for k in metrics
  ):
    raise ValueError(
      "train_fn must return a dict of metrics (name -> array), got "
      f"{_describe(metrics)}."
    )
  if not metrics:
    raise ValueError("train_fn returned no metrics.")
  out = {}
  for name, value in metrics.items():
    bad = value is None or isinstance(value, (Mapping, str, bytes))
    if not bad:
      try:
        out[name] = jnp.asarray(value)
      except (TypeError, ValueError):
        bad = True
    if bad:
      raise ValueError(
        f"train_fn's metric {name!r} is {_describe(value)}: metrics must "
        "be arrays (a scalar or a curve per trial), not nested dicts or "
        "None."
      )
  return out


class _Group:
  """The trials sharing one set of static values, and their executable."""

  def __init__(
    self,
    train_fn,
    space,
    static_values,
    folds,
    key_spec,
    reporting=False,
    seeds=None,
  ):
    self.train_fn = train_fn
    self.folds = folds
    self.seeds = seeds
    self.static_values = static_values
    self.reporting = reporting
    self.dyn_names = [n for n, d in space.items() if not d.static]
    names = list(space)
    self.key_spec = key_spec
    self.compiled: dict[tuple[int, int], Any] = {}

    def one_trial(hp_dyn, index, key, reporting=False):
      hp = {**static_values, **hp_dyn}
      hp = {n: hp[n] for n in names}
      trial_key = _executor.trial_key(key, index)

      def one_seed(trial_key):
        if folds is None:
          return _check_metrics(train_fn(hp, trial_key))
        fold_ids = jnp.arange(folds, dtype=jnp.int32)
        return jax.vmap(lambda f: _check_metrics(train_fn(hp, trial_key, f)))(
          fold_ids
        )

      with _report.tracing(index, reporting):
        if seeds is None:
          return one_seed(trial_key)
        # Seed s trains with fold_in(trial key, s): one more vmapped axis.
        seed_ids = jnp.arange(seeds, dtype=jnp.int32)
        return jax.vmap(lambda s: one_seed(jax.random.fold_in(trial_key, s)))(
          seed_ids
        )

    self.one_trial = one_trial

  def program_text(self, passed: dict[str, np.ndarray]) -> str:
    """The lowered program of one trial (StableHLO, no source locations).

    It holds everything that decides a trial's numbers apart from its
    hyperparameters and key: the code, closed-over arrays (as constants),
    ``functools.partial`` arguments, static values.
    """
    hp = {n: jax.ShapeDtypeStruct((), passed[n].dtype) for n in self.dyn_names}
    index = jax.ShapeDtypeStruct((), np.int32)
    key = self.key_spec.wrap(jnp.asarray(self.key_spec.data))
    return (
      jax.jit(self.one_trial).lower(hp, index, key).as_text(debug_info=False)
    )

  def executable(
    self,
    ex: _executor.Executor,
    size: int,
    ndev: int,
    hp_dyn: dict[str, np.ndarray],
  ):
    """The compiled program for calls of ``size`` trials over ``ndev``."""
    if (size, ndev) not in self.compiled:
      traced_key = self._traced_key(ex, size, ndev, hp_dyn)
      hit = _TRACED.get(traced_key, owner=self.train_fn)
      if hit is not None:
        # The same train_fn object, shapes and settings as a call before:
        # like jax.jit, reuse its program without tracing train_fn again.
        ex.num_compiles += 1
        ex.num_cached += 1
        self.compiled[(size, ndev)] = hit[0]
        return hit[0]
      spec = self.key_spec
      per_trial = ex.per_trial(
        lambda hp, i, kd: self.one_trial(hp, i, spec.wrap(kd), self.reporting),
        ndev,
        (0, 0, None),
      )
      hp = {
        n: jax.ShapeDtypeStruct((size,), v.dtype, sharding=ex.sharding(ndev))
        for n, v in hp_dyn.items()
      }
      index = jax.ShapeDtypeStruct(
        (size,), np.int32, sharding=ex.sharding(ndev)
      )
      kd = jax.ShapeDtypeStruct(
        spec.data.shape,
        spec.data.dtype,
        sharding=ex.sharding(ndev, replicated=True),
      )
      per_device = max(1, size // ndev)
      with _report.reports_per_trial(
        max(1, _report.REPORTS_PER_CALL // per_device)
      ):
        self.compiled[(size, ndev)] = ex.compile(per_trial, (hp, index, kd))
      # The entry holds the static values its key may name by id.
      _TRACED.put(
        traced_key,
        (self.compiled[(size, ndev)], dict(self.static_values)),
        owner=self.train_fn,
      )
    return self.compiled[(size, ndev)]

  def _traced_key(self, ex, size, ndev, hp_dyn) -> tuple:
    """What decides the program beyond ``train_fn``, as jax.jit keys it.

    Static values by value (like ``jax.jit``'s static arguments), or by id
    if unhashable; the JAX settings in force (`_caches.trace_context`);
    the layout, compiler options and devices.
    """
    spec = self.key_spec
    statics = tuple(
      sorted(
        (
          (k, type(v).__name__, _static_key(v))
          for k, v in self.static_values.items()
        ),
        key=repr,
      )
    )
    return (
      statics,
      self.folds,
      self.seeds,
      self.reporting,
      _report.REPORTS_PER_CALL,
      size,
      ndev,
      ex.lanes,
      tuple((n, str(v.dtype)) for n, v in hp_dyn.items()),
      spec.data.shape,
      str(spec.data.dtype),
      str(spec.impl),
      tuple(d.id for d in ex.devices),
      repr(ex.compiler_options),
      _caches.trace_context(),
    )

  def __call__(self, ex, size, ndev, hp_dyn, index) -> dict[str, np.ndarray]:
    compiled = self.executable(ex, size, ndev, hp_dyn)
    out = compiled(
      ex.put(hp_dyn, ndev),
      ex.put(index, ndev),
      ex.put_replicated(self.key_spec.data, ndev),
    )
    # After the (asynchronous) dispatch: a footprint not yet known is
    # measured while the devices run the call.
    ex.note_used(compiled)
    return ex.gather(dict(out))


# (train_fn, settings) -> executable: a sweep called again with the same
# function object skips tracing and lowering, as jax.jit does (the
# executable cache of `_executor` then catches a new object with the same
# program, at the cost of one lowering). Entries live no longer than their
# train_fn.
_TRACED = _caches.Cache("programs by training function", 64)


def _static_key(value: Any) -> Any:
  try:
    hash(value)
  except TypeError:
    return ("id", id(value))
  return ("value", value)


def _plan_call(ex: _executor.Executor, n: int, max_parallel: int | None):
  """``(size, ndev)`` of each call for ``n`` trials: whole groups of lanes.

  ``max_parallel`` caps the trials of one call, rounded up to one group of
  lanes; below a group per device it uses fewer devices (not in a cluster,
  where every process takes part).
  """
  ndev = ex.num_devices_for(n)
  if max_parallel is not None and not ex.multiprocess:
    ndev = max(1, min(ndev, max_parallel // ex.lanes))
  full = ex.padded(n, ndev)
  if max_parallel is None:
    return full, ndev
  unit = ex.lanes * ndev
  return min(full, max(unit, max_parallel // unit * unit)), ndev


def _validate(train_fn, key, max_parallel, folds, devices, lanes, seeds=None):
  if not callable(train_fn):
    raise ValueError(f"train_fn must be callable, got {train_fn!r}.")
  if key is None:
    raise ValueError("run needs key=, a JAX PRNG key.")
  _space.key_seed(key)
  for name, v in (
    ("max_parallel", max_parallel),
    ("folds", folds),
    ("seeds", seeds),
  ):
    if v is not None and (not _space._is_int(v) or v < 1):
      raise ValueError(f"{name} must be None or an int >= 1, got {v!r}.")
  if devices is not None and not devices:
    raise ValueError("devices must be None or a non-empty list of devices.")
  _executor.check_lanes(lanes)


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
  lanes: int | None = None,
  seeds: int | None = None,
  progress_metric: str | None = None,
  progress_mode: str = "min",
) -> SweepResult:
  """Trains every trial of a hyperparameter search as one compiled program.

  ``train_fn(hparams, key) -> metrics`` is a pure JAX function of one
  trial: ``hparams`` maps each name of ``space`` to a scalar array (a Python
  value for ``choice(..., static=True)``), ``metrics`` maps names to arrays
  (scalars, or curves such as a loss per step). Trial ``i`` gets the key
  ``jax.random.fold_in(key, i)``.

  Layout: the trial axis is sharded over ``devices`` (every process's, on
  a JAX cluster), and each device computes its trials in vmapped groups of
  ``lanes`` trials, one group after another. Every trial is thus computed
  by the same program at the same width whatever the number of devices,
  processes or trials per call, so its result is the same, bit for bit
  (tested on matmul models and on the CNN of ``examples/cnn``); the width
  depends only on the search (see ``lanes``).

  Compiles: a call traces ``train_fn`` once per static group and call
  size. Called again with the same ``train_fn`` object and settings, `run`
  reuses that program without tracing it again, as ``jax.jit`` does (so a
  Python global that ``train_fn`` reads is the value it had then); a new
  function object with the same program is traced, not compiled.

  Memory: with ``max_parallel=None`` a call holds every trial of a static
  group. The engine reads the compiled call's per-device footprint from
  ``compiled.memory_analysis()`` (arguments + outputs + temporaries) and
  compares it with the budget: ``0.8 * (bytes_limit - bytes_in_use)`` from
  ``device.memory_stats()`` on accelerators, 2 GiB per device on CPU (or
  ``JOPT_SWEEP_MEMORY_BYTES`` when set). When it does not fit, the call
  shrinks (in proportion, then along the line through the last two
  footprints) and is compiled again, down to one group of lanes per
  device; if even that does not fit, a `MemoryBudgetWarning` says so (pass
  a smaller ``lanes``).

  Divergence: a trial whose metrics contain NaN or Inf (float16 and
  bfloat16 included) is flagged in ``result.diverged``; trials are
  independent lanes, so it never changes another trial's numbers, and
  `SweepResult.best` skips it.

  Args:
    train_fn: ``train_fn(hparams, key) -> dict of metrics``; with ``folds``,
      ``train_fn(hparams, key, fold)`` where ``fold`` is an int32 scalar.
    space: a dict ``name -> distribution`` (`choice`, `uniform`,
      `log_uniform`, `int_uniform`).
    num_trials: the number of trials (> 0); optional for the grid.
    key: a JAX PRNG key, the root of every trial's key and of sampling.
    strategy: ``"grid"``, ``"random"`` or ``"quasirandom"`` (see `sample`).
    max_parallel: the most trials of one call (rounded up to one group of
      ``lanes``; below a group per device, fewer devices are used); None
      chooses it from the devices' memory as above. Results do not depend
      on it.
    progress: show a tqdm bar when tqdm is installed (``jopt[progress]``;
      the environment variable ``JOPT_PROGRESS=0`` turns it off). Without
      tqdm the sweep runs silently.
    progress_metric: the metric the bar shows the best value of, among
      finished trials (the one you will rank by, e.g. ``"val_loss"``; with
      ``seeds`` its mean over seeds). None: the bar shows the first value
      of the live reports of `jopt.sweep.scan` / `report` instead.
    progress_mode: ``"min"`` or ``"max"``: what is best for
      ``progress_metric``.
    checkpoint_dir: a folder to save the trials of each finished call in;
      rerunning the same call, with any ``max_parallel``, runs only the
      missing trials and returns the same result as an uninterrupted run,
      bit for bit. A folder made by a different call (space, key, strategy,
      number of trials, folds, lanes, compiler options or training
      function) is refused with
      a ValueError, and so is any file in it that does not carry this
      call's fingerprint or cannot be read (its name is given). The
      function is compared by its lowered program (one trial's StableHLO),
      so a change to its code, to arrays it closes over or to
      ``functools.partial`` arguments is caught. Only process 0 writes.
    folds: k-fold cross-validation: the folds are one more vmapped axis
      inside the trials. Every fold gets the trial's key. Each metric comes
      back averaged over folds (``name``) and per fold (``name_per_fold``,
      shape [N, k, ...]).
    seeds: train every configuration with this many seeds, in the same
      program: seed ``s`` of trial ``i`` gets the key
      ``fold_in(fold_in(key, i), s)``, one more vmapped axis inside the
      trial. Each metric comes back as its mean over seeds (``name``), its
      standard error (``name_se``) and per seed (``name_per_seed``, shape
      [N, seeds, ...]); `SweepResult.best` ranks by the mean, so one lucky
      seed does not decide the pick. A trial is diverged when any seed
      diverged. With ``folds`` too, folds are averaged first, per seed.
    grid_points: points per continuous dimension for ``strategy="grid"``.
    devices: the devices to shard trials over; default ``jax.devices()``
      (on a JAX cluster, every process's).
    compiler_options: XLA options for compiling the sweep. None chooses:
      on CPU ``{"xla_backend_optimization_level": 1}``, XLA's defaults
      elsewhere. On CPU, LLVM's full optimisation dominates the compile of a
      vmapped training loop; level 1 compiles much faster and runs slightly
      slower with the same results (benchmarks/sweep.py measures both),
      which pays off for sweeps that run for less than about as long as
      they compile.
      Pass ``{}`` for XLA's defaults (long CPU sweeps).
    lanes: trials computed side by side on a device: the width of the
      vmap inside each device's loop. None: 1 on CPU, 32 on accelerators,
      but no more than the power of two at or above ``num_trials``. Results
      depend on it (and on nothing else of the layout), so pass the same
      value to compare runs bit for bit.

  Returns:
    A `SweepResult` with ``hparams``, ``metrics``, ``diverged``,
    ``num_compiles`` (programs the sweep ran: one per static group and call
    shape), ``num_cached`` (how many of them an earlier sweep in the process
    had compiled, reused until `clear_caches`; ``compile_time`` is then
    near zero) and ``compile_time``.

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
      f"strategy must be one of {_space.STRATEGIES}, got {strategy!r}."
    )
  _space.check_num_trials(num_trials, strategy)
  _validate(train_fn, key, max_parallel, folds, devices, lanes, seeds)
  if progress_mode not in ("min", "max"):
    raise ValueError(
      f"progress_mode must be 'min' or 'max', got {progress_mode!r}."
    )
  passed = _space.sample(
    space, num_trials, key, strategy, grid_points=grid_points
  )
  n = len(next(iter(passed.values())))
  devices = list(devices) if devices is not None else jax.devices()
  _cpu_devices.hint_if_one_cpu_device(devices)
  ex = _executor.Executor(
    devices,
    _executor.lanes_for(n, devices[0].platform, lanes),
    None if compiler_options is None else dict(compiler_options),
  )

  static_names = [k for k, d in space.items() if d.static]
  groups: dict[tuple, list[int]] = {}
  for i in range(n):
    groups.setdefault(
      tuple(passed[k][i].item() for k in static_names), []
    ).append(i)
  key_spec = _executor.KeySpec(key)
  group_objs = []
  for static_key in groups:
    static_values = {
      name: space[name].python_value(v)
      for name, v in zip(static_names, static_key, strict=True)
    }
    group_objs.append(
      _Group(
        train_fn,
        space,
        static_values,
        folds,
        key_spec,
        reporting=_common.progress_wanted(progress),
        seeds=seeds,
      )
    )

  ckpt = None
  if checkpoint_dir is not None:
    program = hashlib.sha256()
    for group in group_objs:
      program.update(group.program_text(passed).encode())
    fields = _checkpoint.fingerprint(
      search="run",
      space=_checkpoint.space_identity(space),
      key=_space.key_seed(key).tolist(),
      strategy=strategy,
      num_trials=n,
      folds=folds,
      grid_points=grid_points,
      lanes=ex.lanes,
      train_fn=_checkpoint.function_identity(train_fn),
      program=program.hexdigest()[:16],
      compiler_options=sorted((ex.compiler_options or {}).items()),
      **({} if seeds is None else {"seeds": seeds}),
    )
    ckpt = _checkpoint.Checkpoint(
      checkpoint_dir, fields, writer=jax.process_index() == 0
    )

  bar = _common.progress_bar(n, "jopt.sweep", unit="trial", enabled=progress)
  per_trial: list[dict[str, np.ndarray]] = []
  try:
    with _report.Reporter(
      bar, metric=progress_metric, mode=progress_mode
    ) as reporter:
      for g, (group, members) in enumerate(
        zip(group_objs, groups.values(), strict=True)
      ):
        per_trial.append(
          _run_group(
            ex,
            group,
            g,
            np.asarray(members, np.int32),
            passed,
            max_parallel,
            ckpt,
            reporter,
          )
        )
  finally:
    bar.close()
  metrics = _assemble(
    per_trial, list(groups.values()), n, [g.static_values for g in group_objs]
  )
  diverged = _common.diverged_mask(metrics, n)
  if folds is not None:
    metrics = _fold_means(metrics, axis=1 if seeds is None else 2)
  if seeds is not None:
    metrics = _seed_stats(metrics)
  hparams = {k: space[k].decode(v) for k, v in passed.items()}
  return SweepResult(
    hparams=hparams,
    metrics=metrics,
    diverged=diverged,
    space=space,
    num_compiles=ex.num_compiles,
    num_cached=ex.num_cached,
    compile_time=ex.compile_time,
    memory_bytes=ex.memory_bytes,
  )


def _fit_memory(ex, group, n, size, ndev, hp_dyn):
  """Shrinks the call until its compiled footprint fits the memory budget.

  The footprint of one call is its arguments and outputs (all its trials)
  plus temporaries (one group of lanes per device); it shrinks in
  proportion, then along the line through the last two footprints, one
  compile each, down to one group per device.
  """
  unit = ex.lanes * ndev
  footprint = _executor.compiled_bytes(group.executable(ex, size, ndev, hp_dyn))
  if footprint is None:
    return size
  budget = _executor.memory_budget(ex.devices[0])
  points = [(size // unit, footprint)]
  while footprint > budget and size > unit:
    groups_now, used = points[-1]
    if len(points) == 1:
      new = int(groups_now * budget / used)
    else:
      (g0, f0), (g1, f1) = points[-2:]
      slope = max((f0 - f1) / max(g0 - g1, 1), 1.0)
      new = int(g1 + (budget - f1) / slope)
    new = max(1, min(new, groups_now - 1))
    size = new * unit
    footprint = _executor.compiled_bytes(
      group.executable(ex, size, ndev, hp_dyn)
    )
    points.append((new, footprint))
  if footprint > budget:
    _warn_over_budget(ex, footprint, budget, stacklevel=5)
  return size


def _check_after(ex, size, ndev) -> bool:
  """Whether a call's footprint is checked after it runs, not before.

  On CPU a call of one group per device cannot shrink, so its footprint
  (XLA's memory analysis, 10-15 ms, as long as a small trial) is measured
  while the devices run it and checked after. On accelerators, where
  running out of memory is a hard error, it is checked first, so the
  warning's advice comes before the failure.
  """
  return ex.platform == "cpu" and size <= ex.lanes * ndev


def _warn_over_budget(ex, footprint, budget, stacklevel):
  warnings.warn(
    f"one group of {ex.lanes} lanes per device needs {footprint} bytes, "
    f"more than the memory budget of {budget} bytes; running it anyway. "
    f"Pass a smaller lanes= (or raise JOPT_SWEEP_MEMORY_BYTES).",
    _common.MemoryBudgetWarning,
    stacklevel=stacklevel,
  )


def _warn_if_over_budget(ex, group, size, ndev, hp_dyn):
  """After a call of one group per device: warns if it was over budget."""
  footprint = _executor.compiled_bytes(group.executable(ex, size, ndev, hp_dyn))
  budget = _executor.memory_budget(ex.devices[0])
  if footprint is not None and footprint > budget:
    _warn_over_budget(ex, footprint, budget, stacklevel=5)


def _run_group(ex, group, g, members, passed, max_parallel, ckpt, reporter):
  """Runs (or loads) every trial of one group; results in member order."""
  n = len(members)
  hp_dyn = {k: passed[k][members] for k in group.dyn_names}
  rows: dict[int, int] = {int(t): r for r, t in enumerate(members)}
  done_rows: list[np.ndarray] = []
  done_out: list[dict[str, np.ndarray]] = []
  if ckpt is not None:
    for indices, out in ckpt.load_trials(g, members):
      done_rows.append(np.array([rows[int(t)] for t in indices]))
      done_out.append(out)
      reporter.finish(indices, _scores(out, reporter.metric, group))
  todo = np.setdiff1d(
    np.arange(n), np.concatenate(done_rows) if done_rows else np.zeros(0, int)
  )
  if len(todo):
    size, ndev = _plan_call(ex, len(todo), max_parallel)
    check_after = max_parallel is None and _check_after(ex, size, ndev)
    if max_parallel is None and not check_after:
      size = _fit_memory(ex, group, len(todo), size, ndev, hp_dyn)
    for lo in range(0, len(todo), size):
      part = todo[lo : lo + size]
      pad = _executor.pad_rows(len(part), size)
      out = group(
        ex,
        size,
        ndev,
        {k: v[part][pad] for k, v in hp_dyn.items()},
        members[part][pad],
      )
      out = {k: v[: len(part)] for k, v in out.items()}
      if ckpt is not None:
        ckpt.save_trials(g, members[part], out)
      done_rows.append(part)
      done_out.append(out)
      reporter.finish(members[part], _scores(out, reporter.metric, group))
    if check_after:
      _warn_if_over_budget(ex, group, size, ndev, hp_dyn)
  order = np.concatenate(done_rows)
  names = list(done_out[0])
  for out in done_out:
    if sorted(out) != sorted(names):
      raise ValueError(
        f"train_fn returned metrics {sorted(out)} for some "
        f"trials and {sorted(names)} for others."
      )
  result = {}
  for name in names:
    values = np.concatenate([o[name] for o in done_out])
    sorted_values = np.empty_like(values)
    sorted_values[order] = values
    result[name] = sorted_values
  return result


def _assemble(per_group, members, n, static_values):
  """Scatters each group's results back to trial order.

  Groups may return different dtypes for a metric (an int in one, a float
  in another): the result holds their common type, so no value is cut.
  Every group must return the same metric names and shapes.
  """
  names = list(per_group[0])
  for res, values in zip(per_group, static_values, strict=True):
    if sorted(res) != sorted(names):
      raise ValueError(
        f"every static choice must return the same metrics: {values} "
        f"returned {sorted(res)}, another returned {sorted(names)}."
      )
  metrics = {}
  for name in names:
    v = per_group[0][name]
    dtype = np.result_type(*[res[name].dtype for res in per_group])
    out = np.empty((n, *v.shape[1:]), dtype)
    for res, idx in zip(per_group, members, strict=True):
      if res[name].shape[1:] != v.shape[1:]:
        raise ValueError(
          f"metric {name!r} must have the same shape for every static "
          f"choice; got {v.shape[1:]} and {res[name].shape[1:]}."
        )
      out[np.asarray(idx)] = res[name]
    metrics[name] = out
  return metrics


def _scores(out, metric, group):
  """Each trial's value of ``metric`` in a call's raw output (per seed and
  fold before averaging): averaged over seeds and folds, a curve's last
  value. None when no metric is shown or the output lacks it."""
  if metric is None or metric not in out:
    return None
  v = np.asarray(out[metric], np.float64)
  for extra in (group.seeds, group.folds):
    if extra is not None:
      v = v.mean(axis=1)
  return v.reshape(len(v), -1)[:, -1]


def _fold_means(metrics, axis=1):
  out = {}
  for name, v in metrics.items():
    mean = v.mean(axis=axis)
    out[name] = (
      mean.astype(v.dtype) if np.issubdtype(v.dtype, np.floating) else mean
    )
    out[f"{name}_per_fold"] = v
  return out


def _seed_stats(metrics):
  """Per-seed metrics [N, S, ...] -> mean, standard error and per seed."""
  out = {}
  for name, v in metrics.items():
    seeds = v.shape[1]
    as_float = v.astype(np.float64)
    mean = as_float.mean(axis=1)
    se = (
      as_float.std(axis=1, ddof=1) / np.sqrt(seeds)
      if seeds > 1
      else np.zeros_like(mean)
    )
    dtype = v.dtype if np.issubdtype(v.dtype, np.floating) else np.float64
    out[name] = mean.astype(dtype)
    out[f"{name}_se"] = se.astype(dtype)
    out[f"{name}_per_seed"] = v
  return out
