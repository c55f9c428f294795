"""One JAX CPU device per core, for a process that has not chosen a count.

JAX gives a CPU process one device, and one device runs one trial at a
time: the matmuls of a small model are too small for XLA's intra-op
threads to share, so on a machine of several cores a sweep leaves all but
one idle. With one device per core the sweep shards its trials over the
cores. Code that does not ask for more devices keeps running on device 0,
with the same thread pool as before (``benchmarks/cpu_devices.py``
measures both).

jopt sets ``jax_num_cpu_devices`` when it is imported, and only if

* JAX's backends have not started yet (JAX refuses the setting after),
* neither ``jax_num_cpu_devices`` / ``JAX_NUM_CPU_DEVICES`` nor
  ``--xla_force_host_platform_device_count`` in ``XLA_FLAGS`` chose a
  count, and
* ``JOPT_CPU_DEVICES`` is not ``1`` (leave JAX as it is) or a count.
"""

from __future__ import annotations

import os

ENV = "JOPT_CPU_DEVICES"


def wanted() -> int | None:
  """The CPU device count jopt would set (None: leave JAX alone)."""
  setting = os.environ.get(ENV, "").strip().lower()
  if setting in ("", "auto"):
    return os.cpu_count() or 1
  try:
    count = int(setting)
  except ValueError:
    raise ValueError(
        f"{ENV} must be 'auto' or a device count >= 1, got {setting!r}."
    ) from None
  if count < 1:
    raise ValueError(f"{ENV} must be 'auto' or a device count >= 1, got "
                     f"{setting!r}.")
  return count


def configure() -> int | None:
  """Sets one CPU device per core when nobody chose; the count, or None."""
  count = wanted()
  if count is None or count <= 1:
    return None
  if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
    return None
  import jax

  if jax.config.jax_num_cpu_devices >= 0:  # set by the user or JAX_...
    return None
  try:
    jax.config.update("jax_num_cpu_devices", count)
  except RuntimeError:  # JAX has started its backends: too late, no change
    return None
  return count


CONFIGURED = configure()  # at import, before anything starts the backends
