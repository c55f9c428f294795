"""Live progress from inside a compiled sweep: `report`.

A training function calls ``jopt.sweep.report(step, loss=...)`` inside its
``lax.scan``; when the sweep shows progress, each call becomes a host
callback (``jax.debug.callback``) that moves the bar by trial-steps and
shows the best value so far. When progress is off (``progress=False``,
``JOPT_PROGRESS=0``, or outside a sweep) `report` adds nothing to the
program, so it costs nothing.

The sweep decides at trace time: while it lowers its program it names the
trial each lane computes in a JAX user context (`jax.make_user_context`,
for its own thread only). The context is part of the key ``jax.jit`` caches
traces by, so a user's own jitted helper that calls `report` is traced again
for each sweep's lanes instead of reusing a trace that holds the tracer of
an earlier one. The callback is one function per set of metric names,
which hands the values to the sweep running now, so an executable compiled
for one sweep can be reused by the next.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt.sweep.runtime import _caches

_TRACE = threading.local()  # the report budget while a sweep lowers
# Callbacks `scan` makes per device in one call of a sweep, at most (or
# ``num_reports`` per trial, if fewer): enough for a smooth bar.
REPORTS_PER_CALL = 64
_LOCK = threading.Lock()
_RUNNING: list[Reporter] = []  # the sweep whose calls are executing


class _Lane:
  """The trial a lane computes, while a sweep lowers (hashed by identity)."""

  __slots__ = ("trial",)

  def __init__(self, trial: Any):
    self.trial = trial


# The `_Lane` of the trace being lowered now, or None (progress off, or not
# in a sweep). In jax.jit's cache key: see the module docstring.
_LANE = jax.make_user_context(None)
_RECEIVERS = _caches.Cache("progress callbacks by metric names", 256)


def report(
  step: Any,
  *,
  num_steps: int | None = None,
  every: int = 1,
  mode: str = "min",
  **metrics: Any,
) -> None:
  """Reports a trial's progress and metrics from inside ``train_fn``.

  Call it inside the training loop (a ``lax.scan`` body, say) with the step
  counter; the progress bar of `jopt.sweep.run` then advances by
  trial-steps and shows the best value of the first metric reported so far.
  Outside a sweep that shows progress it does nothing (and compiles to
  nothing). Under vmap, sharding and on several processes each lane
  reports for its own trial; only process 0 shows a bar.

  Args:
    step: the step counter (an int scalar, the same for every trial: the
      loop's counter, not a per-trial value).
    num_steps: the steps a trial runs, so the bar can count fractions of
      trials; without it a trial counts once its call finishes.
    every: report only when ``step % every == 0`` (a Python int >= 1), to
      keep host callbacks rare in long loops.
    mode: ``"min"`` or ``"max"``: how the first metric is ranked for the
      running best.
    **metrics: scalars to show (the first is ranked).

  Example:
    >>> import jax, jax.numpy as jnp, jopt
    >>> def train_fn(hp, key):
    ...   def step(w, t):
    ...     w = w - hp["lr"] * w
    ...     jopt.sweep.report(t, num_steps=10, loss=w * w)
    ...     return w, w * w
    ...   _, losses = jax.lax.scan(step, jnp.float32(1.0), jnp.arange(10))
    ...   return {"loss": losses[-1]}
    >>> res = jopt.sweep.run(train_fn, {"lr": jopt.sweep.uniform(0.1, 0.5)},
    ...                      num_trials=4, key=jax.random.key(0),
    ...                      progress=False)
    >>> len(res)
    4
  """
  if isinstance(every, bool) or not isinstance(every, int) or every < 1:
    raise ValueError(f"every must be an int >= 1, got {every!r}.")
  if mode not in ("min", "max"):
    raise ValueError(f"mode must be 'min' or 'max', got {mode!r}.")
  lane = _LANE.value
  if lane is None:
    return
  trial = lane.trial
  step = jnp.asarray(step)
  total = -1 if num_steps is None else int(num_steps)
  # One float32 array per call: JAX places every argument of a host
  # callback on the CPU device one by one, and that placement, not the
  # call, is most of a callback's cost. The integers travel bit-cast.
  ints = jnp.stack(
    [
      jnp.asarray(trial, jnp.int32),
      step.astype(jnp.int32),
      jnp.int32(total),
      jnp.int32(1 if mode == "min" else -1),
    ]
  )
  packed = jnp.concatenate(
    [jax.lax.bitcast_convert_type(ints, jnp.float32)]
    + [jnp.asarray(v, jnp.float32).reshape(-1)[-1:] for v in metrics.values()]
  )
  receive = _receiver(tuple(metrics))

  def emit():
    jax.debug.callback(receive, packed)

  if every == 1:
    emit()
  else:
    jax.lax.cond(step % every == 0, emit, lambda: None)


def scan(
  f: Callable[[Any, Any], tuple[Any, Any]],
  init: Any,
  xs: Any = None,
  length: int | None = None,
  *,
  num_reports: int = 10,
  unroll: int | bool = 1,
  metrics: Callable[[Any, Any], dict[str, Any]] | None = None,
  mode: str = "min",
) -> tuple[Any, Any]:
  """`jax.lax.scan` that reports its progress to the sweep running it.

  The cheapest way to show live progress: the loop runs as
  ``num_reports`` segments of equal length, each a ``lax.scan``, and
  `report` is called once after each segment, outside the inner loop. A
  `report` inside the loop body instead costs a host callback (or, with
  ``every``, a conditional) at every step. Outside a sweep that shows
  progress it adds no callback, and it computes the same values with
  progress on or off (against a flat ``lax.scan`` XLA may round the last
  bit differently, as it may for any change of loop structure).

  Args:
    f: the loop body, ``f(carry, x) -> (carry, y)``, as for ``lax.scan``.
    init: the initial carry.
    xs: what to scan over (a pytree with a leading axis), or None.
    length: the number of steps (needed when ``xs`` is None).
    num_reports: how many times each trial reports (an int >= 1; at most
      one per step). Steps that do not divide evenly run first, unreported.
      The loop always runs as this many segments; a sweep whose devices
      each run many trials in one call skips some of their reports, so
      that a call makes about 64 callbacks per device.
    metrics: ``metrics(carry, ys) -> {name: scalar}``, the values shown
      after a segment, from the carry and the segment's outputs ``ys``.
      The default reports the mean over the segment of ``y`` when it is a
      scalar (as ``loss``) or of each scalar entry of a dict ``y``.
    mode: ``"min"`` or ``"max"``: how the first metric is ranked.
    unroll: as for ``lax.scan``: how many steps each iteration of the
      inner loops runs (an int >= 1, or True for all of them).

  Returns:
    ``(carry, ys)``, as ``lax.scan`` returns them.

  Example:
    >>> import jax, jax.numpy as jnp, jopt
    >>> def train_fn(hp, key):
    ...   def step(w, _):
    ...     w = w - hp["lr"] * w
    ...     return w, w * w
    ...   _, losses = jopt.sweep.scan(step, jnp.float32(1.0), length=100)
    ...   return {"loss": losses[-1]}
    >>> res = jopt.sweep.run(train_fn, {"lr": jopt.sweep.uniform(0.1, 0.5)},
    ...                      num_trials=4, key=jax.random.key(0),
    ...                      progress=False)
    >>> len(res)
    4
  """
  if (
    isinstance(num_reports, bool)
    or not isinstance(num_reports, int)
    or num_reports < 1
  ):
    raise ValueError(f"num_reports must be an int >= 1, got {num_reports!r}.")
  if mode not in ("min", "max"):
    raise ValueError(f"mode must be 'min' or 'max', got {mode!r}.")
  if not isinstance(unroll, bool) and (
    not isinstance(unroll, int) or unroll < 1
  ):
    raise ValueError(f"unroll must be an int >= 1 or a bool, got {unroll!r}.")
  x_leaves = jax.tree.leaves(xs)
  if length is None:
    if not x_leaves:
      raise ValueError("scan needs xs or length.")
    length = int(x_leaves[0].shape[0])
  if length < 1:
    return jax.lax.scan(f, init, xs, length, unroll=unroll)
  # The same nested loops whether the sweep reports or not (XLA may round
  # a nested loop's steps differently from a flat one's), so progress
  # never changes a value; without progress `report` adds nothing.
  n = min(num_reports, length)
  every = length // n
  head = length - n * every
  metrics = metrics or _mean_metrics
  carry, head_ys = jax.lax.scan(
    f, init, jax.tree.map(lambda x: x[:head], xs), head, unroll=unroll
  )

  # A sweep caps the callbacks of one call (`reports_per_trial`): each
  # costs about as much as a few small steps, and a device running many
  # short trials needs no more than a smooth bar. Segments then report
  # every ``stride``-th time (and at the last), under a conditional.
  budget = getattr(_TRACE, "reports", None)
  stride = 1 if budget is None else -(-n // max(1, budget))
  reporting = _LANE.value is not None

  def segment(carry, inputs):
    i, seg_xs = inputs
    carry, ys = jax.lax.scan(f, carry, seg_xs, every, unroll=unroll)

    def emit():
      report(
        head + (i + 1) * every - 1,
        num_steps=length,
        mode=mode,
        **metrics(carry, ys),
      )

    if reporting and stride > 1:
      jax.lax.cond(((i + 1) % stride == 0) | (i == n - 1), emit, lambda: None)
    elif reporting:
      emit()
    return carry, ys

  body_xs = jax.tree.map(
    lambda x: x[head:].reshape((n, every) + x.shape[1:]), xs
  )
  carry, ys = jax.lax.scan(segment, carry, (jnp.arange(n), body_xs))
  ys = jax.tree.map(
    lambda h, y: jnp.concatenate([h, y.reshape((n * every,) + y.shape[2:])]),
    head_ys,
    ys,
  )
  return carry, ys


def _mean_metrics(carry: Any, ys: Any) -> dict[str, Any]:
  del carry
  if isinstance(ys, Mapping):
    return {
      k: jnp.mean(v)
      for k, v in ys.items()
      if jnp.ndim(v) == 1 and jnp.issubdtype(jnp.result_type(v), jnp.floating)
    }
  if ys is not None and jnp.ndim(ys) == 1:
    return {"loss": jnp.mean(ys)}
  return {}


def _receiver(names: tuple[str, ...]):
  # One function per set of metric names, so that a program lowered again
  # (a notebook cell run twice) names the same callback and its executable
  # is reused.
  receive = _RECEIVERS.get(names)
  if receive is None:
    receive = _new_receiver(names)
    _RECEIVERS.put(names, receive)
  return receive


def _new_receiver(names: tuple[str, ...]):
  def receive(packed) -> None:
    packed = np.asarray(packed)
    trial, step, total, sign = packed[:4].view(np.int32).tolist()
    with _LOCK:
      reporter = _RUNNING[-1] if _RUNNING else None
    if reporter is not None:
      values = dict(zip(names, packed[4:].tolist(), strict=True))
      reporter.receive(trial, step, values, total, float(sign))

  return receive


@contextlib.contextmanager
def reports_per_trial(count: int | None):
  """While lowering: `scan` reports at most ``count`` times per trial."""
  previous = getattr(_TRACE, "reports", None)
  _TRACE.reports = count
  try:
    yield
  finally:
    _TRACE.reports = previous


@contextlib.contextmanager
def tracing(trial: Any, enabled: bool):
  """While lowering: `report` calls made now belong to lane ``trial``."""
  with _LANE(_Lane(trial) if enabled else None):
    yield


class Reporter:
  """Turns the callbacks of running trials into progress on one bar."""

  def __init__(
    self,
    bar: Any,
    interval: float = 0.2,
    metric: str | None = None,
    mode: str = "min",
  ):
    self.bar = bar
    self.interval = interval
    # With a metric, the bar shows its best value among finished trials
    # (what the search ranks by) once one has finished; until then, the
    # live training reports.
    self.metric = metric
    self.sign = 1.0 if mode == "min" else -1.0
    self.done: dict[int, float] = {}  # trial -> fraction counted on the bar
    self.best: tuple[str, float, float] | None = None  # name, value, sign
    self.pending = 0.0
    self.last_draw = 0.0
    self.lock = threading.Lock()
    if hasattr(bar, "bar_format"):  # tqdm: fractions of trials, one decimal
      bar.bar_format = (
        "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/"
        "{total_fmt} [{elapsed}<{remaining}{postfix}]"
      )

  def __enter__(self) -> Reporter:
    with _LOCK:
      _RUNNING.append(self)
    return self

  def __exit__(self, *exc: Any) -> None:
    jax.effects_barrier()  # callbacks still in flight land here first
    with _LOCK:
      _RUNNING.remove(self)
    self._draw(force=True)
    if hasattr(self.bar, "refresh"):  # tqdm: no float dust at the end
      self.bar.n = round(self.bar.n, 6)
      self.bar.refresh()

  def receive(
    self, trial: int, step: int, values: dict, total: int, sign: float
  ) -> None:
    with self.lock:
      if total > 0:
        fraction = min(1.0, (step + 1) / total)
        gain = fraction - self.done.get(trial, 0.0)
        if gain > 0:
          self.done[trial] = fraction
          self.pending += gain
      # With a metric, live reports show until a finished trial's value
      # of it arrives, which then replaces them.
      if values and (self.best is None or self.best[0] != self.metric):
        name, value = next(iter(values.items()))
        value = float(np.asarray(value))
        if math.isfinite(value) and (
          self.best is None or sign * value < sign * self.best[1]
        ):
          self.best = (name, value, sign)
    self._draw()

  def finish(self, trials: Any, scores: Any = None) -> None:
    """Counts ``trials`` as complete (their call returned).

    ``scores``: their values of ``metric``, when the bar shows it.
    """
    with self.lock:
      for t in np.asarray(trials).tolist():
        self.pending += 1.0 - self.done.get(t, 0.0)
        self.done[t] = 1.0
      if self.metric is not None and scores is not None:
        finite = [
          float(v)
          for v in np.asarray(scores, np.float64).ravel()
          if math.isfinite(v)
        ]
        if finite:
          value = min(finite) if self.sign > 0 else max(finite)
          if (
            self.best is None
            or self.best[0] != self.metric  # a live report: replaced
            or self.sign * value < self.sign * self.best[1]
          ):
            self.best = (self.metric, value, self.sign)
    self._draw()

  def _draw(self, force: bool = False) -> None:
    now = time.monotonic()
    with self.lock:
      if not force and now - self.last_draw < self.interval:
        return
      self.last_draw = now
      pending, self.pending = self.pending, 0.0
      best = self.best
    total, done = getattr(self.bar, "total", None), getattr(self.bar, "n", None)
    if pending and total is not None and done is not None:
      pending = min(pending, total - done)  # float sums may overshoot
    if pending > 0:
      self.bar.update(pending)
    if best is not None:
      self.bar.set_postfix_str(f"best {best[0]}={best[1]:.4g}")
