"""Run in a venv holding `pip install .` and nothing else (no extras).

A small `jopt.sweep.run` with its default arguments (progress bar on,
quasirandom... whatever the defaults are) must work without tqdm,
matplotlib, pandas, flax or optuna; the functions that need an extra must
say which one.
"""

import importlib.util

import jax
import jax.numpy as jnp

import jopt
from jopt import sweep

for absent in ("tqdm", "matplotlib", "pandas", "flax", "optuna", "sklearn"):
  assert importlib.util.find_spec(absent) is None, f"{absent} is installed"


def train_fn(hparams, key):
  w = jax.random.normal(key, (3,))
  tx = jopt.adam(hparams["learning_rate"])

  def step(carry, _):
    w, state = carry
    loss, g = jax.value_and_grad(lambda w: jnp.sum((w - 1.0) ** 2))(w)
    updates, state = tx.update(g, state, w)
    return (jopt.apply_updates(w, updates), state), loss

  _, losses = jax.lax.scan(step, (w, tx.init(w)), length=20)
  return {"loss": losses}


result = sweep.run(train_fn, {"learning_rate": sweep.log_uniform(1e-3, 1.0)},
                   num_trials=4, key=jax.random.key(0))
assert len(result) == 4 and not result.diverged.any()
for call, extra in ((lambda: result.to_pandas(), "plots"),
                    (lambda: result.plot("loss"), "plots")):
  try:
    call()
  except ImportError as e:
    assert f"jopt[{extra}]" in str(e), e
  else:
    raise AssertionError("expected an ImportError naming the extra")
print("plain install: sweep.run with default arguments works;",
      "optional features name their extra")
