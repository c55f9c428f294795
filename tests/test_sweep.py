"""jopt.sweep: spaces, samplers, the engine's invariants, results and plots.

The training function is a 4-parameter linear regression trained for a few
steps, so every sweep compiles in well under a second on CPU.
"""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jopt
from jopt import sweep

_X = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
_Y = (_X @ np.array([1.0, -2.0, 0.5, 3.0], np.float32)).astype(np.float32)
_STEPS = 8
KEY = jax.random.key(0)


def train_fn(hparams, key):
  """Adam or momentum SGD (an index into OPTS) on a linear model."""
  w = 0.1 * jax.random.normal(key, (4,))
  opt = jax.lax.switch(
    hparams["opt"], [lambda: jnp.float32(0.0), lambda: hparams["momentum"]]
  )
  tx = jopt.sgd(hparams["lr"], momentum=opt)

  def loss_fn(w):
    return jnp.mean((_X @ w - _Y) ** 2)

  def step(carry, _):
    w, state = carry
    loss, grad = jax.value_and_grad(loss_fn)(w)
    updates, state = tx.update(grad, state, w)
    return (jopt.apply_updates(w, updates), state), loss

  (w, _), curve = jax.lax.scan(step, (w, tx.init(w)), length=_STEPS)
  return {"loss": loss_fn(w), "curve": curve}


SPACE = {
  "lr": sweep.log_uniform(1e-3, 0.05),
  "momentum": sweep.uniform(0.0, 0.9),
  "opt": sweep.choice(["sgd", "momentum"]),
}
_direct = jax.jit(train_fn)


def _assert_same_trial(a, b):
  # The same trial in chunks of another width: XLA may use other kernels
  # (vector widths) for another per-device batch, so the last bit may move
  # (1 ulp seen after 8 steps); anything more would be a real difference.
  np.testing.assert_allclose(a, b, rtol=1e-6, atol=0)


@pytest.fixture(scope="module")
def result():
  """11 trials on the 8 fake devices, in one chunk (padded to 16)."""
  return sweep.run(train_fn, SPACE, num_trials=11, key=KEY, progress=False)


# ----------------------------------------------------------------- spaces


def test_sample_is_reproducible_and_in_bounds():
  a = sweep.sample(SPACE, 64, KEY)
  b = sweep.sample(SPACE, 64, KEY)
  c = sweep.sample(SPACE, 64, jax.random.key(1))
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(a["lr"], c["lr"])
  assert a["lr"].dtype == np.float32 and a["opt"].dtype == np.int32
  assert ((a["lr"] >= 1e-3) & (a["lr"] <= 0.05)).all()
  assert set(a["opt"]) == {0, 1}


def test_quasirandom_covers_each_dimension_evenly():
  space = {"x": sweep.uniform(0.0, 1.0), "n": sweep.int_uniform(1, 4)}
  t = sweep.sample(space, 64, KEY, "quasirandom")
  # Scrambled Sobol: each quarter of [0, 1) holds exactly 16 of 64 points.
  np.testing.assert_array_equal(
    np.bincount((t["x"] * 4).astype(int), minlength=4), [16] * 4
  )
  np.testing.assert_array_equal(np.bincount(t["n"])[1:], [16] * 4)


def test_grid_is_the_cartesian_product():
  space = {
    "lr": sweep.log_uniform(1e-3, 1e-1),
    "act": sweep.choice(["relu", "tanh"]),
    "width": sweep.int_uniform(1, 3),
  }
  t = sweep.sample(space, None, KEY, "grid", grid_points={"lr": 3, "width": 3})
  assert len(t["lr"]) == 3 * 2 * 3
  np.testing.assert_allclose(
    np.unique(t["lr"]), [1e-3, 1e-2, 1e-1], rtol=1e-6
  )  # float32 rounding of geomspace
  pairs = set(
    zip(t["lr"].tolist(), t["act"].tolist(), t["width"].tolist(), strict=True)
  )
  assert len(pairs) == 18


