"""The learning-rate range test, `jopt.sweep.lr_find`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jopt import sweep


@pytest.mark.parametrize(
  "offset, num_rates", [(0.0, None), (-5.0, None), (0.0, 24)]
)
def test_lr_find_lands_near_the_known_best_learning_rate(offset, num_rates):
  # offset -5: the same problem with a loss below zero throughout (a
  # log-likelihood, say), where "4 times the best" would mean nothing.
  # num_rates: 24 short runs at fixed rates instead of one ramp.
  rng = np.random.default_rng(0)
  x = (rng.normal(size=(256, 8)) * np.linspace(0.3, 2.0, 8)).astype(np.float32)
  y = (x @ rng.normal(size=8) + 0.1 * rng.normal(size=256)).astype(np.float32)
  lipschitz = np.linalg.eigvalsh(x.T @ x / 256).max()

  def init(hp, key):
    del hp, key
    return jnp.zeros(8, jnp.float32)

  def segment(w, hp):
    loss, g = jax.value_and_grad(
      lambda w: 0.5 * jnp.mean((jnp.asarray(x) @ w - y) ** 2) + offset
    )(w)
    return w - hp["learning_rate"] * g, {"loss": loss}

  res = sweep.lr_find(
    init,
    segment,
    key=jax.random.key(0),
    min_lr=1e-4,
    max_lr=10.0,
    num_steps=100,
    num_seeds=2,
    num_rates=num_rates,
  )
  # Gradient descent on least squares: 1/L is the classic safe step (2/L
  # diverges). The "minimum" suggestion must land within a factor of 3.
  assert 1 / 3 < res.suggestions["minimum"] * lipschitz < 3
  # Every suggestion stays below the divergence threshold 2/L.
  assert all(v * lipschitz < 2 for v in res.suggestions.values())
  # The run diverged past 2/L: the tail is masked with NaN.
  assert np.isnan(res.curve[-1]) and np.isnan(res.losses[:, -1]).all()
  first_nan = np.flatnonzero(np.isnan(res.curve))[0]
  assert res.learning_rates[first_nan] * lipschitz > 2
  fig = res.plot()
  assert fig.axes[0].get_xscale() == "log"


@pytest.mark.parametrize(
  "kwargs",
  [
    {"min_lr": 0.0},
    {"min_lr": 1.0, "max_lr": 0.5},
    {"num_steps": 2},
    {"max_lr": float("inf")},
    {"num_rates": 2},
    {"num_rates": 4.0},
    {"smoothing": 1.0},
    {"diverge_threshold": 1.0},
  ],
)
def test_lr_find_rejects_bad_configuration(kwargs):
  with pytest.raises(ValueError):
    sweep.lr_find(
      lambda hp, k: jnp.zeros(()),
      lambda s, hp: (s, {"loss": s}),
      key=jax.random.key(0),
      **kwargs,
    )


def test_lr_find_old_signature_still_works_and_warns():
  def init(key):
    del key
    return jnp.ones(())

  def step(w, lr, key):
    del key
    return w - lr * w, 0.5 * w * w

  with pytest.warns(DeprecationWarning, match="segment"):
    old = sweep.lr_find(
      init, step, key=jax.random.key(0), min_lr=1e-3, max_lr=10.0, num_steps=50
    )
  new = sweep.lr_find(
    lambda hp, key: jnp.ones(()),
    lambda w, hp: (w - hp["learning_rate"] * w, {"loss": 0.5 * w * w}),
    key=jax.random.key(0),
    min_lr=1e-3,
    max_lr=10.0,
    num_steps=50,
  )
  np.testing.assert_array_equal(old.losses, new.losses)
  assert old.suggestions == new.suggestions
