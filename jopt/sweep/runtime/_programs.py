"""The one owner of compiled programs: trace, cache, memory fit.

Every search asks `get` for its programs (`run`'s trials, a population's
init and segment, PBT's copy of parents, Optuna's batches, `lr_find`'s
ramps), so one policy decides, for all of them:

* **Caching.** A program is kept in one registered cache, keyed on what
  made it (the function it was built from, held weakly as its owner, and
  the caller's static settings), the shapes, dtypes and placement of its
  arguments, the executor's devices, lanes and compiler options, and every
  JAX setting in force (`_caches.trace_context`). A search called again in
  one process (a notebook cell run twice) neither traces nor compiles;
  `jopt.sweep.clear_caches` empties the cache. Below it, an executable is
  reused for a new function object that lowers to the same program text.
* **Fingerprints.** `digest` hashes the lowered programs of a search for
  its checkpoint, so a resumed search is the same program.
* **Counting.** ``ex.num_compiles`` counts the programs a search needed
  (each once, however often it runs), ``ex.num_cached`` how many of those
  an earlier search had compiled, ``ex.compile_time`` the seconds spent
  tracing, lowering and compiling, ``ex.memory_bytes`` the largest
  footprint that ran.
* **Memory.** `fit` sizes the calls of a search that can split its trials
  (`run`'s calls, `run_stepwise`'s chunks, and through `run_trials` an
  Optuna batch and `lr_find`'s runs) to the device's budget
  (`memory_budget`); a population that must
  train together (halving's rungs, PBT) is checked by `check_budget`. Both
  warn with a `MemoryBudgetWarning` when even one group of lanes per device
  does not fit.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import warnings
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax
import numpy as np

from jopt.sweep import _common
from jopt.sweep.runtime import _caches, _executor
from jopt.sweep.runtime._conv import lower_canonical

# Per-device budget when the device reports no memory limit (CPU).
CPU_MEMORY_BUDGET = 2 << 30
# Share of an accelerator's free memory one call may take.
ACCELERATOR_MEMORY_FRACTION = 0.8

# Programs by owner, name, key, argument layout and settings.
_PROGRAMS = _caches.Cache("compiled programs of searches", 128)
# Executables by lowered program text (a new function object, same program).
_EXECUTABLES = _caches.Cache("executables by program text", 32)
# Footprints by executable: XLA's memory analysis takes as long as a small
# trial runs, and a search asks for it on every call.
_FOOTPRINTS = _caches.Cache("footprints of compiled programs", 64)
_UNKNOWN = object()


# --- Compiling --------------------------------------------------------------------


def _executable_key(lowered: Any, ex: Any) -> str:
  h = hashlib.sha256(lowered.as_text(debug_info=False).encode())
  # jit drops unused arguments from the program text; the pytrees it is
  # called with are part of what the executable accepts.
  h.update(repr((lowered.in_tree, lowered.out_tree)).encode())
  h.update(repr(sorted((ex.compiler_options or {}).items())).encode())
  h.update(repr([d.id for d in ex.devices]).encode())
  return h.hexdigest()


def _compile(ex: Any, fn: Callable[..., Any], args: Sequence[Any], donate):
  """``jit(fn)`` compiled for ``args`` (on CPU with canonical convs)."""
  if ex.platform == "cpu":
    lowered = lower_canonical(fn, args, tuple(donate))
  else:
    lowered = jax.jit(fn, donate_argnums=tuple(donate)).lower(*args)
  key = _executable_key(lowered, ex)
  compiled = _EXECUTABLES.get(key)
  if compiled is None:
    compiled = lowered.compile(compiler_options=ex.compiler_options)
    _EXECUTABLES.put(key, compiled)
    return compiled, False
  return compiled, True


def _layout(ex: Any, args: Any) -> Hashable:
  """What the arguments decide of a program: structure, shapes, dtypes,
  the devices they are spread over; and the executor's settings."""
  leaves = jax.tree.leaves(args)
  mesh_sizes = tuple(
    getattr(getattr(x, "sharding", None), "mesh", None) is not None
    and x.sharding.mesh.devices.size
    for x in leaves
  )
  return (
    jax.tree.structure(args),
    tuple((tuple(x.shape), str(x.dtype)) for x in leaves),
    mesh_sizes,
    ex.lanes,
    tuple(d.id for d in ex.devices),
    repr(sorted((ex.compiler_options or {}).items())),
  )


