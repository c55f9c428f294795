"""The sweep engine: every trial of a search in one compiled, sharded program.

`run` samples the trials, groups them by their static choices, and for each
group compiles ``jit(vmap(train_fn))`` once for a chunk of trials whose trial
axis is sharded over a one-axis `jax.sharding.Mesh` named ``"trials"``. The
same executable runs every chunk of the group (the last one padded), results
come back to the host as numpy, padding removed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt import _cpu_devices
from jopt.sweep import _common, _space
from jopt.sweep.results._result import SweepResult, compile_stats
from jopt.sweep.runtime import _checkpoint, _executor, _loop, _programs, _report


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

  def one_program(self, passed: dict[str, np.ndarray]) -> tuple:
    """One trial's function and abstract arguments (its fingerprint)."""
    hp = {n: jax.ShapeDtypeStruct((), passed[n].dtype) for n in self.dyn_names}
    index = jax.ShapeDtypeStruct((), np.int32)
    key = self.key_spec.wrap(jnp.asarray(self.key_spec.data))
    return self.one_trial, (hp, index, key)

  def executable(
    self,
    ex: _executor.Executor,
    size: int,
    ndev: int,
    hp_dyn: dict[str, np.ndarray],
  ):
    """The compiled program for calls of ``size`` trials over ``ndev``.

    Called again with the same ``train_fn`` object, shapes and settings as
    a search before, it is reused without tracing ``train_fn`` again, as
    ``jax.jit`` does (`_programs.get`).
    """
    spec = self.key_spec
    sharding = ex.sharding(ndev)
    hp = {
      n: jax.ShapeDtypeStruct((size,), v.dtype, sharding=sharding)
      for n, v in hp_dyn.items()
    }
    index = jax.ShapeDtypeStruct((size,), np.int32, sharding=sharding)
    kd = jax.ShapeDtypeStruct(
      spec.data.shape,
      spec.data.dtype,
      sharding=ex.sharding(ndev, replicated=True),
    )

    def build():
      return ex.per_trial(
        lambda hp, i, kd: self.one_trial(hp, i, spec.wrap(kd), self.reporting),
        ndev,
        (0, 0, None),
      )

    per_device = max(1, size // ndev)
    with _report.reports_per_trial(
      max(1, _report.REPORTS_PER_CALL // per_device)
    ):
      # The static values are held with the entry: its key may name them
      # by id.
      return _programs.get(
        ex,
        build,
        (hp, index, kd),
        owner=self.train_fn,
        name="run",
        key=self._settings(),
        keep=dict(self.static_values),
      )

  def _settings(self) -> tuple:
    """What decides the program beyond ``train_fn`` and the arguments.

    Static values by value (like ``jax.jit``'s static arguments), or by id
    if unhashable; folds, seeds, live reports, the key's kind.
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
      str(spec.impl),
    )

  def __call__(self, ex, size, ndev, hp_dyn, index) -> dict[str, np.ndarray]:
    out = _programs.call(
      ex,
      self.executable(ex, size, ndev, hp_dyn),
      ex.put(hp_dyn, ndev),
      ex.put(index, ndev),
      ex.put_replicated(self.key_spec.data, ndev),
    )
    return ex.gather(dict(out))


def _static_key(value: Any) -> Any:
  try:
    hash(value)
  except TypeError:
    return ("id", id(value))
  return ("value", value)


def _validate(
  train_fn,
  key,
  max_parallel,
  folds,
  devices,
  lanes,
  compiler_options=None,
  seeds=None,
):
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
  _executor.check_compiler_options(compiler_options)


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
  group. The sweep reads the compiled call's per-device footprint from
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
    checkpoint_dir: a folder to save the search in after every call (one
      state file, replaced each time, as every search saves); rerunning
      the same call, with any ``max_parallel``, runs only the missing
      trials and returns the same result as an uninterrupted run, bit for
      bit. A folder made by a different call (space, key, strategy,
      number of trials, folds, lanes, compiler options or training
      function) is refused with a ValueError, and so is a state file that
      does not carry this call's fingerprint or cannot be read (its name
      is given). The
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
    compiler_options: XLA options for compiling the search's programs, a
      mapping of option names to values (part of the checkpoint's
      fingerprint). None chooses: on CPU
      ``{"xla_backend_optimization_level": 1}``, XLA's defaults elsewhere.
      On CPU, LLVM's full optimisation dominates the compile of a vmapped
      training loop; level 1 compiles much faster and runs slightly slower
      with the same results (benchmarks/sweep.py measures both), which
      pays off for sweeps that run for less than about as long as they
      compile. Pass ``{}`` for XLA's defaults (long CPU sweeps).
    lanes: trials computed side by side on a device: the width of the
      vmap inside each device's loop. None: 1 on CPU, 32 on accelerators,
      but no more than the power of two at or above ``num_trials``. Results
      depend on it (and on nothing else of the layout), so pass the same
      value to compare runs bit for bit.

  Returns:
    A `SweepResult` with ``hparams``, ``metrics``, ``diverged`` and the
    compile statistics every search reports: ``num_compiles`` (programs the
    sweep ran: one per static group and call shape), ``num_cached`` (how
    many of them an earlier search in the process had compiled, reused
    until `clear_caches`; ``compile_time`` is then near zero),
    ``compile_time`` and ``memory_bytes``.

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
  _validate(
    train_fn, key, max_parallel, folds, devices, lanes, compiler_options, seeds
  )
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
    fields = _checkpoint.fingerprint(
      search="run",
      layout="search state",
      space=_checkpoint.space_identity(space),
      key=_space.key_seed(key).tolist(),
      strategy=strategy,
      num_trials=n,
      folds=folds,
      grid_points=grid_points,
      lanes=ex.lanes,
      train_fn=_checkpoint.function_identity(train_fn),
      program=_programs.digest(*[g.one_program(passed) for g in group_objs]),
      compiler_options=sorted((ex.compiler_options or {}).items()),
      **({} if seeds is None else {"seeds": seeds}),
    )
    ckpt = _checkpoint.Checkpoint(
      checkpoint_dir, fields, writer=jax.process_index() == 0
    )

  search = _RunSearch(
    ex,
    list(zip(group_objs, groups.values(), strict=True)),
    passed,
    max_parallel,
    progress_metric,
    progress_mode,
    checkpoint_dir,
  )
  (per_group, members), _ = _loop.iterate(
    search,
    ex,
    checkpoint=ckpt,
    progress=progress,
    total=n,
    desc="jopt.sweep",
    unit="trial",
  )
  metrics = _assemble(
    per_group, members, n, [g.static_values for g in group_objs]
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
    **compile_stats(ex),
  )


class _RunSearch(_loop.Strategy):
  """`run` as a strategy: one step is one call of one static group.

  The state is which trials are done and the metrics of every call so
  far. A resumed search (with any ``max_parallel``, on any devices) runs
  only the trials not done, in calls sized for them: a trial's numbers do
  not depend on its call.
  """

  def __init__(self, ex, groups, passed, max_parallel, metric, mode, directory):
    self.ex = ex
    self.groups = [(g, np.asarray(m, np.int64)) for g, m in groups]
    self.passed = passed
    self.max_parallel = max_parallel
    self.metric, self.mode = metric, mode
    self.directory = directory
    self.n = len(next(iter(passed.values())))
    self.calls: dict[int, tuple[int, int]] = {}  # group -> (size, ndev)
    self.reporter: _report.Reporter | None = None

  def init(self):
    return _loop.SearchState(0, {"done": np.zeros(self.n, bool), "calls": []})

  def work(self, state):
    return int(np.sum(state.host["done"]))

  def terminate(self, state):
    return bool(np.all(state.host["done"]))

  def device_template(self, state):
    return None

  def running(self, progress):
    # Live reports of running trials (`jopt.sweep.scan`) move the bar.
    self.reporter = _report.Reporter(
      progress.bar, metric=self.metric, mode=self.mode
    )
    return self.reporter

  def restore(self, state):
    """Checks that a loaded state holds each trial once, in its group."""
    group_of = np.empty(self.n, np.int64)
    for g, (_, members) in enumerate(self.groups):
      group_of[members] = g
    seen = np.zeros(self.n, bool)
    for call in state.host["calls"]:
      trials = np.asarray(call["trials"])
      g = int(call["group"])
      if (
        not 0 <= g < len(self.groups)
        or trials.min(initial=0) < 0
        or trials.max(initial=0) >= self.n
        or np.any(group_of[trials] != g)
        or np.any(seen[trials])
        or any(len(v) != len(trials) for v in call["metrics"].values())
      ):
        raise ValueError(
          f"the saved search in {self.directory!r} is inconsistent (a "
          f"trial outside its group, or saved twice); delete the folder "
          f"or use a new checkpoint_dir."
        )
      seen[trials] = True
    if not np.array_equal(seen, np.asarray(state.host["done"], bool)):
      raise ValueError(
        f"the saved search in {self.directory!r} is inconsistent (trials "
        f"marked done without results); delete the folder or use a new "
        f"checkpoint_dir."
      )

  def step(self, state, progress):
    ex, done = self.ex, state.host["done"]
    g = next(g for g, (_, m) in enumerate(self.groups) if not done[m].all())
    group, members = self.groups[g]
    todo = members[~done[members]]
    if g not in self.calls:
      hp_dyn = {k: self.passed[k][members] for k in group.dyn_names}
      self.calls[g] = _programs.fit(
        ex,
        len(todo),
        self.max_parallel,
        lambda size, ndev: group.executable(ex, size, ndev, hp_dyn),
      )
    size, ndev = self.calls[g]
    part = todo[:size]
    rows = part[_executor.pad_rows(len(part), size)]
    out = group(
      ex,
      size,
      ndev,
      {k: self.passed[k][rows] for k in group.dyn_names},
      rows.astype(np.int32),
    )
    out = {k: v[: len(part)] for k, v in out.items()}
    self.reporter.finish(part, _scores(out, self.metric, group))
    progress.count += len(part)  # the reporter moved the bar
    done = done.copy()
    done[part] = True
    calls = [
      *state.host["calls"],
      {"group": g, "trials": part, "metrics": out},
    ]
    return _loop.SearchState(state.step + 1, {"done": done, "calls": calls})

  def postprocess(self, state):
    """Each group's metrics in member order, and the groups' members."""
    per_group, members = [], []
    for g, (_, group_members) in enumerate(self.groups):
      calls = [c for c in state.host["calls"] if int(c["group"]) == g]
      names = sorted(calls[0]["metrics"])
      for c in calls:
        if sorted(c["metrics"]) != names:
          raise ValueError(
            f"train_fn returned metrics {sorted(c['metrics'])} for some "
            f"trials and {names} for others."
          )
      rows = {int(t): r for r, t in enumerate(group_members)}
      order = np.array([rows[int(t)] for c in calls for t in c["trials"]])
      result = {}
      for name in calls[0]["metrics"]:
        values = np.concatenate([c["metrics"][name] for c in calls])
        in_order = np.empty_like(values)
        in_order[order] = values
        result[name] = in_order
      per_group.append(result)
      members.append(group_members)
    return per_group, members


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
