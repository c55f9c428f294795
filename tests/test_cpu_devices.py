"""`import jopt` changes no JAX setting; `jopt.use_cpu_devices` does, asked.

Each case is a fresh process (JAX takes a device count only before its
backends start), started without the test suite's XLA_FLAGS.
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORES = os.cpu_count() or 1
FLAG = "--xla_force_host_platform_device_count"


def _run(code, **env_overrides):
  """Runs ``code`` in a fresh process; its last printed line, and stderr."""
  env = {
    k: v
    for k, v in os.environ.items()
    if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")
  }
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env["JAX_PLATFORMS"] = "cpu"
  env.update(env_overrides)
  out = subprocess.run(
    [sys.executable, "-c", code],
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  return out.stdout.strip().splitlines()[-1], out.stderr


def test_import_changes_no_jax_setting():
  # What the process set before and after `import jopt` is what JAX sees:
  # the config untouched, and a count put in XLA_FLAGS after the import
  # (but before any JAX work) still taken.
  code = f"""
import os
import jax
before = jax.config.jax_num_cpu_devices
flags = os.environ.get("XLA_FLAGS")
import jopt
assert jax.config.jax_num_cpu_devices == before == -1, (
    jax.config.jax_num_cpu_devices)
assert os.environ.get("XLA_FLAGS") == flags
os.environ["XLA_FLAGS"] = "{FLAG}=3"
print(jax.device_count())
"""
  assert _run(code)[0] == "3"


@pytest.mark.parametrize(
  "code, env, expected",
  [
    ("import jopt, jax", {}, 1),
    ("import jopt, jax", {"JAX_NUM_CPU_DEVICES": "3"}, 3),
    ("import jopt, jax", {"XLA_FLAGS": f"{FLAG}=5"}, 5),
    (
      "import jax\njax.config.update('jax_num_cpu_devices', 2)\nimport jopt",
      {},
      2,
    ),
  ],
)
def test_import_keeps_the_count_the_process_chose(code, env, expected):
  assert _run(code + "\nprint(jax.device_count())", **env)[0] == str(expected)


@pytest.mark.parametrize(
  "call, env, expected",
  [
    ("jopt.use_cpu_devices()", {}, CORES),
    ("jopt.use_cpu_devices(3)", {}, 3),
    # A count chosen already is kept, and the same count is no conflict.
    ("jopt.use_cpu_devices()", {"XLA_FLAGS": f"{FLAG}=5"}, 5),
    ("jopt.use_cpu_devices(5)", {"XLA_FLAGS": f"{FLAG}=5"}, 5),
    ("jopt.use_cpu_devices()", {"JAX_NUM_CPU_DEVICES": "3"}, 3),
    # Called again, as a re-run notebook cell does, after JAX started.
    (
      "jopt.use_cpu_devices(3)\njax.numpy.ones(1).block_until_ready()\n"
      "jopt.use_cpu_devices(3)\njopt.use_cpu_devices()",
      {},
      3,
    ),
  ],
)
def test_use_cpu_devices(call, env, expected):
  code = f"import jax, jopt\nn = {call}\nprint(n, jax.device_count())"
  returned, count = _run(code, **env)[0].split()
  assert int(returned) == int(count) == expected


@pytest.mark.parametrize(
  "call, env, error, match",
  [
    ("jopt.use_cpu_devices(0)", {}, "ValueError", "`count` must be"),
    ("jopt.use_cpu_devices(2.0)", {}, "ValueError", "`count` must be"),
    (
      "jopt.use_cpu_devices(3)",
      {"XLA_FLAGS": f"{FLAG}=5"},
      "ValueError",
      "already chose 5 CPU devices",
    ),
    (
      "jax.numpy.ones(1).block_until_ready()\njopt.use_cpu_devices(3)",
      {},
      "RuntimeError",
      "JAX has already started with 1",
    ),
  ],
)
def test_use_cpu_devices_refuses(call, env, error, match):
  code = f"""
import jax, jopt
try:
  {call.replace(chr(10), chr(10) + "  ")}
except {error} as e:
  print(repr(str(e)))
else:
  print("no error")
"""
  assert match in _run(code, **env)[0]


def test_a_sweep_on_one_of_several_cores_says_how_to_get_more():
  # Said once per process, as a UserWarning (this machine may have one
  # core: the child is told it has four).
  code = """
import os, warnings
os.cpu_count = lambda: 4
import jax, jopt
warnings.simplefilter("always")
def train_fn(hp, key):
  return {"loss": hp["lr"] ** 2}
space = {"lr": jopt.sweep.uniform(0.0, 1.0)}
with warnings.catch_warnings(record=True) as caught:
  for seed in range(2):
    jopt.sweep.run(train_fn, space, num_trials=2, key=jax.random.key(seed),
                   progress=False)
hints = [w for w in caught if "use_cpu_devices" in str(w.message)]
print(len(hints), hints[0].category.__name__)
"""
  assert _run(code)[0] == "1 UserWarning"


def test_no_hint_with_one_device_per_core():
  code = """
import os, warnings
os.cpu_count = lambda: 2
import jax, jopt
jopt.use_cpu_devices()
warnings.simplefilter("error")
jopt.sweep.run(lambda hp, key: {"loss": hp["lr"]},
               {"lr": jopt.sweep.uniform(0.0, 1.0)}, num_trials=2,
               key=jax.random.key(0), progress=False)
print(jax.device_count())
"""
  assert _run(code)[0] == "2"
