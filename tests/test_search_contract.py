"""The guarantees every search strategy keeps, checked on each of them.

One table of searches, all on the same small model (a few steps of Adam on
a random least-squares problem with a matmul, so batched kernels are used),
and one test per guarantee:

* the same trials give the same bits on 1, 3 or 8 devices and with any
  ``max_parallel`` (every device computes at the same lane width);
* a search interrupted after any step resumes from its checkpoint to the
  uninterrupted result, bit for bit, and a folder of another search or a
  tampered file is refused;
* a NaN trial (float32 or bfloat16 metric) is flagged, ``best()`` skips it
  and it changes no other trial;
* bad input gets the same errors everywhere;
* every result reports the same compile statistics, read from the search's
  executor.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jopt
from jopt import sweep
from jopt.sweep.runtime import _loop

KEY = jax.random.key(11)
A = jax.random.normal(jax.random.key(0), (6, 6))
B = jax.random.normal(jax.random.key(1), (6, 3))


def _loss(w):
  return jnp.mean((A @ w - B) ** 2)


def _adam_steps(w, state, lr, steps):
  tx = jopt.adam(lr)

  def step(carry, _):
    w, s = carry
    loss, g = jax.value_and_grad(_loss)(w)
    u, s = tx.update(g, s, w)
    return (jopt.apply_updates(w, u), s), loss

  return jax.lax.scan(step, (w, state), length=steps)


def train_fn(hp, key):
  w = jax.random.normal(key, (6, 3))
  (w, _), losses = _adam_steps(w, jopt.adam(hp["lr"]).init(w), hp["lr"], 8)
  return {"loss": losses[-1], "curve": losses}


def init(hp, key):
  w = jax.random.normal(key, (6, 3))
  return {"w": w, "s": jopt.adam(hp["lr"]).init(w)}


def segment(state, hp):
  (w, s), losses = _adam_steps(state["w"], state["s"], hp["lr"], 3)
  return {"w": w, "s": s}, {"loss": losses[-1]}


SPACE = {"lr": sweep.log_uniform(1e-3, 0.3)}


def _lr_init(hp, key):
  return init({"lr": hp["learning_rate"]}, key)


def _lr_segment(state, hp):
  return segment(state, {"lr": hp["learning_rate"]})


def _median_pruner():
  import optuna

  return optuna.pruners.MedianPruner(n_startup_trials=5)


# Every search as a function of (devices, max_parallel, checkpoint_dir).
SEARCHES = {
  "run": lambda **kw: sweep.run(
    train_fn, SPACE, num_trials=11, key=KEY, progress=False, **kw
  ),
  "run_stepwise": lambda **kw: sweep.run_stepwise(
    init,
    segment,
    SPACE,
    num_trials=11,
    key=KEY,
    num_segments=4,
    metric="loss",
    early_stopping=1,
    **kw,
  ),
  "successive_halving": lambda **kw: sweep.successive_halving(
    init,
    segment,
    SPACE,
    num_trials=10,
    key=KEY,
    max_segments=4,
    eta=2,
    metric="loss",
    **kw,
  ),
  "hyperband": lambda **kw: sweep.hyperband(
    init, segment, SPACE, key=KEY, max_segments=4, eta=2, metric="loss", **kw
  ),
  "pbt": lambda **kw: sweep.pbt(
    init,
    segment,
    SPACE,
    population=10,
    key=KEY,
    num_rounds=3,
    metric="loss",
    **kw,
  ),
  "optuna_search": lambda **kw: sweep.optuna_search(
    train_fn, SPACE, num_rounds=3, batch_size=5, key=KEY, metric="loss", **kw
  ),
  "optuna_search_pruned": lambda **kw: sweep.optuna_search(
    (init, segment),
    SPACE,
    num_rounds=3,
    batch_size=5,
    num_segments=4,
    key=KEY,
    metric="loss",
    pruner=_median_pruner(),
    **kw,
  ),
  "lr_find": lambda **kw: sweep.lr_find(
    _lr_init,
    _lr_segment,
    key=KEY,
    min_lr=1e-4,
    max_lr=10.0,
    num_steps=12,
    num_seeds=3,
    **kw,
  ),
}
CHUNKED = ("run", "run_stepwise")  # the searches that take max_parallel


def _search(name, **kw):
  if name.startswith("optuna_search"):
    pytest.importorskip("optuna")
  if "max_parallel" in kw and name not in CHUNKED:
    del kw["max_parallel"]
  return SEARCHES[name](**kw)


def _arrays(result):
  """Every array a result holds that a user reads (for bit-for-bit checks)."""
  if isinstance(result, sweep.LRFindResult):
    return {
      "losses": result.losses,
      "smoothed": result.smoothed,
      "lrs": result.learning_rates,
    }
  out = {f"m/{k}": v for k, v in result.metrics.items()}
  out.update({f"h/{k}": np.asarray(v) for k, v in result.hparams.items()})
  out["diverged"] = result.diverged
  for name in ("segments_run", "parents", "metric_history", "pruned_at"):
    if getattr(result, name, None) is not None:
      out[name] = getattr(result, name)
  return out


def assert_same_bits(a, b):
  a, b = _arrays(a), _arrays(b)
  assert sorted(a) == sorted(b)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k, strict=True)


@pytest.fixture(scope="module")
def reference():
  """Each search on one device, computed once for the module."""
  return {}


def _reference(reference, name):
  if name not in reference:
    reference[name] = _search(name, devices=jax.devices()[:1])
  return reference[name]


@pytest.mark.parametrize("name", SEARCHES)
def test_same_bits_on_any_number_of_devices(reference, name):
  ref = _reference(reference, name)
  for devices in (jax.devices()[:3], jax.devices()):
    assert_same_bits(ref, _search(name, devices=devices))


@pytest.mark.parametrize("name", CHUNKED)
@pytest.mark.parametrize("max_parallel", [1, 3, 8])
def test_same_bits_with_any_max_parallel(reference, name, max_parallel):
  assert_same_bits(
    _reference(reference, name), _search(name, max_parallel=max_parallel)
  )


class _Interrupted(Exception):
  pass


def _stop_after_saves(monkeypatch, count, search):
  """Runs ``search`` until ``count`` states are saved, then interrupts it."""
  saved = []
  real_save = _loop.save

  def save_then_stop(ckpt, ex, state):
    real_save(ckpt, ex, state)
    saved.append(state.step)
    if len(saved) == count:
      raise _Interrupted

  monkeypatch.setattr(_loop, "save", save_then_stop)
  with pytest.raises(_Interrupted):
    search()
  monkeypatch.setattr(_loop, "save", real_save)


@pytest.mark.parametrize("name", [n for n in SEARCHES if n != "run"])
def test_interrupted_search_resumes_to_the_same_bits(
  reference, name, tmp_path, monkeypatch
):
  # `run` is killed with -9 in test_sweep_checkpoint.py; here every
  # stepwise search stops after its first saved step, then the same call
  # resumes from the folder.
  folder = str(tmp_path / "ckpt")
  _stop_after_saves(
    monkeypatch, 1, lambda: _search(name, checkpoint_dir=folder)
  )
  resumed = _search(name, checkpoint_dir=folder)
  assert_same_bits(_reference(reference, name), resumed)


@pytest.mark.parametrize(
  "name", ["run_stepwise", "successive_halving", "hyperband", "pbt"]
)
@pytest.mark.parametrize("saved_on, resumed_on", [(8, 3), (1, 8)])
def test_a_search_resumes_on_another_number_of_devices(
  reference, name, saved_on, resumed_on, tmp_path, monkeypatch
):
  # A search saved mid-way (after a rung boundary for halving) on some
  # devices resumes on others, laid out for them, to the same bits.
  folder = str(tmp_path / "ckpt")
  _stop_after_saves(
    monkeypatch,
    2,
    lambda: _search(
      name, checkpoint_dir=folder, devices=jax.devices()[:saved_on]
    ),
  )
  resumed = _search(
    name, checkpoint_dir=folder, devices=jax.devices()[:resumed_on]
  )
  assert_same_bits(_reference(reference, name), resumed)


# Each search over another space, for the refusal test.
OTHER_SPACE = {"lr": sweep.log_uniform(1e-3, 0.2)}
WITH_SPACE = {
  "run": lambda space, **kw: sweep.run(
    train_fn, space, num_trials=11, key=KEY, progress=False, **kw
  ),
  "run_stepwise": lambda space, **kw: sweep.run_stepwise(
    init,
    segment,
    space,
    num_trials=11,
    key=KEY,
    num_segments=4,
    metric="loss",
    **kw,
  ),
  "successive_halving": lambda space, **kw: sweep.successive_halving(
    init,
    segment,
    space,
    num_trials=10,
    key=KEY,
    max_segments=4,
    eta=2,
    metric="loss",
    **kw,
  ),
  "hyperband": lambda space, **kw: sweep.hyperband(
    init, segment, space, key=KEY, max_segments=4, eta=2, metric="loss", **kw
  ),
  "pbt": lambda space, **kw: sweep.pbt(
    init,
    segment,
    space,
    population=10,
    key=KEY,
    num_rounds=3,
    metric="loss",
    **kw,
  ),
  "optuna_search": lambda space, **kw: sweep.optuna_search(
    train_fn, space, num_rounds=3, batch_size=5, key=KEY, metric="loss", **kw
  ),
  "optuna_search_pruned": lambda space, **kw: sweep.optuna_search(
    (init, segment),
    space,
    num_rounds=3,
    batch_size=5,
    num_segments=4,
    key=KEY,
    metric="loss",
    pruner=_median_pruner(),
    **kw,
  ),
}


@pytest.mark.parametrize("name", WITH_SPACE)
def test_a_checkpoint_of_another_search_is_refused(name, tmp_path):
  if name.startswith("optuna_search"):
    pytest.importorskip("optuna")
  folder = str(tmp_path / "ckpt")
  WITH_SPACE[name](SPACE, checkpoint_dir=folder)
  with pytest.raises(ValueError, match="different"):
    WITH_SPACE[name](OTHER_SPACE, checkpoint_dir=folder)


def _poisoned(dtype):
  """A grid where the trial with lr = 1e30 goes NaN, in metrics of dtype."""

  def fn(hp, key):
    out = train_fn(hp, key)
    bad = hp["lr"] > 1.0
    loss = jnp.where(bad, jnp.nan, out["loss"]).astype(dtype)
    return {"loss": loss, "curve": out["curve"].astype(dtype)}

  return fn


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_a_nan_trial_is_flagged_skipped_and_isolated(dtype):
  lrs = [0.01, 0.03, 1e30, 0.1]
  safe = [0.01, 0.03, 0.05, 0.1]
  bad = sweep.run(
    _poisoned(dtype),
    {"lr": sweep.choice(lrs)},
    key=KEY,
    strategy="grid",
    progress=False,
  )
  good = sweep.run(
    _poisoned(dtype),
    {"lr": sweep.choice(safe)},
    key=KEY,
    strategy="grid",
    progress=False,
  )
  np.testing.assert_array_equal(bad.diverged, [False, False, True, False])
  assert bad.best("loss").index != 2
  assert bad.metrics["loss"].dtype == np.dtype(dtype)
  for k in bad.metrics:  # the others: same bits as in a sweep without NaN
    np.testing.assert_array_equal(
      bad.metrics[k][[0, 1, 3]], good.metrics[k][[0, 1, 3]]
    )


def _stepwise_poisoned(state, hp):
  state, metrics = segment(state, hp)
  return state, {
    "loss": jnp.where(hp["lr"] > 1.0, jnp.nan, metrics["loss"]).astype(
      jnp.bfloat16
    )
  }


@pytest.mark.parametrize(
  "search", ["run_stepwise", "successive_halving", "pbt"]
)
def test_stepwise_searches_flag_a_bf16_nan_trial(search):
  space = {"lr": sweep.choice([0.01, 1e30, 0.1, 0.03])}
  kw = {
    "run_stepwise": dict(num_trials=4, num_segments=2, strategy="grid"),
    "successive_halving": dict(
      num_trials=4, max_segments=2, eta=2, strategy="grid"
    ),
    "pbt": dict(population=4, num_rounds=1, strategy="grid"),
  }[search]
  res = getattr(sweep, search)(
    init, _stepwise_poisoned, space, key=KEY, metric="loss", **kw
  )
  assert res.diverged[1] and not res.diverged[[0, 2, 3]].any()
  assert res.best().index != 1


@pytest.mark.parametrize(
  "name", ["run_stepwise", "successive_halving", "hyperband", "pbt"]
)
def test_one_init_and_one_segment_program_per_search(name):
  # Fresh functions, so no program is shared with an earlier search.
  def my_init(hp, key):
    return init(hp, key)

  def my_segment(state, hp):
    return segment(state, hp)

  kw = {
    "run_stepwise": dict(num_trials=11, num_segments=3),
    "successive_halving": dict(num_trials=10, max_segments=4, eta=2),
    "hyperband": dict(max_segments=4, eta=2),
    "pbt": dict(population=10, num_rounds=3),
  }[name]
  if name == "run_stepwise":
    res = sweep.run_stepwise(
      my_init, my_segment, SPACE, key=KEY, metric="loss", **kw
    )
  else:
    res = getattr(sweep, name)(
      my_init, my_segment, SPACE, key=KEY, metric="loss", **kw
    )
  if name in ("successive_halving", "hyperband"):
    # Populations of several sizes, all in the largest one's rows.
    assert len(res.history["population_sizes"]) > 1
  # init and segment; PBT a third: the copy of the exploited states.
  assert res.num_compiles == (3 if name == "pbt" else 2)


COMPILE_STATS = ("num_compiles", "num_cached", "compile_time", "memory_bytes")


@pytest.mark.parametrize("name", SEARCHES)
def test_every_result_reports_its_compiles_alike(name):
  sweep.clear_caches()  # whatever ran before in this process
  res = _search(name)
  assert all(hasattr(res, stat) for stat in COMPILE_STATS)
  assert isinstance(res.num_compiles, int) and res.num_compiles > 0
  assert res.num_cached == 0  # nothing compiled before it
  assert res.compile_time > 0
  assert isinstance(res.memory_bytes, int) and res.memory_bytes > 0


LEVEL_0 = {"xla_backend_optimization_level": 0}  # not jopt's CPU default


@pytest.mark.parametrize("name", SEARCHES)
def test_compiler_options_reach_every_program_of_a_search(name):
  # The options are in every cache key: a search with other options reuses
  # none of the default's programs. One that dropped them on the way would
  # reuse them all.
  sweep.clear_caches()
  default = _search(name)
  other = _search(name, compiler_options=LEVEL_0)
  assert (other.num_compiles, other.num_cached) == (default.num_compiles, 0)
  again = _search(name, compiler_options=LEVEL_0)
  assert again.num_cached == again.num_compiles == default.num_compiles


@pytest.mark.parametrize("name", SEARCHES)
@pytest.mark.parametrize(
  "options", ["-O0", [("xla_backend_optimization_level", 0)], {0: 1}]
)
def test_compiler_options_must_be_a_mapping_everywhere(name, options):
  message = (
    "compiler_options must be None or a mapping of XLA option names "
    f"(strings) to values, got {options!r}."
  )
  with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
    _search(name, compiler_options=options)


@pytest.mark.parametrize("name", [n for n in SEARCHES if n != "run"])
def test_a_checkpoint_made_with_other_compiler_options_is_refused(
  name, tmp_path
):
  # `run`'s refusal is tested in test_sweep_checkpoint.py.
  folder = str(tmp_path / "ckpt")
  _search(name, checkpoint_dir=folder)
  with pytest.raises(ValueError, match="different call.*compiler_options"):
    _search(name, checkpoint_dir=folder, compiler_options=LEVEL_0)


BAD = [
  (dict(key=None), "key"),
  (dict(space={}), "space"),
  (dict(lanes=0), "lanes"),
  (dict(devices=[]), "devices"),
  (dict(space={"lr": "fast"}), "lr"),
]


@pytest.mark.parametrize("name", [n for n in SEARCHES if n != "lr_find"])
@pytest.mark.parametrize("change, match", BAD)
def test_bad_input_is_refused_alike(name, change, match):
  space = change.get("space", SPACE)
  kw = {k: v for k, v in change.items() if k != "space"}
  kw.setdefault("key", KEY)
  with pytest.raises(ValueError, match=match):
    if name == "run":
      sweep.run(train_fn, space, num_trials=4, progress=False, **kw)
    elif name.startswith("optuna_search"):
      pytest.importorskip("optuna")
      if name == "optuna_search_pruned":
        fn, extra = (
          (init, segment),
          dict(num_segments=2, pruner=_median_pruner()),
        )
      else:
        fn, extra = train_fn, {}
      sweep.optuna_search(
        fn, space, num_rounds=1, batch_size=2, metric="loss", **extra, **kw
      )
    elif name == "run_stepwise":
      sweep.run_stepwise(
        init, segment, space, num_trials=4, num_segments=1, metric="loss", **kw
      )
    else:
      extra = {
        "successive_halving": dict(num_trials=4, max_segments=2),
        "hyperband": dict(max_segments=3),
        "pbt": dict(population=4, num_rounds=1),
      }[name]
      getattr(sweep, name)(init, segment, space, metric="loss", **kw, **extra)


@pytest.mark.parametrize("max_parallel", [1.5, "2", 0, True])
def test_max_parallel_must_be_a_positive_int_everywhere(max_parallel):
  with pytest.raises(ValueError, match="max_parallel"):
    sweep.run(
      train_fn,
      SPACE,
      num_trials=4,
      key=KEY,
      progress=False,
      max_parallel=max_parallel,
    )
  with pytest.raises(ValueError, match="max_parallel"):
    sweep.run_stepwise(
      init,
      segment,
      SPACE,
      num_trials=4,
      num_segments=1,
      key=KEY,
      metric="loss",
      max_parallel=max_parallel,
    )


def _keyed_init(hp, key):
  return {"w": jax.random.normal(key, (3,)), "key": key}


def _keyed_segment(state, hp):
  # The state carries its own data key, typed (jax.random.key), the usual
  # way to draw a new minibatch every step.
  key, sub = jax.random.split(state["key"])
  w = state["w"] - hp["lr"] * (state["w"] + 0.1 * jax.random.normal(sub, (3,)))
  return {"w": w, "key": key}, {"loss": jnp.sum(w * w)}


@pytest.mark.parametrize(
  "name", ["run_stepwise", "successive_halving", "hyperband", "pbt"]
)
def test_a_typed_key_in_the_state_survives_promotion_and_resume(
  name, tmp_path, monkeypatch
):
  kw = {
    "run_stepwise": dict(num_trials=6, num_segments=3),
    "successive_halving": dict(num_trials=6, max_segments=4, eta=2),
    "hyperband": dict(max_segments=4, eta=2),
    "pbt": dict(population=6, num_rounds=3),
  }[name]
  search = getattr(sweep, name)

  def call(**extra):
    return search(
      _keyed_init, _keyed_segment, SPACE, key=KEY, metric="loss", **kw, **extra
    )

  whole = call()
  folder = str(tmp_path / "ckpt")
  _stop_after_saves(monkeypatch, 2, lambda: call(checkpoint_dir=folder))
  assert_same_bits(whole, call(checkpoint_dir=folder))
  if whole.final_state is not None:
    assert jnp.issubdtype(whole.final_state["key"].dtype, jax.dtypes.prng_key)
