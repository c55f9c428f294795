"""One process of a jopt search on a JAX cluster (see test_multiprocess.py).

``python _cluster_worker.py PORT NUM_PROCESSES PROCESS_ID OUT_DIR`` forms a
cluster of CPU processes over gloo on localhost, 2 devices each, runs
`sweep.run`, successive halving and PBT, and saves each result as
``OUT_DIR/<search>-<process id>.npz``. With NUM_PROCESSES = 1 it runs the
same searches in one plain process (no cluster), for reference. This is
the recipe of docs/guides/multiprocess.md.
"""

import os
import sys

port, num_processes, process_id, out = sys.argv[1:5]
num_processes, process_id = int(num_processes), int(process_id)
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JOPT_PROGRESS"] = "0"

import jax  # noqa: E402

if num_processes > 1:
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
    f"127.0.0.1:{port}", num_processes=num_processes, process_id=process_id
  )

import jax.numpy as jnp  # noqa: E402

import jopt  # noqa: E402
from jopt import sweep  # noqa: E402


def _train(hp, key, reporting):
  w = jax.random.normal(key, (4,))
  tx = jopt.adam(hp["lr"])

  def step(carry, t):
    w, s = carry
    loss, g = jax.value_and_grad(lambda w: jnp.sum((w - 1.0) ** 2))(w)
    if reporting:  # live progress: `report` inside the scan, every step
      sweep.report(t, num_steps=20, loss=loss)
    u, s = tx.update(g, s, w)
    return (jopt.apply_updates(w, u), s), loss

  _, losses = jax.lax.scan(step, (w, tx.init(w)), jnp.arange(20))
  return {"loss": losses[-1], "curve": losses}


def train_fn(hp, key):
  return _train(hp, key, reporting=False)


def reporting_train_fn(hp, key):
  return _train(hp, key, reporting=True)


def init(hp, key):
  w = jax.random.normal(key, (4,))
  return {"w": w, "s": jopt.sgd(hp["lr"], momentum=0.9).init(w)}


def segment(state, hp):
  tx = jopt.sgd(hp["lr"], momentum=0.9)

  def step(carry, _):
    w, s = carry
    loss, g = jax.value_and_grad(lambda w: jnp.sum((w - 1.0) ** 2))(w)
    u, s = tx.update(g, s, w)
    return (jopt.apply_updates(w, u), s), loss

  (w, s), losses = jax.lax.scan(step, (state["w"], state["s"]), length=5)
  return {"w": w, "s": s}, {"loss": losses[-1]}


space = {"lr": sweep.log_uniform(1e-3, 0.5)}
key = jax.random.key(7)
ckpt = os.path.join(out, f"ckpt-{num_processes}")
results = {
  "run": sweep.run(
    train_fn,
    space,
    num_trials=10,
    key=key,
    checkpoint_dir=os.path.join(ckpt, "run"),
  ),
  "halving": sweep.successive_halving(
    init,
    segment,
    space,
    num_trials=9,
    key=key,
    max_segments=9,
    metric="loss",
    checkpoint_dir=os.path.join(ckpt, "halving"),
  ),
  "pbt": sweep.pbt(
    init,
    segment,
    space,
    population=8,
    key=key,
    num_rounds=3,
    metric="loss",
    checkpoint_dir=os.path.join(ckpt, "pbt"),
  ),
}
# Live progress on: every process traces the same callbacks (so the
# programs stay identical), and only process 0 draws the bar.
os.environ["JOPT_PROGRESS"] = "1"
print("progress-start", flush=True)
results["report"] = sweep.run(
  reporting_train_fn, space, num_trials=10, key=key, progress=True
)
sys.stderr.flush()
print("progress-end", flush=True)
for name, result in results.items():
  result.save(os.path.join(out, f"{name}-{num_processes}-{process_id}.npz"))
print("done", process_id, jax.device_count(), flush=True)
