"""One process of a cluster whose checkpoint writes fail in process 0.

``python _cluster_write_failure.py PORT PROCESS_ID OUT_DIR`` joins a
2-process CPU cluster over gloo (see test_multiprocess.py); process 0's
checkpoint file writes raise ENOSPC. For `sweep.run` and PBT it prints
``raised <search> <error type>`` when the search raises, and exits 0 once
both did (a process left waiting would hang instead).
"""

import errno
import os
import sys

port, process_id, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JOPT_PROGRESS"] = "0"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(
  f"127.0.0.1:{port}", num_processes=2, process_id=process_id
)

import jax.numpy as jnp  # noqa: E402

from jopt import sweep  # noqa: E402
from jopt.sweep.runtime import _checkpoint  # noqa: E402


def full_disk(*args, **kwargs):
  raise OSError(errno.ENOSPC, "No space left on device (simulated)")


if process_id == 0:
  _checkpoint.write_npz = full_disk

space = {"lr": sweep.log_uniform(1e-3, 0.5)}
key = jax.random.key(7)
searches = {
  "run": lambda: sweep.run(
    lambda hp, k: {"loss": hp["lr"] * jax.random.uniform(k)},
    space,
    num_trials=8,
    key=key,
    max_parallel=4,
    checkpoint_dir=os.path.join(out, "run"),
  ),
  "pbt": lambda: sweep.pbt(
    lambda hp, k: jnp.zeros(()),
    lambda s, hp: (s + hp["lr"], {"loss": s}),
    space,
    population=4,
    num_rounds=2,
    key=key,
    metric="loss",
    checkpoint_dir=os.path.join(out, "pbt"),
  ),
}
for name, search in searches.items():
  try:
    search()
  except Exception as e:  # noqa: BLE001
    print("raised", name, type(e).__name__, e, flush=True)
  else:
    print("finished", name, flush=True)
    sys.exit(1)
print("done", process_id, flush=True)
