"""kill -9 in the middle of a stepwise search, then resume == uninterrupted.

The search runs in a child process with a segment slow enough to be killed
between two saved steps; the same call then resumes from the folder in a
new process, and a fresh run in another folder is the reference.
"""

import glob
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from jopt import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = textwrap.dedent("""
    import os, sys, time
    os.environ["JOPT_PROGRESS"] = "0"
    import jax, jax.numpy as jnp
    from jopt import sweep

    def init(hp, key):
      return jax.random.normal(key, (3,))

    def segment(w, hp):
      jax.debug.callback(lambda: time.sleep(0.05))  # slow enough to kill
      for _ in range(3):
        w = w - hp["lr"] * 2 * w
      return w, {"loss": jnp.sum(w * w)}

    space = {"lr": sweep.log_uniform(1e-3, 0.3)}
    kw = dict(key=jax.random.key(0), metric="loss", checkpoint_dir=sys.argv[2])
    if sys.argv[1] == "successive_halving":
      res = sweep.successive_halving(init, segment, space, num_trials=9,
                                     max_segments=9, **kw)
    else:
      res = sweep.pbt(init, segment, space, population=8, num_rounds=8,
                      segments_per_round=2, **kw)
    res.save(sys.argv[3])
""")


@pytest.mark.parametrize("search", ["successive_halving", "pbt"])
def test_kill_9_then_resume_equals_uninterrupted(search, tmp_path):
  script = tmp_path / "search.py"
  script.write_text(_SCRIPT)
  env = {**os.environ, "PYTHONPATH": ROOT}
  folder = tmp_path / "ckpt"
  proc = subprocess.Popen(
    [
      sys.executable,
      str(script),
      search,
      str(folder),
      str(tmp_path / "killed.npz"),
    ],
    env=env,
  )
  deadline = time.time() + 180
  while not glob.glob(str(folder / "state-*.npz")):
    assert proc.poll() is None, "the search ended before its first state"
    assert time.time() < deadline
    time.sleep(0.01)
  time.sleep(random.uniform(0.0, 0.3))  # at a random point after that
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (tmp_path / "killed.npz").exists(), "killed too late"
  for out, where in (("resumed.npz", folder), ("fresh.npz", tmp_path / "new")):
    subprocess.run(
      [sys.executable, str(script), search, str(where), str(tmp_path / out)],
      env=env,
      check=True,
      timeout=300,
    )
  cls = sweep.PBTResult if search == "pbt" else sweep.AdaptiveResult
  resumed = cls.load(tmp_path / "resumed.npz")
  fresh = cls.load(tmp_path / "fresh.npz")
  for k in fresh.metrics:
    np.testing.assert_array_equal(resumed.metrics[k], fresh.metrics[k])
  for k in fresh.hparams:
    np.testing.assert_array_equal(resumed.hparams[k], fresh.hparams[k])
  np.testing.assert_array_equal(resumed.segments_run, fresh.segments_run)
  if search == "pbt":
    np.testing.assert_array_equal(resumed.parents, fresh.parents)
