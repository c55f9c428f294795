"""Population-based training: exploit, explore, ranking, lineage and checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _quadratic_search import SPACE

from jopt import sweep


def count_init(hp, key):
  del hp, key
  return {"x": jnp.zeros((), jnp.float32)}


def count_segment(state, hp):
  x = state["x"] + hp["lr"]
  return {"x": x}, {"score": x}


def test_pbt_exploit_copies_state_and_hparams():
  space = {"lr": sweep.choice([1.0, 2.0, 3.0, 4.0])}
  res = sweep.pbt(
    count_init,
    count_segment,
    space,
    population=4,
    key=jax.random.key(0),
    num_rounds=2,
    quantile=0.25,
    perturb=(1.0,),
    resample_prob=0.0,
    metric="score",
    mode="max",
    strategy="grid",
  )
  # Round 0: x = lr, so member 3 (lr 4) is best and member 0 (lr 1) worst.
  np.testing.assert_array_equal(res.parents, [[0, 1, 2, 3], [3, 1, 2, 3]])
  assert res.parents.dtype == np.int32
  # A choice moved by a factor of 1.0 goes one value down: lr 4 -> 3.
  np.testing.assert_array_equal(
    res.hparam_history["lr"], [[1, 2, 3, 4], [3, 2, 3, 4]]
  )
  # Member 0 took member 3's state (x = 4) and trained with lr 3.
  np.testing.assert_array_equal(res.final_state["x"], [7.0, 4.0, 6.0, 8.0])
  np.testing.assert_array_equal(res.lineage(0), [3, 0])
  np.testing.assert_array_equal(res.schedule(0)["lr"], [4.0, 3.0])


def test_pbt_result_saves_its_lineage(tmp_path):
  space = {
    "lr": sweep.choice([1.0, 2.0, 3.0, 4.0]),
    "kind": sweep.choice(["a", "b"]),
    "act": sweep.choice([jax.nn.relu, jnp.tanh]),
  }
  res = sweep.pbt(
    count_init,
    count_segment,
    space,
    population=4,
    key=jax.random.key(1),
    num_rounds=3,
    quantile=0.25,
    metric="score",
    mode="max",
  )
  res.save(tmp_path / "pbt.npz")
  back = sweep.PBTResult.load(tmp_path / "pbt.npz")
  np.testing.assert_array_equal(back.parents, res.parents)
  np.testing.assert_array_equal(back.metric_history, res.metric_history)
  for m in range(4):
    for name in ("lr", "kind"):
      np.testing.assert_array_equal(
        back.schedule(m)[name], res.schedule(m)[name]
      )
    # Functions are saved by name.
    assert [a.rsplit(".", 1)[-1] for a in back.schedule(m)["act"]] == [
      f.__name__ for f in res.schedule(m)["act"]
    ]
  assert back.best().hparams["lr"] == res.best().hparams["lr"]
  assert back.segments_per_round == res.segments_per_round


def test_pbt_moves_integers_at_least_one_step():
  from jopt.sweep.strategies import _pbt

  dist = sweep.int_uniform(1, 8)
  value = jnp.array([1, 2, 3, 8], jnp.int32)
  replaced = jnp.array([True, True, True, False])
  for factor, expected in ((0.8, [1, 1, 2, 8]), (1.25, [2, 3, 4, 8])):
    moved = _pbt._explore_one(
      dist, value, replaced, np.random.default_rng(0), value, (factor,), 0.0
    )
    # 1 * 0.8 clips at the lower bound; the last member was not replaced.
    np.testing.assert_array_equal(moved, expected)
  # At the top of int32's range the move clips to the bound, exactly.
  top = 2**31 - 1
  dist = sweep.int_uniform(0, top)
  value = jnp.array([top - 10, top], jnp.int32)
  moved = _pbt._explore_one(
    dist, value, np.ones(2, bool), np.random.default_rng(0), value, (1.25,), 0.0
  )
  np.testing.assert_array_equal(moved, [top, top])
  # Negative values: a factor > 1 grows the magnitude, so moves down.
  dist = sweep.int_uniform(-8, 8)
  value = jnp.array([-4, -1, 1, 4], jnp.int32)
  for factor, expected in ((0.8, [-3, 0, 0, 3]), (1.25, [-5, -2, 2, 5])):
    moved = _pbt._explore_one(
      dist,
      value,
      np.ones(4, bool),
      np.random.default_rng(0),
      value,
      (factor,),
      0.0,
    )
    np.testing.assert_array_equal(moved, expected)


def test_pbt_perturbs_continuous_values_and_clips():
  space = {"lr": sweep.uniform(0.5, 5.0)}
  res = sweep.pbt(
    count_init,
    count_segment,
    space,
    population=8,
    key=jax.random.key(1),
    num_rounds=2,
    quantile=0.25,
    perturb=(2.0,),
    resample_prob=0.0,
    metric="score",
    mode="max",
  )
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
def test_pbt_ranks_on_the_mean_of_the_last_segments(rank_window, winner, loser):
  space = {"lr": sweep.choice([1.0, 2.0, 3.0, 4.0])}
  res = sweep.pbt(
    noisy_init,
    noisy_segment,
    space,
    population=4,
    key=jax.random.key(0),
    num_rounds=2,
    segments_per_round=2,
    rank_window=rank_window,
    quantile=0.25,
    perturb=(1.0,),
    resample_prob=0.0,
    metric="score",
    mode="max",
    strategy="grid",
  )
  # Round 0, member i has lr = i + 1: segment 1 scores lr, segment 2
  # scores 2 lr - 2.5 lr = -0.5 lr. The last value (window 1) makes lr 1
  # best and lr 4 worst; the mean of both (0.25 lr) ranks by lr.
  expected = list(range(4))
  expected[loser] = winner
  np.testing.assert_array_equal(res.parents[1], expected)


@pytest.mark.parametrize(
  "kwargs",
  [
    {"population": 3, "quantile": 0.25},
    {"quantile": 0.75},
    {"segments_per_round": 2, "rank_window": 3},
    {"rank_window": 0},
    {"num_rounds": 0},
    {"perturb": ()},
    {"resample_prob": 2.0},
  ],
)
def test_pbt_rejects_bad_configuration(kwargs):
  args = {
    "population": 8,
    "key": jax.random.key(0),
    "num_rounds": 2,
    "metric": "score",
    **kwargs,
  }
  with pytest.raises(ValueError):
    sweep.pbt(count_init, count_segment, SPACE, **args)


def diverging_segment(state, hp):
  # Members with lr < 4 diverge: their state and score turn NaN.
  x = state["x"] + jnp.where(hp["lr"] < 4.0, jnp.nan, hp["lr"])
  return {"x": x}, {"score": x}


@pytest.mark.parametrize("key", range(4))
def test_pbt_never_copies_a_diverged_member(key):
  # quantile 0.5 of 4 members: two parents wanted, one member finite.
  space = {"lr": sweep.choice([1.0, 2.0, 3.0, 4.0])}
  with np.errstate(invalid="ignore"):
    res = sweep.pbt(
      count_init,
      diverging_segment,
      space,
      population=4,
      key=jax.random.key(key),
      num_rounds=2,
      quantile=0.5,
      perturb=(1.0,),
      resample_prob=0.0,
      metric="score",
      mode="max",
      strategy="grid",
    )
  # Ranked 3, then the diverged 0, 1, 2: the top two are 3 and 0, the
  # bottom two 1 and 2, and member 3 is the only parent they may copy.
  np.testing.assert_array_equal(res.parents[1], [0, 3, 3, 3])
  np.testing.assert_array_equal(res.hparam_history["lr"][1], [1, 3, 3, 4])


def test_pbt_copies_nothing_when_no_member_is_finite():
  space = {"lr": sweep.choice([1.0, 2.0, 3.0])}

  def nan_segment(s, hp):
    return {"x": s["x"] + jnp.nan}, {"score": s["x"] + jnp.nan}

  res = sweep.pbt(
    count_init,
    nan_segment,
    space,
    population=4,
    key=jax.random.key(0),
    num_rounds=3,
    quantile=0.5,
    metric="score",
  )
  np.testing.assert_array_equal(res.parents, np.tile(np.arange(4), (3, 1)))
  np.testing.assert_array_equal(
    res.hparam_history["lr"][0], res.hparam_history["lr"][2]
  )


def test_pbt_refuses_a_missing_metric_before_training():
  trained = []

  def segment(state, hp):
    jax.debug.callback(lambda: trained.append(1))
    return count_segment(state, hp)

  with pytest.raises(ValueError, match="'loss' is not among"):
    sweep.pbt(
      count_init,
      segment,
      SPACE,
      population=4,
      key=jax.random.key(0),
      num_rounds=2,
      metric="loss",
    )
  assert not trained
