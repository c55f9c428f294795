"""`import jopt` gives a CPU process one JAX device per core, unless chosen.

Each case is a fresh process (JAX takes the setting only before its
backends start), started without the test suite's XLA_FLAGS.
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _devices(code, **env_overrides):
  env = {k: v for k, v in os.environ.items()
         if k not in ("XLA_FLAGS", "JOPT_CPU_DEVICES", "JAX_NUM_CPU_DEVICES")}
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env["JAX_PLATFORMS"] = "cpu"
  env.update(env_overrides)
  code += "\nprint(jax.device_count())"
  out = subprocess.run([sys.executable, "-c", code], env=env,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  return int(out.stdout.split()[-1])


def test_a_default_process_gets_one_cpu_device_per_core():
  assert _devices("import jopt, jax") == (os.cpu_count() or 1)


@pytest.mark.parametrize("code, env, expected", [
    # The user chose, one way or another: jopt leaves JAX alone.
    ("import jopt, jax", {"JOPT_CPU_DEVICES": "1"}, 1),
    ("import jopt, jax", {"JOPT_CPU_DEVICES": "3"}, 3),
    ("import jopt, jax", {"JAX_NUM_CPU_DEVICES": "3"}, 3),
    ("import jopt, jax",
     {"XLA_FLAGS": "--xla_force_host_platform_device_count=5"}, 5),
    ("import jax\njax.config.update('jax_num_cpu_devices', 1)\nimport jopt",
     {}, 1),
    # JAX already started: too late to change, and no error.
    ("import jax\njax.numpy.ones(1).block_until_ready()\nimport jopt", {}, 1),
])
def test_a_chosen_count_is_kept(code, env, expected):
  assert _devices(code, **env) == expected


def test_a_bad_setting_names_the_variable():
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env["JOPT_CPU_DEVICES"] = "many"
  out = subprocess.run([sys.executable, "-c", "import jopt"], env=env,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode != 0
  assert "JOPT_CPU_DEVICES must be 'auto' or a device count" in out.stderr
