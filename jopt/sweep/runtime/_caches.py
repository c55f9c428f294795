"""The caches of `jopt.sweep`: registered, bounded, emptied by `clear_caches`.

A sweep called again in one process (a notebook cell run twice) reuses the
programs it compiled. Every cache that makes that possible is a `Cache`:
it holds at most ``max_size`` entries (least recently used first out), its
keys hold everything that changes the program (`trace_context` for the
JAX settings, the compiler options and the devices), and `clear_caches`
empties every one of them.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import jax

try:  # What jax.jit keys its own caches on beyond a function's arguments.
  from jax._src.config import trace_context as _jax_trace_context
except ImportError:  # pragma: no cover  (a JAX that moved it)
  _jax_trace_context = None

# The settings that change what tracing makes of a function, read one by one
# if JAX's own trace context cannot be (it holds these and more: mesh and
# user contexts, debugging modes).
_TRACING_FLAGS = (
  "jax_enable_x64",
  "jax_numpy_dtype_promotion",
  "jax_numpy_rank_promotion",
  "jax_default_matmul_precision",
  "jax_threefry_partitionable",
  "jax_default_prng_impl",
  "jax_softmax_custom_jvp",
  "jax_use_shardy_partitioner",
  "jax_random_seed_offset",
  "jax_debug_key_reuse",
  "jax_disable_jit",
  "jax_default_device",
)

_MISSING = object()
_CACHES: list[Cache] = []  # every cache `clear_caches` empties


def trace_context() -> Hashable:
  """Every JAX setting in force that changes what tracing makes of a function.

  The key ``jax.jit`` itself adds to a function and its arguments (the
  configuration flags, thread-local ones included, and the mesh and user
  contexts), so a cache keyed on it misses wherever ``jax.jit`` would trace
  again.
  """
  if _jax_trace_context is not None:
    return _jax_trace_context()
  return tuple(str(getattr(jax.config, name, None)) for name in _TRACING_FLAGS)


class Cache:
  """A bounded map, least recently used first out, that `clear_caches` empties.

  An entry may belong to an ``owner`` object: it is then held no longer
  than the owner lives (the owner is referenced weakly), and looked up by
  the owner's identity together with the key. Owners that cannot be
  weakly referenced are not cached.

  Args:
    name: what the cache holds (for ``repr``).
    max_size: the most entries held.
  """

  def __init__(self, name: str, max_size: int):
    self.name = name
    self.max_size = int(max_size)
    self._entries: OrderedDict[Hashable, tuple[Any, Any]] = OrderedDict()
    self._lock = threading.RLock()
    _CACHES.append(self)

  def __repr__(self) -> str:
    return f"Cache({self.name!r}, {len(self)}/{self.max_size})"

  def __len__(self) -> int:
    return len(self._entries)

  def get(self, key: Hashable, owner: Any = None, default: Any = None) -> Any:
    """The value stored under ``key`` (and ``owner``), or ``default``."""
    full = key if owner is None else (id(owner), key)
    with self._lock:
      entry = self._entries.get(full, _MISSING)
      if entry is _MISSING:
        return default
      ref, value = entry
      if ref is not None and ref() is not owner:
        return default
      self._entries.move_to_end(full)
      return value

  def put(self, key: Hashable, value: Any, owner: Any = None) -> None:
    """Stores ``value`` under ``key`` (and ``owner``), evicting the oldest."""
    if owner is None:
      full, ref = key, None
    else:
      full = (id(owner), key)
      entries = self._entries

      def forget(dead, full=full):
        # The owner died: drop its entry unless a newer owner has its id.
        entry = entries.get(full)
        if entry is not None and entry[0] is dead:
          entries.pop(full, None)

      try:
        ref = weakref.ref(owner, forget)
      except TypeError:
        return
    with self._lock:
      self._entries[full] = (ref, value)
      self._entries.move_to_end(full)
      while len(self._entries) > self.max_size:
        self._entries.popitem(last=False)

  def clear(self) -> None:
    with self._lock:
      self._entries.clear()

  def unregister(self) -> None:
    """Takes the cache off the list `clear_caches` empties (a temporary
    cache, such as a test's)."""
    _CACHES.remove(self)


def registered() -> tuple[Cache, ...]:
  """Every registered cache, in the order they were made."""
  return tuple(_CACHES)


def clear_caches() -> None:
  """Empties every cache of `jopt.sweep`.

  A sweep called again in one process reuses the programs compiled for an
  earlier one with the same function, shapes, settings, compiler options
  and devices (a notebook cell run twice compiles nothing). After
  ``clear_caches()`` the next sweep traces and compiles afresh, and the
  memory those programs held is released once nothing else refers to them.
  JAX's own caches are JAX's: ``jax.clear_caches()`` empties them.

  Example:
    >>> import jopt
    >>> jopt.sweep.clear_caches()
  """
  for cache in list(_CACHES):
    cache.clear()
