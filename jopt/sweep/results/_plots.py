"""Plots of a sweep: metric vs hyperparameters, curves, parallel coordinates.

Figures are built with `matplotlib.figure.Figure` and the Agg canvas, never
through pyplot's global state, so they work headless, in threads and in
notebooks alike (a notebook displays the returned figure).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from jopt.sweep import _common


def _matplotlib(what: str):
  """matplotlib, or an ImportError naming the extra that installs it."""
  return _common.require("matplotlib", _common.EXTRA, what)


def _figure(
  ncols: int = 1,
  width: float = 4.0,
  height: float = 3.2,
  what: str = "plotting",
):
  _matplotlib(what)
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(width * ncols, height), layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def _finish(fig, path: str | os.PathLike | None, dpi: int = 100):
  """Saves ``fig`` as a PNG at ``path`` (atomically), returns it."""
  if path is not None:
    with _common.atomic_write(path) as f:
      fig.savefig(f, format="png", dpi=dpi)
  return fig


def _is_log(result, name: str) -> bool:
  dist = result.space.get(name)
  return bool(dist is not None and dist.log)


def _positions(values: np.ndarray) -> tuple[np.ndarray, list[str] | None]:
  """Numeric x positions; categories become 0..k-1 with labels."""
  if np.issubdtype(values.dtype, np.number) or values.dtype == bool:
    return values.astype(np.float64), None
  labels = list(dict.fromkeys(str(v) for v in values))
  return np.array([labels.index(str(v)) for v in values], float), labels


def _y_axis(ax, y: np.ndarray) -> float:
  """A log y axis for positive values spread over a decade or more; else a
  linear one clipped above the bulk, so one outlier (an almost diverged
  trial) does not flatten the rest. Returns the top edge."""
  if not y.size:
    return 1.0
  if np.all(y > 0) and y.max() / y.min() >= 10.0:
    ax.set_yscale("log")
    return float(y.max())
  q1, q3 = np.percentile(y, [25, 75])
  top = float(min(y.max(), q3 + 3.0 * max(q3 - q1, 1e-12)))
  if top < y.max():
    low = float(y.min())
    ax.set_ylim(low - 0.05 * (top - low), top + 0.05 * (top - low))
  return top


def plot(result, metric: str, path: str | os.PathLike | None = None):
  """`SweepResult.plot` of ``result``."""
  _matplotlib("SweepResult.plot")
  y = result.scalar(metric).astype(np.float64)
  se_name = f"{metric}_se"
  se = (
    result.scalar(se_name).astype(np.float64)
    if se_name in result.metrics
    else None
  )
  ok = ~result._failed() & np.isfinite(y)
  names = list(result.hparams)
  fig = _figure(len(names))
  axes = fig.subplots(1, len(names), squeeze=False)[0]
  for ax, name in zip(axes, names, strict=True):
    x, labels = _positions(result.hparams[name])
    order = np.argsort(x[ok], kind="stable")
    xs, ys = x[ok][order], y[ok][order]
    # A line only through a one-dimensional sweep: joining samples of a
    # several-dimensional space draws a path that means nothing.
    style = "o-" if len(names) == 1 else "o"
    if se is not None:
      ax.errorbar(
        xs,
        ys,
        yerr=se[ok][order],
        fmt=style,
        ms=4,
        lw=0.8,
        capsize=2,
        alpha=0.8,
        label="mean ± se",
      )
    else:
      ax.plot(xs, ys, style, ms=4, lw=0.8, alpha=0.8)
    top = _y_axis(ax, ys)
    clipped = ys > top
    if clipped.any():
      ax.plot(
        xs[clipped],
        np.full(clipped.sum(), top),
        "^",
        color="C1",
        ms=5,
        label="above the axis",
      )
    if (~ok).any():
      ax.plot(x[~ok], np.full((~ok).sum(), top), "rx", label="diverged")
    if (~ok).any() or clipped.any() or se is not None:
      ax.legend(loc="best", fontsize="small")
    if _is_log(result, name):
      ax.set_xscale("log")
    if labels is not None:
      ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel(name)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
  return _finish(fig, path)


def _default_by(result) -> str:
  for name, v in result.hparams.items():
    if np.issubdtype(v.dtype, np.number):
      return name
  return next(iter(result.hparams))


def plot_curves(
  result,
  metric: str,
  by: str | None = None,
  path: str | os.PathLike | None = None,
):
  """`SweepResult.plot_curves` of ``result``."""
  matplotlib = _matplotlib("SweepResult.plot_curves")
  from matplotlib import cm, colors

  curves = np.asarray(result.metrics[metric], np.float64)
  if curves.ndim != 2:
    raise ValueError(
      f"plot_curves needs a [N, T] metric; {metric!r} has shape {curves.shape}."
    )
  by = by or _default_by(result)
  if by not in result.hparams:
    raise ValueError(f"unknown hyperparameter {by!r}.")
  x, labels = _positions(result.hparams[by])
  if _is_log(result, by) and (x > 0).all():
    norm = colors.LogNorm(x.min(), x.max())
  else:
    norm = colors.Normalize(x.min(), max(x.max(), x.min() + 1e-12))
  cmap = matplotlib.colormaps["viridis"]
  fig = _figure(width=6.0, height=4.0)
  ax = fig.subplots()
  failed = result._failed()
  for i in range(len(curves)):
    style = ":" if failed[i] else "-"
    ax.plot(curves[i], style, color=cmap(norm(x[i])), lw=1.0, alpha=0.8)
  mappable = cm.ScalarMappable(norm=norm, cmap=cmap)
  bar = fig.colorbar(mappable, ax=ax, label=by)
  if labels is not None:
    bar.set_ticks(range(len(labels)), labels=labels)
  ax.set_xlabel("step")
  ax.set_ylabel(metric)
  ax.grid(alpha=0.3)
  return _finish(fig, path)


def plot_parallel(
  result,
  metric: str,
  path: str | os.PathLike | None = None,
  names: Sequence[str] | None = None,
):
  """`SweepResult.plot_parallel` of ``result``."""
  matplotlib = _matplotlib("SweepResult.plot_parallel")
  from matplotlib import cm, colors

  names = list(names or result.hparams)
  y = result.scalar(metric).astype(np.float64)
  ok = ~result._failed() & np.isfinite(y)
  cols: list[np.ndarray] = []
  ticks: list[tuple[Any, Any]] = []
  for name in names:
    x, labels = _positions(result.hparams[name])
    if _is_log(result, name) and (x > 0).all():
      x = np.log10(x)
    cols.append(x)
    ticks.append((labels, _is_log(result, name)))
  cols.append(y)
  if not ok.any():
    raise ValueError(
      f"plot_parallel: no trial has a finite {metric!r} (all "
      f"{len(y)} diverged); there is nothing to draw."
    )
  data = np.stack(cols, 1)[ok]
  lo, hi = data.min(0), data.max(0)
  scaled = (data - lo) / np.where(hi > lo, hi - lo, 1.0)
  norm = colors.Normalize(
    y[ok].min() if ok.any() else 0.0, y[ok].max() if ok.any() else 1.0
  )
  cmap = matplotlib.colormaps["viridis_r"]
  fig = _figure(width=1.6 * (len(names) + 1) + 1.5, height=4.0)
  ax = fig.subplots()
  xs = np.arange(len(names) + 1)
  for row, val in zip(scaled, y[ok], strict=True):
    ax.plot(xs, row, color=cmap(norm(val)), lw=1.0, alpha=0.7)
  ax.set_xticks(
    xs,
    [f"log10 {n}" if t[1] else n for n, t in zip(names, ticks, strict=True)]
    + [metric],
  )
  for j in xs:
    ax.axvline(j, color="k", lw=0.5)
  for j, (lo_j, hi_j) in enumerate(zip(lo, hi, strict=True)):
    labels = ticks[j][0] if j < len(names) else None
    if labels is not None:  # a categorical axis: name each category
      for k, label in enumerate(labels):
        pos = (k - lo_j) / (hi_j - lo_j) if hi_j > lo_j else 0.0
        ax.annotate(
          label,
          (j, pos),
          textcoords="offset points",
          xytext=(3, 0),
          fontsize="x-small",
          va="center",
        )
      continue
    ax.annotate(
      f"{hi_j:.3g}",
      (j, 1.0),
      textcoords="offset points",
      xytext=(2, 2),
      fontsize="x-small",
    )
    ax.annotate(
      f"{lo_j:.3g}",
      (j, 0.0),
      textcoords="offset points",
      xytext=(2, -9),
      fontsize="x-small",
    )
  ax.set_yticks([])
  fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=metric)
  return _finish(fig, path)
