"""jopt.sweep checkpoints: resume gives the uninterrupted result; no mixing."""

import functools
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _interrupt import Interrupted, interrupt_after, state_files
from _quadratic_search import quad_init, quad_segment

import jopt
from jopt import sweep
from jopt.sweep.runtime import _checkpoint

KEY = jax.random.key(3)
SPACE = {"lr": sweep.log_uniform(1e-3, 0.3), "c": sweep.uniform(0.0, 1.0)}


def train_fn(hparams, key):
  w = jax.random.normal(key, (3,))

  def step(w, _):
    w = w - hparams["lr"] * (2 * w + hparams["c"])
    return w, jnp.sum(w * w)

  w, curve = jax.lax.scan(step, w, length=6)
  return {"loss": jnp.sum(w * w), "curve": curve}


def other_fn(hparams, key):
  return {"loss": hparams["lr"] + 0 * jax.random.uniform(key)}


def _run(tmp_path, fn=train_fn, space=SPACE, key=KEY, **kw):
  kw.setdefault("max_parallel", 4)
  kw.setdefault("lanes", 2)
  return sweep.run(
    fn,
    space,
    num_trials=10,
    key=key,
    progress=False,
    checkpoint_dir=str(tmp_path / "ckpt"),
    **kw,
  )


def _assert_same(a, b):
  for k in a.metrics:
    np.testing.assert_array_equal(a.metrics[k], b.metrics[k])
  for k in a.hparams:
    np.testing.assert_array_equal(a.hparams[k], b.hparams[k])
  np.testing.assert_array_equal(a.diverged, b.diverged)


def test_rerun_loads_the_state_and_recomputes_missing_trials(
  tmp_path, monkeypatch
):
  first = _run(tmp_path)
  assert len(state_files(tmp_path / "ckpt")) == 1  # replaced at each step
  again = _run(tmp_path)
  assert again.num_compiles == 0  # everything came from disk
  _assert_same(first, again)
  # 10 trials in calls of 4 (2 devices x 2 lanes): interrupted after one.
  with monkeypatch.context() as m:
    interrupt_after(m, 1)
    with pytest.raises(Interrupted):
      _run(tmp_path / "partial")
  # Any chunking resumes: the missing trials run in calls of another size.
  partial = _run(tmp_path / "partial", max_parallel=None)
  assert partial.num_compiles == 1
  _assert_same(first, partial)
  _assert_same(
    first,
    sweep.run(
      train_fn,
      SPACE,
      num_trials=10,
      key=KEY,
      max_parallel=4,
      lanes=2,
      progress=False,
    ),
  )


@pytest.mark.parametrize(
  "change, match",
  [
    (dict(key=jax.random.key(4)), "key"),
    (dict(space={**SPACE, "lr": sweep.log_uniform(1e-3, 0.2)}), "space"),
    (dict(fn=other_fn), "train_fn"),
    (dict(lanes=4), "lanes"),
    # Other options compile another program: its trials would not match.
    (dict(compiler_options={}), "compiler_options"),
  ],
)
def test_checkpoint_of_another_call_is_refused(tmp_path, change, match):
  _run(tmp_path)
  with pytest.raises(ValueError, match=match):
    _run(tmp_path, **change)


def _scaled_fn(hparams, key, scale):
  return {"loss": scale * train_fn(hparams, key)["loss"]}


class _Scaled:
  def __init__(self, scale):
    self.scale = scale

  def __call__(self, hparams, key):
    return _scaled_fn(hparams, key, self.scale)


def _closure(scale):
  data = jnp.full((3,), scale)
  return lambda hparams, key: {"loss": jnp.sum(data) * hparams["lr"]}


@pytest.mark.parametrize(
  "make",
  [
    lambda s: functools.partial(_scaled_fn, scale=s),
    _Scaled,
    _closure,
  ],
)
def test_checkpoint_of_the_same_function_with_other_data_is_refused(
  tmp_path, make
):
  # Same name, same source: only a partial argument, an attribute or a
  # closed-over array differs. The lowered program tells them apart.
  _run(tmp_path, fn=make(1.0))
  _assert_same(_run(tmp_path, fn=make(1.0)), _run(tmp_path / "b", fn=make(1.0)))
  with pytest.raises(ValueError, match="program"):
    _run(tmp_path, fn=make(5.0))


