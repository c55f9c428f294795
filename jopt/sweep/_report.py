"""Live progress from inside a compiled sweep: `report`.

A training function calls ``jopt.sweep.report(step, loss=...)`` inside its
``lax.scan``; when the sweep shows progress, each call becomes a host
callback (``jax.debug.callback``) that moves the bar by trial-steps and
shows the best value so far. When progress is off (``progress=False``,
``JOPT_PROGRESS=0``, or outside a sweep) `report` adds nothing to the
program, so it costs nothing.

The sweep decides at trace time: while it lowers its program it marks the
trace as reporting (for its own thread only) and names the trial each lane
computes. The callback itself is one module-level function that hands the
values to the sweep running now, so an executable compiled for one sweep
can be reused by the next.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_TRACE = threading.local()  # (trial index, tracer) while a sweep lowers
_LOCK = threading.Lock()
_RUNNING: list[Reporter] = []  # the sweep whose calls are executing


def report(step: Any, *, num_steps: int | None = None, every: int = 1,
           mode: str = "min", **metrics: Any) -> None:
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
  trial = getattr(_TRACE, "trial", None)
  if trial is None:
    return
  step = jnp.asarray(step)
  values = {k: jnp.asarray(v, jnp.float32).reshape(-1)[-1]
            for k, v in metrics.items()}
  total = -1 if num_steps is None else int(num_steps)
  sign = 1.0 if mode == "min" else -1.0

  def emit():
    jax.debug.callback(_receive, trial, step, values, total, sign)

  if every == 1:
    emit()
  else:
    jax.lax.cond(step % every == 0, emit, lambda: None)


def _receive(trial, step, values, total, sign) -> None:
  with _LOCK:
    reporter = _RUNNING[-1] if _RUNNING else None
  if reporter is not None:
    reporter.receive(int(trial), int(step), values, int(total), float(sign))


@contextlib.contextmanager
def tracing(trial: Any, enabled: bool):
  """While lowering: `report` calls made now belong to lane ``trial``."""
  previous = getattr(_TRACE, "trial", None)
  _TRACE.trial = trial if enabled else None
  try:
    yield
  finally:
    _TRACE.trial = previous


class Reporter:
  """Turns the callbacks of running trials into progress on one bar."""

  def __init__(self, bar: Any, interval: float = 0.2):
    self.bar = bar
    self.interval = interval
    self.done: dict[int, float] = {}  # trial -> fraction counted on the bar
    self.best: tuple[str, float, float] | None = None  # name, value, sign
    self.pending = 0.0
    self.last_draw = 0.0
    self.lock = threading.Lock()
    if hasattr(bar, "bar_format"):  # tqdm: fractions of trials, one decimal
      bar.bar_format = ("{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/"
                        "{total_fmt} [{elapsed}<{remaining}{postfix}]")

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

  def receive(self, trial: int, step: int, values: dict, total: int,
              sign: float) -> None:
    with self.lock:
      if total > 0:
        fraction = min(1.0, (step + 1) / total)
        gain = fraction - self.done.get(trial, 0.0)
        if gain > 0:
          self.done[trial] = fraction
          self.pending += gain
      if values:
        name, value = next(iter(values.items()))
        value = float(np.asarray(value))
        if math.isfinite(value) and (
            self.best is None or sign * value < sign * self.best[1]):
          self.best = (name, value, sign)
    self._draw()

  def finish(self, trials: Any) -> None:
    """Counts ``trials`` as complete (their call returned)."""
    with self.lock:
      for t in np.asarray(trials).tolist():
        self.pending += 1.0 - self.done.get(t, 0.0)
        self.done[t] = 1.0
    self._draw()

  def _draw(self, force: bool = False) -> None:
    now = time.monotonic()
    with self.lock:
      if not force and now - self.last_draw < self.interval:
        return
      self.last_draw = now
      pending, self.pending = self.pending, 0.0
      best = self.best
    if pending:
      self.bar.update(pending)
    if best is not None:
      self.bar.set_postfix_str(f"best {best[0]}={best[1]:.4g}")
