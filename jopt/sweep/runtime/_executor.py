"""The one executor under every search: lanes, placement, compiles, gathers.

Every strategy hands the executor a function of ONE trial and host arrays
with a leading trial axis; the executor runs it over all trials as one
compiled program whose trial axis is sharded over a one-axis mesh
(``"trials"``) of the chosen devices, in every process of a JAX cluster.

Results never depend on the hardware layout. Each device runs its trials in
vmapped groups of a fixed width, the *lanes* (a ``lax.map`` over the groups
of a ``vmap`` over the lanes, inside ``shard_map``), so a trial is always
computed by the same kernels at the same width, whatever the number of
devices, processes, chunks or trials per call: XLA picks kernels by width
(a one-lane vmap becomes matrix-vector products, wider ones matrix-matrix
products with other blockings), and training amplifies their different
rounding. Padding lanes repeat a real trial, so they cannot fail, and are
dropped. A population that shrinks (successive halving) keeps one axis and
computes only its live groups (`Placement`, `Executor.per_trial_live`: a
``fori_loop`` over them instead of the ``lax.map``), so it keeps one program.

On CPU every program is compiled with its convolutions in XLA:CPU's
canonical layout (`jopt.sweep.runtime._conv`): inside a loop body XLA:CPU runs a
convolution's weight gradient in the layout autodiff writes it many times
slower than in that layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

TRIALS_AXIS = "trials"
# Lanes per device by platform: the width every trial is computed at (see
# the module docstring), chosen with benchmarks/lanes.py. On CPU a batched
# matmul is slower than its trials' matmuls one after another (the MLP
# sweep ran 2.2x faster at 1 lane than at 32, 1.7x on two devices), so one
# trial at a time; on accelerators, where width is what fills the chip, 32.
DEFAULT_LANES = {"cpu": 1}
ACCELERATOR_LANES = 32


def check_lanes(lanes: Any) -> None:
  if lanes is not None and (
    isinstance(lanes, bool)
    or not isinstance(lanes, (int, np.integer))
    or lanes < 1
  ):
    raise ValueError(f"lanes must be None or an int >= 1, got {lanes!r}.")


def check_compiler_options(compiler_options: Any) -> None:
  if compiler_options is not None and (
    not isinstance(compiler_options, Mapping)
    or not all(isinstance(k, str) for k in compiler_options)
  ):
    raise ValueError(
      "compiler_options must be None or a mapping of XLA option names "
      f"(strings) to values, got {compiler_options!r}."
    )


def lanes_for(num_trials: int, platform: str, lanes: int | None = None) -> int:
  """The lane width of a search of ``num_trials`` trials.

  ``lanes`` when given; otherwise the platform's width, but no wider than
  the search needs (a power of two >= ``num_trials``), so a single trial is
  never padded to the platform's width. It depends on the search alone, never on devices or
  chunks, and a search keeps it to the end (a halving survivor included).
  """
  if lanes is not None:
    return int(lanes)
  width = DEFAULT_LANES.get(platform, ACCELERATOR_LANES)
  return int(min(width, 1 << max(0, math.ceil(math.log2(max(num_trials, 1))))))


def default_compiler_options(devices: Sequence[jax.Device]) -> dict | None:
  """Faster-compiling LLVM settings on CPU (see `jopt.sweep.run`)."""
  if devices and devices[0].platform == "cpu":
    return {"xla_backend_optimization_level": 1}
  return None


# --- Keys ---------------------------------------------------------------------


class HostKeys:
  """Typed PRNG keys brought to the host: their raw data and their impl.

  numpy cannot hold a typed key, and a trial's state often carries one (its
  data key). `Executor.gather` returns keys as this, `Executor.put` places
  them back as typed keys, checkpoints store ``data`` and ``impl``.
  """

  def __init__(self, data: np.ndarray, impl: str):
    self.data = np.asarray(data)
    self.impl = str(impl)

  def __getitem__(self, index: Any) -> HostKeys:
    return HostKeys(self.data[index], self.impl)

  def __len__(self) -> int:
    return len(self.data)

  def to_jax(self) -> jax.Array:
    """The keys as a typed JAX array."""
    return jax.random.wrap_key_data(jnp.asarray(self.data), impl=self.impl)

  @staticmethod
  def concatenate(parts: Sequence[HostKeys]) -> HostKeys:
    return HostKeys(np.concatenate([p.data for p in parts]), parts[0].impl)


def to_host_values(tree: Any) -> Any:
  """`HostKeys` leaves as typed JAX keys; everything else unchanged."""
  return jax.tree.map(
    lambda x: x.to_jax() if isinstance(x, HostKeys) else x, tree
  )


def is_typed_key(x: Any) -> bool:
  return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


class KeySpec:
  """A PRNG key passed into programs as raw data (placeable anywhere)."""

  def __init__(self, key: jax.Array):
    self.typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    self.impl = jax.random.key_impl(key) if self.typed else None
    self.data = np.asarray(jax.random.key_data(key) if self.typed else key)

  def wrap(self, data: jax.Array) -> jax.Array:
    if self.typed:
      return jax.random.wrap_key_data(data, impl=self.impl)
    return data


def trial_key(root: jax.Array, index: jax.Array) -> jax.Array:
  """Trial ``index``'s key: ``fold_in(root, index)``, whatever runs it."""
  return jax.random.fold_in(root, index)


