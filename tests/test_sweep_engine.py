"""`sweep.run`: state files, static groups, the memory budget, reusing
programs, single trials and bfloat16 checkpoints."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _interrupt import Interrupted, interrupt_after, state_files

from jopt import sweep

KEY = jax.random.key(5)
SPACE = {"lr": sweep.uniform(0.1, 0.9)}


def quad(hp, key):
  w = jax.random.normal(key, (3,))
  for _ in range(3):
    w = w - hp["lr"] * w
  return {"loss": jnp.sum(w * w)}


def other(hp, key):
  return {"loss": hp["lr"] + jax.random.uniform(key)}


def _run(folder, fn=quad, **kw):
  kw.setdefault("max_parallel", 2)
  return sweep.run(
    fn,
    SPACE,
    num_trials=6,
    key=KEY,
    lanes=2,
    checkpoint_dir=str(folder),
    progress=False,
    **kw,
  )


def test_a_state_file_of_another_sweep_is_not_adopted(tmp_path):
  # Old engine: with manifest.json deleted, another train_fn took the old
  # chunks (no compile, old metrics paired with new hyperparameters).
  _run(tmp_path / "ckpt")
  os.remove(tmp_path / "ckpt" / "manifest.json")
  with pytest.raises(ValueError, match=r"state-.*different search"):
    _run(tmp_path / "ckpt", fn=other)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "swap"])
def test_a_damaged_state_file_is_named(tmp_path, damage):
  folder = tmp_path / "ckpt"
  _run(folder)
  (path,) = state_files(folder)
  if damage == "truncate":
    with open(path, "rb") as f:
      data = f.read()
    with open(path, "wb") as f:
      f.write(data[: len(data) // 2])
    match = "not a readable"
  elif damage == "garbage":
    with open(path, "wb") as f:
      f.write(b"not a zip file at all")
    match = "not a readable"
  else:  # a file of another sweep put in place of this one's
    _run(tmp_path / "b", fn=other)
    shutil.copy(state_files(tmp_path / "b")[-1], path)
    match = "different search"
  with pytest.raises(ValueError, match=match) as info:
    _run(folder)
  assert os.path.basename(path) in str(info.value)


def test_resume_with_a_smaller_max_parallel_after_a_failure(
  tmp_path, monkeypatch
):
  # Old engine: "written with chunks of 4 trials" refused the retry.
  folder = tmp_path / "ckpt"
  full = _run(tmp_path / "full", max_parallel=4)
  with monkeypatch.context() as m:
    interrupt_after(m, 1)
    with pytest.raises(Interrupted):
      _run(folder, max_parallel=4)
  again = _run(folder, max_parallel=2)
  np.testing.assert_array_equal(again.metrics["loss"], full.metrics["loss"])
  assert again.num_compiles == 1  # the 2 missing trials, in calls of 2


def test_static_groups_keep_every_metric_value():
  # Old engine: every group was cast to the first group's dtype, so 0.75
  # became 0 after an int32 group.
  def fn(hp, key):
    del key
    value = (
      jnp.int32(3)
      if hp["kind"] == "int"
      else jnp.float32(0.75) * hp["lr"] / hp["lr"]
    )
    return {"value": value}

  space = {
    "kind": sweep.choice(["int", "float"], static=True),
    "lr": sweep.choice([0.5]),
  }
  res = sweep.run(fn, space, key=KEY, strategy="grid", progress=False)
  np.testing.assert_array_equal(res.metrics["value"], [3.0, 0.75])


def test_a_metric_only_some_groups_return_is_an_error():
  def fn(hp, key):
    out = {"loss": hp["lr"] * jax.random.uniform(key)}
    if hp["width"] == 2:
      out["extra"] = hp["lr"]
    return out

  space = {
    "width": sweep.choice([1, 2], static=True),
    "lr": sweep.choice([0.1, 0.2]),
  }
  with pytest.raises(ValueError, match="same metrics"):
    sweep.run(fn, space, key=KEY, strategy="grid", progress=False)


@pytest.mark.parametrize("num_trials", [4, 1])
def test_one_group_over_the_memory_budget_says_so(monkeypatch, num_trials):
  # 4 trials shrink to one group first; 1 trial cannot shrink, so its
  # footprint is measured while it runs and checked after.
  monkeypatch.setenv("JOPT_SWEEP_MEMORY_BYTES", "1")
  with pytest.warns(sweep.MemoryBudgetWarning, match="lanes") as record:
    res = sweep.run(
      quad,
      SPACE,
      num_trials=num_trials,
      key=KEY,
      progress=False,
      devices=jax.devices()[:1],
    )
  assert len(res) == num_trials and res.memory_bytes > 1
  # The warning points at the caller of sweep.run, not at jopt's insides.
  assert [w.filename for w in record] == [__file__]


def test_rerunning_the_same_sweep_reuses_its_executable():
  def fn(hp, key):
    return {"loss": hp["lr"] * jnp.sum(jax.random.normal(key, (7,)))}

  first = sweep.run(fn, SPACE, num_trials=5, key=KEY, progress=False)
  second = sweep.run(fn, SPACE, num_trials=5, key=KEY, progress=False)
  # The same program: no compile.
  assert second.num_compiles == second.num_cached == 1
  np.testing.assert_array_equal(first.metrics["loss"], second.metrics["loss"])
  # Another function with the same shapes is a different program.
  other = sweep.run(
    lambda hp, key: {"loss": fn(hp, key)["loss"] + 1.0},
    SPACE,
    num_trials=5,
    key=KEY,
    progress=False,
  )
  assert other.num_compiles == 1 and other.num_cached == 0


def test_rerunning_with_the_same_function_does_not_trace_it_again():
  # Like jax.jit: the second call with the same train_fn object, shapes and
  # settings reuses the program without tracing (which for a real model
  # costs more than a short trial runs); new static values, or progress
  # on, do trace.
  traces = []

  def fn(hp, key):
    traces.append(1)
    return {"loss": hp["lr"] * jnp.sum(jax.random.normal(key, (3,)))}

  first = sweep.run(fn, SPACE, num_trials=3, key=KEY, progress=False)
  assert len(traces) == 1
  second = sweep.run(
    fn, SPACE, num_trials=3, key=jax.random.key(9), progress=False
  )
  assert len(traces) == 1 and second.num_compiles == 1
  assert not np.array_equal(first.metrics["loss"], second.metrics["loss"])
  third = sweep.run(
    fn, SPACE, num_trials=3, key=jax.random.key(9), progress=False
  )
  np.testing.assert_array_equal(third.metrics["loss"], second.metrics["loss"])
  sweep.run(fn, SPACE, num_trials=5, key=KEY, progress=False)  # new shape
  assert len(traces) == 2


def test_a_single_trial_is_not_padded():
  # K = 1 computes one lane, not two or eight.
  res = sweep.run(quad, SPACE, num_trials=1, key=KEY, progress=False)
  assert len(res) == 1
  from jopt.sweep.runtime import _executor

  assert _executor.lanes_for(1, "cpu") == 1
  assert _executor.lanes_for(5, "cpu") == 1
  assert _executor.lanes_for(5, "gpu") == 8  # a power of two >= 5
  assert _executor.lanes_for(1000, "gpu") == _executor.ACCELERATOR_LANES


def test_a_bfloat16_sweep_resumes_from_its_checkpoint(tmp_path, monkeypatch):
  # Old engine: bf16 metrics came back from a chunk file as raw |V2 bytes.
  def fn(hp, key):
    return {"loss": quad(hp, key)["loss"].astype(jnp.bfloat16)}

  full = _run(tmp_path / "full", fn=fn)
  folder = tmp_path / "ckpt"
  with monkeypatch.context() as m:
    interrupt_after(m, 1)
    with pytest.raises(Interrupted):
      _run(folder, fn=fn)
  again = _run(folder, fn=fn)
  assert again.metrics["loss"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(again.metrics["loss"], full.metrics["loss"])


def test_only_cpu_checks_a_calls_footprint_after_it_runs(monkeypatch):
  # On accelerators running out of memory is a hard error, so the advice
  # must come first (the program is compiled to size it); on CPU a call
  # that cannot shrink is measured while it runs, not compiled beforehand.
  from jopt.sweep.runtime import _programs

  class FakeExecutor:
    lanes, platform, multiprocess, devices = 2, "gpu", False, [None]
    checked: set = set()

    def num_devices_for(self, n):
      return 1

    def padded(self, n, ndev):
      return 2

  monkeypatch.setattr(_programs, "compiled_bytes", lambda program: None)
  sized = []
  ex = FakeExecutor()
  assert _programs.fit(ex, 2, None, lambda *a: sized.append(a)) == (2, 1)
  assert sized == [(2, 1)]
  ex.platform = "cpu"
  assert _programs.fit(ex, 2, None, lambda *a: sized.append(a)) == (2, 1)
  assert sized == [(2, 1)]
