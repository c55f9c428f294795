"""SweepResult.to_tensorboard, read back by a real TensorBoard server.

The test starts ``tensorboard --logdir`` on a free loopback port and asks
its HParams plugin (the HTTP API the dashboard itself calls) and its scalars
plugin for what a sweep wrote: the trials, their hyperparameters, their
metrics and their curves.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jopt
import jopt.sweep

pytest.importorskip("tensorboardX")
pytest.importorskip("tensorboard")

NUM_STEPS = 20


def _train_fn(hparams, key):
  params = jax.random.normal(key, (3,))
  tx = jopt.sgd(hparams["lr"], momentum=hparams["momentum"])

  def step(carry, _):
    params, state = carry
    grads = 2 * params
    updates, state = tx.update(grads, state, params)
    params = jopt.apply_updates(params, updates)
    return (params, state), jnp.sum(params**2)

  _, losses = jax.lax.scan(step, (params, tx.init(params)), length=NUM_STEPS)
  return {"loss": losses[-1], "curve": losses}


@pytest.fixture(scope="module")
def result():
  # Learning rates up to 1e3 make some trials overflow: a failed session.
  space = {
    "lr": jopt.sweep.log_uniform(1e-2, 1e3),
    "momentum": jopt.sweep.choice([0.0, 0.9]),
  }
  res = jopt.sweep.run(
    _train_fn, space, num_trials=8, key=jax.random.key(3), progress=False
  )
  assert 0 < res.diverged.sum() < len(res)  # Both kinds of trial are tested.
  return res


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class _Server:
  """A TensorBoard subprocess on 127.0.0.1, and requests to its plugins."""

  def __init__(self, logdir, log_path):
    self.url = f"http://127.0.0.1:{_free_port()}"
    port = self.url.rsplit(":", 1)[1]
    # Its log goes to a file: a pipe nobody reads would fill and stall it.
    self.log_path = log_path
    with open(log_path, "w") as log:
      self.proc = subprocess.Popen(
        [
          sys.executable,
          "-m",
          "tensorboard.main",
          "--logdir",
          str(logdir),
          "--host",
          "127.0.0.1",
          "--port",
          port,
          "--reload_interval",
          "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
      )

  def post(self, route, body):
    request = urllib.request.Request(
      self.url + route,
      data=json.dumps(body).encode(),
      headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
      return json.loads(response.read())

  def get(self, route):
    with urllib.request.urlopen(self.url + route, timeout=10) as response:
      return json.loads(response.read())

  def session_groups(self, num_trials, timeout=90.0):
    """All session groups, once the server has loaded every trial."""
    request = {
      "experimentName": "",
      "startIndex": 0,
      "sliceSize": 1000,
      "allowedStatuses": [
        "STATUS_SUCCESS",
        "STATUS_FAILURE",
        "STATUS_RUNNING",
        "STATUS_UNKNOWN",
      ],
    }
    deadline = time.monotonic() + timeout
    while True:
      assert self.proc.poll() is None, self.log_path.read_text()[-2000:]
      try:
        groups = self.post("/data/plugin/hparams/session_groups", request)
        if len(groups.get("sessionGroups", [])) == num_trials:
          return groups["sessionGroups"]
      except (urllib.error.URLError, ConnectionError):
        pass  # Not listening, or still loading.
      assert time.monotonic() < deadline, "TensorBoard did not load the runs"
      time.sleep(0.5)

  def close(self):
    # SIGTERM first: TensorBoard then removes the file it registers itself
    # in (for the notebook magic) under the temporary folder.
    self.proc.terminate()
    try:
      self.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      self.proc.kill()
      self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(result, tmp_path_factory):
  logdir = tmp_path_factory.mktemp("tb")
  steps = 10 * np.arange(1, NUM_STEPS + 1)  # Curves as every tenth step.
  runs = result.to_tensorboard(logdir, steps=steps)
  assert [r.rsplit("/", 1)[-1] for r in runs] == [
    f"trial_{i}" for i in range(8)
  ]
  srv = _Server(logdir, tmp_path_factory.mktemp("tb_log") / "server.log")
  try:
    yield srv
  finally:
    srv.close()


def test_hparams_experiment_lists_hparams_with_domains_and_metrics(
  result, server
):
  server.session_groups(8)
  experiment = server.post(
    "/data/plugin/hparams/experiment", {"experimentName": ""}
  )
  infos = {i["name"]: i for i in experiment["hparamInfos"]}
  assert infos["lr"]["type"] == "DATA_TYPE_FLOAT64"
  assert infos["lr"]["domainInterval"] == {"minValue": 0.01, "maxValue": 1000.0}
  assert infos["momentum"]["domainDiscrete"] == [0.0, 0.9]
  assert [m["name"]["tag"] for m in experiment["metricInfos"]] == list(
    result.metrics
  )
  assert set(result.metrics) == {"loss", "curve"}


def test_hparams_sessions_hold_each_trials_hparams_metrics_and_status(
  result, server
):
  groups = {g["name"]: g for g in server.session_groups(8)}
  assert set(groups) == {f"trial_{i}" for i in range(8)}
  for i in range(len(result)):
    group = groups[f"trial_{i}"]
    # Hyperparameters as the shortest decimal of the float32 value.
    assert np.float32(group["hparams"]["lr"]) == result.hparams["lr"][i]
    assert group["hparams"]["momentum"] in (0.0, 0.9)
    assert (
      np.float32(group["hparams"]["momentum"])
      == (result.hparams["momentum"][i])
    )
    values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
    steps = {m["name"]["tag"]: m["trainingStep"] for m in group["metricValues"]}
    assert steps == {"loss": 10 * NUM_STEPS, "curve": 10 * NUM_STEPS}
    (session,) = group["sessions"]
    if result.diverged[i]:
      assert session["status"] == "STATUS_FAILURE"
      assert not np.isfinite(result.metrics["loss"][i])
    else:
      assert session["status"] == "STATUS_SUCCESS"
      # float32 values travel as float32 in the event file: exact.
      assert np.float32(values["loss"]) == result.metrics["loss"][i]
      assert np.float32(values["curve"]) == result.scalar("curve")[i]


def test_curves_are_scalars_over_steps(result, server):
  server.session_groups(8)
  i = int(np.flatnonzero(~result.diverged)[0])
  points = server.get(f"/data/plugin/scalars/scalars?run=trial_{i}&tag=curve")
  # Each point is [wall_time, step, value].
  assert [p[1] for p in points] == list(10 * np.arange(1, NUM_STEPS + 1))
  np.testing.assert_array_equal(
    np.asarray([p[2] for p in points], np.float32), result.metrics["curve"][i]
  )


def test_refuses_a_logdir_holding_files(result, tmp_path):
  (tmp_path / "old").write_text("x")
  with pytest.raises(ValueError, match="logdir"):
    result.to_tensorboard(tmp_path)


def test_steps_must_match_the_curves(result, tmp_path):
  with pytest.raises(ValueError, match="steps for metric 'curve'"):
    result.to_tensorboard(tmp_path / "a", steps=np.arange(3))


def test_steps_must_name_metrics(result, tmp_path):
  with pytest.raises(ValueError, match="unknown metrics"):
    result.to_tensorboard(tmp_path / "a", steps={"curv": np.arange(20)})


def test_missing_tensorboardx_names_the_extra(result, tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorboardX", None)
  with pytest.raises(ImportError, match=r'pip install "jopt\[tensorboard\]"'):
    result.to_tensorboard(tmp_path / "a")


def _plugin_data(run_dir):
  """{tag: hparams plugin content} of the event file in ``run_dir``."""
  from tensorboard.backend.event_processing import event_accumulator

  acc = event_accumulator.EventAccumulator(str(run_dir))
  acc.Reload()
  return acc.PluginTagToContent("hparams")


def test_names_and_bools_are_written_as_strings_and_bools(tmp_path):
  # Read back with TensorBoard's own parsers (no server needed here).
  from tensorboard.plugins.hparams import metadata

  result = jopt.sweep.SweepResult(
    hparams={
      "optimizer": np.array(["adam", "sgd"]),
      "nesterov": np.array([True, False]),
      "width": np.array([64, 128], np.int32),
    },
    metrics={"loss": np.array([0.25, 0.5], np.float32)},
    diverged=np.array([False, False]),
    space={
      "optimizer": jopt.sweep.choice(["adam", "sgd"]),
      "nesterov": jopt.sweep.choice([True, False]),
      "width": jopt.sweep.choice([64, 128], static=True),
    },
  )
  runs = result.to_tensorboard(tmp_path)
  experiment = metadata.parse_experiment_plugin_data(
    _plugin_data(tmp_path)["_hparams_/experiment"]
  )
  infos = {i.name: i for i in experiment.hparam_infos}
  assert [
    v.string_value for v in infos["optimizer"].domain_discrete.values
  ] == ["adam", "sgd"]
  assert [v.bool_value for v in infos["nesterov"].domain_discrete.values] == [
    True,
    False,
  ]
  assert [v.number_value for v in infos["width"].domain_discrete.values] == [
    64.0,
    128.0,
  ]
  start = metadata.parse_session_start_info_plugin_data(
    _plugin_data(runs[1])["_hparams_/session_start_info"]
  )
  assert start.hparams["optimizer"].string_value == "sgd"
  assert start.hparams["nesterov"].bool_value is False
  assert start.hparams["width"].number_value == 128.0


def test_a_failed_write_leaves_nothing_where_tensorboard_looks(
  tmp_path, monkeypatch
):
  # Every file jopt writes goes to a temporary name first: a writer that
  # dies half way leaves no partial experiment in logdir.
  import tensorboardX

  real = tensorboardX.SummaryWriter
  opened = []

  def failing(*args, **kwargs):
    opened.append(args)
    if len(opened) == 3:
      raise OSError("disk full")
    return real(*args, **kwargs)

  monkeypatch.setattr(tensorboardX, "SummaryWriter", failing)
  result = jopt.sweep.SweepResult(
    hparams={"lr": np.array([0.1, 0.2, 0.3], np.float32)},
    metrics={"loss": np.array([0.5, 0.4, 0.3], np.float32)},
    diverged=np.zeros(3, bool),
    space={"lr": jopt.sweep.uniform(0.0, 1.0)},
  )
  with pytest.raises(OSError, match="disk full"):
    result.to_tensorboard(tmp_path / "tb")
  assert list(tmp_path.iterdir()) == []
  monkeypatch.setattr(tensorboardX, "SummaryWriter", real)
  runs = result.to_tensorboard(tmp_path / "tb")
  assert [p.name for p in tmp_path.iterdir()] == ["tb"]
  names = {p.name for p in (tmp_path / "tb").iterdir()}
  assert {r.rsplit("/", 1)[-1] for r in runs} <= names
  assert all(n.startswith("trial_") or n.startswith("events") for n in names)


def test_writes_through_a_symlinked_logdir(result, tmp_path):
  (tmp_path / "real").mkdir()
  os.symlink(tmp_path / "real", tmp_path / "link")
  runs = result.to_tensorboard(tmp_path / "link")
  assert os.path.islink(tmp_path / "link")
  assert runs and all(
    os.path.isdir(tmp_path / "real" / os.path.basename(r)) for r in runs
  )
