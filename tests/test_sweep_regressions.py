"""Regression tests for silent failures of the sweep package (issue 9).

Each test reproduces a failure users met: a bf16 NaN picked as best, bf16
metrics lost by save/load, a save killed halfway, a metric overwriting a
hyperparameter column, float32 overflow in sampling, confident lr_find
suggestions on a loss that never fell, and a missing optional package
breaking the main call.
"""

import io
import os
import pathlib
import re
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import jopt
from jopt import sweep
from jopt.sweep import _common

BF16 = np.dtype(ml_dtypes.bfloat16)
F8 = np.dtype(ml_dtypes.float8_e4m3fn)  # has NaN but no Inf


def _result(metrics, diverged=None, n=None):
  n = n or len(next(iter(metrics.values())))
  return sweep.SweepResult(
      hparams={"lr": np.linspace(0.1, 1.0, n).astype(np.float32)},
      metrics=metrics,
      diverged=np.zeros(n, bool) if diverged is None else diverged,
      space={"lr": sweep.uniform(0.0, 1.0)})


# --- 1. divergence for every inexact dtype -------------------------------------


@pytest.mark.parametrize("dtype, expected", [
    (BF16, True), (np.float16, True), (np.float32, True), (np.float64, True),
    (np.complex64, True), (F8, True), (np.int32, False), (np.bool_, False),
    (np.uint16, False), (np.dtype(ml_dtypes.int4), False)])
def test_is_inexact_counts_ml_dtypes_floats(dtype, expected):
  assert _common.is_inexact(dtype) is expected


@pytest.mark.parametrize("dtype", [BF16, np.float16, np.float32, np.float64,
                                   np.complex64, F8])
def test_diverged_mask_flags_non_finite_values_of_any_inexact_dtype(dtype):
  loss = np.array([0.5, np.nan, 0.25, 1.0], np.float32).astype(dtype)
  curve = np.ones((4, 3), np.float32)
  curve[3, 1] = np.inf if dtype != F8 else np.nan
  metrics = {"loss": loss, "curve": curve.astype(dtype),
             "steps": np.array([1, 2, 3, 4], np.int32)}
  np.testing.assert_array_equal(_common.diverged_mask(metrics, 4),
                                [False, True, False, True])
  assert not _common.diverged_mask({}, 4).any()
  with pytest.raises(ValueError, match="'loss'.*leading axis of 5"):
    _common.diverged_mask(metrics, 5)


def test_best_skips_a_trial_whose_bf16_metric_is_nan():
  # As the engine built it before: diverged missed the bf16 NaN.
  res = _result({"loss": np.array([0.5, np.nan, 0.7], BF16),
                 "acc": np.array([0.8, 0.99, 0.9], np.float32)})
  assert res.best("acc", mode="max").index == 2
  assert [t.index for t in res.top_k("acc", 3, mode="max")] == [2, 0]


# --- 2. bf16 through save / load -----------------------------------------------


def _bits(a):
  return a.view(f"u{a.dtype.itemsize}")


@pytest.mark.parametrize("dtype", [BF16, np.float16, F8])
def test_save_load_keeps_narrow_float_metrics_bit_for_bit(tmp_path, dtype):
  values = np.array([[0.1, np.nan], [3.0, -0.0], [1e-3, 448.0]], np.float32)
  metrics = {"curve": values.astype(dtype),
             "loss": values[:, 0].astype(dtype)}
  res = _result(metrics, diverged=np.array([True, False, False]))
  res.save(tmp_path / "r.npz")
  back = sweep.SweepResult.load(tmp_path / "r.npz")
  for name, value in metrics.items():
    assert back.metrics[name].dtype == value.dtype
    np.testing.assert_array_equal(_bits(back.metrics[name]), _bits(value))
  np.testing.assert_array_equal(back.diverged, res.diverged)