@pytest.mark.parametrize(
  "make",
  [
    lambda: sweep.log_uniform(0.0, 1.0),
    lambda: sweep.log_uniform(-1.0, 1.0),
    lambda: sweep.log_uniform(1.0, 1.0),
    lambda: sweep.log_uniform(1.0, 0.1),
    lambda: sweep.uniform(2.0, 1.0),
    lambda: sweep.uniform(0.0, float("inf")),
    lambda: sweep.int_uniform(3, 1),
    lambda: sweep.int_uniform(0.5, 2),
    lambda: sweep.choice([]),
    lambda: sweep.choice("abc"),
    # Integers reach train_fn as int32, floats as float32: they must fit.
    lambda: sweep.int_uniform(0, 2**32 - 1),
    lambda: sweep.choice([10, 2**33]),
    lambda: sweep.choice([1.0, float("nan")]),
  ],
)
def test_bad_distribution_raises(make):
  with pytest.raises(ValueError):
    make()


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(space={}, num_trials=2), "empty"),
    (dict(space={"lr": 0.1}, num_trials=2), "distribution"),
    (dict(space=SPACE, num_trials=0), "num_trials"),
    (dict(space=SPACE, num_trials=-3), "num_trials"),
    (dict(space=SPACE, num_trials=None), "num_trials"),
    (dict(space=SPACE, strategy="grid"), "grid_points"),
    (dict(space=SPACE, num_trials=2, strategy="bayes"), "strategy"),
    (
      dict(space={"a": sweep.choice([1, 2])}, num_trials=3, strategy="grid"),
      "2 points",
    ),
    (dict(space=SPACE, num_trials=2, max_parallel=0), "max_parallel"),
    (dict(space=SPACE, num_trials=2, folds=0), "folds"),
    (dict(space=SPACE, num_trials=2, seeds=0), "seeds"),
  ],
)
def test_bad_run_arguments_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    sweep.run(train_fn, key=KEY, progress=False, **kwargs)


def test_train_fn_must_return_a_dict():
  with pytest.raises(ValueError, match="dict") as info:
    sweep.run(
      lambda h, k: h["x"],
      {"x": sweep.uniform(0.0, 1.0)},
      num_trials=2,
      key=KEY,
      progress=False,
    )
  # The value is described as the user wrote it, not as a tracer.
  assert "got an array of shape ()" in str(info.value)
  assert "Tracer" not in str(info.value)


@pytest.mark.parametrize(
  "value, what",
  [
    (lambda x: {"inner": x}, "is a dict"),
    (lambda x: None, "is None"),
  ],
)
def test_a_metric_that_is_not_an_array_is_named(value, what):
  with pytest.raises(
    ValueError,
    match=f"metric 'loss' {what}: metrics must "
    r"be arrays \(a scalar or a curve",
  ):
    sweep.run(
      lambda h, k: {"ok": h["x"], "loss": value(h["x"])},
      {"x": sweep.uniform(0.0, 1.0)},
      num_trials=2,
      key=KEY,
      progress=False,
    )


# ----------------------------------------------------------------- engine


def test_each_trial_equals_a_direct_call(result):
  trials = sweep.sample(SPACE, 11, KEY)
  assert result.num_compiles == 1
  assert list(result.hparams["opt"][:3]) == [
    ["sgd", "momentum"][i] for i in trials["opt"][:3]
  ]
  for i in range(11):
    hp = {k: jnp.asarray(v[i]) for k, v in trials.items()}
    direct = _direct(hp, jax.random.fold_in(KEY, i))
    # The vmapped program may fuse differently from the unbatched one: a few
    # float32 ulps, nothing more.
    np.testing.assert_allclose(
      result.metrics["curve"][i], direct["curve"], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
      result.metrics["loss"][i], direct["loss"], rtol=1e-5, atol=1e-6
    )


