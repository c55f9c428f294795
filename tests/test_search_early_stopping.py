"""Early stopping inside a stepwise sweep: stopped trials freeze and stop
costing compute, with and without chunking.
"""

import jax
import numpy as np
from _quadratic_search import quad_init, quad_segment

import jopt
from jopt import sweep


def test_early_stopped_trials_freeze_and_stop_costing_compute():
  calls = []

  def segment(state, hp):
    calls.append(1)  # counts traces, not calls
    return quad_segment(state, hp)

  # lr = 0 never improves: it stops after `patience` segments. lr = 1 and
  # 1.5 converge, then stop once they improve by less than min_delta.
  space = {"lr": sweep.choice([0.0, 1.0, 1.5])}
  res = sweep.run_stepwise(
    quad_init,
    segment,
    space,
    num_segments=40,
    key=jax.random.key(0),
    metric="loss",
    strategy="grid",
    early_stopping=jopt.early_stopping(2, min_delta=1e-4),
  )
  run = res.segments_run
  assert run[0] == 3  # the first segment sets the best, two more without
  assert 3 < run.max() < 40
  # The host loop ends when every trial has stopped.
  assert res.history["segment_calls"] == run.max()
  # Two traces: one checks its metrics (jax.eval_shape), one compiles.
  assert len(calls) == 2
  # A stopped trial's metric is held, its state frozen.
  curve = res.metrics["loss"][0]
  np.testing.assert_array_equal(curve, np.full(40, curve[0]))


def test_early_stopping_with_jopt_rule_and_chunks():
  space = {"lr": sweep.choice([0.0, 0.0, 1.0, 1.0])}
  res = sweep.run_stepwise(
    quad_init,
    quad_segment,
    space,
    num_segments=30,
    key=jax.random.key(0),
    metric="loss",
    strategy="grid",
    max_parallel=2,
    lanes=2,
    early_stopping=jopt.early_stopping(3),
  )
  # Chunks of 2 trials (one group of 2 lanes). The first chunk (lr = 0)
  # stops after 4 segments; only 4 calls for it.
  np.testing.assert_array_equal(res.segments_run[:2], [4, 4])
  assert res.history["segment_calls"] == 4 + res.segments_run[2:].max()