def test_save_arrays_round_trips_every_dtype_through_paths_and_files(
    tmp_path):
  arrays = {
      "bf16": np.array([1.5, np.nan, -np.inf], BF16),
      "f8": np.array([0.5, np.nan], F8),
      "i4": np.array([-8, 7], ml_dtypes.int4),
      "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
      "i64": np.array([2**40]), "flag": np.array([True, False]),
      "text": np.array(["adam", "sgd"]), "scalar": np.float64(2.5),
      "jax": jnp.arange(3, dtype=jnp.bfloat16)}
  buffer = io.BytesIO()
  _common.save_arrays(buffer, arrays)
  buffer.seek(0)
  _common.save_arrays(tmp_path / "chunk", arrays)  # no ".npz" appended
  assert os.listdir(tmp_path) == ["chunk"]
  for back in (_common.load_arrays(buffer),
               _common.load_arrays(tmp_path / "chunk")):
    assert list(back) == list(arrays)
    for name, value in arrays.items():
      value = np.asarray(value)
      assert back[name].dtype == value.dtype, name
      np.testing.assert_array_equal(_bits(back[name]) if value.dtype.kind
                                    in "fV" else back[name],
                                    _bits(value) if value.dtype.kind in "fV"
                                    else value)
  with pytest.raises(TypeError, match="'obj'.*Python objects"):
    _common.save_arrays(tmp_path / "x", {"obj": np.array([None, 1])})


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_load_arrays_names_the_file_when_it_is_damaged(tmp_path, damage):
  path = tmp_path / "chunk_3.npz"
  _common.save_arrays(path, {"x": np.arange(1000.0)})
  data = bytearray(path.read_bytes())
  if damage == "truncate":
    data = data[: len(data) // 2]
  else:  # one bit in the middle of the values: the zip CRC catches it
    data[len(data) // 2] ^= 0x40
  path.write_bytes(bytes(data))
  with pytest.raises(ValueError, match="chunk_3.npz"):
    _common.load_arrays(path)


# --- 3. an atomic save ---------------------------------------------------------

_SAVER = textwrap.dedent("""
    import sys
    import numpy as np
    from jopt import sweep

    n = 2_000_000  # ~16 MB per save: long enough to be killed mid-write
    res = sweep.SweepResult(
        hparams={"lr": np.arange(n, dtype=np.float32)},
        metrics={"loss": np.arange(n, dtype=np.float32) * 2},
        diverged=np.zeros(n, bool), space={"lr": sweep.uniform(0.0, 1.0)})
    res.save(sys.argv[1])
    print("saved", flush=True)
    while True:
      res.save(sys.argv[1])
""")


def test_save_killed_midway_leaves_the_previous_file_intact(tmp_path):
  path = tmp_path / "result.npz"
  env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).parents[1]),
             JAX_PLATFORMS="cpu")
  rng = np.random.default_rng(0)
  for _ in range(2):
    child = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)],
                             stdout=subprocess.PIPE, env=env)
    try:
      assert child.stdout.readline() == b"saved\n"
      time.sleep(rng.uniform(0.05, 0.4))  # somewhere in a later save
    finally:
      child.send_signal(signal.SIGKILL)
      child.wait(timeout=60)
      child.stdout.close()
    res = sweep.SweepResult.load(path)
    assert len(res) == 2_000_000
    np.testing.assert_array_equal(res.metrics["loss"][-3:],
                                  [3_999_994.0, 3_999_996.0, 3_999_998.0])
    # Only the result and, at most, the killed save's temporary file.
    assert {p.name for p in tmp_path.iterdir()
            if not p.name.endswith(".tmp")} == {"result.npz"}


def test_failed_save_leaves_no_file_and_keeps_the_old_one(tmp_path):
  path = tmp_path / "r.npz"
  _result({"loss": np.array([1.0, 2.0], np.float32)}).save(path)
  bad = _result({"loss": np.array([1.0, 2.0], np.float32)})
  bad.num_compiles = object()  # not saveable: fails after writing began
  with pytest.raises(TypeError, match="num_compiles"):
    bad.save(path)
  assert os.listdir(tmp_path) == ["r.npz"]
  assert len(sweep.SweepResult.load(path)) == 2


# --- 4. to_pandas column clashes -----------------------------------------------


def test_to_pandas_keeps_hyperparameter_and_diverged_columns_on_a_clash():
  pytest.importorskip("pandas")
  res = _result({"lr": np.array([7.0, 8.0], np.float32),
                 "diverged": np.array([0.5, 0.25], np.float32),
                 "lr_metric": np.array([1, 2], np.int32),
                 "loss": np.array([0.1, np.nan], np.float32)},
                diverged=np.array([False, True]))
  frame = res.to_pandas()
  assert list(frame.columns) == ["lr", "lr_metric_metric", "diverged_metric",
                                 "lr_metric", "loss", "diverged"]
  np.testing.assert_array_equal(frame["lr"], res.hparams["lr"])
  np.testing.assert_array_equal(frame["diverged"], [False, True])
  np.testing.assert_array_equal(frame["diverged_metric"], [0.5, 0.25])
  # A metric named like a hyperparameter gets "_metric"; one that then
  # clashes with another metric's name is suffixed again.
  np.testing.assert_array_equal(frame["lr_metric"], [1, 2])
  np.testing.assert_array_equal(frame["lr_metric_metric"], [7.0, 8.0])


# --- 5. sampling bounds in float32 ---------------------------------------------