def test_chunked_equals_unchunked_and_compiles_once(result):
  chunked = sweep.run(
    train_fn, SPACE, num_trials=11, key=KEY, max_parallel=4, progress=False
  )
  assert chunked.num_compiles == 1  # three chunks of 4, one executable
  for k in result.metrics:
    _assert_same_trial(chunked.metrics[k], result.metrics[k])


def test_sharded_equals_one_device(result):
  assert len(jax.devices()) == 8
  single = sweep.run(
    train_fn,
    SPACE,
    num_trials=11,
    key=KEY,
    devices=jax.devices()[:1],
    progress=False,
  )
  for k in result.metrics:
    _assert_same_trial(single.metrics[k], result.metrics[k])
  for k in result.hparams:
    np.testing.assert_array_equal(single.hparams[k], result.hparams[k])


def test_auto_chunking_fits_the_memory_budget(result, monkeypatch):
  # On one device all 11 trials fit one chunk; a budget halfway between its
  # footprint and the two-lane chunk's forces smaller chunks, compiled until
  # one fits; same numbers.
  one = [jax.devices()[0]]
  full = sweep.run(
    train_fn, SPACE, num_trials=11, key=KEY, progress=False, devices=one
  )
  two = sweep.run(
    train_fn,
    SPACE,
    num_trials=11,
    key=KEY,
    progress=False,
    devices=one,
    max_parallel=2,
  )
  assert full.num_compiles == 1 and full.memory_bytes > two.memory_bytes
  budget = (full.memory_bytes + two.memory_bytes) // 2
  monkeypatch.setenv("JOPT_SWEEP_MEMORY_BYTES", str(budget))
  small = sweep.run(
    train_fn, SPACE, num_trials=11, key=KEY, progress=False, devices=one
  )
  assert small.num_compiles >= 2
  assert small.memory_bytes <= budget
  for k in result.metrics:
    _assert_same_trial(small.metrics[k], result.metrics[k])


def _quadratic(hparams, key):
  del key
  w = jnp.float32(3.0)
  curve = []
  for _ in range(5):
    w = w - hparams["lr"] * 2.0 * w * w  # blows up for a huge lr
    curve.append(w * w)
  return {"loss": w * w, "curve": jnp.stack(curve)}


def test_divergence_is_flagged_and_isolated():
  ok = sweep.run(
    _quadratic,
    {"lr": sweep.choice([0.01, 0.02, 0.03, 0.04])},
    key=KEY,
    strategy="grid",
    progress=False,
  )
  bad = sweep.run(
    _quadratic,
    {"lr": sweep.choice([0.01, 1e30, 0.03, 0.04])},
    key=KEY,
    strategy="grid",
    progress=False,
  )
  np.testing.assert_array_equal(bad.diverged, [False, True, False, False])
  assert not ok.diverged.any()
  for k in ok.metrics:  # bit-for-bit: the other lanes never see the NaN
    np.testing.assert_array_equal(
      bad.metrics[k][[0, 2, 3]], ok.metrics[k][[0, 2, 3]]
    )
  # Larger (finite) steps descend faster; the diverged trial is never ranked.
  assert bad.best("loss").index == 3
  assert bad.best("loss", mode="max").index == 0
  assert [t.index for t in bad.top_k("curve", 5)] == [3, 2, 0]


def test_static_choice_compiles_once_per_value():
  seen = []

  def fn(hparams, key):
    seen.append(hparams["width"])
    w = jax.random.normal(key, (hparams["width"],))
    return {"norm": jnp.sum(w * w) * hparams["scale"]}

  space = {
    "width": sweep.choice([2, 5], static=True),
    "scale": sweep.uniform(1.0, 2.0),
  }
  res = sweep.run(fn, space, num_trials=10, key=KEY, progress=False)
  assert res.num_compiles == 2
  assert sorted(seen) == [2, 5] and all(type(s) is int for s in seen)
  trials = sweep.sample(space, 10, KEY)
  for i in range(10):
    hp = {
      "width": int(trials["width"][i]),
      "scale": jnp.float32(trials["scale"][i]),
    }
    # Eager reference call: float32 rounding may differ by an ulp or so.
    np.testing.assert_allclose(
      res.metrics["norm"][i],
      fn(hp, jax.random.fold_in(KEY, i))["norm"],
      rtol=1e-6,
    )


