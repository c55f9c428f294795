"""SweepResult: divergence in every inexact dtype, save/load of narrow
floats, an atomic save, and to_pandas columns that never overwrite each other.
"""

import io
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

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
    space={"lr": sweep.uniform(0.0, 1.0)},
  )


# --- divergence for every inexact dtype -------------------------------------


@pytest.mark.parametrize(
  "dtype, expected",
  [
    (BF16, True),
    (np.float16, True),
    (np.float32, True),
    (np.float64, True),
    (np.complex64, True),
    (F8, True),
    (np.int32, False),
    (np.bool_, False),
    (np.uint16, False),
    (np.dtype(ml_dtypes.int4), False),
  ],
)
def test_is_inexact_counts_ml_dtypes_floats(dtype, expected):
  assert _common.is_inexact(dtype) is expected


@pytest.mark.parametrize(
  "dtype", [BF16, np.float16, np.float32, np.float64, np.complex64, F8]
)
def test_diverged_mask_flags_non_finite_values_of_any_inexact_dtype(dtype):
  loss = np.array([0.5, np.nan, 0.25, 1.0], np.float32).astype(dtype)
  curve = np.ones((4, 3), np.float32)
  curve[3, 1] = np.inf if dtype != F8 else np.nan
  metrics = {
    "loss": loss,
    "curve": curve.astype(dtype),
    "steps": np.array([1, 2, 3, 4], np.int32),
  }
  np.testing.assert_array_equal(
    _common.diverged_mask(metrics, 4), [False, True, False, True]
  )
  assert not _common.diverged_mask({}, 4).any()
  with pytest.raises(ValueError, match="'loss'.*leading axis of 5"):
    _common.diverged_mask(metrics, 5)


def test_best_skips_a_trial_whose_bf16_metric_is_nan():
  # As the engine built it before: diverged missed the bf16 NaN.
  res = _result(
    {
      "loss": np.array([0.5, np.nan, 0.7], BF16),
      "acc": np.array([0.8, 0.99, 0.9], np.float32),
    }
  )
  assert res.best("acc", mode="max").index == 2
  assert [t.index for t in res.top_k("acc", 3, mode="max")] == [2, 0]


# --- bf16 through save / load -----------------------------------------------


def _bits(a):
  return a.view(f"u{a.dtype.itemsize}")


@pytest.mark.parametrize("dtype", [BF16, np.float16, F8])
def test_save_load_keeps_narrow_float_metrics_bit_for_bit(tmp_path, dtype):
  values = np.array([[0.1, np.nan], [3.0, -0.0], [1e-3, 448.0]], np.float32)
  metrics = {"curve": values.astype(dtype), "loss": values[:, 0].astype(dtype)}
  res = _result(metrics, diverged=np.array([True, False, False]))
  res.save(tmp_path / "r.npz")
  back = sweep.SweepResult.load(tmp_path / "r.npz")
  for name, value in metrics.items():
    assert back.metrics[name].dtype == value.dtype
    np.testing.assert_array_equal(_bits(back.metrics[name]), _bits(value))
  np.testing.assert_array_equal(back.diverged, res.diverged)


def _typed(values):
  return [(type(v), v) for v in values]


def test_save_load_keeps_none_tuple_and_int_choices_as_they_were(tmp_path):
  values = [None, (1, 2), 3]
  static_cost = {None: 0.5, (1, 2): 0.0, 3: 1.0}

  def train_fn(hp, key):
    del key
    # "d" arrives as an index into its values, "s" as the value itself.
    return {"loss": hp["d"].astype(jnp.float32) + static_cost[hp["s"]]}

  res = sweep.run(
    train_fn,
    {"s": sweep.choice(values, static=True), "d": sweep.choice(values)},
    key=jax.random.key(0),
    strategy="grid",
    progress=False,
  )
  res.save(tmp_path / "r.npz")
  back = sweep.SweepResult.load(tmp_path / "r.npz")
  assert back.space == res.space
  for name in ("s", "d"):
    assert _typed(back.space[name].values) == _typed(values)
    assert _typed(back.hparams[name]) == _typed(res.hparams[name])
  best = back.best("loss")
  assert best.index == res.best("loss").index
  assert _typed(best.hparams.values()) == _typed([(1, 2), None])