@pytest.mark.parametrize("make, args, match", [
    (sweep.uniform, (-1e39, 1e39), r"low must be.*float32.*3\.4"),
    (sweep.uniform, (0.0, 1e39), r"high must be.*float32"),
    (sweep.uniform, (1.0, 1.0 + 1e-12), r"equal in float32"),
    (sweep.log_uniform, (1e-46, 1e-44), r"low must be.*1\.17.*e-38"),
    (sweep.log_uniform, (1e-3, 1e39), r"high must be.*float32"),
    (sweep.log_uniform, (1.0, 1.0 + 1e-12), r"equal in float32")])
def test_bounds_that_float32_cannot_sample_are_rejected(make, args, match):
  with pytest.raises(ValueError, match=match):
    make(*args)


@pytest.mark.parametrize("dist", [
    sweep.uniform(-3.4e38, 3.4e38), sweep.uniform(-1e-40, 1e-40),
    sweep.uniform(0.1, 0.1000001), sweep.log_uniform(1.2e-38, 3.4e38),
    sweep.log_uniform(1e-30, 1.0000001e-30), sweep.log_uniform(0.1, 0.3)])
@pytest.mark.parametrize("strategy", ["random", "quasirandom", "grid"])
def test_extreme_valid_bounds_sample_finite_float32_inside_them(dist,
                                                                strategy):
  num = None if strategy == "grid" else 4096
  values = sweep.sample({"x": dist}, num, jax.random.key(1), strategy,
                        grid_points=64)["x"]
  assert values.dtype == np.float32 and np.isfinite(values).all()
  assert np.float32(dist.low) <= values.min()
  assert values.max() <= np.float32(dist.high)
  if dist.log:
    assert (values > 0).all()


# --- 6. lr_find without a descent ----------------------------------------------


def _flat_noisy_step(state, hp):
  # The state is the data key, split at every step.
  key, sub = jax.random.split(state)
  return key, {"loss": 1.0 + 0.1 * jax.random.normal(sub)}


def _rising_step(state, hp):
  return state, {"loss": 1.0 + hp["learning_rate"]}


def _init(hp, key):
  del hp
  return key


@pytest.mark.parametrize("step", [_flat_noisy_step, _rising_step])
@pytest.mark.parametrize("num_rates", [None, 8])
def test_lr_find_without_descent_warns_and_suggests_nothing(step, num_rates):
  with pytest.warns(UserWarning, match="never fell"):
    res = sweep.lr_find(_init, step, key=jax.random.key(0), min_lr=1e-3,
                        max_lr=1.0, num_steps=40, num_seeds=2,
                        num_rates=num_rates)
  assert set(res.suggestions) == {"steep", "valley", "minimum"}
  assert all(np.isnan(v) for v in res.suggestions.values())
  assert np.isfinite(res.curve[:3]).all()  # the curve is still there
  pytest.importorskip("matplotlib")
  res.plot()  # and can be drawn without suggestion lines


def _smoothed(raw, smoothing):
  """The bias-corrected EMA of [S, T] losses, as `lr_find` records it."""
  avg, out = np.zeros(len(raw)), np.empty_like(raw)
  for t in range(raw.shape[1]):
    avg = smoothing * avg + (1 - smoothing) * raw[:, t]
    out[:, t] = avg / (1 - smoothing ** (t + 1))
  return out


@pytest.mark.parametrize("smoothing", [0.0, 0.98])
@pytest.mark.parametrize("num_seeds", [1, 4])
def test_descent_rule_separates_noise_from_a_fall(smoothing, num_seeds):
  # The rule itself on simulated ramps of 100 steps, loss noise 0.1: flat and
  # rising losses must give no suggestion, a fall of 0.8 (8 deviations) must
  # give one, in every one of 100 draws.
  from jopt.sweep import _lr_curve

  rng = np.random.default_rng(0)
  lrs = np.geomspace(1e-7, 10, 100)
  trends = {"flat": np.ones(100), "rising": 1 + np.linspace(0, 1, 100),
            "fall": 1 - 0.8 / (1 + np.exp(-3 * (np.log10(lrs) + 3)))}
  for name, trend in trends.items():
    for _ in range(100):
      raw = trend + 0.1 * rng.normal(size=(num_seeds, 100))
      curve = _lr_curve._mean_curve(_smoothed(raw, smoothing))
      with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = _lr_curve._suggest(lrs, curve, raw,
                                  _lr_curve._ema_noise(smoothing, 100))
      assert bool(caught) == (name != "fall"), name
      assert np.isnan(found["valley"]) == (name != "fall"), name


