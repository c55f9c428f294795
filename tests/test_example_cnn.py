"""Smoke test of examples/cnn: the README's main job, on a tiny configuration.

Runs ``python examples/cnn/main.py --quick`` as a user does, in a fresh
process (the example imports its sibling modules by plain name, as Flax's
examples do, so it is not imported into the test process), under the same
strict dtype and rank promotion as the rest of the tests.
"""

import dataclasses
import importlib
import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from flax import nnx

import jopt
import jopt.sweep

ROOT = Path(__file__).resolve().parents[1]


def test_cnn_main_quick_writes_finite_metrics_and_plots(tmp_path):
  out = tmp_path / "cnn"
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p]
  )
  env["JAX_NUMPY_DTYPE_PROMOTION"] = "strict"
  env["JAX_NUMPY_RANK_PROMOTION"] = "raise"
  env["MPLBACKEND"] = "Agg"
  proc = subprocess.run(
    [
      sys.executable,
      str(ROOT / "examples/cnn/main.py"),
      "--quick",
      "--no-progress",
      "--tensorboard",
      "--out",
      str(out),
    ],
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  # The program names the folder it wrote to.
  assert str(out) in proc.stdout

  summary = json.loads((out / "summary.json").read_text())
  for name in ("val_loss", "val_accuracy", "test_accuracy"):
    assert math.isfinite(summary[name]), (name, summary[name])
  assert 0.0 <= summary["test_accuracy"] <= 1.0
  assert set(summary["best_hparams"]) == {"learning_rate", "weight_decay"}

  table = pd.read_csv(out / "results.csv")
  assert len(table) == summary["config"]["num_trials"]
  # Sorted best first, and the best row is the reported best trial.
  assert table["val_loss"].is_monotonic_increasing
  assert math.isclose(
    table["val_loss"].iloc[0], summary["val_loss"], rel_tol=1e-6
  )  # Only a CSV round trip in between.

  runs = sorted(p.name for p in (out / "tensorboard").iterdir() if p.is_dir())
  assert runs == [f"trial_{i}" for i in range(len(table))]

  for path in summary["plots"].values():
    png = Path(path)
    assert png.parent == out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def cnn():
  """The example's modules, imported by plain name as main.py does."""
  names = ("data", "model", "train")
  saved = {n: sys.modules.pop(n) for n in names if n in sys.modules}
  sys.path.insert(0, str(ROOT / "examples/cnn"))
  try:
    yield types.SimpleNamespace(
      **{n: importlib.import_module(n) for n in names}
    )
  finally:
    sys.path.remove(str(ROOT / "examples/cnn"))
    for n in names:
      sys.modules.pop(n, None)
    sys.modules.update(saved)


def test_init_params_sets_every_param_at_lecun_scale(cnn):
  model_lib = cnn.model
  model = model_lib.CNN(rngs=nnx.Rngs(0))
  before = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  model_lib.init_params(model, jax.random.key(1))
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  chex.assert_trees_all_equal_shapes_and_dtypes(params, before)
  # LeCun scale: kernel variance 1 / fan_in. The dense kernel has 5,120
  # entries, so the sample variance is within ~4% (2 sigma) of it; 15%
  # leaves room while still catching a wrong fan-in (off by 9x or more).
  kernel = params["dense"]["kernel"]
  fan_in = kernel.shape[0]
  assert abs(float(jnp.var(kernel)) * fan_in - 1.0) < 0.15
  assert not np.array_equal(kernel, before["dense"]["kernel"])
  assert float(jnp.abs(params["dense"]["bias"]).max()) == 0.0


class LinenCNN(nn.Module):
  """The example's CNN as Flax users wrote it in linen (no dropout)."""

  features: tuple[int, int] = (16, 32)

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(self.features[0], (3, 3))(x))
    x = nn.max_pool(x, window_shape=(2, 2), strides=(2, 2))
    x = nn.relu(nn.Conv(self.features[1], (3, 3))(x))
    return nn.Dense(10)(x.reshape(x.shape[:-3] + (-1,)))


