"""The result of a sweep: trials' hyperparameters, metrics and divergence."""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import jax
import numpy as np

from jopt.sweep import _common, _space
from jopt.sweep.results import _plots, _tensorboard


class Trial(NamedTuple):
  """One trial of a sweep: its index, hyperparameters and metrics.

  Its repr is one short line: scalar metrics as numbers (``mean ± se``
  for a sweep with ``seeds``), curves as their length and last value.
  """

  index: int
  hparams: dict[str, Any]
  metrics: dict[str, np.ndarray]

  def __repr__(self) -> str:
    hp = ", ".join(f"{k!r}: {_short(v)}" for k, v in self.hparams.items())
    shown = []
    for name, v in self.metrics.items():
      if any(
        name.endswith(s) and name[: -len(s)] in self.metrics for s in _DERIVED
      ):
        continue  # shown with (or summarised by) its base metric
      v = np.asarray(v)
      if v.ndim == 0:
        text = _short(v.item())
        se = self.metrics.get(f"{name}_se")
        if se is not None and np.ndim(se) == 0:
          text += f" ± {_short(np.asarray(se).item())}"
      else:
        last = _short(v.reshape(-1)[-1].item()) if v.size else "-"
        text = f"<{'x'.join(map(str, v.shape))} values, last {last}>"
      shown.append(f"{name!r}: {text}")
    return (
      f"Trial(index={self.index}, hparams={{{hp}}}, "
      f"metrics={{{', '.join(shown)}}})"
    )


# Metrics derived from a base metric ``name`` by `run`'s seeds and folds.
_DERIVED = ("_se", "_per_seed", "_per_fold")


def _short(v: Any) -> str:
  if isinstance(v, (float, np.floating)):
    return f"{float(v):.4g}"
  return repr(_python(v)) if isinstance(v, np.generic) else repr(v)


def _python(v: Any) -> Any:
  return v.item() if isinstance(v, np.generic) else v


def _value_to_json(value: Any) -> Any:
  """A choice value as JSON that `_value_from_json` turns back into it.

  None, bools, ints, floats and strings are plain JSON; tuples and lists
  (of such values) are tagged so each comes back as what it was; anything
  else (a function) is saved by its `_space.value_name` and loads as that text.
  """
  value = _python(value)
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  if isinstance(value, (tuple, list)):
    kind = "tuple" if isinstance(value, tuple) else "list"
    return {kind: [_value_to_json(v) for v in value]}
  return {"name": _space.value_name(value)}


def _value_from_json(spec: Any) -> Any:
  if not isinstance(spec, dict):
    return spec
  ((kind, value),) = spec.items()
  if kind == "tuple":
    return tuple(_value_from_json(v) for v in value)
  if kind == "list":
    return [_value_from_json(v) for v in value]
  return value  # a name


def _choice_index(dist: _space.Choice, value: Any) -> int | None:
  """The index of ``value`` in ``dist.values`` (same type), or None."""
  for i, orig in enumerate(dist.values):
    if orig is value:
      return i
  for i, orig in enumerate(dist.values):
    try:
      if type(orig) is type(value) and bool(orig == value):
        return i
    except (TypeError, ValueError):
      continue
  return None


def _choice_indices(dist: Any, values: np.ndarray) -> np.ndarray | None:
  """``values`` (object dtype) as int32 indices into ``dist.values``.

  None when ``dist`` is not a choice or holds some value not among them.
  """
  if not isinstance(dist, _space.Choice):
    return None
  out = np.empty(values.shape, np.int32)
  for i, v in np.ndenumerate(values):
    index = _choice_index(dist, v)
    if index is None:
      return None
    out[i] = index
  return out


def _choice_values(dist: _space.Choice, indices: np.ndarray) -> np.ndarray:
  """The values at ``indices``: strings as a str array, else objects."""
  out = np.empty(indices.shape, dtype=object)
  for i, v in np.ndenumerate(indices):
    out[i] = dist.values[int(v)]
  if all(isinstance(v, str) for v in dist.values):
    return out.astype(str)
  return out


def _space_to_json(space: Mapping[str, _space.Distribution]) -> dict:
  out = {}
  for name, d in space.items():
    if isinstance(d, _space.Choice):
      out[name] = {
        "kind": "choice",
        "static": d.static,
        "values": [_value_to_json(v) for v in d.values],
      }
    else:
      kind = {
        _space.Uniform: "uniform",
        _space.LogUniform: "log_uniform",
        _space.IntUniform: "int_uniform",
      }[type(d)]
      out[name] = {"kind": kind, "low": d.low, "high": d.high}
  return out


