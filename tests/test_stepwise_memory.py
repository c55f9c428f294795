"""`run_stepwise` fits its chunks to the memory budget, as `run` does."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jopt import sweep
from jopt.sweep.runtime import _executor, _population, _programs

KEY = jax.random.key(3)
SPACE = {"lr": sweep.uniform(0.05, 0.5)}


def init(hp, key):
  # A state big enough that its size decides the segment's footprint.
  return {"w": jax.random.normal(key, (64, 64))}


def segment(state, hp):
  w = state["w"] - hp["lr"] * state["w"] @ state["w"].T * 1e-3
  return {"w": w}, {"loss": jnp.mean(w * w)}


def _search(**kw):
  return sweep.run_stepwise(
    init,
    segment,
    SPACE,
    num_trials=12,
    key=KEY,
    num_segments=3,
    metric="loss",
    progress=False,
    devices=jax.devices()[:1],
    **kw,
  )


def test_a_population_over_the_budget_runs_in_chunks_with_the_same_result(
  monkeypatch,
):
  whole = _search()
  assert whole.num_compiles == 2  # init and segment, sized without extra
  chunked = _search(max_parallel=4)
  pop = _population.population_for(init, segment)
  ex = _population.executor_for(12, jax.devices()[:1], None)
  hparams = sweep._space.sample(SPACE, 12, KEY, "quasirandom")
  key = _executor.KeySpec(KEY)
  big = _programs.compiled_bytes(pop.segment_program(ex, hparams, key, 12))
  small = _programs.compiled_bytes(pop.segment_program(ex, hparams, key, 4))
  assert small < big
  budget = (big + small) // 2
  monkeypatch.setenv("JOPT_SWEEP_MEMORY_BYTES", str(budget))
  sizes = []
  run_segment = _population.Population.segment

  def spy(self, ex, state, *args, **kw):
    sizes.append(jax.tree.leaves(state)[0].shape[0])
    return run_segment(self, ex, state, *args, **kw)

  monkeypatch.setattr(_population.Population, "segment", spy)
  fitted = _search()
  assert sizes and max(sizes) < 12
  assert all(
    _programs.compiled_bytes(pop.segment_program(ex, hparams, key, n)) <= budget
    for n in sizes
  )
  for result in (chunked, fitted):
    for k in whole.metrics:
      np.testing.assert_array_equal(result.metrics[k], whole.metrics[k])


def test_one_group_over_the_budget_warns_and_runs(monkeypatch):
  monkeypatch.setenv("JOPT_SWEEP_MEMORY_BYTES", "1")
  with pytest.warns(sweep.MemoryBudgetWarning, match="lanes="):
    result = _search()
  assert np.all(np.isfinite(result.metrics["loss"]))


def test_the_memory_warning_shows_under_python_default_filters():
  # Python's default filters hide a ResourceWarning; this one is shown.
  code = textwrap.dedent("""
      import jax, jax.numpy as jnp
      from jopt import sweep
      sweep.run_stepwise(
          lambda hp, key: jnp.ones(3), lambda x, hp: (x, {"loss": x[0]}),
          {"lr": sweep.uniform(0.1, 0.2)}, num_trials=2, num_segments=1,
          key=jax.random.key(0), metric="loss")
  """)
  env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
  env.update(
    JOPT_SWEEP_MEMORY_BYTES="1",
    PYTHONPATH=os.pathsep.join(
      [
        os.path.dirname(os.path.dirname(os.path.dirname(sweep.__file__))),
        env.get("PYTHONPATH", ""),
      ]
    ),
  )
  out = subprocess.run(
    [sys.executable, "-c", code],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    check=True,
  )
  assert "MemoryBudgetWarning" in out.stderr and "lanes=" in out.stderr


def test_a_last_smaller_chunk_reuses_the_chunks_programs():
  def run(max_parallel):
    return sweep.run_stepwise(
      init,
      segment,
      SPACE,
      num_trials=10,
      key=KEY,
      num_segments=2,
      metric="loss",
      devices=jax.devices()[:1],
      lanes=2,
      max_parallel=max_parallel,
      early_stopping=1,
    )

  whole, chunked = run(None), run(4)  # chunks of 4, 4 and 2 trials
  assert chunked.num_compiles == whole.num_compiles == 3  # + stop update
  for k in whole.metrics:
    np.testing.assert_array_equal(chunked.metrics[k], whole.metrics[k])
  np.testing.assert_array_equal(chunked.segments_run, whole.segments_run)