def get(
  ex: Any,
  build: Callable[[], Callable[..., Any]],
  args: Sequence[Any],
  *,
  owner: Any = None,
  name: str,
  key: Hashable = (),
  donate: Sequence[int] = (),
  keep: Any = None,
) -> Any:
  """The compiled program ``build()`` for ``args``: cached, counted.

  Args:
    ex: the search's executor (its devices, lanes, options and stats).
    build: makes the function to compile (called only on a miss).
    args: the arguments (arrays, or sharded ``ShapeDtypeStruct``s to size
      a call before placing anything).
    owner: the user's object the program is made from (a ``train_fn``, a
      population): the entry lives no longer than it. None for programs
      made of jopt's code alone.
    name: which program of ``owner``.
    key: the caller's settings that change the program beyond ``args``
      (static hyperparameters, folds...), hashable.
    donate: positions of arguments whose buffers the program may reuse.
    keep: objects the cache entry holds alive (values ``key`` names by
      ``id``, so that no other object takes their id while it is cached).
  """
  full = (name, key, _layout(ex, args), _caches.trace_context())
  seen = ex.programs.get((id(owner), full))
  if seen is not None and seen[0] is owner:
    return seen[1]
  start = time.perf_counter()
  entry = _PROGRAMS.get(full, owner=owner)
  cached = entry is not None
  if entry is None:
    program, cached = _compile(ex, build(), args, donate)
    _PROGRAMS.put(full, (program, keep), owner=owner)
  else:
    program = entry[0]
  ex.compile_time += time.perf_counter() - start
  ex.num_compiles += 1
  ex.num_cached += int(cached)
  ex.programs[(id(owner), full)] = (owner, program)
  return program


def digest(*programs: tuple[Callable[..., Any], Sequence[Any]]) -> str:
  """The fingerprint of ``(fn, abstract args)`` pairs: a hash of their
  lowered programs (StableHLO without source locations).

  It holds everything that decides a trial's numbers apart from its
  hyperparameters and key: the code, closed-over arrays (as constants),
  ``functools.partial`` arguments, static values; so a checkpoint of
  another program is refused, in every process alike.
  """
  h = hashlib.sha256()
  for fn, args in programs:
    h.update(jax.jit(fn).lower(*args).as_text(debug_info=False).encode())
  return h.hexdigest()[:16]


def call(ex: Any, program: Any, *args: Any) -> Any:
  """Runs ``program``.

  After the (asynchronous) dispatch, while the devices run: the first call
  of each program of a search measures its footprint (``memory_bytes``)
  and warns if it is over the budget (unless `fit` already did).
  """
  out = program(*args)
  if id(program) not in ex.checked:
    ex.checked.add(id(program))
    check_budget(ex, program)
  return out


# --- Memory -----------------------------------------------------------------------


def memory_budget(device: jax.Device) -> int:
  """Bytes one call may use on ``device`` (see `jopt.sweep.run`)."""
  env = os.environ.get("JOPT_SWEEP_MEMORY_BYTES")
  if env:
    try:
      value = float(env)  # "2e9" and "2000000000" alike
    except ValueError:
      value = float("nan")
    if not (value >= 1 and value < float("inf")):
      raise ValueError(
        f"JOPT_SWEEP_MEMORY_BYTES must be a number of bytes "
        f">= 1 (such as 2e9), got {env!r}."
      )
    return int(value)
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
  footprint = _FOOTPRINTS.get(None, owner=compiled, default=_UNKNOWN)
  if footprint is not _UNKNOWN:
    return footprint
  try:
    ma = compiled.memory_analysis()
  except Exception:  # noqa: BLE001  (not every backend implements it)
    ma = None
  footprint = (
    None
    if ma is None
    else int(
      ma.argument_size_in_bytes
      + ma.output_size_in_bytes
      + ma.temp_size_in_bytes
      - ma.alias_size_in_bytes
    )
  )
  _FOOTPRINTS.put(None, footprint, owner=compiled)
  return footprint


def _user_stacklevel() -> int:
  """The ``stacklevel`` of the first frame outside jopt (the user's call)."""
  frame, level = sys._getframe(1), 1
  while frame is not None and frame.f_code.co_filename.startswith(_JOPT_DIR):
    frame, level = frame.f_back, level + 1
  return level


