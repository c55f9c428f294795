"""Smoke test of examples/classics on its --quick configuration."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _example_loader import load_example_module

import jopt


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("classics")
  summary = load_example_module("classics").main(
    ["--quick", "--no-progress", "--out", str(out)]
  )
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


def test_tuner_switch_is_the_chosen_optimizer():
  """`switch` (the tuner's one transformation for three optimizers)."""
  switch = load_example_module("classics", "tuner").switch
  txs = (jopt.sgd(0.1, momentum=0.9), jopt.adam(1e-2), jopt.rmsprop(1e-2))
  params = {"w": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array(0.5)}
  grads = [
    jax.tree.map(lambda p, t=t: jnp.sin(p + t), params) for t in (0.0, 1.0)
  ]

  def run(tx):
    state = tx.init(params)
    steps = []
    for g in grads:
      updates, state = tx.update(g, state, params)
      steps.append(updates)
    return steps, state

  expected = [run(tx) for tx in txs]
  # Tolerance: `lax.switch` compiles the chosen branch as one XLA program
  # while the references here run op by op, and vmapped over the index (as
  # the sweep runs it) every branch runs and each lane selects its own: XLA
  # may fuse either differently, which moves float32 results by an ulp or
  # two (1.5e-8 seen); rtol 1e-6 is ~8 ulp, far below any wrong choice.
  close = functools.partial(chex.assert_trees_all_close, rtol=1e-6, atol=1e-7)
  for i in range(len(txs)):
    updates, state = run(switch(jnp.int32(i), txs))
    close(updates, expected[i][0])
    close(state.states[i], expected[i][1])
  batched = jax.vmap(lambda i: run(switch(i, txs))[0])(jnp.arange(3))
  for i in range(len(txs)):
    close(jax.tree.map(lambda a, i=i: a[i], batched), expected[i][0])
