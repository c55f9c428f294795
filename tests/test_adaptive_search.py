"""Adaptive search: successive halving, Hyperband, PBT, Optuna, lr_find.

The "model" is gradient descent on a quadratic, whose loss after k steps has
a closed form, so references are exact and everything compiles in seconds.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jopt
from jopt import sweep

CURVATURE = np.array([1.0, 0.5, 0.1], np.float32)
TARGET = np.array([1.0, -2.0, 0.5], np.float32)
STEPS = 3  # gradient steps per segment


def quad_init(hp, key):
  del hp
  return {"w": jax.random.normal(key, (3,), jnp.float32),
          "t": jnp.zeros((), jnp.int32)}


def quad_segment(state, hp):
  c, target = jnp.asarray(CURVATURE), jnp.asarray(TARGET)

  def step(w, _):
    return w - hp["lr"] * c * (w - target), None

  w, _ = jax.lax.scan(step, state["w"], None, length=STEPS)
  loss = 0.5 * jnp.sum(c * (w - target) ** 2)
  return {"w": w, "t": state["t"] + STEPS}, {"loss": loss}


def reference_loss(lr, w0, segments):
  """Closed-form loss of GD on the quadratic after ``segments`` segments."""
  k = segments * STEPS
  w = TARGET + (1 - np.float64(lr) * CURVATURE) ** k * (w0 - TARGET)
  return 0.5 * np.sum(CURVATURE * (w - TARGET) ** 2)


def initial_w(key, trial):
  return np.asarray(quad_init(None, jax.random.fold_in(key, trial))["w"],
                    np.float64)


SPACE = {"lr": sweep.uniform(0.05, 1.9)}


# --- Successive halving / Hyperband ----------------------------------------------


@pytest.fixture(scope="module")
def halving():
  key = jax.random.key(3)
  res = sweep.successive_halving(
      quad_init, quad_segment, SPACE, num_trials=18, key=key, eta=3,
      min_segments=1, max_segments=9, metric="loss", steps_per_segment=STEPS)
  return key, res


def test_halving_keeps_exactly_the_top_trials(halving):
  key, res = halving
  rungs = res.history["rungs"]
  assert [r["segments"] for r in rungs] == [1, 3, 9]
  assert [len(r["trials"]) for r in rungs] == [18, 6, 2]
  lrs = res.hparams["lr"]
  for rung, nxt in zip(rungs[:-1], rungs[1:], strict=True):
    ref = np.array([reference_loss(lrs[i], initial_w(key, i), rung["segments"])
                    for i in rung["trials"]])
    # float32 training vs float64 closed form: rtol 1e-4 covers the rounding
    # of a few dozen float32 steps.
    np.testing.assert_allclose(rung["values"], ref, rtol=1e-4, atol=1e-7)
    expected = np.sort(rung["trials"][np.argsort(ref)[:len(rung["trials"]) // 3]])
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
      hp, jnp.stack([jax.random.fold_in(key, trial)] * 2))
  seg = jax.jit(jax.vmap(quad_segment))
  for _ in range(9):
    state, _ = seg(state, hp)
  state = jax.tree.map(lambda x: x[:1], state)
  survivor = jax.tree.map(lambda x: x[:1], res.final_state)
  # Each lane computes the same float32 operations whatever the batch, and
  # the rung gathers copy values, so equality is exact (no tolerance).
  chex.assert_trees_all_equal(survivor, state)
  assert int(survivor["t"][0]) == 9 * STEPS


def test_halving_compiles_once_per_population_size(halving):
  _, res = halving
  sizes = res.history["population_sizes"]
  # At most one segment compile per distinct (device-padded) size, plus one
  # init (fewer when an earlier search on the same functions compiled some:
  # programs are shared).
  assert res.num_compiles <= len(sizes) + 1
  again = sweep.successive_halving(
      quad_init, quad_segment, SPACE, num_trials=18, key=jax.random.key(4),
      eta=3, max_segments=9, metric="loss")
  assert again.num_compiles == 0


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


def test_hyperband_brackets_and_budget():
  brackets = sweep._halving.hyperband_brackets(3, 1, 9)
  assert brackets == [(9, [1, 3, 9]), (5, [3, 9]), (3, [9])]
  res = sweep.hyperband(quad_init, quad_segment, SPACE, key=jax.random.key(0),
                        eta=3, max_segments=9, metric="loss")
  assert len(res) == 17
  assert res.member_segments == (9 + 3 * 2 + 1 * 6) + (5 * 3 + 1 * 6) + 3 * 9
  best = res.best()
  assert best.index in res.final_trials
  assert res.segments_run[best.index] == 9


def test_hyperband_samples_each_bracket_evenly_and_repeats_iterations():
  space = {"lr": sweep.uniform(0.05, 1.9)}
  res = sweep.hyperband(quad_init, quad_segment, space, key=jax.random.key(0),
                        eta=3, max_segments=9, metric="loss", iterations=2)
  sizes = [b["num_trials"] for b in res.history["brackets"]]
  assert sizes == [9, 5, 3] * 2
  assert res.member_segments == 2 * ((9 + 3 * 2 + 1 * 6) + (5 * 3 + 1 * 6)
                                     + 3 * 9)
  # Per-bracket scrambled Sobol: the 9-trial bracket has one trial in each
  # ninth of the range up to Sobol's balance for a non-power-of-two count,
  # so at least 7 of the 9 ninths are hit (a uniform draw hits ~5.8).
  lr = res.hparams["lr"][:9]
  ninths = np.floor((lr - 0.05) / (1.9 - 0.05) * 9).astype(int)
  assert len(set(ninths.tolist())) >= 7
  # Every bracket spans the range: none sits in one half only.
  lo = 0
  for n in sizes:
    bracket = res.hparams["lr"][lo:lo + n]
    assert bracket.min() < 0.975 < bracket.max()
    lo += n
  with pytest.raises(ValueError, match="iterations"):
    sweep.hyperband(quad_init, quad_segment, space, key=jax.random.key(0),
                    max_segments=9, metric="loss", iterations=0)


@pytest.mark.parametrize("kwargs", [
    {"eta": 1}, {"max_segments": 0}, {"min_segments": 0},
    {"num_trials": 0}, {"min_segments": 5, "max_segments": 3}])
def test_halving_rejects_bad_configuration(kwargs):
  args = {"num_trials": 4, "key": jax.random.key(0), "max_segments": 3,
          "metric": "loss", **kwargs}
  with pytest.raises(ValueError):
    sweep.successive_halving(quad_init, quad_segment, SPACE, **args)


def _typo_mode(fn):
  return {
      "run_stepwise": lambda: sweep.run_stepwise(
          quad_init, fn, SPACE, num_segments=2, num_trials=2,
          key=jax.random.key(0), metric="loss", mode="minimize"),
      "successive_halving": lambda: sweep.successive_halving(
          quad_init, fn, SPACE, num_trials=3, key=jax.random.key(0),
          max_segments=3, metric="loss", mode="minimize"),
      "hyperband": lambda: sweep.hyperband(
          quad_init, fn, SPACE, key=jax.random.key(0), max_segments=3,
          metric="loss", mode="minimize"),
      "pbt": lambda: sweep.pbt(
          quad_init, fn, SPACE, population=4, key=jax.random.key(0),
          num_rounds=1, metric="loss", mode="minimize"),
  }


@pytest.mark.parametrize("search", ["run_stepwise", "successive_halving",
                                    "hyperband", "pbt"])
def test_searches_refuse_a_bad_mode_before_training(search):
  calls = []

  def segment(state, hp):
    calls.append(1)
    return quad_segment(state, hp)

  with pytest.raises(ValueError, match="mode must be 'min' or 'max'"):
    _typo_mode(segment)[search]()
  assert not calls  # nothing was traced, let alone trained


@pytest.mark.parametrize("search", ["run_stepwise", "successive_halving",
                                    "pbt"])
def test_searches_name_an_unknown_metric_after_one_segment(search):
  def segment(state, hp):
    state, metrics = quad_segment(state, hp)
    return state, {"lose": metrics["loss"]}

  call = {
      "run_stepwise": lambda: sweep.run_stepwise(
          quad_init, segment, SPACE, num_segments=5, num_trials=2,
          key=jax.random.key(0), metric="loss"),
      "successive_halving": lambda: sweep.successive_halving(
          quad_init, segment, SPACE, num_trials=3, key=jax.random.key(0),
          min_segments=5, max_segments=9, metric="loss"),
      "pbt": lambda: sweep.pbt(
          quad_init, segment, SPACE, population=4, key=jax.random.key(0),
          num_rounds=1, metric="loss"),
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
      lambda hp, key: jnp.zeros(()), segment,
      {"lr": sweep.choice([0.5, 2.0])}, num_segments=4,
      key=jax.random.key(0), metric="loss", strategy="grid")
  np.testing.assert_array_equal(res.metrics["loss"][1],
                                np.float32([0.01, np.nan, np.nan, np.nan]))
  np.testing.assert_array_equal(res.diverged, [False, True])
  assert res.best().index == 0
  np.testing.assert_array_equal(res.metrics["step"], [[1, 2, 3, 4]] * 2)


# --- Population-based training ------------------------------------------------


def count_init(hp, key):
  del hp, key
  return {"x": jnp.zeros((), jnp.float32)}


def count_segment(state, hp):
  x = state["x"] + hp["lr"]
  return {"x": x}, {"score": x}


def test_pbt_exploit_copies_state_and_hparams():
  space = {"lr": sweep.choice([1.0, 2.0, 3.0, 4.0])}
  res = sweep.pbt(count_init, count_segment, space, population=4,
                  key=jax.random.key(0), num_rounds=2, quantile=0.25,
                  perturb=(1.0,), resample_prob=0.0, metric="score",
                  mode="max", strategy="grid")
  # Round 0: x = lr, so member 3 (lr 4) is best and member 0 (lr 1) worst.
  np.testing.assert_array_equal(res.parents, [[0, 1, 2, 3], [3, 1, 2, 3]])
  # A choice moved by a factor of 1.0 goes one value down: lr 4 -> 3.
  np.testing.assert_array_equal(res.hparam_history["lr"],
                                [[1, 2, 3, 4], [3, 2, 3, 4]])
  # Member 0 took member 3's state (x = 4) and trained with lr 3.
  np.testing.assert_array_equal(res.final_state["x"], [7.0, 4.0, 6.0, 8.0])
  np.testing.assert_array_equal(res.lineage(0), [3, 0])
  np.testing.assert_array_equal(res.schedule(0)["lr"], [4.0, 3.0])


def test_pbt_result_saves_its_lineage(tmp_path):
  space = {"lr": sweep.choice([1.0, 2.0, 3.0, 4.0]),
           "kind": sweep.choice(["a", "b"]),
           "act": sweep.choice([jax.nn.relu, jnp.tanh])}
  res = sweep.pbt(count_init, count_segment, space, population=4,
                  key=jax.random.key(1), num_rounds=3, quantile=0.25,
                  metric="score", mode="max")
  res.save(tmp_path / "pbt.npz")
  back = sweep.PBTResult.load(tmp_path / "pbt.npz")
  np.testing.assert_array_equal(back.parents, res.parents)
  np.testing.assert_array_equal(back.metric_history, res.metric_history)
  for m in range(4):
    for name in ("lr", "kind"):
      np.testing.assert_array_equal(back.schedule(m)[name],
                                    res.schedule(m)[name])
    # Functions are saved by name.
    assert [a.rsplit(".", 1)[-1] for a in back.schedule(m)["act"]] == [
        f.__name__ for f in res.schedule(m)["act"]]
  assert back.best().hparams["lr"] == res.best().hparams["lr"]
  assert back.segments_per_round == res.segments_per_round


def test_pbt_moves_integers_at_least_one_step():
  from jopt.sweep import _pbt

  dist = sweep.int_uniform(1, 8)
  value = jnp.array([1, 2, 3, 8], jnp.int32)
  replaced = jnp.array([True, True, True, False])
  for factor, expected in ((0.8, [1, 1, 2, 8]), (1.25, [2, 3, 4, 8])):
    moved = _pbt._explore_one(dist, value, replaced, jax.random.key(0),
                              value, (factor,), 0.0)
    # 1 * 0.8 clips at the lower bound; the last member was not replaced.
    np.testing.assert_array_equal(moved, expected)
  # Negative values: a factor > 1 grows the magnitude, so moves down.
  dist = sweep.int_uniform(-8, 8)
  value = jnp.array([-4, -1, 1, 4], jnp.int32)
  for factor, expected in ((0.8, [-3, 0, 0, 3]), (1.25, [-5, -2, 2, 5])):
    moved = _pbt._explore_one(dist, value, jnp.ones(4, bool),
                              jax.random.key(0), value, (factor,), 0.0)
    np.testing.assert_array_equal(moved, expected)


def test_pbt_perturbs_continuous_values_and_clips():
  space = {"lr": sweep.uniform(0.5, 5.0)}
  res = sweep.pbt(count_init, count_segment, space, population=8,
                  key=jax.random.key(1), num_rounds=2, quantile=0.25,
                  perturb=(2.0,), resample_prob=0.0, metric="score",
                  mode="max")
  first, second = res.hparam_history["lr"]
  replaced = res.parents[1] != np.arange(8)
  assert replaced.sum() == 2
  order = np.argsort(-first)
  assert set(np.flatnonzero(replaced)) == set(order[-2:])
  assert set(res.parents[1][replaced]) <= set(order[:2])
  expected = np.minimum(2.0 * first[res.parents[1]], 5.0)
  np.testing.assert_allclose(second[replaced], expected[replaced], rtol=1e-6)
  np.testing.assert_array_equal(second[~replaced], first[~replaced])
  fig = res.plot_schedules("lr")
  assert fig.axes[0].get_ylabel() == "lr"


def noisy_segment(state, hp):
  # The score is x (which grows by lr), but every second segment reads
  # 2.5 lr too low: a noisy last value that ranks the members upside down.
  x = state["x"] + hp["lr"]
  t = state["t"] + 1
  noise = jnp.where(t % 2 == 0, -2.5 * hp["lr"], 0.0)
  return {"x": x, "t": t}, {"score": x + noise}


def noisy_init(hp, key):
  del hp, key
  return {"x": jnp.zeros((), jnp.float32), "t": jnp.zeros((), jnp.int32)}


@pytest.mark.parametrize("rank_window, winner, loser", [(2, 3, 0), (1, 0, 3)])
def test_pbt_ranks_on_the_mean_of_the_last_segments(rank_window, winner,
                                                     loser):
  space = {"lr": sweep.choice([1.0, 2.0, 3.0, 4.0])}
  res = sweep.pbt(noisy_init, noisy_segment, space, population=4,
                  key=jax.random.key(0), num_rounds=2, segments_per_round=2,
                  rank_window=rank_window, quantile=0.25, perturb=(1.0,),
                  resample_prob=0.0, metric="score", mode="max",
                  strategy="grid")
  # Round 0, member i has lr = i + 1: segment 1 scores lr, segment 2
  # scores 2 lr - 2.5 lr = -0.5 lr. The last value (window 1) makes lr 1
  # best and lr 4 worst; the mean of both (0.25 lr) ranks by lr.
  expected = list(range(4))
  expected[loser] = winner
  np.testing.assert_array_equal(res.parents[1], expected)


@pytest.mark.parametrize("kwargs", [
    {"population": 3, "quantile": 0.25}, {"quantile": 0.75},
    {"segments_per_round": 2, "rank_window": 3}, {"rank_window": 0},
    {"num_rounds": 0}, {"perturb": ()}, {"resample_prob": 2.0}])
def test_pbt_rejects_bad_configuration(kwargs):
  args = {"population": 8, "key": jax.random.key(0), "num_rounds": 2,
          "metric": "score", **kwargs}
  with pytest.raises(ValueError):
    sweep.pbt(count_init, count_segment, SPACE, **args)


# --- Early stopping inside a sweep --------------------------------------------------


def test_early_stopped_trials_freeze_and_stop_costing_compute():
  calls = []

  def segment(state, hp):
    calls.append(1)  # one trace: counts compiles, not calls
    return quad_segment(state, hp)

  # lr = 0 never improves: it stops after `patience` segments. lr = 1 and
  # 1.5 converge, then stop once they improve by less than min_delta.
  space = {"lr": sweep.choice([0.0, 1.0, 1.5])}
  res = sweep.run_stepwise(
      quad_init, segment, space, num_segments=40, key=jax.random.key(0),
      metric="loss", strategy="grid",
      early_stopping=jopt.early_stopping(2, min_delta=1e-4))
  run = res.segments_run
  assert run[0] == 3  # the first segment sets the best, two more without
  assert 3 < run.max() < 40
  # The host loop ends when every trial has stopped.
  assert res.history["segment_calls"] == run.max()
  assert len(calls) == 1
  # A stopped trial's metric is held, its state frozen.
  curve = res.metrics["loss"][0]
  np.testing.assert_array_equal(curve, np.full(40, curve[0]))


def test_early_stopping_with_jopt_rule_and_chunks():
  space = {"lr": sweep.choice([0.0, 0.0, 1.0, 1.0])}
  res = sweep.run_stepwise(quad_init, quad_segment, space, num_segments=30,
                           key=jax.random.key(0), metric="loss",
                           strategy="grid", max_parallel=2, lanes=2,
                           early_stopping=jopt.early_stopping(3))
  # Chunks of 2 trials (one group of 2 lanes). The first chunk (lr = 0)
  # stops after 4 segments; only 4 calls for it.
  np.testing.assert_array_equal(res.segments_run[:2], [4, 4])
  assert res.history["segment_calls"] == 4 + res.segments_run[2:].max()


# --- lr_find ----------------------------------------------------------------------


@pytest.mark.parametrize("offset, num_rates", [(0.0, None), (-5.0, None),
                                               (0.0, 24)])
def test_lr_find_lands_near_the_known_best_learning_rate(offset, num_rates):
  # offset -5: the same problem with a loss below zero throughout (a
  # log-likelihood, say), where "4 times the best" would mean nothing.
  # num_rates: 24 short runs at fixed rates instead of one ramp.
  rng = np.random.default_rng(0)
  x = (rng.normal(size=(256, 8)) * np.linspace(0.3, 2.0, 8)).astype(np.float32)
  y = (x @ rng.normal(size=8) + 0.1 * rng.normal(size=256)).astype(np.float32)
  lipschitz = np.linalg.eigvalsh(x.T @ x / 256).max()

  def init(hp, key):
    del hp, key
    return jnp.zeros(8, jnp.float32)

  def segment(w, hp):
    loss, g = jax.value_and_grad(
        lambda w: 0.5 * jnp.mean((jnp.asarray(x) @ w - y) ** 2) + offset)(w)
    return w - hp["learning_rate"] * g, {"loss": loss}

  res = sweep.lr_find(init, segment, key=jax.random.key(0), min_lr=1e-4,
                      max_lr=10.0, num_steps=100, num_seeds=2,
                      num_rates=num_rates)
  # Gradient descent on least squares: 1/L is the classic safe step (2/L
  # diverges). The "minimum" suggestion must land within a factor of 3.
  assert 1 / 3 < res.suggestions["minimum"] * lipschitz < 3
  # Every suggestion stays below the divergence threshold 2/L.
  assert all(v * lipschitz < 2 for v in res.suggestions.values())
  # The run diverged past 2/L: the tail is masked with NaN.
  assert np.isnan(res.curve[-1]) and np.isnan(res.losses[:, -1]).all()
  first_nan = np.flatnonzero(np.isnan(res.curve))[0]
  assert res.learning_rates[first_nan] * lipschitz > 2
  fig = res.plot()
  assert fig.axes[0].get_xscale() == "log"


@pytest.mark.parametrize("kwargs", [
    {"min_lr": 0.0}, {"min_lr": 1.0, "max_lr": 0.5}, {"num_steps": 2},
    {"max_lr": float("inf")}, {"num_rates": 2}, {"num_rates": 4.0},
    {"smoothing": 1.0}, {"diverge_threshold": 1.0}])
def test_lr_find_rejects_bad_configuration(kwargs):
  with pytest.raises(ValueError):
    sweep.lr_find(lambda hp, k: jnp.zeros(()), lambda s, hp: (s, {"loss": s}),
                  key=jax.random.key(0), **kwargs)


def test_lr_find_old_signature_still_works_and_warns():
  def init(key):
    del key
    return jnp.ones(())

  def step(w, lr, key):
    del key
    return w - lr * w, 0.5 * w * w

  with pytest.warns(DeprecationWarning, match="segment"):
    old = sweep.lr_find(init, step, key=jax.random.key(0), min_lr=1e-3,
                        max_lr=10.0, num_steps=50)
  new = sweep.lr_find(lambda hp, key: jnp.ones(()),
                      lambda w, hp: (w - hp["learning_rate"] * w,
                                     {"loss": 0.5 * w * w}),
                      key=jax.random.key(0), min_lr=1e-3, max_lr=10.0,
                      num_steps=50)
  np.testing.assert_array_equal(old.losses, new.losses)
  assert old.suggestions == new.suggestions


# --- Batched Bayesian optimization through Optuna -------------------------------


def bowl_train_fn(hp, key):
  # The loss is smallest at lr = 1e-2 and for the "b" branch.
  del key
  offset = jax.lax.switch(hp["kind"], [lambda: 1.0, lambda: 0.0])
  loss = (jnp.log10(hp["lr"]) + 2.0) ** 2 + offset + 0.1 * hp["depth"].astype(jnp.float32)
  return {"loss": loss, "curve": jnp.stack([loss + 1.0, loss])}


BOWL_SPACE = {"lr": sweep.log_uniform(1e-4, 1.0),
              "kind": sweep.choice(["a", "b"]),
              "depth": sweep.int_uniform(1, 4)}


def test_optuna_search_with_an_in_memory_study():
  optuna = pytest.importorskip("optuna")
  res = sweep.optuna_search(bowl_train_fn, BOWL_SPACE, num_rounds=4,
                            batch_size=8, key=jax.random.key(0),
                            metric="curve", sampler="tpe")
  assert len(res) == 32 and res.num_compiles == 1  # one batch shape
  assert len(res.study.trials) == 32
  assert all(t.state == optuna.trial.TrialState.COMPLETE
             for t in res.study.trials)
  # The study was told exactly the metric the batch computed (the curve's
  # last value), trial by trial, with the values train_fn received.
  told = np.array([t.value for t in res.study.trials])
  np.testing.assert_allclose(told, res.metrics["curve"][:, -1], rtol=1e-6)
  lrs = np.array([t.params["lr"] for t in res.study.trials], np.float32)
  np.testing.assert_array_equal(lrs, res.hparams["lr"])
  assert set(res.hparams["kind"]) <= {"a", "b"}
  np.testing.assert_array_equal(res.rounds, np.repeat(np.arange(4), 8))
  best = res.best()
  assert best.hparams["kind"] == "b"
  assert res.study.best_value == pytest.approx(float(best.metrics["loss"]))


def test_optuna_search_continues_a_study_with_new_keys_and_its_direction():
  optuna = pytest.importorskip("optuna")
  study = optuna.create_study(direction="maximize",
                              sampler=optuna.samplers.RandomSampler(seed=0))
  with pytest.raises(ValueError, match="direction"):
    sweep.optuna_search(bowl_train_fn, BOWL_SPACE, num_rounds=1,
                        batch_size=4, key=jax.random.key(0), metric="curve",
                        study=study)
  with pytest.raises(ValueError, match="sampler"):
    sweep.optuna_search(bowl_train_fn, BOWL_SPACE, num_rounds=1,
                        batch_size=4, key=jax.random.key(0), metric="curve",
                        mode="max", study=study, sampler="tpe")
  def record(hp, key):
    out = bowl_train_fn(hp, key)
    return {**out, "noise": jax.random.uniform(key)}

  first = sweep.optuna_search(record, BOWL_SPACE, num_rounds=1, batch_size=4,
                              key=jax.random.key(0), metric="curve",
                              mode="max", study=study)
  again = sweep.optuna_search(record, BOWL_SPACE, num_rounds=1, batch_size=4,
                              key=jax.random.key(0), metric="curve",
                              mode="max", study=study)
  assert len(study.trials) == 8
  # Trials 4-7 got keys 4-7, not the keys 0-3 of the first call again.
  assert not np.intersect1d(first.metrics["noise"], again.metrics["noise"]).size
  assert study.best_value == pytest.approx(
      max(float(first.best().metrics["curve"][-1]),
          float(again.best().metrics["curve"][-1])))


def test_optuna_result_saves_all_but_the_study(tmp_path):
  pytest.importorskip("optuna")
  res = sweep.optuna_search(bowl_train_fn, BOWL_SPACE, num_rounds=2,
                            batch_size=8, key=jax.random.key(1),
                            metric="curve")
  res.save(tmp_path / "optuna.npz")
  back = sweep.OptunaResult.load(tmp_path / "optuna.npz")
  assert back.study is None
  np.testing.assert_array_equal(back.rounds, res.rounds)
  assert back.best().index == res.best().index
  assert back.best().hparams == res.best().hparams


def test_optuna_search_accepts_a_sampler_and_reports_failures():
  optuna = pytest.importorskip("optuna")

  def train_fn(hp, key):
    del key
    return {"loss": jnp.where(hp["lr"] > 0.1, jnp.nan, hp["lr"])}

  res = sweep.optuna_search(train_fn, {"lr": sweep.uniform(0.0, 1.0)},
                            num_rounds=2, batch_size=4,
                            key=jax.random.key(1), metric="loss",
                            sampler=optuna.samplers.RandomSampler(seed=0))
  failed = [t.state == optuna.trial.TrialState.FAIL for t in res.study.trials]
  np.testing.assert_array_equal(failed, res.hparams["lr"] > 0.1)
  np.testing.assert_array_equal(res.diverged, res.hparams["lr"] > 0.1)


def test_optuna_search_without_optuna_says_what_to_install(monkeypatch):
  import sys

  monkeypatch.setitem(sys.modules, "optuna", None)
  with pytest.raises(ImportError, match=r'pip install "jopt\[optuna\]"'):
    sweep.optuna_search(bowl_train_fn, BOWL_SPACE, num_rounds=1,
                        batch_size=2, key=jax.random.key(0), metric="loss")
