"""Live progress: `jopt.sweep.report` from inside the compiled sweep."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jopt import sweep
from jopt.sweep.runtime import _report

STEPS = 12
SPACE = {"lr": sweep.uniform(0.05, 0.5)}
KEY = jax.random.key(2)


def train_fn(hp, key):
  def step(w, t):
    w = w - hp["lr"] * w
    sweep.report(t, num_steps=STEPS, every=3, loss=jnp.sum(w * w))
    return w, jnp.sum(w * w)

  _, losses = jax.lax.scan(
    step, jax.random.normal(key, (2,)), jnp.arange(STEPS)
  )
  return {"loss": losses[-1]}


@pytest.fixture
def received(monkeypatch):
  calls = []
  real = _report.Reporter.receive

  def spy(self, trial, step, values, total, sign):
    calls.append((trial, step, float(values["loss"])))
    real(self, trial, step, values, total, sign)

  monkeypatch.setattr(_report.Reporter, "receive", spy)
  return calls


def test_without_progress_report_adds_nothing(received):
  text = (
    jax.jit(lambda lr: train_fn({"lr": lr}, KEY)["loss"]).lower(0.1).as_text()
  )
  assert "callback" not in text  # outside a sweep: nothing in the program
  sweep.run(train_fn, SPACE, num_trials=5, key=KEY, progress=False)
  assert received == []


def test_every_trial_reports_its_steps_under_sharding(received, monkeypatch):
  monkeypatch.setenv("JOPT_PROGRESS", "1")
  quiet = sweep.run(train_fn, SPACE, num_trials=11, key=KEY, progress=False)
  loud = sweep.run(train_fn, SPACE, num_trials=11, key=KEY, progress=True)
  # 11 trials over the 8 devices: every trial reported steps 0, 3, 6, 9,
  # once each (padding lanes repeat trial 0, whose reports are idempotent).
  seen = {(t, s) for t, s, _ in received}
  assert seen == {(t, s) for t in range(11) for s in range(0, STEPS, 3)}
  # The value a trial reported at its last report is its own loss curve's.
  last = {t: v for t, s, v in sorted(received) if s == 9}
  assert set(last) == set(range(11))
  # Reporting reads values; it changes none of them.
  np.testing.assert_array_equal(loud.metrics["loss"], quiet.metrics["loss"])


def test_the_bar_counts_fractions_of_trials_and_the_best():
  class Bar:
    def __init__(self):
      self.n, self.postfix = 0.0, ""

    def update(self, n):
      self.n += n

    def set_postfix_str(self, text):
      self.postfix = text

  bar = Bar()
  with _report.Reporter(bar, interval=0.0) as rep:
    rep.receive(0, 4, {"loss": 3.0}, 10, 1.0)  # half of trial 0
    rep.receive(1, 9, {"loss": 1.0}, 10, 1.0)  # all of trial 1
    rep.receive(0, 4, {"loss": 3.0}, 10, 1.0)  # a repeat counts nothing
    assert bar.n == pytest.approx(1.5)
    rep.finish([0, 1, 2])  # calls returned
  assert bar.n == pytest.approx(3.0)
  assert bar.postfix == "best loss=1"


@pytest.mark.parametrize(
  "bad, match", [(dict(every=0), "every"), (dict(mode="low"), "mode")]
)
def test_report_checks_its_arguments(bad, match):
  with pytest.raises(ValueError, match=match):
    sweep.report(0, loss=1.0, **bad)


def test_stepwise_searches_move_the_bar_every_segment(monkeypatch):
  from jopt.sweep.runtime import _loop

  ticks = []
  real = _loop.Progress.advance

  def spy(self, member_segments, values=None, sign=1.0, name=""):
    ticks.append(member_segments)
    real(self, member_segments, values, sign, name)

  monkeypatch.setattr(_loop.Progress, "advance", spy)

  def init(hp, key):
    return jax.random.normal(key, (2,))

  def segment(w, hp):
    w = w - hp["lr"] * w
    return w, {"loss": jnp.sum(w * w)}

  res = sweep.successive_halving(
    init, segment, SPACE, num_trials=9, key=KEY, max_segments=9, metric="loss"
  )
  # One tick per segment of every rung: 9 trials x 1, 3 x 2, 1 x 6.
  assert ticks == [9] + [3] * 2 + [1] * 6
  assert sum(ticks) == res.member_segments


def _scan_train_fn(num_reports):
  def train(hp, key):
    def step(w, x):
      w = w - hp["lr"] * w + 0.01 * x
      return w, {"loss": jnp.sum(w * w), "step_norm": jnp.sum(jnp.abs(w))}

    xs = jnp.outer(jnp.linspace(0.0, 1.0, STEPS + 1), jnp.ones(2))
    w, ys = sweep.scan(
      step, jax.random.normal(key, (2,)), xs, num_reports=num_reports
    )
    return {"loss": ys["loss"][-1], "curve": ys["loss"], "w": w}

  return train


@jax.jit
def flat(lr):
  def step(w, x):
    w = w - lr * w + 0.01 * x
    return w, jnp.sum(w * w)

  xs = jnp.outer(jnp.linspace(0.0, 1.0, STEPS + 1), jnp.ones(2))
  return jax.lax.scan(step, jax.random.normal(KEY, (2,)), xs)[1]


def test_scan_reports_a_fixed_number_of_times_and_keeps_the_values(
  received, monkeypatch
):
  monkeypatch.setenv("JOPT_PROGRESS", "1")
  train = _scan_train_fn(num_reports=4)
  quiet = sweep.run(train, SPACE, num_trials=3, key=KEY, progress=False)
  loud = sweep.run(train, SPACE, num_trials=3, key=KEY, progress=True)
  # 13 steps in 4 reports: the odd step runs first, then 4 segments of 3.
  seen = sorted({(t, s) for t, s, _ in received})
  assert seen == [(t, s) for t in range(3) for s in (3, 6, 9, 12)]
  # A report shows the segment's mean loss.
  curve = loud.metrics["curve"]
  for t, s, v in received:
    np.testing.assert_allclose(v, curve[t, s - 2 : s + 1].mean(), rtol=1e-6)
  for k in quiet.metrics:
    np.testing.assert_array_equal(loud.metrics[k], quiet.metrics[k])
  # Outside a reporting sweep it adds no callback, and it computes what
  # lax.scan computes (to float32 rounding: the loops nest differently).
  plain = jax.jit(lambda lr: _scan_train_fn(4)({"lr": lr}, KEY)["curve"])
  assert "callback" not in plain.lower(0.1).as_text()
  np.testing.assert_allclose(
    plain(SPACE["lr"].low), flat(SPACE["lr"].low), rtol=1e-5
  )


@pytest.mark.parametrize(
  "kwargs, match",
  [
    ({"num_reports": 0}, "num_reports"),
    ({"num_reports": 2.0}, "num_reports"),
    ({"mode": "best"}, "mode"),
    ({"xs": None}, "xs or length"),
    ({"unroll": 0}, "unroll"),
    ({"unroll": 1.5}, "unroll"),
  ],
)
def test_scan_checks_its_arguments(kwargs, match):
  args = {"xs": jnp.zeros(3), **kwargs}
  with pytest.raises(ValueError, match=match):
    sweep.scan(lambda c, x: (c, x), 0.0, **args)


@pytest.mark.parametrize("unroll", [2, True])
def test_scan_unrolls_as_lax_scan_does(unroll):
  def step(c, x):
    c = 0.9 * c + x
    return c, c * c

  xs = jnp.linspace(0.0, 1.0, 13)
  base = jax.jit(lambda xs: sweep.scan(step, 0.0, xs, num_reports=4))
  unrolled = jax.jit(
    lambda xs: sweep.scan(step, 0.0, xs, num_reports=4, unroll=unroll)
  )

  # The inner loops are unrolled: fewer while loops.
  def count(f):
    return f.lower(xs).as_text().count("stablehlo.while")

  assert count(unrolled) < count(base)
  np.testing.assert_allclose(unrolled(xs)[1], base(xs)[1], rtol=1e-6)


def test_the_bar_never_passes_its_total():
  # Fractions of trials summed as floats (thirds here) can add up to a hair
  # over the total; tqdm then warns and shows a negative time left.
  class Bar:
    total, n = 3, 0.0

    def update(self, k):
      self.n += k

    def set_postfix_str(self, text):
      pass

  bar = Bar()
  reporter = _report.Reporter(bar, interval=0.0)
  for trial in range(3):
    for step in range(3):  # thirds: 3 x (1/3 + 1/3 + 1/3) > 3 in floats
      reporter.receive(trial, step, {}, 3, 1.0)
  reporter.finish(list(range(3)))
  reporter._draw(force=True)
  assert bar.n <= bar.total
  np.testing.assert_allclose(bar.n, bar.total)


def test_scan_caps_the_callbacks_of_a_call_and_keeps_the_values(
  received, monkeypatch
):
  # A device running many trials in one call reports less often per trial
  # (here one report per trial on 1 device, four on 8), and the values are
  # the same bits whatever the device count, with progress on or off.
  monkeypatch.setenv("JOPT_PROGRESS", "1")
  monkeypatch.setattr(_report, "REPORTS_PER_CALL", 4)
  train = _scan_train_fn(num_reports=4)
  quiet = sweep.run(train, SPACE, num_trials=8, key=KEY, progress=False)
  one = sweep.run(
    train,
    SPACE,
    num_trials=8,
    key=KEY,
    progress=True,
    devices=jax.devices()[:1],
  )
  on_one = sorted({(t, s) for t, s, _ in received})
  received.clear()
  eight = sweep.run(train, SPACE, num_trials=8, key=KEY, progress=True)
  on_eight = sorted({(t, s) for t, s, _ in received})
  assert on_one == [(t, 12) for t in range(8)]
  assert on_eight == [(t, s) for t in range(8) for s in (3, 6, 9, 12)]
  for k in quiet.metrics:
    np.testing.assert_array_equal(one.metrics[k], quiet.metrics[k])
    np.testing.assert_array_equal(eight.metrics[k], quiet.metrics[k])


def test_report_in_a_jitted_helper_works_in_every_sweep(received, monkeypatch):
  # A notebook: the helper is defined once, the sweep's cell runs again
  # with a new train_fn. The helper's trace of the first sweep held that
  # sweep's trial tracer; a later sweep must trace it again, not reuse it.
  monkeypatch.setenv("JOPT_PROGRESS", "1")

  @jax.jit
  def helper(t, w):
    sweep.report(t, num_steps=3, loss=jnp.sum(w * w))
    return 0.5 * w

  for run in range(2):

    def fn(hp, key):
      def step(w, t):
        return helper(t, w), None

      w, _ = jax.lax.scan(
        step, hp["lr"] * jax.random.normal(key, (2,)), jnp.arange(3)
      )
      return {"loss": jnp.sum(w * w)}

    received.clear()
    sweep.run(fn, SPACE, num_trials=2, key=KEY, progress=True)
    assert {(trial, at) for trial, at, _ in received} == {
      (trial, at) for trial in range(2) for at in range(3)
    }, run
  # Outside a sweep the helper reports nothing (its trace without a lane).
  received.clear()
  helper(0, jnp.ones(2))
  assert received == []


def test_the_bar_shows_live_reports_until_a_ranked_trial_finishes():
  class Bar:
    total, n, text = 4, 0.0, ""

    def update(self, k):
      self.n += k

    def set_postfix_str(self, text):
      self.text = text

  bar = Bar()
  reporter = _report.Reporter(bar, interval=0.0, metric="val", mode="min")
  reporter.receive(0, 0, {"loss": 3.0}, 4, 1.0)
  reporter._draw(force=True)
  assert bar.text == "best loss=3"  # nothing finished yet: the live loss
  reporter.finish([0, 1], [0.5, 0.7])
  assert bar.text == "best val=0.5"
  reporter.receive(2, 0, {"loss": 0.1}, 4, 1.0)  # live values no longer
  reporter.finish([2], [0.9])
  assert bar.text == "best val=0.5"
