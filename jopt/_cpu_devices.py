"""`use_cpu_devices`: one JAX CPU device per core, asked for explicitly.

JAX gives a CPU process one device, and one device runs one trial at a
time: the matmuls of a small model are too small for XLA's intra-op
threads to share, so on a machine of several cores a sweep leaves all but
one idle. With one device per core the sweep shards its trials over the
cores. Code that does not ask for more devices keeps running on device 0,
with the same thread pool as before (``benchmarks/cpu_devices.py``
measures both).

Importing jopt changes no JAX setting: a process asks for the devices with
`use_cpu_devices`, before its first JAX computation.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence

import jax

_XLA_FLAG = re.compile(r"--xla_force_host_platform_device_count=(\d+)")


def _chosen_count() -> int | None:
  """The CPU device count the process chose already, if any.

  ``jax_num_cpu_devices`` (set by ``jax.config.update``, by
  ``JAX_NUM_CPU_DEVICES`` or by an earlier `use_cpu_devices`) wins over
  ``--xla_force_host_platform_device_count`` in ``XLA_FLAGS``, as in JAX.
  """
  configured = jax.config.jax_num_cpu_devices
  if configured >= 0:
    return configured
  flags = _XLA_FLAG.findall(os.environ.get("XLA_FLAGS", ""))
  return int(flags[-1]) if flags else None


def use_cpu_devices(count: int | None = None) -> int:
  """Gives this process ``count`` JAX CPU devices: by default, one per core.

  A sweep shards its trials over the devices, so on a CPU of several cores
  it runs one trial per core at a time instead of one in all (JAX's default
  is a single CPU device). Code that asks for no particular device runs on
  device 0 as before. Call it once, at the top of a script or notebook,
  before any JAX computation: JAX fixes its devices when its backends start.
  Importing jopt never does this by itself.

  A count the process chose already, through
  ``jax.config.update("jax_num_cpu_devices", n)``, ``JAX_NUM_CPU_DEVICES``
  or ``--xla_force_host_platform_device_count=n`` in ``XLA_FLAGS``, is kept:
  with ``count=None`` the call then changes nothing, and an explicit
  ``count`` that differs from it raises. Calling again with the same count
  (re-running a notebook cell) changes nothing.

  Args:
    count: the number of CPU devices (an int >= 1); None gives one per core
      (``os.cpu_count()``).

  Returns:
    The number of CPU devices the process has (or will have once JAX
    starts).

  Raises:
    ValueError: ``count`` is not an int >= 1, or differs from the count the
      process chose already.
    RuntimeError: JAX's backends have started with another number of CPU
      devices (call this before any JAX computation, or restart the
      process).

  Example:
    >>> import jopt
    >>> jopt.use_cpu_devices()  # doctest: +SKIP
    8
  """
  if count is not None and (
    isinstance(count, bool) or not isinstance(count, int) or count < 1
  ):
    raise ValueError(f"`count` must be None or an int >= 1; got {count!r}.")
  chosen = _chosen_count()
  if chosen is not None:
    if count is not None and count != chosen:
      raise ValueError(
        f"use_cpu_devices(count={count}): this process already chose "
        f"{chosen} CPU devices (jax_num_cpu_devices, JAX_NUM_CPU_DEVICES "
        "or --xla_force_host_platform_device_count in XLA_FLAGS). Choose "
        "one count, in one place."
      )
    return chosen
  wanted = count if count is not None else (os.cpu_count() or 1)
  try:
    jax.config.update("jax_num_cpu_devices", wanted)
  except RuntimeError:  # JAX's backends have started
    have = len(jax.devices("cpu"))
    if have != wanted:
      raise RuntimeError(
        f"use_cpu_devices asked for {wanted} CPU devices, but JAX has "
        f"already started with {have}: call jopt.use_cpu_devices() before "
        "any JAX computation (at the top of the script, or in the first "
        "cell of a notebook after restarting its kernel)."
      ) from None
    return have
  return wanted


_HINTED = False


def hint_if_one_cpu_device(devices: Sequence[jax.Device]) -> None:
  """Warns once per process when a sweep runs on one of several CPU cores."""
  global _HINTED
  cores = os.cpu_count() or 1
  if (
    _HINTED
    or cores < 2
    or len(devices) != 1
    or devices[0].platform != "cpu"
    or jax.process_count() > 1
    or len(jax.devices("cpu")) > 1
  ):
    return
  _HINTED = True
  warnings.warn(
    f"This sweep runs its trials one at a time on JAX's single CPU "
    f"device, while this machine has {cores} cores. Call "
    "jopt.use_cpu_devices() before any JAX computation (at the top of "
    "the script) to give JAX one CPU device per core: the sweep then "
    "runs a trial on each.",
    UserWarning,
    stacklevel=3,
  )
