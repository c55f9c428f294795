"""Smoke test of examples/classics on its --quick configuration."""

import numpy as np
import pytest
from _example_loader import load_example_module


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("classics")
  summary = load_example_module("classics").main(["--quick", "--no-progress", "--out", str(out)])
  return out, summary


def test_plots_written(quick_run):
  out, _ = quick_run
  for name in (
    "xor",
    "iris_cv_accuracy",
    "tuner_val_accuracy",
    "tuner_parallel",
  ):
    assert (out / f"{name}.png").stat().st_size > 0, name


def test_xor_every_seed_solves_it(quick_run):
  xor = quick_run[1]["xor"]
  np.testing.assert_array_equal(xor["accuracy"], np.ones(4))
  assert xor["solved"] == 4


def test_iris_grid_search_agrees_with_sklearn(quick_run):
  iris = quick_run[1]["iris"]
  ours, theirs = iris["jopt"], iris["sklearn"]
  # 1 learning rate x 2 penalties x 2 strengths, each on 3 folds, + refit.
  assert ours["fits"] == theirs["fits"] == 4 * 3 + 1
  assert ours["result"].metrics["val_accuracy_per_fold"].shape == (4, 3)
  # Same folds, same objectives: the CV accuracies of the two searches differ
  # only by how far 100 GD steps are from sklearn's converged solver (at most
  # a few of the 120 training points, ~0.05 of accuracy).
  assert abs(ours["cv_accuracy"] - theirs["cv_accuracy"]) <= 0.05
  assert ours["test_accuracy"] >= 0.85
  assert theirs["test_accuracy"] >= 0.85


def test_tuner_searches_the_mixed_space(quick_run):
  result = quick_run[1]["tuner"]["result"]
  assert set(result.hparams["optimizer"]) <= {"sgd", "adam", "rmsprop"}
  assert set(result.hparams["activation"]) <= {"relu", "tanh"}
  assert set(result.hparams["batch_size"].tolist()) <= {16, 32, 64, 128}
  assert result.metrics["train_loss"].shape == (4, 30)
  table = result.to_pandas()
  assert len(table) == 4
  assert np.all((table["val_accuracy"] >= 0) & (table["val_accuracy"] <= 1))
