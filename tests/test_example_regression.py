"""Smoke test of examples/regression on its --quick configuration."""

import numpy as np
import pytest
from _example_loader import load_example_module


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("regression")
  summary = load_example_module("regression").main(["--quick", "--no-progress", "--out", str(out)])
  return out, summary


def test_plots_written(quick_run):
  out, _ = quick_run
  for name in (
    "linear_fit",
    "linear_loss_curves",
    "diabetes_fit",
    "diabetes_lr_sweep",
    "diabetes_train_loss_curves",
    "diabetes_val_loss_curves",
  ):
    assert (out / f"{name}.png").stat().st_size > 0, name


def test_linear_regression_matches_least_squares(quick_run):
  linear = quick_run[1]["linear"]
  # After 100 steps at lr=0.3 the slowest direction has contracted by
  # (1 - 0.3 * 0.3)^100 ~ 1e-4 of its initial error (~3): well inside 1e-3.
  np.testing.assert_allclose(
    (linear["w"], linear["b"]), linear["lstsq"], atol=1e-3
  )
  # And the least-squares line itself is the one the data were drawn from.
  np.testing.assert_allclose(linear["lstsq"], (3.0, 2.0), atol=0.3)
  # lr=0.6 is above 2 / L (L ~ 4.4, the loss's curvature): it must diverge,
  # and the sweep must say so.
  assert linear["diverged"] == [pytest.approx(0.6)]
  assert linear["result"].diverged.sum() == 1


def test_diabetes_sweep_learns(quick_run):
  diabetes = quick_run[1]["diabetes"]
  result = diabetes["result"]
  assert result.metrics["val_loss"].shape == (4, 60)
  assert result.metrics["train_loss"].shape == (4, 60)
  # The best of the four learning rates explains part of the variance on
  # unseen data (ordinary least squares gets ~0.34 on this split); the bar
  # is loose because this run is tiny (60 steps, 16 hidden units).
  assert diabetes["test_r2"] > 0.15
  assert diabetes["learning_rate"] in result.hparams["learning_rate"]
