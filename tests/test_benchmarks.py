"""The benchmark scripts run end to end in their --quick modes.

They are scripts, not library code: what a user relies on is that they run
on a fresh checkout and print the result lines the README quotes. Timing
thresholds are not asserted (they depend on the machine). Each runs in a
subprocess with the default single CPU device, as a user runs it.
"""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(script, *args):
  env = {**os.environ, "JOPT_PROGRESS": "0", "MPLBACKEND": "Agg",
         "PYTHONPATH": str(ROOT)}
  env.pop("XLA_FLAGS", None)  # A plain process: one CPU device.
  done = subprocess.run(
      [sys.executable, str(ROOT / "benchmarks" / script), "--quick", *args],
      capture_output=True, text=True, env=env, cwd=ROOT, timeout=1200,
      check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  return done.stdout


def test_race_quick(tmp_path):
  out = _run("race.py", "--out", str(tmp_path))
  lines = out.splitlines()
  # The table has every contestant, with a finite median true quality.
  for name in ("jopt run quasirandom 8", "jopt successive halving",
               "jopt hyperband", "jopt PBT", "jopt optuna_search 2x4",
               "Optuna TPE+HyperbandPruner", "Optuna TPE+MedianPruner"):
    row = next(line for line in lines if line.startswith(name + " "))
    assert float(row[len(name):].split()[0]) > 0.0, row
  assert any(line.startswith("Ray Tune ASHA:") for line in lines)
  assert any("per-trial overhead" in line for line in lines)
  assert (tmp_path / "anytime.png").stat().st_size > 0
  # The ratios come last.
  tail = lines[lines.index(next(line for line in lines
                                if line.startswith("RATIOS"))):]
  assert tail[-1].startswith("RESULT:")
  assert sum("wall-clock ratio" in line for line in tail) == 5  # --quick


def test_search_efficiency_quick():
  lines = _run("search_efficiency.py").splitlines()
  tail = lines[lines.index(next(line for line in lines
                                if line.startswith("TARGETS"))) + 1:]
  assert [line.split(":")[0].strip() for line in tail] == [
      "successive halving", "hyperband", "PBT"]
  assert all(line.rstrip().endswith(("MET", "MISSED")) for line in tail)
