"""Successive halving and Hyperband, on the closed-form quadratic model."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _quadratic_search import (
  SPACE,
  STEPS,
  initial_w,
  quad_init,
  quad_segment,
  reference_loss,
)

from jopt import sweep
from jopt.sweep.strategies import _halving


@pytest.fixture(scope="module")
def halving():
  key = jax.random.key(3)
  res = sweep.successive_halving(
    quad_init,
    quad_segment,
    SPACE,
    num_trials=18,
    key=key,
    eta=3,
    min_segments=1,
    max_segments=9,
    metric="loss",
    steps_per_segment=STEPS,
  )
  return key, res


def test_halving_keeps_exactly_the_top_trials(halving):
  key, res = halving
  rungs = res.history["rungs"]
  assert [r["segments"] for r in rungs] == [1, 3, 9]
  assert [len(r["trials"]) for r in rungs] == [18, 6, 2]
  lrs = res.hparams["lr"]
  for rung, nxt in zip(rungs[:-1], rungs[1:], strict=True):
    ref = np.array(
      [
        reference_loss(lrs[i], initial_w(key, i), rung["segments"])
        for i in rung["trials"]
      ]
    )
    # float32 training vs float64 closed form: rtol 1e-4 covers the rounding
    # of a few dozen float32 steps.
    np.testing.assert_allclose(rung["values"], ref, rtol=1e-4, atol=1e-7)
    expected = np.sort(
      rung["trials"][np.argsort(ref)[: len(rung["trials"]) // 3]]
    )
    np.testing.assert_array_equal(nxt["trials"], expected)
    np.testing.assert_array_equal(rung["promoted"], expected)
  # Member-steps: every trial ran up to its last rung, never retrained.
  assert res.member_segments == 18 * 1 + 6 * 2 + 2 * 6
  assert res.member_steps == res.member_segments * STEPS
  assert sorted(res.final_trials) == sorted(rungs[-1]["trials"])


def test_halving_survivor_continues_as_uninterrupted_training(halving):
  key, res = halving
  trial = int(res.final_trials[0])
  # The trial alone, never interrupted (two copies: like the engine, runs
  # use >= 2 lanes, since a one-lane vmap compiles to different kernels).
  hp = {"lr": jnp.full((2,), res.hparams["lr"][trial], jnp.float32)}
  state = jax.vmap(quad_init)(
    hp, jnp.stack([jax.random.fold_in(key, trial)] * 2)
  )
  seg = jax.jit(jax.vmap(quad_segment))
  for _ in range(9):
    state, _ = seg(state, hp)
  state = jax.tree.map(lambda x: x[:1], state)
  survivor = jax.tree.map(lambda x: x[:1], res.final_state)
  # Each lane computes the same float32 operations whatever the batch, and
  # the rung gathers copy values, so equality is exact (no tolerance).
  chex.assert_trees_all_equal(survivor, state)
  assert int(survivor["t"][0]) == 9 * STEPS


def test_halving_compiles_one_init_and_one_segment(halving):
  _, res = halving
  # Three rungs of 18, 6 and 2 trials run in the first rung's rows: one
  # init and one segment program, whatever the rung sizes.
  assert res.history["population_sizes"] == [2, 6, 18]
  assert res.history["capacity"] == 18
  assert res.num_compiles == 2
  again = sweep.successive_halving(
    quad_init,
    quad_segment,
    SPACE,
    num_trials=18,
    key=jax.random.key(4),
    eta=3,
    max_segments=9,
    metric="loss",
  )
  # The same functions: the programs are shared, not compiled again.
  assert again.num_compiles == 2


def test_halving_result_saves_its_search_record(halving, tmp_path):
  _, res = halving
  res.save(tmp_path / "sh.npz")
  back = sweep.AdaptiveResult.load(tmp_path / "sh.npz")
  assert (back.metric, back.mode) == (res.metric, res.mode)
  assert back.member_steps == res.member_steps
  assert back.best().index == res.best().index
  np.testing.assert_array_equal(back.segments_run, res.segments_run)
  np.testing.assert_array_equal(back.final_trials, res.final_trials)
  assert back.final_state is None  # a training state is not a result
  assert len(back.history["rungs"]) == len(res.history["rungs"])
  for a, b in zip(back.history["rungs"], res.history["rungs"], strict=True):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  assert back.history["brackets"] == res.history["brackets"]
  stats = ("num_compiles", "num_cached", "compile_time", "memory_bytes")
  assert [getattr(back, k) for k in stats] == [getattr(res, k) for k in stats]
  assert res.memory_bytes > 0  # read from the search's executor


def test_hyperband_brackets_and_budget():
  brackets = _halving.hyperband_brackets(3, 1, 9)
  assert brackets == [(9, [1, 3, 9]), (5, [3, 9]), (3, [9])]
  res = sweep.hyperband(
    quad_init,
    quad_segment,
    SPACE,
    key=jax.random.key(0),
    eta=3,
    max_segments=9,
    metric="loss",
  )
  assert len(res) == 17
  assert res.member_segments == (9 + 3 * 2 + 1 * 6) + (5 * 3 + 1 * 6) + 3 * 9
  best = res.best()
  assert best.index in res.final_trials
  assert res.segments_run[best.index] == 9


def test_hyperband_samples_each_bracket_evenly_and_repeats_iterations():
  space = {"lr": sweep.uniform(0.05, 1.9)}
  res = sweep.hyperband(
    quad_init,
    quad_segment,
    space,
    key=jax.random.key(0),
    eta=3,
    max_segments=9,
    metric="loss",
    iterations=2,
  )
  sizes = [b["num_trials"] for b in res.history["brackets"]]
  assert sizes == [9, 5, 3] * 2
  assert res.member_segments == 2 * (
    (9 + 3 * 2 + 1 * 6) + (5 * 3 + 1 * 6) + 3 * 9
  )
  # Per-bracket scrambled Sobol: the 9-trial bracket has one trial in each
  # ninth of the range up to Sobol's balance for a non-power-of-two count,
  # so at least 7 of the 9 ninths are hit (a uniform draw hits ~5.8).
  lr = res.hparams["lr"][:9]
  ninths = np.floor((lr - 0.05) / (1.9 - 0.05) * 9).astype(int)
  assert len(set(ninths.tolist())) >= 7
  # Every bracket spans the range: none sits in one half only.
  lo = 0
  for n in sizes:
    bracket = res.hparams["lr"][lo : lo + n]
    assert bracket.min() < 0.975 < bracket.max()
    lo += n
  with pytest.raises(ValueError, match="iterations"):
    sweep.hyperband(
      quad_init,
      quad_segment,
      space,
      key=jax.random.key(0),
      max_segments=9,
      metric="loss",
      iterations=0,
    )


@pytest.mark.parametrize(
  "kwargs",
  [
    {"eta": 1},
    {"max_segments": 0},
    {"min_segments": 0},
    {"num_trials": 0},
    {"min_segments": 5, "max_segments": 3},
  ],
)
def test_halving_rejects_bad_configuration(kwargs):
  args = {
    "num_trials": 4,
    "key": jax.random.key(0),
    "max_segments": 3,
    "metric": "loss",
    **kwargs,
  }
  with pytest.raises(ValueError):
    sweep.successive_halving(quad_init, quad_segment, SPACE, **args)


def count_init(hp, key):
  del hp, key
  return {"t": jnp.zeros((), jnp.float32)}


def overfitting_segment(state, hp):
  # A validation loss that falls with lr and rises with training: a trial
  # stopped early reads lower than the trial trained to the end.
  t = state["t"] + 1
  return {"t": t}, {"loss": 1 / hp["lr"] + 0.1 * t}


@pytest.mark.parametrize("search", ["halving", "hyperband"])
def test_best_counts_only_trials_trained_to_the_full_budget(search):
  space = {"lr": sweep.uniform(1.0, 9.0)}
  if search == "halving":
    space = {"lr": sweep.choice([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])}
    res = sweep.successive_halving(
      count_init,
      overfitting_segment,
      space,
      num_trials=9,
      key=jax.random.key(0),
      max_segments=9,
      metric="loss",
      strategy="grid",
    )
  else:
    res = sweep.hyperband(
      count_init,
      overfitting_segment,
      space,
      key=jax.random.key(0),
      max_segments=9,
      metric="loss",
    )
  final = set(res.final_trials.tolist())
  best = res.best()
  assert best.index in final and res.segments_run[best.index] == 9
  finals = [i for i in final if np.isfinite(res.scalar("loss")[i])]
  assert best.index == min(finals, key=lambda i: res.scalar("loss")[i])
  assert [t.index for t in res.top_k(k=len(res))] == sorted(
    finals, key=lambda i: res.scalar("loss")[i]
  )
  # At any budget, a trial stopped at 3 segments reads lower.
  anywhere = res.best(full_budget=False)
  assert res.segments_run[anywhere.index] < 9
  assert anywhere.metrics["loss"] < best.metrics["loss"]
  assert len(res.top_k(k=len(res), full_budget=False)) == len(res)
