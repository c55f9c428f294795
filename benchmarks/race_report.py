"""The race's reporting: quartiles over repeats, anytime curves, the plot."""

from __future__ import annotations

import numpy as np


def quartiles(xs):
  return np.nanpercentile(np.asarray(xs, np.float64), [25, 50, 75])


def anytime(runs, axis):
  """Median and quartiles over repeats of the incumbent's true quality.

  ``axis`` 0 is wall-clock, 1 member-steps; before a study's first finished
  trial its quality is infinite (it has nothing to give).
  """
  grid = np.unique(
    np.concatenate([[p[axis] for p in r["timeline"]] for r in runs])
  )
  rows = []
  for r in runs:
    xs = np.asarray([p[axis] for p in r["timeline"]])
    qs = np.asarray([p[3] for p in r["timeline"]])
    i = np.searchsorted(xs, grid, side="right") - 1
    rows.append(np.where(i >= 0, qs[np.maximum(i, 0)], np.inf))
  # Percentiles of inf warn; a huge stand-in sorts the same way.
  rows = np.minimum(np.asarray(rows), 1e30)
  qs = np.percentile(rows, [25, 50, 75], axis=0)
  return grid, np.where(qs >= 1e30, np.inf, qs)


def at(grid, curve, x):
  i = np.searchsorted(grid, x, side="right") - 1
  return np.inf if i < 0 else float(curve[i])


def plot(path, results, curves):
  """Anytime curves of ``curves``, one point with IQR bars for the rest."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
  for ax, axis, label in (
    (axes[0], 0, "wall-clock, s (compiles included)"),
    (axes[1], 1, "member-steps"),
  ):
    for name in curves:
      grid, (lo, med, hi) = anytime(results[name], axis)
      ok = np.isfinite(hi)
      ax.step(
        grid, np.where(np.isfinite(med), med, np.nan), where="post", label=name
      )
      ax.fill_between(grid[ok], lo[ok], hi[ok], step="post", alpha=0.2)
    for name, runs in results.items():
      if name in curves:
        continue
      x = quartiles([r["wall" if axis == 0 else "steps"] for r in runs])
      q = quartiles([r["true"] for r in runs])
      ax.errorbar(
        [x[1]],
        [q[1]],
        xerr=[[x[1] - x[0]], [x[2] - x[1]]],
        yerr=[[q[1] - q[0]], [q[2] - q[1]]],
        fmt="o",
        capsize=3,
        label=name,
      )
    ax.set_xscale("log")
    ax.set_xlabel(label)
    # Before the first good incumbent the curves start far above the rest.
    finals = [
      quartiles([r["true"] for r in runs])[2] for runs in results.values()
    ]
    ax.set_ylim(
      0.9
      * min(
        quartiles([r["true"] for r in runs])[0] for runs in results.values()
      ),
      1.5 * max(finals),
    )
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("true quality: test loss of the pick, 3 fresh seeds")
  axes[1].legend(fontsize=7)
  fig.suptitle("Anytime true quality, median and IQR over repeats")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
