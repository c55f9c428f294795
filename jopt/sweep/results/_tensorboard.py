"""A sweep's trials as TensorBoard runs, for the HParams dashboard.

Written with tensorboardX (no TensorFlow): the HParams plugin's protocol
buffers are the ones tensorboardX ships, so the event files read the same as
those of ``tensorboard.plugins.hparams.api``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from jopt.sweep import _space

if TYPE_CHECKING:
  from jopt.sweep.results._result import SweepResult

_PLUGIN = "hparams"
_EXPERIMENT_TAG = "_hparams_/experiment"
_SESSION_START_TAG = "_hparams_/session_start_info"
_SESSION_END_TAG = "_hparams_/session_end_info"


def _import_tensorboardx():
  try:
    import tensorboardX  # noqa: F401
    from tensorboardX.proto import api_pb2, plugin_hparams_pb2, summary_pb2
  except ImportError as e:
    raise ImportError(
      "SweepResult.to_tensorboard needs tensorboardX; install it with "
      '`pip install "jopt[tensorboard]"`.'
    ) from e
  return tensorboardX, api_pb2, plugin_hparams_pb2, summary_pb2


def _hparam_value(value: Any) -> bool | float | str:
  """A value the plugin can show: a bool, a number or a name."""
  if isinstance(value, np.floating):
    # The shortest decimal that reads back as the same float32 (0.1, not
    # 0.10000000149): what the user wrote in the space.
    return float(str(value))
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, bool):
    return value
  if isinstance(value, (int, float)):
    return float(value)
  return _space.value_name(value)


def _set_value(proto_value, value: bool | float | str) -> None:
  if isinstance(value, bool):
    proto_value.bool_value = value
  elif isinstance(value, float):
    proto_value.number_value = value
  else:
    proto_value.string_value = value


def _hparam_info(api_pb2, name: str, dist: Any, values: list) -> Any:
  """Name, type and domain of one hyperparameter (the axes of the views)."""
  info = api_pb2.HParamInfo(name=name)
  if isinstance(dist, (_space.Uniform, _space.LogUniform, _space.IntUniform)):
    info.type = api_pb2.DATA_TYPE_FLOAT64
    info.domain_interval.min_value = float(dist.low)
    info.domain_interval.max_value = float(dist.high)
    return info
  if isinstance(dist, _space.Choice):
    domain = [_hparam_value(v) for v in dist.values]
  else:  # Not in the space (e.g. set by a strategy): what the trials used.
    domain = sorted(set(values), key=str)
  kinds = {type(v) for v in domain}
  if len(kinds) != 1:  # Mixed kinds: each trial's value keeps its own.
    info.type = api_pb2.DATA_TYPE_UNSET
    return info
  info.type = {
    bool: api_pb2.DATA_TYPE_BOOL,
    float: api_pb2.DATA_TYPE_FLOAT64,
    str: api_pb2.DATA_TYPE_STRING,
  }[kinds.pop()]
  for v in domain:
    _set_value(info.domain_discrete.values.add(), v)
  return info


def _summary(summary_pb2, plugin_hparams_pb2, tag: str, **data) -> Any:
  content = plugin_hparams_pb2.HParamsPluginData(version=0, **data)
  metadata = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(
      plugin_name=_PLUGIN, content=content.SerializeToString()
    )
  )
  return summary_pb2.Summary(
    value=[summary_pb2.Summary.Value(tag=tag, metadata=metadata)]
  )


def _curve_steps(name: str, length: int, steps: Any) -> np.ndarray:
  chosen = steps.get(name) if isinstance(steps, Mapping) else steps
  if chosen is None:
    return np.arange(length)
  chosen = np.asarray(chosen)
  if chosen.shape != (length,) or not np.issubdtype(chosen.dtype, np.integer):
    raise ValueError(
      f"steps for metric {name!r} must be {length} integers (one per "
      f"point of its curve), got shape {chosen.shape} of {chosen.dtype}."
    )
  return chosen


def to_tensorboard(
  result: SweepResult, logdir: str | os.PathLike, *, steps: Any = None
) -> list[str]:
  """Writes every trial as a TensorBoard run, with the HParams config.

  ``logdir`` gets the HParams plugin's experiment (each hyperparameter with
  its type and its domain from the search space, and the metric names) and
  one run per trial, ``trial_<index>``, holding the trial's hyperparameters,
  its metrics and its status (failure when it diverged). So the HParams
  dashboard's table, parallel-coordinates and scatter views list the trials,
  and the scalars dashboard draws their curves.

  Metrics: a scalar per trial is one point; a curve (``[N, T]``) is ``T``
  points over steps, and the HParams views show its last value, as
  `SweepResult.scalar` does. Per-fold metrics whose fold mean is also a
  metric are left out, as in `SweepResult.to_pandas`. Other shapes give
  only the value `SweepResult.scalar` returns.

  Only process 0 writes (multi-process runs return the same list from every
  process).

  Args:
    result: the sweep's result.
    logdir: an empty or new folder; point ``tensorboard --logdir`` at it.
    steps: the training step of each point of the curves: one integer
      array for every curve, or a dict of them by metric name. Defaults to
      ``0, 1, ..., T - 1``. Scalar metrics are written at the last step of
      the curves (0 when there are none).

  Returns:
    The run folders written, in trial order.

  Raises:
    ImportError: tensorboardX is not installed.
    ValueError: ``logdir`` holds files already, or ``steps`` do not match.

  Example:
    >>> import tempfile, numpy as np, jopt
    >>> result = jopt.sweep.SweepResult(
    ...     hparams={"lr": np.array([0.1, 0.3], np.float32)},
    ...     metrics={"loss": np.array([[0.9, 0.5], [0.8, 0.2]], np.float32)},
    ...     diverged=np.array([False, False]),
    ...     space={"lr": jopt.sweep.uniform(0.0, 1.0)})
    >>> runs = result.to_tensorboard(tempfile.mkdtemp(), steps=[100, 200])
    >>> [run.rsplit("/", 1)[-1] for run in runs]
    ['trial_0', 'trial_1']

    Then ``tensorboard --logdir <folder>``: the HParams tab lists both
    trials with ``lr`` and ``loss`` (0.5 and 0.2, at step 200).

  References:
    `TensorBoard's HParams dashboard
    <https://www.tensorflow.org/tensorboard/hyperparameter_tuning_with_hparams>`_
  """
  tensorboardx, api_pb2, plugin_hparams_pb2, summary_pb2 = (
    _import_tensorboardx()
  )
  logdir = os.fspath(logdir)
  metric_names = [
    n
    for n in result.metrics
    if not (
      n.endswith("_per_fold") and n[: -len("_per_fold")] in result.metrics
    )
  ]
  if isinstance(steps, Mapping) and set(steps) - set(metric_names):
    raise ValueError(
      f"steps names unknown metrics {sorted(set(steps) - set(metric_names))}"
      f"; the metrics are {metric_names}."
    )
  curves = {
    n: _curve_steps(n, result.metrics[n].shape[1], steps)
    for n in metric_names
    if result.metrics[n].ndim == 2
  }
  last_step = max((int(s[-1]) for s in curves.values() if len(s)), default=0)
  hparams = [
    {k: _hparam_value(v[i]) for k, v in result.hparams.items()}
    for i in range(len(result))
  ]
  width = len(str(max(len(result) - 1, 0)))
  runs = [
    os.path.join(logdir, f"trial_{i:0{width}d}") for i in range(len(result))
  ]
  if jax.process_index() != 0:
    return runs
  if os.path.isdir(logdir) and os.listdir(logdir):
    raise ValueError(
      f"logdir must be a new or empty folder; {logdir!r} holds files "
      "already (TensorBoard would merge them with this sweep's runs)."
    )
  if os.path.exists(logdir) and not os.path.isdir(logdir):
    raise ValueError(f"logdir {logdir!r} is a file, not a folder.")

  # Written to a temporary sibling folder, then renamed into place: a
  # crash leaves no half-written experiment where TensorBoard looks.
  # A symlinked logdir is written where it points (a rename would hit
  # the link itself).
  target = os.path.realpath(logdir)
  parent = os.path.dirname(target)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(target)}-", dir=parent)
  try:
    _write(
      tensorboardx,
      api_pb2,
      plugin_hparams_pb2,
      summary_pb2,
      result,
      tmp,
      [os.path.join(tmp, os.path.basename(r)) for r in runs],
      hparams,
      metric_names,
      curves,
      last_step,
    )
    os.replace(tmp, target)  # absent or an empty folder
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return runs


def _write(
  tensorboardx,
  api_pb2,
  plugin_hparams_pb2,
  summary_pb2,
  result,
  logdir,
  runs,
  hparams,
  metric_names,
  curves,
  last_step,
) -> None:
  """Writes the experiment and one run per trial under ``logdir``."""
  infos = [
    _hparam_info(
      api_pb2, name, result.space.get(name), [h[name] for h in hparams]
    )
    for name in result.hparams
  ]
  experiment = api_pb2.Experiment(
    hparam_infos=infos,
    metric_infos=[
      api_pb2.MetricInfo(name=api_pb2.MetricName(tag=n)) for n in metric_names
    ],
    time_created_secs=time.time(),
  )
  with tensorboardx.SummaryWriter(logdir) as writer:
    writer.file_writer.add_summary(
      _summary(
        summary_pb2, plugin_hparams_pb2, _EXPERIMENT_TAG, experiment=experiment
      )
    )

  start = experiment.time_created_secs
  for index, run in enumerate(runs):
    session = plugin_hparams_pb2.SessionStartInfo(start_time_secs=start)
    for name, value in hparams[index].items():
      _set_value(session.hparams[name], value)
    failed = bool(result.diverged[index])
    end = plugin_hparams_pb2.SessionEndInfo(
      status=api_pb2.STATUS_FAILURE if failed else api_pb2.STATUS_SUCCESS,
      end_time_secs=start,
    )
    with tensorboardx.SummaryWriter(run) as writer:
      writer.file_writer.add_summary(
        _summary(
          summary_pb2,
          plugin_hparams_pb2,
          _SESSION_START_TAG,
          session_start_info=session,
        )
      )
      for name in metric_names:
        if name in curves:
          points = zip(curves[name], result.metrics[name][index], strict=True)
        else:
          points = [(last_step, result.scalar(name)[index])]
        for step, value in points:
          # As a plain proto: tensorboardX's add_scalar prints a warning for
          # each NaN, and a diverged trial has many.
          writer.file_writer.add_summary(
            summary_pb2.Summary(
              value=[
                summary_pb2.Summary.Value(tag=name, simple_value=float(value))
              ]
            ),
            global_step=int(step),
          )
      writer.file_writer.add_summary(
        _summary(
          summary_pb2,
          plugin_hparams_pb2,
          _SESSION_END_TAG,
          session_end_info=end,
        )
      )