def _activation_space(act=jax.nn.relu, clip_min=0.0, lr=0.1):
  return {
    "act": sweep.choice(
      [act, jnp.tanh, lambda x: x, functools.partial(jnp.clip, min=clip_min)]
    ),
    "lr": sweep.choice([lr, 0.3]),
  }


def test_space_identity_is_stable_and_tells_spaces_apart():
  # A killed sweep over activations resumes in a new process, where every
  # function object sits at a new address: the identity must not depend on
  # addresses, and must still change when a choice does (or a resume would
  # mix results of two different sweeps).
  text = _checkpoint.space_identity(_activation_space())
  assert "0x" not in text, text
  assert _checkpoint.space_identity(_activation_space()) == text
  for change in ({"act": jax.nn.gelu}, {"clip_min": 1.0}, {"lr": 0.2}):
    other = _checkpoint.space_identity(_activation_space(**change))
    assert other != text, change


_SCRIPT = textwrap.dedent("""
    import sys, time
    import jax, jax.numpy as jnp
    from jopt import sweep

    def train_fn(hparams, key):
      # Slow enough (0.3 s a chunk) to be killed between two chunks.
      jax.debug.callback(lambda: time.sleep(0.15))
      w = jax.random.normal(key, (3,))
      for _ in range(4):
        w = w - hparams["lr"] * 2 * w
      return {"loss": jnp.sum(w * w)}

    result = sweep.run(train_fn, {"lr": sweep.log_uniform(1e-3, 0.3)},
                       num_trials=16, key=jax.random.key(0), max_parallel=2,
                       lanes=2, devices=jax.devices()[:1], progress=False,
                       checkpoint_dir=sys.argv[1])
    result.save(sys.argv[2])
""")


def test_resume_after_kill_9_equals_uninterrupted(tmp_path):
  script = tmp_path / "sweep_script.py"
  script.write_text(_SCRIPT)
  env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))}
  ckpt = tmp_path / "ckpt"

  proc = subprocess.Popen(
    [sys.executable, str(script), str(ckpt), str(tmp_path / "killed.npz")],
    env=env,
  )
  deadline = time.time() + 120
  while not state_files(ckpt):
    assert proc.poll() is None, "the sweep ended before its first chunk"
    assert time.time() < deadline
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  done = int(os.path.basename(state_files(ckpt)[-1])[6:12])  # steps saved
  assert 1 <= done < 8  # killed mid-sweep: the rerun has work to do
  assert not (tmp_path / "killed.npz").exists()

  for out, folder in (("resumed.npz", ckpt), ("fresh.npz", tmp_path / "new")):
    subprocess.run(
      [sys.executable, str(script), str(folder), str(tmp_path / out)],
      env=env,
      check=True,
      timeout=300,
    )
  resumed = sweep.SweepResult.load(tmp_path / "resumed.npz")
  fresh = sweep.SweepResult.load(tmp_path / "fresh.npz")
  _assert_same(resumed, fresh)
  assert resumed.num_compiles == 1 and len(resumed) == 16


def _reserved_names_fn(hparams, key):
  loss = hparams["lr"] + 0 * jax.random.uniform(key)
  return {
    "__indices__": loss,
    "__dtypes__": 2 * loss,
    "__meta__": 3 * loss,
    "indices": 4 * loss,
    "m0": 5 * loss,
  }


def test_any_metric_name_round_trips_through_checkpoints(tmp_path):
  first = _run(tmp_path, fn=_reserved_names_fn)
  again = _run(tmp_path, fn=_reserved_names_fn)
  assert again.num_compiles == 0
  assert sorted(again.metrics) == sorted(first.metrics)
  _assert_same(first, again)
  np.testing.assert_allclose(
    again.metrics["m0"], 5 * again.metrics["__indices__"], rtol=1e-6
  )


