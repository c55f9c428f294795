"""Schedules and batch-size schedules: Optax, closed forms, jit and vmap."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt

STEPS = np.arange(0, 131)
V0 = 1.0 / 25.0  # One-cycle start: peak / div_factor (the default 25).


def _warmup_cosine(t, init, peak, warmup, decay, end=0.0):
  t = np.asarray(t, np.float64)
  ramp = init + (peak - init) * t / max(warmup, 1)
  s = np.minimum(t - warmup, decay - warmup)
  cos = end + (peak - end) * 0.5 * (1 + np.cos(np.pi * s / (decay - warmup)))
  return np.where(t < warmup, ramp, cos)


def _cosine_interp(a, b, frac):
  return b + (a - b) / 2 * (np.cos(np.pi * frac) + 1)


# (name, kwargs, closed form of the step t in float64). Every numeric leaf
# of kwargs is traced in the jit and vmap tests; staircase stays static.
SCHEDULES = [
  ("constant_schedule", dict(value=0.3), lambda t: 0.3 + 0 * t),
  (
    "linear_schedule",
    dict(
      init_value=1.0, end_value=0.1, transition_steps=50, transition_begin=10
    ),
    lambda t: 1.0 - 0.9 * np.clip(t - 10, 0, 50) / 50,
  ),
  (
    "polynomial_schedule",  # a (1 - t/T)^p after a delay.
    dict(
      init_value=2.0,
      end_value=0.0,
      power=2.5,
      transition_steps=50,
      transition_begin=10,
    ),
    lambda t: 2.0 * (1 - np.clip(t - 10, 0, 50) / 50) ** 2.5,
  ),
  (
    "exponential_decay",  # Step decay with a floor.
    dict(
      init_value=1.0,
      transition_steps=7,
      decay_rate=0.8,
      transition_begin=5,
      staircase=True,
      end_value=0.2,
    ),
    lambda t: np.maximum(0.8 ** np.floor(np.maximum(t - 5, 0) / 7), 0.2),
  ),
  (
    "exponential_decay",  # Continuous growth with a ceiling.
    dict(init_value=1.0, transition_steps=7, decay_rate=1.1, end_value=2.0),
    lambda t: np.minimum(1.1 ** (t / 7), 2.0),
  ),
  (
    "piecewise_constant_schedule",
    dict(init_value=1.0, boundaries_and_scales={30: 0.1, 10: 0.5}),
    lambda t: np.where(t >= 10, 0.5, 1.0) * np.where(t >= 30, 0.1, 1.0),
  ),
  (
    "cosine_decay_schedule",
    dict(init_value=2.0, decay_steps=80, alpha=0.1, exponent=2.0),
    lambda t: (
      2.0
      * (0.9 * (0.5 * (1 + np.cos(np.pi * np.minimum(t, 80) / 80))) ** 2 + 0.1)
    ),
  ),
  (
    "warmup_cosine_decay_schedule",
    dict(
      init_value=0.1,
      peak_value=1.0,
      warmup_steps=20,
      decay_steps=100,
      end_value=0.05,
    ),
    lambda t: _warmup_cosine(t, 0.1, 1.0, 20, 100, 0.05),
  ),
  (
    "sgdr_schedule",
    dict(
      cosine_kwargs=[
        dict(init_value=0.1, peak_value=1.0, warmup_steps=5, decay_steps=40),
        dict(init_value=0.0, peak_value=0.5, warmup_steps=0, decay_steps=50),
      ]
    ),
    lambda t: np.where(
      t < 40,
      _warmup_cosine(t, 0.1, 1.0, 5, 40),
      _warmup_cosine(t - 40, 0.0, 0.5, 0, 50),
    ),
  ),
  (
    "linear_onecycle_schedule",
    dict(transition_steps=100, peak_value=1.0),
    lambda t: np.interp(t, [0, 30, 85, 100], [V0, 1.0, V0, V0 / 1e4]),
  ),
  (
    "cosine_onecycle_schedule",
    dict(transition_steps=100, peak_value=1.0, pct_start=0.25),
    lambda t: np.where(
      t < 25,
      _cosine_interp(V0, 1.0, t / 25),
      _cosine_interp(1.0, V0 / 1e4, np.minimum(t - 25, 75) / 75),
    ),
  ),
  (
    "join_schedules",
    dict(
      schedules=[
        jopt.constant_schedule(0.5),
        jopt.linear_schedule(1.0, 0.0, 10),
        jopt.cosine_decay_schedule(0.2, 30),
      ],
      boundaries=[5, 40],
    ),
    lambda t: np.select(
      [t < 5, t < 40],
      [0.5 + 0 * t, 1.0 - np.minimum(t - 5, 10) / 10],
      0.1 * (1 + np.cos(np.pi * np.minimum(t - 40, 30) / 30)),
    ),
  ),
]
IDS = [f"{name}-{i}" for i, (name, _, _) in enumerate(SCHEDULES)]


def _is_traceable(leaf):
  return isinstance(leaf, (int, float)) and not isinstance(leaf, bool)


def _split(kwargs):
  """Numeric leaves (to trace) and a function rebuilding kwargs from them."""
  leaves, treedef = jax.tree.flatten(kwargs)
  where = [i for i, leaf in enumerate(leaves) if _is_traceable(leaf)]

  def rebuild(numeric):
    full = list(leaves)
    for i, value in zip(where, numeric, strict=True):
      full[i] = value
    return jax.tree.unflatten(treedef, full)

  return [leaves[i] for i in where], rebuild


@pytest.mark.parametrize(("name", "kwargs", "closed_form"), SCHEDULES, ids=IDS)
def test_schedule_matches_optax_and_closed_form(name, kwargs, closed_form):
  ours = np.asarray(getattr(jopt, name)(**kwargs)(STEPS))
  # Optax's schedules do not run under strict dtype promotion.
  with jax.numpy_dtype_promotion("standard"):
    reference = np.asarray(
      jax.vmap(getattr(optax, name)(**kwargs))(jnp.asarray(STEPS))
    )
  # Same float32 operations in the same order: equal to a couple of ulps.
  np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-7)
  # float64 closed form vs float32: a few ulps of cos/pow on values <= 2.
  np.testing.assert_allclose(
    ours, closed_form(STEPS.astype(np.float64)), rtol=2e-5, atol=1e-6
  )


@pytest.mark.parametrize(("name", "kwargs", "closed_form"), SCHEDULES, ids=IDS)
def test_schedule_parameters_trace_jit_and_vmap(name, kwargs, closed_form):
  del closed_form
  numeric, rebuild = _split(kwargs)
  factors = np.array([1.0, 0.8, 1.1], np.float32)
  trials = [np.float32(x) * factors for x in numeric]

  traces = []

  def evaluate(*values):
    traces.append(None)
    return getattr(jopt, name)(**rebuild(values))(jnp.asarray(STEPS))

  # Every numeric argument traced at once (step counts included) == the
  # schedule built from the concrete Python values.
  jitted = jax.jit(evaluate)
  eager = evaluate(*numeric)
  chex.assert_trees_all_close(
    jitted(*[jnp.float32(x) for x in numeric]), eager, rtol=1e-6, atol=1e-7
  )

  # A sweep over every parameter == a loop over the same values (the loop
  # reuses the one compiled program: no retrace per value).
  swept = jax.vmap(evaluate)(*[jnp.asarray(t) for t in trials])
  for k in range(len(factors)):
    looped = jitted(*[jnp.asarray(t[k]) for t in trials])
    # XLA may fuse the batched program differently: a few float32 ulps.
    chex.assert_trees_all_close(swept[k], looped, rtol=1e-5, atol=1e-7)
  assert len(traces) == 3  # Eager, jit (once for all values), vmap.


def test_schedule_drives_sgd_learning_rate():
  tx = jopt.sgd(jopt.exponential_decay(1.0, 1, 0.5))
  state, steps = tx.init(jnp.zeros(1)), []
  for _ in range(3):
    updates, state = tx.update(jnp.ones(1), state)
    steps.append(float(updates[0]))
  assert steps == [-1.0, -0.5, -0.25]  # Powers of two: exact.


def test_schedule_parameter_changes_without_retracing():
  @jax.jit
  @chex.assert_max_traces(n=1)
  def lr_at(peak, step):
    return jopt.warmup_cosine_decay_schedule(0.0, peak, 10, 100)(step)

  lrs = [float(lr_at(jnp.float32(p), jnp.int32(50))) for p in (0.1, 0.2)]
  assert lrs[1] == pytest.approx(2 * lrs[0], rel=1e-6)


@pytest.mark.parametrize(
  ("build", "argument"),
  [
    (lambda: jopt.polynomial_schedule(1.0, 0.0, 1.0, 0), "transition_steps"),
    (lambda: jopt.linear_schedule(1.0, 0.0, 10, -1), "transition_begin"),
    (lambda: jopt.exponential_decay(1.0, -5, 0.5), "transition_steps"),
    (lambda: jopt.exponential_decay(1.0, 5, 0.0), "decay_rate"),
    (lambda: jopt.exponential_decay(1.0, 5, -0.5), "decay_rate"),
    (
      lambda: jopt.piecewise_constant_schedule(1.0, {-1: 0.5}),
      "boundaries_and_scales",
    ),
    (
      lambda: jopt.piecewise_constant_schedule(1.0, {5: -0.5}),
      "boundaries_and_scales",
    ),
    (lambda: jopt.cosine_decay_schedule(1.0, 0), "decay_steps"),
    (lambda: jopt.cosine_decay_schedule(1.0, 10, exponent=-1.0), "exponent"),
    (
      lambda: jopt.warmup_cosine_decay_schedule(0.0, 1.0, 10, 10),
      "warmup_steps",
    ),
    (
      lambda: jopt.warmup_cosine_decay_schedule(0.0, 1.0, -1, 10),
      "warmup_steps",
    ),
    (lambda: jopt.linear_onecycle_schedule(0, 1.0), "transition_steps"),
    (
      lambda: jopt.linear_onecycle_schedule(10, 1.0, pct_start=0.9),
      "pct_start",
    ),
    (
      lambda: jopt.cosine_onecycle_schedule(10, 1.0, pct_start=1.5),
      "pct_start",
    ),
    (
      lambda: jopt.cosine_onecycle_schedule(10, 1.0, div_factor=0.0),
      "div_factor",
    ),
    (
      lambda: jopt.join_schedules([jopt.constant_schedule(1.0)] * 2, []),
      "boundaries",
    ),
    (
      lambda: jopt.join_schedules([jopt.constant_schedule(1.0)] * 3, [10, 5]),
      "boundaries",
    ),
    (
      lambda: jopt.join_schedules([jopt.constant_schedule(1.0)] * 2, [-1]),
      "boundaries",
    ),
    (lambda: jopt.sgdr_schedule([]), "cosine_kwargs"),
    (
      lambda: jopt.polynomial_batch_size_schedule(0, 1, 1.0, 10),
      "init_batch_size",
    ),
    (
      lambda: jopt.polynomial_batch_size_schedule(8, 1, 1.0, 0),
      "transition_steps",
    ),
    (
      lambda: jopt.exponential_batch_size_schedule(64, 32, 10),
      "init_batch_size",
    ),
    (
      lambda: jopt.exponential_batch_size_schedule(8, 32, 10, 0.5),
      "growth_factor",
    ),
  ],
)
def test_invalid_arguments_raise_naming_the_argument(build, argument):
  with pytest.raises(ValueError, match=argument):
    build()


# --- Batch-size schedules -------------------------------------------------


BATCH_STEPS = np.arange(0, 200)


@pytest.mark.parametrize(
  ("kwargs", "decreasing"),
  [
    # The b (1 - t/T)^p decay; floored at 1. The float64 closed form is
    # never within 1e-2 of a rounding tie here (checked offline), so
    # float32 rounds the same way.
    (
      dict(
        init_batch_size=256,
        end_batch_size=0,
        power=2.0,
        transition_steps=100,
        transition_begin=5,
      ),
      True,
    ),
    # Polynomial growth; nearest tie 1e-3 away, float32 error ~1e-5.
    (
      dict(
        init_batch_size=8,
        end_batch_size=64,
        power=1.5,
        transition_steps=100,
        transition_begin=5,
      ),
      False,
    ),
  ],
)
def test_polynomial_batch_size_schedule(kwargs, decreasing):
  sizes = np.asarray(jopt.polynomial_batch_size_schedule(**kwargs)(BATCH_STEPS))
  assert sizes.dtype == np.int32
  b0, b1 = kwargs["init_batch_size"], kwargs["end_batch_size"]
  s = np.clip(BATCH_STEPS - 5, 0, 100)
  closed = np.maximum(
    np.round((b0 - b1) * (1 - s / 100) ** kwargs["power"] + b1), 1
  )
  np.testing.assert_array_equal(sizes, closed)
  assert sizes.min() >= 1
  steps = np.diff(sizes)
  assert np.all(steps <= 0) if decreasing else np.all(steps >= 0)
  assert sizes[0] == b0 and sizes[-1] == max(b1, 1)


def test_exponential_batch_size_schedule():
  sched = jopt.exponential_batch_size_schedule(32, 300, 10, growth_factor=1.5)
  sizes = np.asarray(sched(BATCH_STEPS))
  assert sizes.dtype == np.int32
  closed = np.minimum(np.round(32 * 1.5 ** (BATCH_STEPS // 10)), 300)
  np.testing.assert_array_equal(sizes, closed)
  assert np.all(np.diff(sizes) >= 0) and sizes.min() >= 32
  # Far past any representable power: capped, not overflowed.
  assert int(sched(10**9)) == 300


def test_batch_size_schedule_parameters_vmap_equal_loop():
  def sizes(init, growth):
    sched = jopt.exponential_batch_size_schedule(init, 512, growth)
    return sched(jnp.asarray(BATCH_STEPS))

  inits, growths = jnp.array([4.0, 16.0]), jnp.array([7.0, 20.0])
  swept = jax.vmap(sizes)(inits, growths)
  for k in range(2):
    np.testing.assert_array_equal(swept[k], sizes(inits[k], growths[k]))


def test_sample_batch_masked_mean_is_mean_of_scheduled_minibatch():
  data = jnp.arange(40.0).reshape(20, 2) ** 2
  sched = jopt.polynomial_batch_size_schedule(12, 2, 1.0, 10)

  @jax.jit
  def batch_loss(key, step):
    indices, mask = jopt.sample_batch(key, 20, step, sched, 12)
    return indices, mask, jopt.masked_mean(data[indices], mask)

  for step in (0, 5, 10):
    indices, mask, loss = batch_loss(jax.random.key(step), step)
    b = int(sched(step))
    assert indices.shape == (12,) and mask.shape == (12,)
    assert int(mask.sum()) == b and bool(mask[:b].all())
    assert len(set(np.asarray(indices).tolist())) == 12  # No repeats.
    assert 0 <= int(indices.min()) and int(indices.max()) < 20
    # Sums of up to 24 float32 squares < 1600: exact to ~1e-6 relative.
    expected = jnp.mean(data[indices[:b]])
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_masked_mean_gradient_ignores_inactive_examples():
  mask = jnp.array([True, True, False])
  grad = jax.grad(lambda v: jopt.masked_mean(v, mask))(jnp.ones(3))
  np.testing.assert_array_equal(grad, [0.5, 0.5, 0.0])


def test_sample_batch_rejects_block_larger_than_data():
  with pytest.raises(ValueError, match="max_batch_size"):
    jopt.sample_batch(jax.random.key(0), 5, 0, 4, 8)