def test_static_float_choice_passes_the_value_as_written():
  seen = []

  def fn(hparams, key):
    del key
    seen.append(hparams["drop"])
    return {"loss": jnp.float32(hparams["drop"])}

  sweep.run(
    fn,
    {"drop": sweep.choice([0.1, 0.3], static=True)},
    key=KEY,
    strategy="grid",
    progress=False,
  )
  assert sorted(seen) == [0.1, 0.3]  # not 0.10000000149011612


def test_bool_choice_passes_booleans():
  # An index would give 0 for True in choice([True, False]): a flag used
  # as `jnp.where(flag, ...)` would do the opposite of what the table says.
  def fn(hparams, key):
    del key
    assert hparams["flag"].dtype == jnp.bool_
    return {"loss": jnp.where(hparams["flag"], 1.0, 2.0)}

  res = sweep.run(
    fn,
    {"flag": sweep.choice([True, False])},
    key=KEY,
    strategy="grid",
    progress=False,
  )
  np.testing.assert_array_equal(res.hparams["flag"], [True, False])
  np.testing.assert_array_equal(res.metrics["loss"], [1.0, 2.0])
  assert res.best("loss").hparams == {"flag": True}


def test_top_k_needs_a_positive_k(result):
  with pytest.raises(ValueError, match="k must be an int >= 1"):
    result.top_k("loss", 0)
  with pytest.raises(ValueError, match="k must be an int >= 1"):
    result.top_k("loss", -1)


def test_cross_validation_vmaps_folds_inside_trials():
  def fn(hparams, key, fold):
    del key
    x = jax.lax.dynamic_slice_in_dim(jnp.asarray(_X), fold * 4, 4)
    return {"err": jnp.mean(x) * hparams["c"]}

  space = {"c": sweep.choice([1.0, 2.0, 3.0])}
  res = sweep.run(fn, space, key=KEY, strategy="grid", folds=4, progress=False)
  assert res.num_compiles == 1
  assert res.metrics["err_per_fold"].shape == (3, 4)
  expected = np.array(
    [
      [_X[f * 4 : (f + 1) * 4].mean() * c for f in range(4)]
      for c in (1.0, 2.0, 3.0)
    ]
  )
  # float32 sums of 16 numbers: a few ulps.
  np.testing.assert_allclose(res.metrics["err_per_fold"], expected, rtol=1e-5)
  np.testing.assert_allclose(res.metrics["err"], expected.mean(1), rtol=1e-5)
  # The table shows the fold mean, not a per-fold column read as one value.
  assert "err_per_fold" not in res.to_pandas().columns


def _noisy(hparams, key):
  # A noisy validation loss: the seed decides as much as the rate does.
  w = jax.random.normal(key, (4,))
  for _ in range(3):
    w = w - hparams["lr"] * (w - jnp.asarray(_X[0]))
  return {"val": jnp.sum(w**2), "curve": w}


