"""Smoke test of benchmarks/lr_free.py: the race runs end to end, in one
compile, and reports every arm over every seed."""

import importlib.util
import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load():
  spec = importlib.util.spec_from_file_location(
    "_jopt_benchmark_lr_free", ROOT / "benchmarks" / "lr_free.py"
  )
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module
  spec.loader.exec_module(module)
  return module


def test_quick_race(tmp_path, capsys):
  bench = _load()
  # The diabetes task only: the CNN's compile would double the test's time,
  # and both tasks share every line of the racing code.
  report = bench.main(
    [
      "--quick",
      "--tasks",
      "mlp_diabetes",
      "--no-progress",
      "--out",
      str(tmp_path),
    ]
  )
  out = capsys.readouterr().out
  task = report["mlp_diabetes"]
  assert task["num_compiles"] == 1  # every arm and seed: one program
  arms = task["arms"]
  assert set(arms) == {"adamw lr=0.001", "adamw lr=0.01", *bench.METHODS}
  for name, row in arms.items():
    assert len(row["seeds"]) == 2, name
    assert name in out
  # Seeds are paired across arms and distinct within one.
  assert arms["adamw lr=0.01"]["seeds"][0] != arms["adamw lr=0.01"]["seeds"][1]
  # Ten full-batch steps of AdamW at 1e-2 lower the standardised MSE (about
  # 1 at init) more than at 1e-3: the arms are not all the same optimizer.
  assert arms["adamw lr=0.01"]["median"] < arms["adamw lr=0.001"]["median"]
  assert np.isfinite(arms["prodigy"]["median"])
  assert (tmp_path / "lr_free.png").stat().st_size > 10_000
  saved = json.loads((tmp_path / "summary.json").read_text())
  assert saved["mlp_diabetes"]["best_adamw"] == "adamw lr=0.01"


def test_the_cnn_task_builds_from_the_example_model():
  # The race's CNN task uses examples/cnn's model (Flax NNX): it must build
  # and give a finite loss, as the race would see it (no race run here).
  import jax

  bench = _load()
  task = next(t for t in bench.default_tasks(True) if t.name == "cnn_digits")
  init, loss, train, _ = bench.load(task)
  params = init(jax.random.key(0))
  value = loss(params, train[0][:8], train[1][:8])
  assert np.isfinite(float(value)) and float(value) > 0
