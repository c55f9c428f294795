"""Every search follows one memory policy (`jopt.sweep.runtime._programs`).

A search that can split its trials (an Optuna round, `lr_find`'s runs)
runs them in calls that fit the budget, with the results of one call; a
population that must train together (halving, PBT) warns when it is over.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _quadratic_search import quad_init, quad_segment

from jopt import sweep
from jopt.sweep.runtime import _programs

KEY = jax.random.key(7)
DEVICE = jax.devices()[:1]


def bowl(hp, key):
  noise = 1e-3 * jax.random.normal(key, ())
  return {"loss": (jnp.log10(hp["lr"]) + 2.0) ** 2 + noise}


def _calls(monkeypatch):
  """The trial-axis size of every program call, as they happen."""
  sizes = []
  call = _programs.call

  def spy(ex, program, *args):
    sizes.append(len(jax.tree.leaves(args[0])[0]))
    return call(ex, program, *args)

  monkeypatch.setattr(_programs, "call", spy)
  return sizes


def _optuna(**kw):
  pytest.importorskip("optuna")
  return sweep.optuna_search(
    bowl,
    {"lr": sweep.log_uniform(1e-4, 1.0)},
    num_rounds=2,
    batch_size=4,
    key=KEY,
    metric="loss",
    sampler="random",
    progress=False,
    devices=DEVICE,
    **kw,
  )


def test_an_optuna_round_over_the_budget_runs_in_calls(monkeypatch):
  whole = _optuna()
  monkeypatch.setenv("JOPT_SWEEP_MEMORY_BYTES", "1")
  sizes = _calls(monkeypatch)
  with pytest.warns(sweep.MemoryBudgetWarning, match="lanes="):
    split = _optuna()
  assert sizes == [1] * 8  # one trial per call: a round of 4, twice
  np.testing.assert_array_equal(split.metrics["loss"], whole.metrics["loss"])
  np.testing.assert_array_equal(split.hparams["lr"], whole.hparams["lr"])


def _lr_find():
  def init(hp, key):
    return jax.random.normal(key, (3,))

  def segment(w, hp):
    w = w - hp["learning_rate"] * 2 * w
    return w, {"loss": jnp.sum(w * w)}

  return sweep.lr_find(
    init,
    segment,
    key=KEY,
    min_lr=1e-2,
    max_lr=0.4,
    num_steps=8,
    num_rates=4,
    num_seeds=2,
    devices=DEVICE,
  )


def test_lr_find_runs_over_the_budget_run_in_calls(monkeypatch):
  whole = _lr_find()
  monkeypatch.setenv("JOPT_SWEEP_MEMORY_BYTES", "1")
  sizes = _calls(monkeypatch)
  with pytest.warns(sweep.MemoryBudgetWarning, match="lanes="):
    split = _lr_find()
  assert sizes == [1] * 8  # 4 rates x 2 seeds, one run per call
  np.testing.assert_array_equal(split.losses, whole.losses)


@pytest.mark.parametrize("search", ["successive_halving", "pbt"])
def test_a_population_over_the_budget_warns_and_trains(monkeypatch, search):
  monkeypatch.setenv("JOPT_SWEEP_MEMORY_BYTES", "1")
  kw = (
    dict(num_trials=4, max_segments=2, eta=2)
    if search == "successive_halving"
    else dict(population=4, num_rounds=2)
  )
  with pytest.warns(sweep.MemoryBudgetWarning, match="lanes=") as record:
    res = getattr(sweep, search)(
      quad_init,
      quad_segment,
      {"lr": sweep.uniform(0.05, 0.5)},
      key=KEY,
      metric="loss",
      progress=False,
      devices=DEVICE,
      **kw,
    )
  assert np.all(np.isfinite(res.metrics["loss"]))
  # The warning points at the caller, not at jopt's insides.
  assert {w.filename for w in record} == {__file__}


def test_a_finished_stepwise_search_resumes_without_compiling(tmp_path):
  def search():
    return sweep.run_stepwise(
      quad_init,
      quad_segment,
      {"lr": sweep.uniform(0.05, 0.5)},
      num_trials=4,
      key=KEY,
      num_segments=2,
      metric="loss",
      progress=False,
      devices=DEVICE,
      checkpoint_dir=str(tmp_path),
    )

  first = search()
  sweep.clear_caches()
  again = search()
  assert again.num_compiles == 0  # everything came from the checkpoint
  np.testing.assert_array_equal(again.metrics["loss"], first.metrics["loss"])
