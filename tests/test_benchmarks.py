"""The benchmark scripts run end to end in their --quick modes.

They are scripts, not library code: what a user relies on is that they run
on a fresh checkout and print the result lines the README quotes. Timing
thresholds are not asserted (they depend on the machine). Each runs in a
subprocess with the default single CPU device, as a user runs it.
"""

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(script, *args):
  env = {
    **os.environ,
    "JOPT_PROGRESS": "0",
    "MPLBACKEND": "Agg",
    "PYTHONPATH": str(ROOT),
  }
  env.pop("XLA_FLAGS", None)  # A plain process: one CPU device.
  done = subprocess.run(
    [sys.executable, str(ROOT / "benchmarks" / script), "--quick", *args],
    capture_output=True,
    text=True,
    env=env,
    cwd=ROOT,
    timeout=1200,
    check=False,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  return done.stdout


def test_race_quick(tmp_path):
  out = _run("race.py", "--out", str(tmp_path))
  lines = out.splitlines()
  # Ray Tune is an optional extra: raced where it is installed, else skipped.
  ray = importlib.util.find_spec("ray") is not None
  # The table has every contestant, with a finite median true quality.
  compiled_once = ", segment compiled once (jopt's style)"
  user_loops = [
    f"Optuna TPE+MedianPruner, nnx.jit loop, n_jobs={j}"
    for j in sorted({1, os.cpu_count() or 1})
  ]
  for name in (
    "jopt run quasirandom 8",
    "jopt successive halving",
    "jopt hyperband",
    "jopt PBT",
    "jopt optuna_search 2x4",
    "Optuna TPE+HyperbandPruner" + compiled_once,
    "Optuna TPE+MedianPruner" + compiled_once,
    *user_loops,
    *(["Ray Tune TPE+ASHA"] if ray else []),
  ):
    row = next(line for line in lines if line.startswith(name + " "))
    assert float(row[len(name) :].split()[0]) > 0.0, row
  skipped = [
    line for line in lines if line.startswith("Ray Tune ASHA: skipped")
  ]
  assert len(skipped) == (0 if ray else 1), skipped
  for tool in ("Optuna", *(["Ray Tune"] if ray else [])):
    assert any(
      line.startswith(f"{tool} per-trial overhead") for line in lines
    ), tool
  assert (tmp_path / "anytime.png").stat().st_size > 0
  # The ratios come last.
  tail = lines[
    lines.index(next(line for line in lines if line.startswith("RATIOS"))) :
  ]
  assert tail[-1].startswith("RESULT:")
  # --quick: the 5 jopt searches, and Ray where it runs.
  assert sum("wall-clock ratio" in line for line in tail) == 5 + ray
  assert sum(line.startswith("  against Ray Tune") for line in tail) == ray
  # Each user-loop study is a reference of its own.
  for name in user_loops:
    assert any(line.startswith(f"  against {name} ") for line in tail), name


def test_race_ray_quick():
  pytest.importorskip("ray.tune")
  out = _run("race_ray.py")
  study = re.search(r"(\d+) trials, (\d+) member-steps; (\d+) worker", out)
  assert study, out
  trials, steps, workers = map(int, study.groups())
  # The Optuna studies' trial budget (QUICK: 6 trials of 3 x 4 steps).
  assert trials == 6, out
  # ASHA stopped some trials at its first rung (seeded TPE and keys from
  # the configuration make this run the same every time).
  assert 6 * 4 <= steps < 6 * 12 and steps % 4 == 0, out
  # One reused worker ran every trial: the step compiled once, not per trial.
  assert workers == 1, out
  pick = re.search(
    r"pick: \{'learning_rate': ([\d.e-]+), 'weight_decay': "
    r"([\d.e-]+), 'b1': ([\d.e-]+)\}",
    out,
  )
  assert pick, out
  lr, wd, b1 = map(float, pick.groups())
  assert 1e-4 <= lr <= 1e-1 and 1e-5 <= wd <= 1e-1 and 0.5 <= b1 <= 0.99


def test_search_efficiency_quick():
  lines = _run("search_efficiency.py").splitlines()
  tail = lines[
    lines.index(next(line for line in lines if line.startswith("TARGETS")))
    + 1 :
  ]
  assert [line.split(":")[0].strip() for line in tail] == [
    "successive halving",
    "hyperband",
    "PBT",
  ]
  assert all(line.rstrip().endswith(("MET", "MISSED")) for line in tail)


def test_optax_suite_on_two_contrib_files():
  # optax_suite has no --quick mode: two small files stand in for the run.
  optax = pytest.importorskip("optax")
  tests_dir = pathlib.Path(optax.__file__).parent / "contrib"
  if not (tests_dir / "_mechanic_test.py").exists():
    pytest.skip("this Optax does not ship its test sources")
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  env.pop("XLA_FLAGS", None)
  done = subprocess.run(
    [
      sys.executable,
      str(ROOT / "benchmarks" / "optax_suite.py"),
      "--files",
      "_mechanic_test.py,_schedule_free_test.py",
      "--failures",
    ],
    capture_output=True,
    text=True,
    env=env,
    cwd=ROOT,
    timeout=600,
    check=False,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  lines = done.stdout.splitlines()
  for name in ("contrib/_mechanic_test.py", "contrib/_schedule_free_test.py"):
    row = next(line for line in lines if line.startswith(name + " "))
    assert int(re.search(r"\d+ / +(\d+)", row).group(1)) > 0, row
  # What fails reads an Optax state field that jopt keeps in inner_state.
  failures = [line for line in lines if line.startswith("FAIL ")]
  assert failures, done.stdout
  assert all(
    "AttributeError: 'HyperparamsState' object has no attribute" in line
    for line in failures
  ), failures
