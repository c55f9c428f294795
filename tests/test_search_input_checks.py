"""What every stepwise search checks in what it is given and gets back.

A misspelt mode is refused before anything is traced, a metric the
segment does not return is named after one segment, and a trial that
diverges stays diverged.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _quadratic_search import SPACE, quad_init, quad_segment

from jopt import sweep


def _typo_mode(fn):
  return {
    "run_stepwise": lambda: sweep.run_stepwise(
      quad_init,
      fn,
      SPACE,
      num_segments=2,
      num_trials=2,
      key=jax.random.key(0),
      metric="loss",
      mode="minimize",
    ),
    "successive_halving": lambda: sweep.successive_halving(
      quad_init,
      fn,
      SPACE,
      num_trials=3,
      key=jax.random.key(0),
      max_segments=3,
      metric="loss",
      mode="minimize",
    ),
    "hyperband": lambda: sweep.hyperband(
      quad_init,
      fn,
      SPACE,
      key=jax.random.key(0),
      max_segments=3,
      metric="loss",
      mode="minimize",
    ),
    "pbt": lambda: sweep.pbt(
      quad_init,
      fn,
      SPACE,
      population=4,
      key=jax.random.key(0),
      num_rounds=1,
      metric="loss",
      mode="minimize",
    ),
  }


@pytest.mark.parametrize(
  "search", ["run_stepwise", "successive_halving", "hyperband", "pbt"]
)
def test_searches_refuse_a_bad_mode_before_training(search):
  calls = []

  def segment(state, hp):
    calls.append(1)
    return quad_segment(state, hp)

  with pytest.raises(ValueError, match="mode must be 'min' or 'max'"):
    _typo_mode(segment)[search]()
  assert not calls  # nothing was traced, let alone trained


@pytest.mark.parametrize(
  "search", ["run_stepwise", "successive_halving", "pbt"]
)
def test_searches_name_an_unknown_metric_after_one_segment(search):
  def segment(state, hp):
    state, metrics = quad_segment(state, hp)
    return state, {"lose": metrics["loss"]}

  call = {
    "run_stepwise": lambda: sweep.run_stepwise(
      quad_init,
      segment,
      SPACE,
      num_segments=5,
      num_trials=2,
      key=jax.random.key(0),
      metric="loss",
    ),
    "successive_halving": lambda: sweep.successive_halving(
      quad_init,
      segment,
      SPACE,
      num_trials=3,
      key=jax.random.key(0),
      min_segments=5,
      max_segments=9,
      metric="loss",
    ),
    "pbt": lambda: sweep.pbt(
      quad_init,
      segment,
      SPACE,
      population=4,
      key=jax.random.key(0),
      num_rounds=1,
      metric="loss",
    ),
  }[search]
  with pytest.raises(ValueError, match=r"metric 'loss'.*\['lose'\]"):
    call()


def test_run_stepwise_keeps_a_diverged_trial_diverged():
  # Trial lr = 2 reports NaN from its second segment on: it must stay NaN,
  # be flagged, and never be picked as the best (its first value, 0.01,
  # would otherwise win).
  def segment(t, hp):
    t = t + 1
    loss = jnp.where(hp["lr"] > 1.0, jnp.where(t > 1, jnp.nan, 0.01), 1.0 / t)
    return t, {"loss": loss, "step": t.astype(jnp.int32)}

  res = sweep.run_stepwise(
    lambda hp, key: jnp.zeros(()),
    segment,
    {"lr": sweep.choice([0.5, 2.0])},
    num_segments=4,
    key=jax.random.key(0),
    metric="loss",
    strategy="grid",
  )
  np.testing.assert_array_equal(
    res.metrics["loss"][1], np.float32([0.01, np.nan, np.nan, np.nan])
  )
  np.testing.assert_array_equal(res.diverged, [False, True])
  assert res.best().index == 0
  np.testing.assert_array_equal(res.metrics["step"], [[1, 2, 3, 4]] * 2)


def test_memory_budget_variable_accepts_floats_and_names_itself(monkeypatch):
  from jopt.sweep.runtime import _programs

  monkeypatch.setenv("JOPT_SWEEP_MEMORY_BYTES", "2e9")
  assert _programs.memory_budget(jax.devices()[0]) == 2_000_000_000
  for bad in ("two GB", "0", "-5", "inf", "nan"):
    monkeypatch.setenv("JOPT_SWEEP_MEMORY_BYTES", bad)
    with pytest.raises(ValueError, match="JOPT_SWEEP_MEMORY_BYTES"):
      _programs.memory_budget(jax.devices()[0])
