"""The result of the learning-rate range test: curves and suggestions.

`LRFindResult` holds the curves `jopt.sweep.lr_find` measured; `suggest`
reads the learning rates to suggest from them, or none when the loss never
fell (told apart from noise, see `_suggest`).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np

from jopt.sweep import _common
from jopt.sweep.results import _plots

# A descent is a fall from the starting level to the curve's lowest point
# larger than this many deviations of their difference, plus the depth the
# lowest of n noisy points reaches by chance (sqrt(2 ln n) deviations).
# Simulated with Gaussian noise (1000 runs each, 100 steps, smoothing 0,
# 0.9 or 0.98, 1 or 4 seeds), a flat or rising loss never passed and a fall
# of 8 noise deviations was never missed; over 30 steps with one seed, a
# flat loss passed up to 2 times in 1000 and such a fall was missed 8% of
# the time (45% at smoothing 0.98, whose curve lags a 30-step ramp).
_DESCENT_SIGMAS = 3.0
# ... and by this fraction of the starting level, for losses without noise.
_DESCENT_RTOL = 1e-3


@dataclasses.dataclass
class LRFindResult:
  """The curves of a learning-rate range test and the suggested rates.

  Attributes:
    learning_rates: [T] the learning rate of each step (with ``num_rates``:
      [R], the fixed rates).
    losses: [S, T] each seed's raw loss (NaN once it diverged); with
      ``num_rates``, [S, R] the last step's loss of each run.
    smoothed: [S, T] each seed's smoothed, bias-corrected loss (NaN once it
      diverged); with ``num_rates``, [S, R] each run's final smoothed loss
      (NaN if it diverged).
    curve: [T] (or [R]) the seed-mean smoothed loss, NaN from the first
      point where any seed diverged.
    suggestions: ``"steep"`` (steepest descent of the curve against
      log-LR), ``"valley"`` (two thirds into the longest descent) and
      ``"minimum"`` (the LR of the lowest loss, divided by 10 for the ramp,
      whose lowest point comes just before the rates overshoot, but never
      below ``min_lr``; as it is for fixed-rate runs). All three are NaN,
      with a warning, when the loss never fell meaningfully below its
      first value (see `lr_find`).
    num_compiles, num_cached, compile_time, memory_bytes: the compile
      statistics every search reports, as in `jopt.sweep.SweepResult`.

  Example: see `lr_find`; ``res.plot("lr_find.png")`` draws the curve on a
  log axis with the suggestions marked.
  """

  learning_rates: np.ndarray
  losses: np.ndarray
  smoothed: np.ndarray
  curve: np.ndarray
  suggestions: dict[str, float]
  num_compiles: int = 0
  compile_time: float = 0.0
  memory_bytes: int | None = None
  num_cached: int = 0

  def plot(self, path: str | None = None, *, ax: Any = None):
    """Loss against learning rate on a log axis, suggestions marked.

    Args:
      path: save the figure there as a PNG when given.
      ax: draw on this matplotlib Axes instead of a new figure.

    Returns:
      The matplotlib Figure.
    """
    _common.require("matplotlib", _common.EXTRA, "LRFindResult.plot")
    if ax is None:
      fig = _plots._figure(width=6.0, height=4.0)
      ax = fig.subplots()
    else:
      fig = ax.figure
    for seed_curve in self.smoothed:
      ax.plot(self.learning_rates, seed_curve, color="0.75", lw=0.8)
    ax.plot(
      self.learning_rates,
      self.curve,
      color="C0",
      lw=2,
      label="smoothed loss (mean over seeds)",
    )
    for i, (name, lr) in enumerate(self.suggestions.items()):
      if np.isfinite(lr):  # NaN: the loss never fell, nothing to mark
        ax.axvline(lr, color=f"C{i + 1}", ls="--", label=f"{name}: {lr:.2e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    finite = self.curve[np.isfinite(self.curve)]
    if finite.size:
      # Up to the first loss (the rise past it is the overshoot), or the
      # highest when the loss never fell.
      low = finite.min()
      high = finite[0] if finite[0] > low else finite.max()
      if high > low:
        ax.set_ylim(low - 0.1 * (high - low), high + 0.5 * (high - low))
    ax.legend()
    return _plots._finish(fig, path, dpi=120)


def _valley(curve: np.ndarray) -> int:
  """Index two thirds into the longest decreasing subsequence of ``curve``."""
  n = len(curve)
  length = np.ones(n, np.int64)
  begin = np.arange(n)
  for i in range(1, n):
    earlier = np.flatnonzero(curve[:i] > curve[i])
    if earlier.size:
      j = earlier[np.argmax(length[earlier])]
      if length[j] + 1 > length[i]:
        length[i], begin[i] = length[j] + 1, begin[j]
  end = int(np.argmax(length))
  start = int(begin[end])
  return start + (end - start) * 2 // 3


def _noise(losses: np.ndarray) -> float:
  """The standard deviation of a raw loss around its trend, [S, T] -> ().

  From second differences along the run, which cancel any locally linear
  trend: for independent noise of deviation s each has deviation
  ``sqrt(6) s``, and the median of their absolute values (x 1.4826, the
  normal consistency factor) ignores the few steps where the trend bends.
  """
  losses = np.asarray(losses, np.float64)
  second = losses[:, 2:] - 2 * losses[:, 1:-1] + losses[:, :-2]
  second = second[np.isfinite(second)]
  if second.size == 0:
    return 0.0
  return float(1.4826 * np.median(np.abs(second)) / np.sqrt(6.0))


def _ema_noise(smoothing: float, num_steps: int) -> np.ndarray:
  """[T] deviation of the bias-corrected EMA at each step, per unit noise.

  For independent losses of deviation 1, the EMA after step t has variance
  (1 - b)^2 (1 - b^(2t+2)) / (1 - b^2), divided by (1 - b^(t+1))^2.
  """
  b = float(smoothing)
  t = np.arange(num_steps, dtype=np.float64)
  if b == 0.0:
    return np.ones(num_steps)
  var = (1 - b) ** 2 * (1 - b ** (2 * t + 2)) / (1 - b * b)
  return np.sqrt(var) / (1 - b ** (t + 1))


def _start(losses: np.ndarray, head: int) -> float:
  """The seed-mean raw loss at the first step, fitted on ``head`` steps.

  A straight line through the first finite seed-mean losses, read at step
  0: far less noisy than the first loss alone, and unbiased when the loss
  already moves there.
  """
  mean = np.asarray(losses, np.float64).mean(axis=0)[:head]
  mean = mean[
    : len(mean)
    if np.isfinite(mean).all()
    else int(np.argmin(np.isfinite(mean)))
  ]
  if len(mean) < 2:
    return float(mean[0]) if len(mean) else float("nan")
  return float(np.polyfit(np.arange(len(mean)), mean, 1)[1])


def _suggest(
  lrs: np.ndarray,
  curve: np.ndarray,
  losses: np.ndarray,
  curve_noise: np.ndarray,
  divide_minimum: float = 10.0,
) -> dict[str, float]:
  """The suggested learning rates for a seed-mean ``curve`` over ``lrs``.

  ``losses`` are the raw [S, T] losses the curve came from and
  ``curve_noise`` [T] the deviation of each curve point per unit of their
  noise (see `_ema_noise`); they decide whether the curve fell at all. If it
  did not, every suggestion is NaN and a warning says why.
  """
  valid = np.flatnonzero(np.isfinite(curve))
  if valid.size < 3:
    raise ValueError(
      "lr_find: the loss diverged within the first steps; lower min_lr."
    )
  lrs, curve = lrs[: valid[-1] + 1], curve[: valid[-1] + 1]
  # The curve is a mean over seeds: its noise shrinks as 1/sqrt(seeds).
  noise = _noise(losses) / np.sqrt(len(losses))
  head = max(3, len(losses[0]) // 10)
  first = _start(losses, head)
  # The start's deviation: a line fitted on k points read at the first,
  # sqrt((4k - 2) / (k (k + 1))) times the noise.
  start_sd = noise * np.sqrt((4 * head - 2) / (head * (head + 1)))
  rest = curve[head:] if len(curve) > head else curve
  low_sd = noise * float(
    np.max(curve_noise[len(curve) - len(rest) : len(curve)])
  )
  lowest = float(np.min(rest))
  margin = max(
    _DESCENT_SIGMAS * np.hypot(start_sd, low_sd)
    + np.sqrt(2 * np.log(len(rest))) * low_sd,
    _DESCENT_RTOL * abs(first),
  )
  if not first - lowest > margin:
    warnings.warn(
      f"lr_find: the loss never fell meaningfully below its starting "
      f"level ({first:.4g}; lowest {lowest:.4g}, noise {noise:.2g}) between "
      f"{lrs[0]:.2e} and {lrs[-1]:.2e}: no learning rate is suggested "
      "(NaN). Check the model and the loss, or widen the range.",
      UserWarning,
      stacklevel=3,
    )
    return dict.fromkeys(("steep", "valley", "minimum"), float("nan"))
  slope = np.gradient(curve, np.log(lrs))
  skip = len(curve) // 10  # the first steps are dominated by bias correction
  # Below the first rate nothing was measured: never suggest lower.
  minimum = max(
    float(lrs[int(np.argmin(curve))]) / divide_minimum, float(lrs[0])
  )
  return {
    "steep": float(lrs[skip + int(np.argmin(slope[skip:]))]),
    "valley": float(lrs[_valley(curve)]),
    "minimum": minimum,
  }


def _mean_curve(smooth: np.ndarray) -> np.ndarray:
  """[S, T] -> [T]: the seed mean, NaN from the first point any seed lost."""
  all_valid = np.isfinite(smooth).all(axis=0)
  stop = len(all_valid) if all_valid.all() else int(np.argmin(all_valid))
  curve = np.full(len(all_valid), np.nan, np.float32)
  curve[:stop] = smooth[:, :stop].mean(axis=0)
  return curve
