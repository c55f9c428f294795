"""Batched Bayesian optimization through Optuna's ask/tell interface.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jopt import sweep


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