def test_seeds_train_each_configuration_with_several_keys():
  space = {"lr": sweep.uniform(0.05, 0.6)}
  res = sweep.run(_noisy, space, num_trials=8, key=KEY, seeds=3, progress=False)
  assert res.num_compiles == 1
  assert res.metrics["val_per_seed"].shape == (8, 3)
  assert res.metrics["curve_per_seed"].shape == (8, 3, 4)
  # Seed s is the run whose train_fn folds s into the trial's key.
  alone = [
    sweep.run(
      lambda hp, key, s=s: _noisy(hp, jax.random.fold_in(key, s)),
      space,
      num_trials=8,
      key=KEY,
      progress=False,
    )
    for s in range(3)
  ]
  per_seed = np.stack([r.metrics["val"] for r in alone], axis=1)
  # One more vmapped axis may change XLA's kernels: float32 rounding.
  np.testing.assert_allclose(res.metrics["val_per_seed"], per_seed, rtol=1e-5)
  mean = per_seed.mean(axis=1)
  np.testing.assert_allclose(res.metrics["val"], mean, rtol=1e-5)
  np.testing.assert_allclose(
    res.metrics["val_se"], per_seed.std(axis=1, ddof=1) / np.sqrt(3), rtol=1e-4
  )
  # best() ranks by the mean: the pick of the mean of the separate runs,
  # which is not what any single seed picks here.
  assert res.best("val").index == int(np.argmin(mean))
  assert {int(np.argmin(per_seed[:, s])) for s in range(3)} != {
    int(np.argmin(mean))
  }
  table = res.to_pandas()
  assert {"val", "val_se"} <= set(table.columns)
  assert "val_per_seed" not in table.columns
  assert " ± " in repr(res.best("val"))


def test_a_trial_prints_on_one_short_line(result):
  text = repr(result.best("loss"))
  assert "\n" not in text and len(text) < 300
  assert "values, last" in text  # a curve is summarised, not dumped


def test_progress_bar_shows_the_ranking_metric(monkeypatch, capsys):
  pytest.importorskip("tqdm")
  monkeypatch.setenv("JOPT_PROGRESS", "1")
  space = {"lr": sweep.choice([0.01, 0.2, 0.4, 0.45])}
  res = sweep.run(
    _quadratic,
    space,
    key=KEY,
    strategy="grid",
    max_parallel=2,
    progress_metric="loss",
  )
  err = capsys.readouterr().err
  assert f"best loss={float(res.best('loss').metrics['loss']):.4g}" in err
  with pytest.raises(ValueError, match="progress_mode"):
    sweep.run(
      _quadratic,
      space,
      key=KEY,
      strategy="grid",
      progress_metric="loss",
      progress_mode="lowest",
    )


def test_progress_bar_advances_per_chunk(monkeypatch, capsys):
  pytest.importorskip("tqdm")
  monkeypatch.setenv("JOPT_PROGRESS", "1")
  space = {"lr": sweep.choice([0.01, 0.02, 0.03, 0.04])}
  sweep.run(_quadratic, space, key=KEY, strategy="grid", max_parallel=2)
  # Trials (fractions of trials with jopt.sweep.report), one decimal.
  assert "4.0/4" in capsys.readouterr().err
  monkeypatch.setenv("JOPT_PROGRESS", "0")
  sweep.run(_quadratic, space, key=KEY, strategy="grid")
  assert capsys.readouterr().err == ""


# ----------------------------------------------------------------- results


def test_result_table_and_save_load(result, tmp_path):
  df = result.to_pandas()
  assert len(df) == 11
  assert {"lr", "momentum", "opt", "loss", "curve", "diverged"} <= set(df)
  np.testing.assert_array_equal(df["curve"], result.metrics["curve"][:, -1])
  path = tmp_path / "sweep.npz"
  result.save(path)
  loaded = sweep.SweepResult.load(path)
  for k in result.metrics:
    np.testing.assert_array_equal(loaded.metrics[k], result.metrics[k])
  for k in result.hparams:
    np.testing.assert_array_equal(loaded.hparams[k], result.hparams[k])
  assert loaded.best("loss").index == result.best("loss").index
  assert repr(loaded.space) == repr(result.space)
  np.testing.assert_array_equal(loaded.diverged, result.diverged)
  stats = ("num_compiles", "num_cached", "compile_time", "memory_bytes")
  assert [getattr(loaded, k) for k in stats] == [
    getattr(result, k) for k in stats
  ]
  # A field holding a jax array is written as its numpy value.
  dataclasses.replace(result, diverged=jnp.asarray(result.diverged)).save(
    tmp_path / "jax.npz"
  )
  np.testing.assert_array_equal(
    sweep.SweepResult.load(tmp_path / "jax.npz").diverged, result.diverged
  )
  # A file whose metadata lacks the stored fields is refused by name.
  with np.load(path, allow_pickle=False) as data:
    arrays = {k: data[k] for k in data.files}
  meta = json.loads(str(arrays["__meta__"]))
  del meta["fields"]
  arrays.update(__meta__=np.asarray(json.dumps(meta)))
  np.savez(tmp_path / "old.npz", **arrays)
  with pytest.raises(ValueError, match="old.npz"):
    sweep.SweepResult.load(tmp_path / "old.npz")
  best = result.best("loss")
  assert best.hparams["opt"] in ("sgd", "momentum")
  assert isinstance(best.hparams["lr"], float)


