"""Batched Bayesian optimization through Optuna's ask/tell interface."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _quadratic_search import (
  initial_w,
  quad_init,
  quad_segment,
  reference_loss,
)

from jopt import sweep


def bowl_train_fn(hp, key):
  # The loss is smallest at lr = 1e-2 and for the "b" branch.
  del key
  offset = jax.lax.switch(hp["kind"], [lambda: 1.0, lambda: 0.0])
  loss = (
    (jnp.log10(hp["lr"]) + 2.0) ** 2
    + offset
    + 0.1 * hp["depth"].astype(jnp.float32)
  )
  return {"loss": loss, "curve": jnp.stack([loss + 1.0, loss])}


BOWL_SPACE = {
  "lr": sweep.log_uniform(1e-4, 1.0),
  "kind": sweep.choice(["a", "b"]),
  "depth": sweep.int_uniform(1, 4),
}


def test_optuna_search_with_an_in_memory_study():
  optuna = pytest.importorskip("optuna")
  res = sweep.optuna_search(
    bowl_train_fn,
    BOWL_SPACE,
    num_rounds=4,
    batch_size=8,
    key=jax.random.key(0),
    metric="curve",
    sampler="tpe",
  )
  assert len(res) == 32 and res.num_compiles == 1  # one batch shape
  assert len(res.study.trials) == 32
  assert all(
    t.state == optuna.trial.TrialState.COMPLETE for t in res.study.trials
  )
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
  study = optuna.create_study(
    direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0)
  )
  with pytest.raises(ValueError, match="direction"):
    sweep.optuna_search(
      bowl_train_fn,
      BOWL_SPACE,
      num_rounds=1,
      batch_size=4,
      key=jax.random.key(0),
      metric="curve",
      study=study,
    )
  with pytest.raises(ValueError, match="sampler"):
    sweep.optuna_search(
      bowl_train_fn,
      BOWL_SPACE,
      num_rounds=1,
      batch_size=4,
      key=jax.random.key(0),
      metric="curve",
      mode="max",
      study=study,
      sampler="tpe",
    )

  def record(hp, key):
    out = bowl_train_fn(hp, key)
    return {**out, "noise": jax.random.uniform(key)}

  first = sweep.optuna_search(
    record,
    BOWL_SPACE,
    num_rounds=1,
    batch_size=4,
    key=jax.random.key(0),
    metric="curve",
    mode="max",
    study=study,
  )
  again = sweep.optuna_search(
    record,
    BOWL_SPACE,
    num_rounds=1,
    batch_size=4,
    key=jax.random.key(0),
    metric="curve",
    mode="max",
    study=study,
  )
  assert len(study.trials) == 8
  # Trials 4-7 got keys 4-7, not the keys 0-3 of the first call again.
  assert not np.intersect1d(first.metrics["noise"], again.metrics["noise"]).size
  assert study.best_value == pytest.approx(
    max(
      float(first.best().metrics["curve"][-1]),
      float(again.best().metrics["curve"][-1]),
    )
  )


def test_optuna_result_saves_all_but_the_study(tmp_path):
  pytest.importorskip("optuna")
  res = sweep.optuna_search(
    bowl_train_fn,
    BOWL_SPACE,
    num_rounds=2,
    batch_size=8,
    key=jax.random.key(1),
    metric="curve",
  )
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

  res = sweep.optuna_search(
    train_fn,
    {"lr": sweep.uniform(0.0, 1.0)},
    num_rounds=2,
    batch_size=4,
    key=jax.random.key(1),
    metric="loss",
    sampler=optuna.samplers.RandomSampler(seed=0),
  )
  failed = [t.state == optuna.trial.TrialState.FAIL for t in res.study.trials]
  np.testing.assert_array_equal(failed, res.hparams["lr"] > 0.1)
  np.testing.assert_array_equal(res.diverged, res.hparams["lr"] > 0.1)


def test_optuna_search_without_optuna_says_what_to_install(monkeypatch):
  import sys

  monkeypatch.setitem(sys.modules, "optuna", None)
  with pytest.raises(ImportError, match=r'pip install "jopt\[optuna\]"'):
    sweep.optuna_search(
      bowl_train_fn,
      BOWL_SPACE,
      num_rounds=1,
      batch_size=2,
      key=jax.random.key(0),
      metric="loss",
    )


# --- The stepwise form, with pruning --------------------------------------------

# lr > 2 diverges on the stiffest direction, lr ~ 1e-3 barely moves: a
# median pruner has clear losers to stop.
QUAD_SPACE = {"lr": sweep.log_uniform(1e-3, 2.5)}
QUAD = (quad_init, quad_segment)


def _quad_search(**kw):
  optuna = pytest.importorskip("optuna")
  kw.setdefault(
    "pruner", optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1)
  )
  kw.setdefault("sampler", optuna.samplers.RandomSampler(seed=3))
  return sweep.optuna_search(
    QUAD,
    QUAD_SPACE,
    num_rounds=3,
    batch_size=4,
    num_segments=5,
    steps_per_segment=3,
    key=jax.random.key(2),
    metric="loss",
    **kw,
  )


def test_a_median_pruner_stops_bad_trials_and_tells_the_study():
  optuna = pytest.importorskip("optuna")
  states = optuna.trial.TrialState
  sweep.clear_caches()  # the compile count below, whatever ran before
  res = _quad_search()
  trials = res.study.trials
  pruned = res.pruned
  assert 0 < pruned.sum() < len(res)
  assert not pruned[:4].any()  # the first round has no finished trial to beat
  assert res.num_compiles == 2  # init and segment, whatever was pruned
  for i, t in enumerate(trials):
    curve = res.metrics["loss"][i]
    if pruned[i]:
      assert t.state == states.PRUNED
      step = res.pruned_at[i]
      assert step >= 1 and res.segments_run[i] == step + 1  # warm-up: 1
      # The study holds every value reported before the trial was stopped,
      # and the result holds the last one after it.
      assert sorted(t.intermediate_values) == list(range(step + 1))
      np.testing.assert_allclose(
        [t.intermediate_values[s] for s in range(step + 1)],
        curve[: step + 1],
        rtol=1e-6,
      )
      np.testing.assert_array_equal(curve[step:], curve[step])
    elif t.state == states.COMPLETE:
      assert res.segments_run[i] == 5 and res.pruned_at[i] == -1
      assert t.value == pytest.approx(float(curve[-1]), rel=1e-6)
  # Every trial trained exactly what it would have trained alone.
  for i in range(len(res)):
    w0 = initial_w(jax.random.key(2), trials[i].number)
    ran = res.segments_run[i]
    if np.isfinite(curve := res.metrics["loss"][i]).all():
      np.testing.assert_allclose(
        curve[ran - 1], reference_loss(res.hparams["lr"][i], w0, ran), rtol=2e-4
      )
  assert res.member_steps == 3 * res.segments_run.sum() < 3 * 4 * 5 * 3
  # The pick is a finished trial, the study's.
  assert res.best().index not in np.flatnonzero(pruned)
  assert res.best().hparams["lr"] == pytest.approx(
    res.study.best_params["lr"], rel=1e-6
  )


def test_pruned_trials_leave_the_others_untouched():
  # The random sampler asks the same values whatever was pruned, so the
  # same trials run with and without a pruner.
  optuna = pytest.importorskip("optuna")
  pruned = _quad_search()
  full = _quad_search(pruner=optuna.pruners.NopPruner())
  np.testing.assert_array_equal(pruned.hparams["lr"], full.hparams["lr"])
  assert not full.pruned.any() and (full.segments_run == 5).all()
  for i in range(len(full)):
    ran = pruned.segments_run[i]
    np.testing.assert_array_equal(
      pruned.metrics["loss"][i, :ran], full.metrics["loss"][i, :ran]
    )


def test_a_pruned_search_resumes_to_the_same_bits(tmp_path, monkeypatch):
  from test_search_contract import _stop_after_saves, assert_same_bits

  optuna = pytest.importorskip("optuna")

  def search(**kw):
    return _quad_search(sampler=optuna.samplers.TPESampler(seed=0), **kw)

  whole = search()
  assert whole.pruned.any()
  folder = str(tmp_path / "ckpt")
  _stop_after_saves(monkeypatch, 2, lambda: search(checkpoint_dir=folder))
  resumed = search(checkpoint_dir=folder)
  assert_same_bits(whole, resumed)
  np.testing.assert_array_equal(whole.pruned_at, resumed.pruned_at)
  assert [t.state for t in resumed.study.trials] == [
    t.state for t in whole.study.trials
  ]


def test_without_a_pruner_every_trial_trains_fully():
  # The stepwise form without a pruner trains what one call would: every
  # trial to the end, each value told, the same curve as a scan.
  optuna = pytest.importorskip("optuna")

  def train_fn(hp, key):
    def body(state, _):
      state, m = quad_segment(state, hp)
      return state, m["loss"]

    _, curve = jax.lax.scan(body, quad_init(hp, key), None, length=5)
    return {"loss": curve}

  kw = dict(num_rounds=2, batch_size=4, key=jax.random.key(2), metric="loss")
  stepwise = sweep.optuna_search(
    QUAD,
    QUAD_SPACE,
    num_segments=5,
    sampler=optuna.samplers.RandomSampler(seed=3),
    **kw,
  )
  whole = sweep.optuna_search(
    train_fn, QUAD_SPACE, sampler=optuna.samplers.RandomSampler(seed=3), **kw
  )
  assert isinstance(stepwise.study.pruner, optuna.pruners.NopPruner)
  assert all(
    t.state == optuna.trial.TrialState.COMPLETE for t in stepwise.study.trials
  )
  assert not stepwise.pruned.any() and (stepwise.segments_run == 5).all()
  assert whole.segments_run is None and whole.member_steps is None
  np.testing.assert_array_equal(stepwise.hparams["lr"], whole.hparams["lr"])
  np.testing.assert_allclose(
    stepwise.metrics["loss"], whole.metrics["loss"], rtol=1e-5
  )


def test_a_study_keeps_its_own_pruner():
  optuna = pytest.importorskip("optuna")
  study = optuna.create_study(
    sampler=optuna.samplers.RandomSampler(seed=3),
    pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1),
  )
  res = sweep.optuna_search(
    QUAD,
    QUAD_SPACE,
    num_rounds=3,
    batch_size=4,
    num_segments=5,
    key=jax.random.key(2),
    metric="loss",
    study=study,
  )
  np.testing.assert_array_equal(res.pruned_at, _quad_search().pruned_at)
  with pytest.raises(ValueError, match="pruner= is for a new study"):
    sweep.optuna_search(
      QUAD,
      QUAD_SPACE,
      num_rounds=1,
      batch_size=2,
      num_segments=2,
      key=jax.random.key(2),
      metric="loss",
      study=study,
      pruner=optuna.pruners.NopPruner(),
    )


def test_a_stepwise_nan_trial_stops_and_fails():
  optuna = pytest.importorskip("optuna")

  def segment(state, hp):
    state, m = quad_segment(state, hp)
    return state, {"loss": jnp.where(hp["lr"] > 0.5, jnp.nan, m["loss"])}

  res = sweep.optuna_search(
    (quad_init, segment),
    {"lr": sweep.uniform(0.1, 1.0)},
    num_rounds=2,
    batch_size=4,
    num_segments=3,
    key=jax.random.key(0),
    metric="loss",
    sampler=optuna.samplers.RandomSampler(seed=0),
  )
  bad = res.hparams["lr"] > 0.5
  assert bad.any() and not bad.all()
  np.testing.assert_array_equal(res.diverged, bad)
  np.testing.assert_array_equal(res.segments_run, np.where(bad, 1, 3))
  failed = [t.state == optuna.trial.TrialState.FAIL for t in res.study.trials]
  np.testing.assert_array_equal(failed, bad)
  assert res.best().index not in np.flatnonzero(bad)


def test_pruning_arguments_are_checked():
  optuna = pytest.importorskip("optuna")
  kw = dict(num_rounds=1, batch_size=2, key=jax.random.key(0), metric="loss")
  median = optuna.pruners.MedianPruner()
  with pytest.raises(ValueError, match="pruner= needs values"):
    sweep.optuna_search(bowl_train_fn, BOWL_SPACE, pruner=median, **kw)
  with pytest.raises(ValueError, match="num_segments is needed"):
    sweep.optuna_search(QUAD, QUAD_SPACE, pruner=median, **kw)
  with pytest.raises(ValueError, match="num_segments is for"):
    sweep.optuna_search(bowl_train_fn, BOWL_SPACE, num_segments=2, **kw)
  with pytest.raises(ValueError, match="num_segments"):
    sweep.optuna_search(QUAD, QUAD_SPACE, num_segments=0, **kw)
  with pytest.raises(ValueError, match="BasePruner"):
    sweep.optuna_search(QUAD, QUAD_SPACE, num_segments=2, pruner="median", **kw)
  with pytest.raises(ValueError, match="pair"):
    sweep.optuna_search((quad_init,), QUAD_SPACE, num_segments=2, **kw)


def test_a_pruned_result_saves_and_loads(tmp_path):
  res = _quad_search()
  res.save(tmp_path / "pruned.npz")
  back = sweep.OptunaResult.load(tmp_path / "pruned.npz")
  np.testing.assert_array_equal(back.pruned_at, res.pruned_at)
  np.testing.assert_array_equal(back.segments_run, res.segments_run)
  assert back.member_steps == res.member_steps
  assert back.best().index == res.best().index
  assert list(res.to_pandas().columns[-2:]) == ["segments_run", "pruned_at"]


def test_a_resumed_search_tells_the_study_it_is_given(tmp_path, monkeypatch):
  from test_search_contract import _stop_after_saves, assert_same_bits

  optuna = pytest.importorskip("optuna")

  def search(study, **kw):
    return _quad_search(sampler=None, pruner=None, study=study, **kw)

  def new_study():
    return optuna.create_study(
      sampler=optuna.samplers.TPESampler(seed=0),
      pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1),
    )

  whole = search(new_study())
  folder = str(tmp_path / "ckpt")
  _stop_after_saves(
    monkeypatch, 2, lambda: search(new_study(), checkpoint_dir=folder)
  )
  # A new process resumes with a new study: it receives every trial.
  study = new_study()
  resumed = search(study, checkpoint_dir=folder)
  assert resumed.study is study and len(study.trials) == 12
  assert_same_bits(whole, resumed)
  assert [(t.state, t.params, t.values) for t in study.trials] == [
    (t.state, t.params, t.values) for t in whole.study.trials
  ]
  # A study with trials the checkpoint does not hold is refused.
  other = new_study()
  other.enqueue_trial({"lr": 0.5})
  other.optimize(
    lambda t: t.suggest_float("lr", 1e-3, 2.5, log=True), n_trials=1
  )
  with pytest.raises(ValueError, match="study passed holds trials"):
    search(other, checkpoint_dir=folder)