def _stepwise(tmp_path, **kw):
  kw.setdefault("early_stopping", 2)
  return sweep.run_stepwise(
    quad_init,
    quad_segment,
    {"lr": sweep.choice([0.0, 0.5, 1.0, 1.5])},
    num_segments=8,
    key=KEY,
    metric="loss",
    strategy="grid",
    lanes=2,
    checkpoint_dir=str(tmp_path / "ckpt"),
    **kw,
  )


def test_early_stopping_rule_resumes_with_a_new_rule_object(tmp_path):
  # A rule made again (as a new process makes it) has new functions, at
  # new addresses: the fingerprint holds what it computes, not its repr.
  first = _stepwise(tmp_path, early_stopping=jopt.early_stopping(2))
  with open(tmp_path / "ckpt" / "manifest.json") as f:
    assert " at 0x" not in f.read()
  again = _stepwise(tmp_path, early_stopping=jopt.early_stopping(2))
  assert again.num_compiles == 0  # the search was finished: nothing ran
  _assert_same(first, again)
  with pytest.raises(ValueError, match="early_stopping"):
    _stepwise(tmp_path, early_stopping=jopt.early_stopping(3))


class _Interrupted(Exception):
  pass


def _interrupt_after(monkeypatch, saves):
  """Makes a stepwise search stop (as if killed) after ``saves`` saves."""
  from jopt.sweep.runtime import _loop

  original, count = _loop.save, [0]

  def save(*args):
    original(*args)
    count[0] += 1
    if count[0] == saves:
      raise _Interrupted

  monkeypatch.setattr(_loop, "save", save)
  return lambda: monkeypatch.setattr(_loop, "save", original)


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::jopt.sweep.MemoryBudgetWarning")
def test_memory_fitted_chunks_resume_on_another_device_count(
  tmp_path, monkeypatch
):
  # A budget of one byte fits one group of lanes per device: a chunk of 8
  # trials on 4 devices, of 4 on 2. The search saved mid-chunk on 4
  # devices resumes on 2 to the uninterrupted result.
  monkeypatch.setenv("JOPT_SWEEP_MEMORY_BYTES", "1")
  kw = dict(
    num_segments=3,
    key=KEY,
    metric="loss",
    num_trials=16,
    lanes=2,
    early_stopping=2,
  )
  space = {"lr": sweep.log_uniform(0.01, 1.5)}
  reference = sweep.run_stepwise(quad_init, quad_segment, space, **kw)
  restore = _interrupt_after(monkeypatch, 2)
  with pytest.raises(_Interrupted):
    sweep.run_stepwise(
      quad_init,
      quad_segment,
      space,
      **kw,
      devices=jax.devices()[:4],
      checkpoint_dir=str(tmp_path / "ckpt"),
    )
  restore()
  resumed = sweep.run_stepwise(
    quad_init,
    quad_segment,
    space,
    **kw,
    devices=jax.devices()[:2],
    checkpoint_dir=str(tmp_path / "ckpt"),
  )
  _assert_same(reference, resumed)
  np.testing.assert_array_equal(reference.segments_run, resumed.segments_run)


def test_the_latest_state_of_concurrent_runs_is_resumed(tmp_path, monkeypatch):
  # Two runs of one call at once, with other max_parallel, write their
  # states in one folder; the next call resumes the latest one, whichever
  # run wrote it, to the same result.
  first = _run(tmp_path, max_parallel=4)  # 3 steps: state-000003
  with monkeypatch.context() as m:
    interrupt_after(m, 4)
    with pytest.raises(Interrupted):  # 4 of its 5 steps: state-000004
      _run(tmp_path / "other", max_parallel=2)
  (later,) = state_files(tmp_path / "other" / "ckpt")
  os.replace(later, tmp_path / "ckpt" / os.path.basename(later))
  again = _run(tmp_path, max_parallel=8)
  assert again.num_compiles == 1  # the other run's last 2 trials
  _assert_same(first, again)