def _linen_train_fn(train_lib, model_lib, splits, config):
  """The same training in linen, from the NNX model's initial weights."""
  net = LinenCNN(config.features)
  x_train, y_train = jnp.asarray(splits.x_train), jnp.asarray(splits.y_train)

  def loss_fn(params, idx):
    return model_lib.cross_entropy(
      net.apply({"params": params}, x_train[idx]), y_train[idx]
    )

  def train_fn(hparams, key):
    model_key, steps_key = jax.random.split(key)
    weights = nnx.to_pure_dict(
      nnx.state(train_lib.create_model(config, model_key), nnx.Param)
    )
    params = {
      "Conv_0": weights["conv1"],
      "Conv_1": weights["conv2"],
      "Dense_0": weights["dense"],
    }
    tx = jopt.adamw(
      hparams["learning_rate"], weight_decay=hparams["weight_decay"]
    )

    def step(carry, batch_key):
      params, opt_state = carry
      idx = jax.random.randint(
        batch_key, (config.batch_size,), 0, x_train.shape[0]
      )
      loss, grads = jax.value_and_grad(loss_fn)(params, idx)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (jopt.apply_updates(params, updates), opt_state), loss

    batch_keys = jax.random.split(steps_key, config.num_steps)
    (params, _), losses = jax.lax.scan(
      step, (params, tx.init(params)), batch_keys
    )
    logits = net.apply({"params": params}, jnp.asarray(splits.x_val))
    y_val = jnp.asarray(splits.y_val)
    every = config.curve_every
    return {
      "val_loss": model_lib.cross_entropy(logits, y_val),
      "val_accuracy": model_lib.accuracy(logits, y_val),
      "train_loss": losses.reshape(-1, every).mean(axis=1),
    }

  return train_fn


def test_nnx_sweep_equals_linen_sweep(cnn):
  # The NNX example's sweep and a linen one (nn.Conv, nn.Dense) started
  # from the same weights, with the same minibatches and without dropout
  # (linen and NNX draw dropout masks from different keys).
  train_lib, model_lib, data_lib = cnn.train, cnn.model, cnn.data
  config = dataclasses.replace(train_lib.QUICK, dropout_rate=0.0)
  splits = data_lib.load_splits(seed=config.seed)
  space = train_lib.search_space(config)
  kwargs = dict(
    num_trials=config.num_trials,
    key=jax.random.key(config.seed),
    strategy="quasirandom",
    progress=False,
  )
  nnx_fn, _ = train_lib.make_train_fn(splits, config)
  nnx_result = jopt.sweep.run(nnx_fn, space, **kwargs)
  linen_result = jopt.sweep.run(
    _linen_train_fn(train_lib, model_lib, splits, config), space, **kwargs
  )
  chex.assert_trees_all_equal(nnx_result.hparams, linen_result.hparams)
  assert not nnx_result.diverged.any()
  # The same convolutions; linen's and NNX's modules may still be traced
  # into programs that XLA rounds differently (~1 float32 ulp per step),
  # so 1e-5 is far below any real difference in the training (a changed
  # init, batch or update).
  for name in ("train_loss", "val_loss", "val_accuracy"):
    np.testing.assert_allclose(
      nnx_result.metrics[name],
      linen_result.metrics[name],
      rtol=1e-5,
      atol=1e-6,
    )


def test_cnn_sweep_is_the_same_on_one_or_two_devices(cnn):
  # Issue: the old engine picked another best trial on 2 CPU devices than
  # on 1 (vmap width decided XLA's kernels). Every device now computes at
  # one lane width, and Adam's bias correction is written so that XLA
  # cannot compute it one way in one program and another way in the other.
  train_lib, data_lib = cnn.train, cnn.data
  config = train_lib.QUICK
  splits = data_lib.load_splits(seed=config.seed)
  train_fn, _ = train_lib.make_train_fn(splits, config)
  results = [
    jopt.sweep.run(
      train_fn,
      train_lib.search_space(config),
      num_trials=config.num_trials,
      key=jax.random.key(config.seed),
      strategy="quasirandom",
      progress=False,
      devices=jax.devices()[:n],
    )
    for n in (1, 2)
  ]
  for name in ("train_loss", "val_loss", "val_accuracy"):
    np.testing.assert_array_equal(
      results[0].metrics[name], results[1].metrics[name]
    )
  assert results[0].best("val_loss").index == results[1].best("val_loss").index