def _space_from_json(spec: Mapping[str, Any]) -> dict[str, _space.Distribution]:
  out = {}
  for name, d in spec.items():
    if d["kind"] == "choice":
      out[name] = _space.choice(
        [_value_from_json(v) for v in d["values"]], static=d["static"]
      )
    else:
      out[name] = getattr(_space, d["kind"])(d["low"], d["high"])
  return out


def _encode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
  """JSON for ``value``; its numpy arrays go to ``arrays`` ("x<n>" keys)."""
  if isinstance(value, jax.Array):
    value = np.asarray(value)
  if isinstance(value, np.ndarray):
    if value.dtype == object:  # choice values: functions by their names
      value = np.asarray([_space.value_name(v) for v in value.ravel()]).reshape(
        value.shape
      )
    name = f"x{sum(k.startswith('x') for k in arrays)}"
    arrays[name] = value
    return {"a": name}
  if isinstance(value, np.generic):
    value = value.item()
  if value is None or isinstance(value, (bool, int, float, str)):
    return {"v": value}
  if isinstance(value, Mapping):
    if not all(isinstance(k, str) for k in value):
      raise TypeError("only dicts with string keys can be saved")
    return {"d": {k: _encode(v, arrays) for k, v in value.items()}}
  if isinstance(value, (list, tuple)):
    return {"l": [_encode(v, arrays) for v in value]}
  raise TypeError(
    f"cannot save a {type(value).__name__} (arrays, numbers, "
    "strings, lists and dicts of them can be saved)"
  )


def _decode(spec: Mapping[str, Any], data: Any) -> Any:
  """The value `_encode` described by ``spec`` (lists come back as lists)."""
  ((kind, value),) = spec.items()
  if kind == "a":
    return data[value]
  if kind == "d":
    return {k: _decode(v, data) for k, v in value.items()}
  if kind == "l":
    return [_decode(v, data) for v in value]
  return value


# The compile statistics every search result carries, as its executor
# (`jopt.sweep.runtime._executor.Executor`) counted them.
COMPILE_STATS = ("num_compiles", "num_cached", "compile_time", "memory_bytes")


def compile_stats(executor: Any) -> dict[str, Any]:
  """The `COMPILE_STATS` fields of a result, read from a search's executor."""
  return {name: getattr(executor, name) for name in COMPILE_STATS}