def test_ema_noise_matches_the_smoothed_deviation():
  from jopt.sweep import _lr_curve

  noise = np.random.default_rng(0).normal(size=(20000, 30))
  measured = _smoothed(noise, 0.9).std(axis=0)
  # 20000 samples: the measured deviation is within ~1.5% (3 / sqrt(2n)).
  np.testing.assert_allclose(measured, _lr_curve._ema_noise(0.9, 30),
                             rtol=0.02)


def test_lr_find_minimum_never_lies_below_min_lr():
  # Smoothing 0: the curve is the loss, lowest at lr = 10**-2.5, half a
  # decade above min_lr; a tenth of it would lie below min_lr.
  def step(state, hp):
    return state, {"loss": (jnp.log10(hp["learning_rate"]) + 2.5) ** 2 + 1.0}

  res = sweep.lr_find(_init, step, key=jax.random.key(0), min_lr=1e-3,
                      max_lr=1.0, num_steps=31, smoothing=0.0)
  lowest = res.learning_rates[np.nanargmin(res.curve)]
  assert lowest / 10 < 1e-3
  assert res.suggestions["minimum"] == pytest.approx(1e-3)
  assert res.suggestions["valley"] >= 1e-3


# --- 7. dead code and references ----------------------------------------------

_SWEEP_SOURCES = sorted(pathlib.Path(sweep.__file__).parent.glob("*.py"))


def test_sweep_docs_reference_only_names_that_exist():
  missing = []
  for path in _SWEEP_SOURCES:
    for name in re.findall(r"`(jopt(?:\.\w+)+)", path.read_text()):
      obj = jopt
      try:
        for part in name.split(".")[1:]:
          obj = getattr(obj, part)
      except AttributeError:
        missing.append(f"{path.name}: {name}")
  assert not missing


def test_sweep_sources_carry_no_workflow_markers():
  marked = [p.name for p in _SWEEP_SOURCES if "[helper-" in p.read_text()]
  assert not marked


# --- 8. optional packages ------------------------------------------------------


def test_progress_bar_without_tqdm_is_a_silent_stand_in(monkeypatch):
  monkeypatch.delenv("JOPT_PROGRESS", raising=False)
  monkeypatch.setitem(sys.modules, "tqdm", None)
  monkeypatch.setitem(sys.modules, "tqdm.auto", None)
  bar = _common.progress_bar(10, "jopt.sweep")
  bar.update(3)
  bar.set_postfix(loss=0.5)
  bar.close()
  assert not hasattr(bar, "n")


def test_progress_bar_is_tqdm_when_installed(monkeypatch):
  tqdm = pytest.importorskip("tqdm")
  monkeypatch.delenv("JOPT_PROGRESS", raising=False)
  bar = _common.progress_bar(10, "jopt.sweep", enabled=True)
  try:
    assert isinstance(bar, tqdm.tqdm)
    bar.update(3)
    assert bar.n == 3
  finally:
    bar.close()
  assert not isinstance(_common.progress_bar(10, "x", enabled=False),
                        tqdm.tqdm)
  monkeypatch.setenv("JOPT_PROGRESS", "0")
  assert not isinstance(_common.progress_bar(10, "x"), tqdm.tqdm)


@pytest.mark.parametrize("missing, call", [
    ("pandas", lambda res: res.to_pandas()),
    ("matplotlib", lambda res: res.plot("loss")),
    ("matplotlib", lambda res: res.plot_curves("curve")),
    ("matplotlib", lambda res: res.plot_parallel("loss")),
])
def test_optional_features_name_the_extra_when_missing(monkeypatch, missing,
                                                       call):
  for name in list(sys.modules):
    if name == missing or name.startswith(missing + "."):
      monkeypatch.setitem(sys.modules, name, None)
  monkeypatch.setitem(sys.modules, missing, None)
  res = _result({"loss": np.array([0.1, 0.2], np.float32),
                 "curve": np.ones((2, 3), np.float32)})
  with pytest.raises(ImportError, match=r'pip install "jopt\[plots\]"'):
    call(res)


def test_lr_find_plot_names_the_extra_when_matplotlib_is_missing(
    monkeypatch):
  for name in list(sys.modules):
    if name == "matplotlib" or name.startswith("matplotlib."):
      monkeypatch.setitem(sys.modules, name, None)
  monkeypatch.setitem(sys.modules, "matplotlib", None)
  res = sweep.LRFindResult(np.geomspace(1e-3, 1, 5), np.ones((1, 5)),
                           np.ones((1, 5)), np.ones(5),
                           {"minimum": 1e-2})
  with pytest.raises(ImportError, match=r'pip install "jopt\[plots\]"'):
    res.plot()