_JOPT_DIR = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def check_budget(ex: Any, program: Any) -> None:
  """Records ``program``'s footprint; warns when it is over the budget (a
  call that cannot shrink: one group of lanes per device, or a population
  that trains together)."""
  footprint = compiled_bytes(program)
  if footprint is None:
    return
  ex.memory_bytes = max(ex.memory_bytes or 0, footprint)
  budget = memory_budget(ex.devices[0])
  if footprint > budget:
    warnings.warn(
      f"one group of {ex.lanes} lanes per device needs {footprint} bytes, "
      f"more than the memory budget of {budget} bytes; running it anyway. "
      f"Pass a smaller lanes= (or raise JOPT_SWEEP_MEMORY_BYTES).",
      _common.MemoryBudgetWarning,
      stacklevel=_user_stacklevel(),
    )


def plan(ex: Any, n: int, max_parallel: int | None) -> tuple[int, int]:
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


def fit(
  ex: Any,
  n: int,
  max_parallel: int | None,
  program_for: Callable[[int, int], Any],
) -> tuple[int, int]:
  """``(size, ndev)`` of the calls for ``n`` trials.

  With ``max_parallel`` the calls are `plan`'s. Without, the largest call
  whose compiled footprint (``program_for(size, ndev)``, compiled through
  `get`, so the program that fits is the one that runs) fits the budget:
  it shrinks in proportion, then along the line through the last two
  footprints, down to one group of lanes per device. On CPU a call of one
  group per device cannot shrink, so it is not compiled here: `call`
  checks its footprint (XLA's memory analysis, as long as a small trial)
  while it runs. On accelerators, where running out of memory is a hard
  error, it is checked before.
  """
  size, ndev = plan(ex, n, max_parallel)
  unit = ex.lanes * ndev
  if max_parallel is not None or (ex.platform == "cpu" and size <= unit):
    return size, ndev
  program = program_for(size, ndev)
  footprint = compiled_bytes(program)
  if footprint is None:
    return size, ndev
  budget = memory_budget(ex.devices[0])
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
    program = program_for(size, ndev)
    footprint = compiled_bytes(program)
    points.append((new, footprint))
  ex.checked.add(id(program))
  check_budget(ex, program)
  return size, ndev


def run_trials(
  ex: Any,
  fn: Callable[[Any, Any], Any],
  batched: Any,
  shared: Any,
  *,
  owner: Any,
  name: str,
  key: Hashable = (),
  keep: Any = None,
) -> Any:
  """``fn`` over every trial, in calls that fit the memory budget.

  Args:
    ex: the search's executor.
    fn: ``fn(row, shared) -> outputs`` of one trial.
    batched: host arrays with a leading trial axis (a pytree); its rows
      are the trials.
    shared: host arrays every trial gets (a pytree, replicated).
    owner, name, key, keep: what the program is cached by (see `get`).

  Returns:
    The outputs as numpy arrays with one row per trial.
  """
  n = len(jax.tree.leaves(batched)[0])

  def program_for(size, ndev):
    def abstract(x, rows, sharding):
      x = np.asarray(x)
      shape = x.shape if rows is None else (rows, *x.shape[1:])
      return jax.ShapeDtypeStruct(shape, x.dtype, sharding=sharding)

    args = (
      jax.tree.map(lambda x: abstract(x, size, ex.sharding(ndev)), batched),
      jax.tree.map(
        lambda x: abstract(x, None, ex.sharding(ndev, replicated=True)),
        shared,
      ),
    )
    return get(
      ex,
      lambda: ex.per_trial(fn, ndev, (0, None)),
      args,
      owner=owner,
      name=name,
      key=key,
      keep=keep,
    )

  size, ndev = fit(ex, n, None, program_for)
  parts = []
  for lo in range(0, n, size):
    count = min(size, n - lo)
    rows = lo + _executor.pad_rows(count, size)
    out = call(
      ex,
      program_for(size, ndev),
      ex.put(jax.tree.map(lambda x, r=rows: np.asarray(x)[r], batched), ndev),
      ex.put_replicated(shared, ndev),
    )
    parts.append(jax.tree.map(lambda x, c=count: x[:c], ex.gather(out)))
  return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
