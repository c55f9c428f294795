"""Searches on a JAX cluster: 2 processes x 2 CPU devices over gloo.

Each process runs tests/_cluster_worker.py (the recipe of docs/guides/multiprocess.md) unchanged;
every process must return the same result, bit for bit, as one plain
process, and only process 0 writes checkpoint files.
"""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from jopt import sweep

WORKER = os.path.join(os.path.dirname(__file__), "_cluster_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("cluster")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  port = str(_free_port())
  commands = [[sys.executable, WORKER, "0", "1", "0", str(out)]] + [
    [sys.executable, WORKER, port, "2", str(i), str(out)] for i in (0, 1)
  ]
  procs = [
    subprocess.Popen(
      c, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    for c in commands
  ]
  logs = []
  try:
    for p in procs:
      logs.append(p.communicate(timeout=600)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, log, c in zip(procs, logs, commands, strict=True):
    assert p.returncode == 0, log[-3000:]
    (out / f"log-{c[-3]}-{c[-2]}.txt").write_text(log)
  return out


@pytest.mark.parametrize(
  "name, cls",
  [
    ("run", sweep.SweepResult),
    ("report", sweep.SweepResult),
    ("halving", sweep.AdaptiveResult),
    ("pbt", sweep.PBTResult),
  ],
)
def test_every_process_gets_the_single_process_result(cluster_run, name, cls):
  single = cls.load(cluster_run / f"{name}-1-0.npz")
  for process in (0, 1):
    got = cls.load(cluster_run / f"{name}-2-{process}.npz")
    assert sorted(got.metrics) == sorted(single.metrics)
    for k in single.metrics:
      np.testing.assert_array_equal(got.metrics[k], single.metrics[k])
    for k in single.hparams:
      np.testing.assert_array_equal(got.hparams[k], single.hparams[k])
    np.testing.assert_array_equal(got.diverged, single.diverged)
    if name == "pbt":
      np.testing.assert_array_equal(got.parents, single.parents)
    if name == "halving":
      np.testing.assert_array_equal(got.segments_run, single.segments_run)


def test_live_progress_leaves_the_results_alone(cluster_run):
  # `report` adds host callbacks to the program, never a change of value.
  plain = sweep.SweepResult.load(cluster_run / "run-2-0.npz")
  reported = sweep.SweepResult.load(cluster_run / "report-2-0.npz")
  for k in plain.metrics:
    np.testing.assert_array_equal(reported.metrics[k], plain.metrics[k])


def _progress_output(cluster_run, processes, process):
  log = (cluster_run / f"log-{processes}-{process}.txt").read_text()
  return log.split("progress-start", 1)[1].split("progress-end", 1)[0]


def test_only_process_zero_shows_live_progress(cluster_run):
  # The bar counts trial-steps reported from inside the program running on
  # both processes' devices, and shows the running best; process 1 is
  # silent.
  shown = _progress_output(cluster_run, 2, 0)
  assert "10.0/10" in shown and "best loss=" in shown, shown
  assert _progress_output(cluster_run, 2, 1).strip() == ""
  assert "best loss=" in _progress_output(cluster_run, 1, 0)


def test_the_shared_checkpoint_folder_is_complete(cluster_run):
  # Both processes share the folder (one machine, as a shared filesystem
  # would): one manifest, no temporary file left behind.
  for search in ("run", "halving", "pbt"):
    folder = cluster_run / "ckpt-2" / search
    names = sorted(os.listdir(folder))
    assert "manifest.json" in names
    assert not [n for n in names if n.startswith(".tmp-")]


@pytest.mark.parametrize("search", ["run", "pbt"])
def test_processes_other_than_zero_write_nothing(search, tmp_path, monkeypatch):
  import jax
  import jax.numpy as jnp

  monkeypatch.setattr(jax, "process_index", lambda *a, **k: 1)
  folder = tmp_path / "ckpt"
  space = {"lr": sweep.uniform(0.1, 0.5)}
  key = jax.random.key(0)
  if search == "run":
    sweep.run(
      lambda hp, k: {"loss": hp["lr"] * jax.random.uniform(k)},
      space,
      num_trials=4,
      key=key,
      checkpoint_dir=str(folder),
    )
  else:
    sweep.pbt(
      lambda hp, k: jnp.zeros(()),
      lambda s, hp: (s + hp["lr"], {"loss": s}),
      space,
      population=4,
      num_rounds=2,
      key=key,
      metric="loss",
      checkpoint_dir=str(folder),
    )
  assert os.listdir(folder) == []


def test_a_failed_write_in_process_zero_makes_every_process_raise(tmp_path):
  # Process 0 (the only writer) meets a full disk; without sharing that,
  # process 1 would wait in the next collective forever.
  worker = os.path.join(os.path.dirname(__file__), "_cluster_write_failure.py")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  port = str(_free_port())
  procs = [
    subprocess.Popen(
      [sys.executable, worker, port, str(i), str(tmp_path)],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in (0, 1)
  ]
  logs = []
  try:
    for p in procs:
      logs.append(p.communicate(timeout=300)[0])
  except subprocess.TimeoutExpired:
    pytest.fail("a process hung after process 0's write failed")
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for i, (p, log) in enumerate(zip(procs, logs, strict=True)):
    assert p.returncode == 0, log[-3000:]
    error = "OSError" if i == 0 else "RuntimeError"
    for search in ("run", "pbt"):
      assert f"raised {search} {error}" in log, log[-3000:]