@dataclasses.dataclass
class SweepResult:
  """Every trial of a sweep, in trial order.

  Attributes:
    hparams: ``{name: np.ndarray [N]}`` in the user's values (strings for a
      choice of names).
    metrics: ``{name: np.ndarray [N, ...]}`` as returned by ``train_fn``.
    diverged: ``np.ndarray [N]`` of bool: some metric of the trial is NaN
      or Inf.
    space: the search space.
    num_compiles: how many programs the search needed (for `jopt.sweep.run`
      one per static group and chunk shape), compiled or reused; zero when
      everything came from a checkpoint.
    compile_time: seconds spent tracing, lowering and compiling them.
    memory_bytes: the largest per-device footprint of a program the search
      ran (arguments + outputs + temporaries, from XLA's memory analysis),
      or None when nothing ran or the backend does not report it.
    num_cached: how many of the ``num_compiles`` programs an earlier search
      in the process had compiled (reused until `jopt.sweep.clear_caches`;
      they cost next to no ``compile_time``).

  Example:
    >>> import numpy as np, jopt
    >>> result = jopt.sweep.SweepResult(
    ...     hparams={"lr": np.array([0.1, 0.2, 0.3], np.float32)},
    ...     metrics={"loss": np.array([0.5, np.nan, 0.7], np.float32)},
    ...     diverged=np.array([False, True, False]),
    ...     space={"lr": jopt.sweep.uniform(0.0, 1.0)})
    >>> result.best("loss").index
    0
    >>> [t.index for t in result.top_k("loss", 2, mode="max")]
    [2, 0]
  """

  hparams: dict[str, np.ndarray]
  metrics: dict[str, np.ndarray]
  diverged: np.ndarray
  space: dict[str, _space.Distribution]
  num_compiles: int = 0
  compile_time: float = 0.0
  memory_bytes: int | None = None
  num_cached: int = 0

  def __len__(self) -> int:
    return len(self.diverged)

  def __repr__(self) -> str:
    return (
      f"SweepResult(num_trials={len(self)}, hparams={list(self.hparams)}"
      f", metrics={list(self.metrics)}, diverged={int(self.diverged.sum())}"
      f", num_compiles={self.num_compiles})"
    )

  def scalar(self, metric: str) -> np.ndarray:
    """``[N]`` values of ``metric``: curves ([N, T]) give their last value."""
    if metric not in self.metrics:
      raise KeyError(f"unknown metric {metric!r}; have {list(self.metrics)}.")
    v = self.metrics[metric]
    return v.reshape(len(v), -1)[:, -1] if v.ndim > 1 else v

  def trial(self, index: int) -> Trial:
    """Trial ``index``, with Python hyperparameter values."""
    hp = {k: self._value(k, v[index]) for k, v in self.hparams.items()}
    return Trial(int(index), hp, {k: v[index] for k, v in self.metrics.items()})

  def _value(self, name: str, v: Any) -> Any:
    """A Python value; a numeric choice gives back the value as written."""
    dist = self.space.get(name)
    if isinstance(dist, _space.Choice) and dist.numeric:
      for orig in dist.values:
        if np.asarray(orig, v.dtype) == v:
          return orig
    return _python(v)

  def _failed(self) -> np.ndarray:
    """[N] bool: ``diverged``, or a NaN or Inf in any metric of any dtype.

    Also catches what a ``diverged`` built by an older rule missed
    (bfloat16 metrics), so no such trial is ever ranked or drawn as good.
    """
    return self.diverged | _common.diverged_mask(self.metrics, len(self))

  def top_k(self, metric: str, k: int, mode: str = "min") -> list[Trial]:
    """The ``k`` best finite, non-diverged trials by ``metric``.

    Args:
      metric: a metric name; a curve is ranked by its last value.
      k: how many trials (fewer when fewer qualify).
      mode: ``"min"`` or ``"max"``.

    Returns:
      Trials, best first; ties keep trial order.
    """
    if mode not in ("min", "max"):
      raise ValueError(f"mode must be 'min' or 'max', got {mode!r}.")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
      raise ValueError(f"k must be an int >= 1, got {k!r}.")
    values = self.scalar(metric).astype(np.float64)
    ok = ~self._failed() & np.isfinite(values)
    idx = np.flatnonzero(ok)
    key = values[idx] if mode == "min" else -values[idx]
    order = idx[np.argsort(key, kind="stable")]
    return [self.trial(i) for i in order[:k]]

  def best(self, metric: str, mode: str = "min") -> Trial:
    """The best non-diverged trial by ``metric`` (see `top_k`)."""
    top = self.top_k(metric, 1, mode)
    if not top:
      raise ValueError(f"no trial has a finite {metric!r}: all diverged.")
    return top[0]

  def _info_columns(self) -> dict[str, np.ndarray]:
    """Per-trial columns of `to_pandas` after the metrics (subclasses add)."""
    return {"diverged": self.diverged}

  def to_pandas(self):
    """A DataFrame, one row per trial (needs pandas).

    Columns: the hyperparameters, each scalar metric, the last value of each
    curve metric, then ``diverged``. Per-fold metrics of a cross-validated
    sweep (``name_per_fold``) are left out: their fold mean is ``name``;
    so are per-seed metrics (``name_per_seed``) of a sweep with ``seeds``:
    their mean is ``name`` and its standard error ``name_se``.
    A metric whose name is already a column (a hyperparameter, or
    ``diverged``) gets the suffix ``_metric``, as pandas' ``merge``
    suffixes overlapping columns, so no column is ever overwritten.
    """
    pd = _common.require("pandas", _common.EXTRA, "SweepResult.to_pandas")
    info = self._info_columns()
    cols: dict[str, Any] = dict(self.hparams)
    taken = set(cols) | set(info)
    for name in self.metrics:
      if (
        name.endswith("_per_fold") and name[: -len("_per_fold")] in self.metrics
      ) or (
        name.endswith("_per_seed") and name[: -len("_per_seed")] in self.metrics
      ):
        continue
      column = name
      while column in taken or (column != name and column in self.metrics):
        column += "_metric"
      taken.add(column)
      cols[column] = self.scalar(name)
    cols.update(info)
    return pd.DataFrame(cols)

  # Fields `save` leaves out: live objects rather than data (set by
  # subclasses, e.g. a training state or an Optuna study).
  _not_saved: ClassVar[tuple[str, ...]] = ()

  def save(self, path: str | os.PathLike) -> None:
    """Writes the result to ``path`` (a numpy ``.npz`` archive, no pickle).

    Every field is written (for the results of adaptive searches, their
    search record too) except the live objects a subclass names in
    ``_not_saved``, which `load` sets to None. Metrics keep their dtype,
    bfloat16 included. Choice values (in the space and the hyperparameters)
    that are None, bools, numbers, strings, or tuples and lists of them load
    as they were; others load as their names (a function as its module and
    qualified name).
    The file is written under a temporary name and renamed over ``path``,
    so a crash during the save leaves the previous file whole.
    """
    arrays: dict[str, np.ndarray] = {}
    hp_names, m_names = list(self.hparams), list(self.metrics)
    as_indices = []  # object hyperparameters saved as choice indices
    for i, n in enumerate(hp_names):
      v = self.hparams[n]
      if v.dtype == object:
        indices = _choice_indices(self.space.get(n), v)
        if indices is not None:
          as_indices.append(n)
          v = indices
        else:
          v = np.asarray([_space.value_name(x) for x in v.ravel()]).reshape(
            v.shape
          )
      arrays[f"h{i}"] = v
    for i, n in enumerate(m_names):
      arrays[f"m{i}"] = self.metrics[n]
    fields = {}
    for f in dataclasses.fields(self):
      if f.name in ("hparams", "metrics", "space") + self._not_saved:
        continue
      try:
        fields[f.name] = _encode(getattr(self, f.name), arrays)
      except TypeError as e:
        raise TypeError(
          f"{type(self).__name__}.save: field {f.name!r}: {e}"
        ) from None
    meta = {
      "hparams": hp_names,
      "metrics": m_names,
      "hparams_as_indices": as_indices,
      "space": _space_to_json(self.space),
      "fields": fields,
    }
    arrays["__meta__"] = np.asarray(json.dumps(meta))
    _common.save_arrays(path, arrays)

  @classmethod
  def load(cls, path: str | os.PathLike) -> SweepResult:
    """Reads a result written by `save` (call it on the class that saved)."""
    data = _common.load_arrays(path)
    meta = json.loads(str(data.get("__meta__", "{}")))
    if "fields" not in meta:
      raise ValueError(
        f"{os.fspath(path)}: not a result written by "
        "SweepResult.save of this jopt version."
      )
    space = _space_from_json(meta["space"])
    hparams = {n: data[f"h{i}"] for i, n in enumerate(meta["hparams"])}
    for n in meta.get("hparams_as_indices", ()):
      hparams[n] = _choice_values(space[n], hparams[n])
    metrics = {n: data[f"m{i}"] for i, n in enumerate(meta["metrics"])}
    stored = {k: _decode(v, data) for k, v in meta["fields"].items()}
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(
      hparams=hparams,
      metrics=metrics,
      space=space,
      **{k: v for k, v in stored.items() if k in names},
    )

  def to_tensorboard(
    self, logdir: str | os.PathLike, *, steps: Any = None
  ) -> list[str]:
    """One TensorBoard run per trial, for the HParams dashboard.

    Needs tensorboardX (``pip install "jopt[tensorboard]"``); see
    `jopt.sweep.to_tensorboard` for what is written, and an example.
    """
    return _tensorboard.to_tensorboard(self, logdir, steps=steps)

  # Plots live in _plots.py; these are thin entry points.
  def plot(self, metric: str, path: str | os.PathLike | None = None):
    """``metric`` against each hyperparameter, one panel each.

    Log-spaced dimensions get a log x axis (the learning-rate "U" curve).
    The y axis is logarithmic for positive values spread over a decade or
    more, otherwise clipped above the bulk of the trials (clipped ones are
    triangles on the top edge), so one bad trial does not flatten the
    rest; diverged trials are red crosses on the top edge. The points are
    joined only in a sweep of one hyperparameter. With ``seeds``, each
    point is the mean over seeds with its standard error. Needs
    matplotlib.

    Args:
      metric: a metric name (curves use their last value).
      path: where to save a PNG, or None.

    Returns:
      The `matplotlib.figure.Figure`.
    """
    return _plots.plot(self, metric, path)

  def plot_curves(
    self,
    metric: str,
    by: str | None = None,
    path: str | os.PathLike | None = None,
  ):
    """Every trial's curve of ``metric``, coloured by hyperparameter ``by``.

    Needs matplotlib.

    Args:
      metric: a curve metric, shape [N, T].
      by: the hyperparameter that colours the curves (default: the first
        numeric one); log-spaced ones use a log colour scale.
      path: where to save a PNG, or None.

    Returns:
      The `matplotlib.figure.Figure`.
    """
    return _plots.plot_curves(self, metric, by, path)

  def plot_parallel(
    self,
    metric: str,
    path: str | os.PathLike | None = None,
    names: Sequence[str] | None = None,
  ):
    """Parallel coordinates: one axis per hyperparameter, then the metric.

    Each trial is a line through its normalised values, coloured by the
    metric (log-spaced dimensions normalised in log space). Needs
    matplotlib.

    Args:
      metric: the metric of the last axis and of the colours.
      path: where to save a PNG, or None.
      names: the hyperparameters to show (default: all).

    Returns:
      The `matplotlib.figure.Figure`.
    """
    return _plots.plot_parallel(self, metric, path, names)
