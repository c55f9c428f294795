"""Smoke test of examples/regression (--quick), and its NNX MLP against linen."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _example_loader import load_example_module
from flax import nnx

import jopt


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("regression")
  summary = load_example_module("regression").main(
    ["--quick", "--no-progress", "--out", str(out)]
  )
  return out, summary


def test_plots_written(quick_run):
  out, _ = quick_run
  for name in (
    "linear_fit",
    "linear_loss_curves",
    "diabetes_fit",
    "diabetes_lr_sweep",
    "diabetes_train_loss_curves",
    "diabetes_val_loss_curves",
  ):
    assert (out / f"{name}.png").stat().st_size > 0, name


def test_linear_regression_matches_least_squares(quick_run):
  linear = quick_run[1]["linear"]
  # After 100 steps at lr=0.3 the slowest direction has contracted by
  # (1 - 0.3 * 0.3)^100 ~ 1e-4 of its initial error (~3): well inside 1e-3.
  np.testing.assert_allclose(
    (linear["w"], linear["b"]), linear["lstsq"], atol=1e-3
  )
  # And the least-squares line itself is the one the data were drawn from.
  np.testing.assert_allclose(linear["lstsq"], (3.0, 2.0), atol=0.3)
  # lr=0.6 is above 2 / L (L ~ 4.4, the loss's curvature): it must diverge,
  # and the sweep must say so.
  assert linear["diverged"] == [pytest.approx(0.6)]
  assert linear["result"].diverged.sum() == 1


def test_diabetes_sweep_learns(quick_run):
  diabetes = quick_run[1]["diabetes"]
  result = diabetes["result"]
  assert result.metrics["val_loss"].shape == (4, 60)
  assert result.metrics["train_loss"].shape == (4, 60)
  # The best of the four learning rates explains part of the variance on
  # unseen data (ordinary least squares gets ~0.34 on this split); the bar
  # is loose because this run is tiny (60 steps, 16 hidden units).
  assert diabetes["test_r2"] > 0.15
  assert diabetes["learning_rate"] in result.hparams["learning_rate"]


class LinenMLP(nn.Module):
  """The example's MLP as it was written in linen before the NNX port."""

  features: tuple[int, ...]

  @nn.compact
  def __call__(self, x):
    for width in self.features:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(1)(x)[..., 0]


def test_diabetes_nnx_fit_equals_the_linen_one():
  diabetes = load_example_module("regression", "diabetes")
  data = diabetes.load_data(0)
  steps, features, lr, key = 20, (8,), jnp.float32(0.01), jax.random.key(3)
  model, metrics = nnx.jit(diabetes.make_fit(data, features, steps))(lr, key)

  # The linen training loop the example used to run, from the NNX model's
  # initial weights (the two libraries name and draw them differently).
  start = diabetes.MLP(10, features, rngs=nnx.Rngs(params=key))
  params = {
    "params": {
      "Dense_0": nnx.to_pure_dict(nnx.state(start.hidden[0], nnx.Param)),
      "Dense_1": nnx.to_pure_dict(nnx.state(start.out, nnx.Param)),
    }
  }
  net, tx = LinenMLP(features), jopt.adam(lr)

  def mse(p, x, y):
    return jnp.mean((net.apply(p, x) - y) ** 2)

  def step(carry, _):
    p, s = carry
    loss, grads = jax.value_and_grad(mse)(p, data["x_train"], data["y_train"])
    updates, s = tx.update(grads, s, p)
    p = jopt.apply_updates(p, updates)
    return (p, s), (loss, mse(p, data["x_val"], data["y_val"]))

  (params, _), (train_loss, val_loss) = jax.jit(
    lambda p: jax.lax.scan(step, (p, tx.init(p)), length=steps)
  )(params)
  # The same arithmetic: bit-identical on CPU today. Two compiled programs
  # may still be fused differently by XLA, which would move float32 results
  # by rounding only (~1e-6 after 20 Adam steps); a wrong weight, layer or
  # update is orders of magnitude off.
  close = functools.partial(chex.assert_trees_all_close, rtol=1e-5, atol=1e-6)
  close(metrics["train_loss"], train_loss)
  close(metrics["val_loss"], val_loss)
  close(model(data["x_test"]), net.apply(params, data["x_test"]))