def test_plots_write_pngs(result, tmp_path):
  fig = result.plot("loss", path=tmp_path / "u.png")
  lr_axis = fig.axes[list(result.hparams).index("lr")]
  assert lr_axis.get_xscale() == "log"
  assert (
    fig.axes[list(result.hparams).index("momentum")].get_xscale() == "linear"
  )
  result.plot_curves("curve", by="lr", path=tmp_path / "curves.png")
  parallel = result.plot_parallel("loss", path=tmp_path / "par.png")
  # A categorical axis names its categories, not indices 0, 1, 2.
  texts = {t.get_text() for t in parallel.axes[0].texts}
  assert set(result.hparams["opt"]) <= texts
  for name in ("u.png", "curves.png", "par.png"):
    assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
  with pytest.raises(ValueError, match="N, T"):
    result.plot_curves("loss")
  all_diverged = dataclasses.replace(
    result, diverged=np.ones(len(result), bool)
  )
  with pytest.raises(ValueError, match="all 11 diverged"):
    all_diverged.plot_parallel("loss")


def test_plot_axes_survive_an_outlier_and_do_not_join_samples(result):
  # One near-diverged trial (28.2 among losses near 1) must not flatten the
  # others, and random samples of a 4-D space are not joined by lines.
  loss = np.linspace(0.5, 1.5, len(result)).astype(np.float32)
  loss[3] = -28.2  # negative: no log axis, so the clip is what helps
  bumped = dataclasses.replace(
    result, metrics={**result.metrics, "loss": -loss}
  )
  fig = bumped.plot("loss")
  ax = fig.axes[0]
  assert ax.get_yscale() == "linear"
  assert ax.get_ylim()[1] < 5.0
  assert all(line.get_linestyle() == "None" for line in ax.get_lines())
  spread = dataclasses.replace(
    result,
    metrics={**result.metrics, "loss": np.geomspace(1e-3, 10.0, len(result))},
  )
  assert spread.plot("loss").axes[0].get_yscale() == "log"
  one_dim = sweep.run(
    lambda hp, key: {"loss": (hp["lr"] - 0.3) ** 2},
    {"lr": sweep.choice([0.1, 0.2, 0.4])},
    key=KEY,
    strategy="grid",
    progress=False,
    seeds=2,
  )
  ax = one_dim.plot("loss").axes[0]
  assert any(line.get_linestyle() == "-" for line in ax.get_lines())
  assert ax.get_legend() is not None  # mean ± se


def test_a_choice_of_functions_saves_their_names(tmp_path):
  acts = [jax.nn.relu, jnp.tanh]

  def fn(hparams, key):
    del key
    return {
      "loss": jnp.sum(
        jax.lax.switch(hparams["act"], acts, jnp.array([-1.0, 2.0]))
      )
    }

  res = sweep.run(
    fn, {"act": sweep.choice(acts)}, key=KEY, strategy="grid", progress=False
  )
  np.testing.assert_allclose(
    res.metrics["loss"], [2.0, np.tanh(-1) + np.tanh(2)], rtol=1e-6
  )
  res.save(tmp_path / "acts.npz")
  names = sweep.SweepResult.load(tmp_path / "acts.npz").hparams["act"]
  assert [n.rsplit(".", 1)[-1] for n in names] == ["relu", "tanh"]
