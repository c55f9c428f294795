"""Smoke test of examples/cnn: the README's main job, on a tiny configuration.

Runs ``python examples/cnn/main.py --quick`` as a user does, in a fresh
process (the example imports its sibling modules by plain name, as Flax's
examples do, so it is not imported into the test process), under the same
strict dtype and rank promotion as the rest of the tests.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import pandas as pd
from _example_loader import load_example_module

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

  for path in summary["plots"].values():
    png = Path(path)
    assert png.parent == out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_patch_conv_matches_flax_conv():
  model = load_example_module("cnn", "model")
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  conv = model.Conv(features=5)
  variables = conv.init(jax.random.key(1), x)
  expected = nn.Conv(5, kernel_size=(3, 3)).apply(variables, x)
  # float32, 27-term dot products summed in a different order: ~1e-6.
  chex.assert_trees_all_close(conv.apply(variables, x), expected, atol=1e-5)


def test_init_params_has_flax_structure_and_lecun_scale():
  model = load_example_module("cnn", "model")
  net = model.CNN()
  x = jnp.zeros((1, 8, 8, 1))
  params = model.init_params(net, jax.random.key(0), x)
  reference = net.init(jax.random.key(0), x)["params"]
  chex.assert_trees_all_equal_shapes_and_dtypes(params, reference)
  # LeCun scale: kernel variance 1 / fan_in. The dense kernel has 5,120
  # entries, so the sample variance is within ~4% (2 sigma) of it; 15%
  # leaves room while still catching a wrong fan-in (off by 9x or more).
  kernel = params["Dense_0"]["kernel"]
  fan_in = kernel.shape[0]
  assert abs(float(jnp.var(kernel)) * fan_in - 1.0) < 0.15
  assert float(jnp.abs(params["Dense_0"]["bias"]).max()) == 0.0
