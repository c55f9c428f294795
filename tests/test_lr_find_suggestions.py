"""lr_find's suggestions: none without a real descent, a descent rule that
separates noise from a fall, and a minimum never below min_lr.
"""

import warnings

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from jopt import sweep

BF16 = np.dtype(ml_dtypes.bfloat16)
F8 = np.dtype(ml_dtypes.float8_e4m3fn)  # has NaN but no Inf


# --- lr_find without a descent ----------------------------------------------


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
    res = sweep.lr_find(
      _init,
      step,
      key=jax.random.key(0),
      min_lr=1e-3,
      max_lr=1.0,
      num_steps=40,
      num_seeds=2,
      num_rates=num_rates,
    )
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
  from jopt.sweep.strategies import _lr_curve

  rng = np.random.default_rng(0)
  lrs = np.geomspace(1e-7, 10, 100)
  trends = {
    "flat": np.ones(100),
    "rising": 1 + np.linspace(0, 1, 100),
    "fall": 1 - 0.8 / (1 + np.exp(-3 * (np.log10(lrs) + 3))),
  }
  for name, trend in trends.items():
    for _ in range(100):
      raw = trend + 0.1 * rng.normal(size=(num_seeds, 100))
      curve = _lr_curve._mean_curve(_smoothed(raw, smoothing))
      with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = _lr_curve._suggest(
          lrs, curve, raw, _lr_curve._ema_noise(smoothing, 100)
        )
      assert bool(caught) == (name != "fall"), name
      assert np.isnan(found["valley"]) == (name != "fall"), name


def test_ema_noise_matches_the_smoothed_deviation():
  from jopt.sweep.strategies import _lr_curve

  noise = np.random.default_rng(0).normal(size=(20000, 30))
  measured = _smoothed(noise, 0.9).std(axis=0)
  # 20000 samples: the measured deviation is within ~1.5% (3 / sqrt(2n)).
  np.testing.assert_allclose(measured, _lr_curve._ema_noise(0.9, 30), rtol=0.02)


def test_lr_find_minimum_never_lies_below_min_lr():
  # Smoothing 0: the curve is the loss, lowest at lr = 10**-2.5, half a
  # decade above min_lr; a tenth of it would lie below min_lr.
  def step(state, hp):
    return state, {"loss": (jnp.log10(hp["learning_rate"]) + 2.5) ** 2 + 1.0}

  res = sweep.lr_find(
    _init,
    step,
    key=jax.random.key(0),
    min_lr=1e-3,
    max_lr=1.0,
    num_steps=31,
    smoothing=0.0,
  )
  lowest = res.learning_rates[np.nanargmin(res.curve)]
  assert lowest / 10 < 1e-3
  assert res.suggestions["minimum"] == pytest.approx(1e-3)
  assert res.suggestions["valley"] >= 1e-3