class Executor:
  """Runs functions of one trial over many, sharded, at a fixed lane width.

  Args:
    devices: the devices to shard over (global across processes); default
      ``jax.devices()``.
    lanes: trials computed side by side per device (see `lanes_for`).
    compiler_options: XLA options; None chooses `default_compiler_options`.

  Attributes:
    num_compiles: programs this executor's search needed, compiled or
      taken from the process's caches (`jopt.sweep.clear_caches`).
    num_cached: how many of them came from those caches.
    compile_time: seconds spent tracing, lowering and compiling.
    memory_bytes: the largest per-device footprint of a program that ran.

  Its programs are compiled, cached and sized by `_programs`.
  """

  def __init__(
    self,
    devices: Sequence[jax.Device] | None = None,
    lanes: int = 1,
    compiler_options: dict | None = None,
  ):
    self.devices = list(devices) if devices is not None else jax.devices()
    if not self.devices:
      raise ValueError("devices must be None or a non-empty list of devices.")
    self.lanes = int(lanes)
    self.compiler_options = (
      default_compiler_options(self.devices)
      if compiler_options is None
      else dict(compiler_options)
    )
    self.multiprocess = len({d.process_index for d in self.devices}) > 1 or (
      jax.process_count() > 1
    )
    self.num_compiles = 0
    self.num_cached = 0
    self.compile_time = 0.0
    self.memory_bytes: int | None = None
    # The programs this search asked `_programs.get` for, and those whose
    # footprint was checked against the memory budget.
    self.programs: dict[Any, tuple[Any, Any]] = {}
    self.checked: set[int] = set()
    self._meshes: dict[int, Mesh] = {}

  # Layout ----------------------------------------------------------------

  @property
  def platform(self) -> str:
    return self.devices[0].platform

  def num_devices_for(self, n: int) -> int:
    """Devices used for ``n`` trials: no more than have a group to run.

    In a cluster every device is used, so every process takes part.
    """
    if self.multiprocess:
      return len(self.devices)
    return max(1, min(len(self.devices), -(-n // self.lanes)))

  def padded(self, n: int, ndev: int | None = None) -> int:
    """``n`` rounded up to whole groups of lanes on every device used."""
    ndev = ndev or self.num_devices_for(n)
    unit = self.lanes * ndev
    return max(unit, -(-n // unit) * unit)

  def mesh(self, ndev: int) -> Mesh:
    if not 1 <= ndev <= len(self.devices):
      raise ValueError(
        f"{ndev} devices asked of an executor of {len(self.devices)}."
      )
    if ndev not in self._meshes:
      self._meshes[ndev] = Mesh(np.array(self.devices[:ndev]), (TRIALS_AXIS,))
    return self._meshes[ndev]

  def sharding(self, ndev: int, replicated: bool = False) -> NamedSharding:
    return NamedSharding(
      self.mesh(ndev), PartitionSpec(None if replicated else TRIALS_AXIS)
    )

  # Placement ---------------------------------------------------------------

  def put(self, tree: Any, ndev: int) -> Any:
    """Host arrays with a leading trial axis -> global arrays, trial-sharded.

    Every process holds the whole host array (searches sample
    deterministically from the key), and each places its own shards.
    """
    sharding = self.sharding(ndev)

    def place(x):
      if isinstance(x, HostKeys):
        return jax.random.wrap_key_data(place(x.data), impl=x.impl)
      x = np.asarray(x)
      return jax.make_array_from_callback(
        x.shape, sharding, lambda index: x[index]
      )

    return jax.tree.map(place, tree)

  def put_replicated(self, tree: Any, ndev: int) -> Any:
    sharding = self.sharding(ndev, replicated=True)

    def place(x):
      x = np.asarray(x)
      return jax.make_array_from_callback(
        x.shape, sharding, lambda index: x[index]
      )

    return jax.tree.map(place, tree)

  def gather(self, tree: Any) -> Any:
    """Global arrays -> numpy on every process (all-gathered if needed)."""

    def get(x):
      if is_typed_key(x):
        return HostKeys(get(jax.random.key_data(x)), jax.random.key_impl(x))
      if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
      from jax.experimental import multihost_utils

      return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(get, tree)

  # Programs -------------------------------------------------------------------

  def per_trial(
    self, fn: Callable[..., Any], ndev: int, in_axes: Sequence[int | None]
  ) -> Callable[..., Any]:
    """``fn`` of one trial -> a function of the whole (sharded) trial axis.

    Arguments with ``in_axes`` 0 carry the trial axis, None ones are shared.
    On each device the local trials run as a ``lax.map`` over groups of
    ``lanes`` vmapped trials; call the result inside a jitted program.
    """
    lanes = self.lanes
    specs = tuple(
      PartitionSpec(TRIALS_AXIS) if a == 0 else PartitionSpec() for a in in_axes
    )

    def local(*args):
      batched = [a for a, ax in zip(args, in_axes, strict=True) if ax == 0]
      size = jax.tree.leaves(batched)[0].shape[0]
      groups = size // lanes

      def split(x):
        return x.reshape((groups, lanes) + x.shape[1:])

      def merge(x):
        return x.reshape((groups * lanes,) + x.shape[2:])

      grouped = [
        jax.tree.map(split, a) if ax == 0 else None
        for a, ax in zip(args, in_axes, strict=True)
      ]

      def one_group(batch):
        full = [
          b if ax == 0 else a
          for a, b, ax in zip(args, batch, in_axes, strict=True)
        ]
        return jax.vmap(fn, in_axes=tuple(in_axes))(*full)

      out = jax.lax.map(one_group, grouped)
      return jax.tree.map(merge, out)

    return self._sharded(local, ndev, specs)

  def per_trial_live(
    self, fn: Callable[..., Any], ndev: int, in_axes: Sequence[int | None]
  ) -> Callable[..., Any]:
    """Like `per_trial`, over only the live groups of a fixed-size axis.

    The result takes one more argument, ``counts``: int32 ``[ndev]``,
    trial-sharded, the number of live groups at the start of each device's
    rows (see `Placement`). Each device computes its first ``counts[d]``
    groups of lanes, one after another, at the same width as `per_trial`;
    the other rows of every output are zeros. So populations of any size
    up to the axis run one program: a search whose population shrinks
    (successive halving's rungs, Hyperband's brackets) compiles once.
    """
    lanes = self.lanes
    specs = tuple(
      PartitionSpec(TRIALS_AXIS) if a == 0 else PartitionSpec() for a in in_axes
    ) + (PartitionSpec(TRIALS_AXIS),)
    one_group = jax.vmap(fn, in_axes=tuple(in_axes))

    def local(*args):
      *args, count = args
      batched = [a for a, ax in zip(args, in_axes, strict=True) if ax == 0]
      size = jax.tree.leaves(batched)[0].shape[0]

      def group_args(g):
        return [
          jax.tree.map(
            lambda x: jax.lax.dynamic_slice_in_dim(x, g * lanes, lanes), a
          )
          if ax == 0
          else a
          for a, ax in zip(args, in_axes, strict=True)
        ]

      shapes = jax.eval_shape(one_group, *group_args(0))
      out = jax.tree.map(
        lambda s: jnp.zeros((size,) + s.shape[1:], s.dtype), shapes
      )

      def body(g, out):
        new = one_group(*group_args(g))
        return jax.tree.map(
          lambda buf, x: jax.lax.dynamic_update_slice_in_dim(
            buf, x, g * lanes, 0
          ),
          out,
          new,
        )

      return jax.lax.fori_loop(0, count[0], body, out)

    return self._sharded(local, ndev, specs)

  def _sharded(
    self, local: Callable[..., Any], ndev: int, specs: tuple[PartitionSpec, ...]
  ) -> Callable[..., Any]:
    """``local`` on each device's rows, every output trial-sharded."""

    def call(*args):
      return jax.shard_map(
        local,
        mesh=self.mesh(ndev),
        in_specs=specs,
        out_specs=PartitionSpec(TRIALS_AXIS),
        check_vma=False,
      )(*args)

    return call


class Placement:
  """Where ``n`` live trials sit in an axis of ``size`` rows over ``ndev``.

  The axis is split into ``ndev`` equal blocks of rows, one per device, as
  the trial sharding splits it. The live trials fill whole groups of lanes
  (the last one padded by repeating the first trial, as `pad_rows` does),
  the groups dealt out in order to the devices, as evenly as they go
  (``counts[d]`` groups at the start of device ``d``'s block). Rows past
  them are idle: `Executor.per_trial_live` does not compute them.
  """

  def __init__(self, n: int, size: int, ndev: int, lanes: int):
    local = size // ndev
    groups = -(-n // lanes)
    if (
      n < 1 or size % ndev or local % lanes or groups > ndev * (local // lanes)
    ):
      raise ValueError(
        f"{n} trials do not fit {size} rows over {ndev} "
        f"devices in groups of {lanes}."
      )
    self.n, self.size, self.ndev = n, size, ndev
    self.counts = np.array(
      [groups // ndev + (d < groups % ndev) for d in range(ndev)], np.int32
    )
    rows = [d * local + np.arange(c * lanes) for d, c in enumerate(self.counts)]
    # slots[j]: the row of live slot j (trial j for j < n, then padding).
    self.slots = np.concatenate(rows)
    self.source = np.zeros(size, np.int64)  # idle rows hold trial 0
    self.source[self.slots] = pad_rows(n, len(self.slots))

  def spread(self, x: Any) -> Any:
    """A host array of ``n`` rows (one per live trial) -> ``size`` rows."""
    return x[self.source]

  def live(self, x: Any) -> Any:
    """The ``n`` live trials' rows of a host array of ``size`` rows."""
    return x[self.slots[: self.n]]


def pad_rows(n: int, size: int) -> np.ndarray:
  """Rows ``0..n-1`` padded to ``size`` by repeating the first one."""
  rows = np.arange(size)
  return np.where(rows < n, rows, 0)