def test_save_arrays_round_trips_every_dtype_through_paths_and_files(tmp_path):
  arrays = {
    "bf16": np.array([1.5, np.nan, -np.inf], BF16),
    "f8": np.array([0.5, np.nan], F8),
    "i4": np.array([-8, 7], ml_dtypes.int4),
    "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
    "i64": np.array([2**40]),
    "flag": np.array([True, False]),
    "text": np.array(["adam", "sgd"]),
    "scalar": np.float64(2.5),
    "jax": jnp.arange(3, dtype=jnp.bfloat16),
  }
  buffer = io.BytesIO()
  _common.save_arrays(buffer, arrays)
  buffer.seek(0)
  _common.save_arrays(tmp_path / "chunk", arrays)  # no ".npz" appended
  assert os.listdir(tmp_path) == ["chunk"]
  for back in (
    _common.load_arrays(buffer),
    _common.load_arrays(tmp_path / "chunk"),
  ):
    assert list(back) == list(arrays)
    for name, value in arrays.items():
      value = np.asarray(value)
      assert back[name].dtype == value.dtype, name
      np.testing.assert_array_equal(
        _bits(back[name]) if value.dtype.kind in "fV" else back[name],
        _bits(value) if value.dtype.kind in "fV" else value,
      )
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


# --- an atomic save ---------------------------------------------------------

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
  env = dict(
    os.environ,
    PYTHONPATH=str(pathlib.Path(__file__).parents[1]),
    JAX_PLATFORMS="cpu",
  )
  rng = np.random.default_rng(0)
  for _ in range(2):
    child = subprocess.Popen(
      [sys.executable, "-c", _SAVER, str(path)], stdout=subprocess.PIPE, env=env
    )
    try:
      assert child.stdout.readline() == b"saved\n"
      time.sleep(rng.uniform(0.05, 0.4))  # somewhere in a later save
    finally:
      child.send_signal(signal.SIGKILL)
      child.wait(timeout=60)
      child.stdout.close()
    res = sweep.SweepResult.load(path)
    assert len(res) == 2_000_000
    np.testing.assert_array_equal(
      res.metrics["loss"][-3:], [3_999_994.0, 3_999_996.0, 3_999_998.0]
    )
    # Only the result and, at most, the killed save's temporary file.
    assert {
      p.name for p in tmp_path.iterdir() if not p.name.endswith(".tmp")
    } == {"result.npz"}


def test_failed_save_leaves_no_file_and_keeps_the_old_one(tmp_path):
  path = tmp_path / "r.npz"
  _result({"loss": np.array([1.0, 2.0], np.float32)}).save(path)
  bad = _result({"loss": np.array([1.0, 2.0], np.float32)})
  bad.num_compiles = object()  # not saveable: fails after writing began
  with pytest.raises(TypeError, match="num_compiles"):
    bad.save(path)
  assert os.listdir(tmp_path) == ["r.npz"]
  assert len(sweep.SweepResult.load(path)) == 2


# --- to_pandas column clashes -----------------------------------------------


def test_to_pandas_keeps_hyperparameter_and_diverged_columns_on_a_clash():
  pytest.importorskip("pandas")
  res = _result(
    {
      "lr": np.array([7.0, 8.0], np.float32),
      "diverged": np.array([0.5, 0.25], np.float32),
      "lr_metric": np.array([1, 2], np.int32),
      "loss": np.array([0.1, np.nan], np.float32),
    },
    diverged=np.array([False, True]),
  )
  frame = res.to_pandas()
  assert list(frame.columns) == [
    "lr",
    "lr_metric_metric",
    "diverged_metric",
    "lr_metric",
    "loss",
    "diverged",
  ]
  np.testing.assert_array_equal(frame["lr"], res.hparams["lr"])
  np.testing.assert_array_equal(frame["diverged"], [False, True])
  np.testing.assert_array_equal(frame["diverged_metric"], [0.5, 0.25])
  # A metric named like a hyperparameter gets "_metric"; one that then
  # clashes with another metric's name is suffixed again.
  np.testing.assert_array_equal(frame["lr_metric"], [1, 2])
  np.testing.assert_array_equal(frame["lr_metric_metric"], [7.0, 8.0])
