"""Checkpoints of a sweep: one file per finished chunk plus a manifest.

Every write is atomic (a temporary file in the same folder, then
`os.replace`), so a process killed at any instant leaves either a complete
chunk file or none. The manifest holds a fingerprint of everything that
decides the trials' numbers (the space, the key, the strategy, the number of
trials, the folds, the training function's name, and a hash of the lowered
program of one trial, which covers its code, closed-over arrays, partial
arguments and static values) and the chunk
size of each group: a rerun with the same call reuses the recorded chunk
sizes, so resumed results are bit-identical to an uninterrupted run, and a
checkpoint made for anything else is refused.
"""

from __future__ import annotations

import inspect
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

_MANIFEST = "manifest.json"
_VERSION = 2  # 2: the lowered program is part of the fingerprint


def function_identity(fn: Callable[..., Any]) -> str:
  """The qualified name of ``fn`` (for messages; the program is hashed too)."""
  base = fn
  while hasattr(base, "func"):  # functools.partial
    base = base.func
  base = inspect.unwrap(base)
  return (f"{getattr(base, '__module__', '?')}."
          f"{getattr(base, '__qualname__', type(base).__qualname__)}")


def _value_identity(value: Any) -> str:
  """A description of a choice's value that is the same in every process."""
  if value is None or isinstance(value, (bool, int, float, str)):
    return repr(value)
  if isinstance(value, np.generic):
    return repr(value.item())
  from jopt.sweep import _result

  return _result.value_name(value)


def space_identity(space: Mapping[str, Any]) -> str:
  """The space as a string with no memory addresses (reprs of functions)."""
  from jopt.sweep import _space

  parts = []
  for name, dist in space.items():
    if isinstance(dist, _space.Choice):
      values = ", ".join(_value_identity(v) for v in dist.values)
      parts.append(f"{name!r}: choice([{values}], static={dist.static})")
    else:
      parts.append(f"{name!r}: {dist!r}")
  return "{" + ", ".join(parts) + "}"


def fingerprint(**fields: Any) -> dict[str, str]:
  """Every field as a stable string (for the manifest and error messages)."""
  return {k: (v if isinstance(v, str) else repr(v)) for k, v in fields.items()}


def _atomic_write(path: str, write: Callable[[Any], None]) -> None:
  folder = os.path.dirname(path) or "."
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".part")
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


class Checkpoint:
  """A sweep's checkpoint folder: manifest, chunk sizes and chunk files."""

  def __init__(self, directory: str, fields: Mapping[str, str], writer: bool):
    self.directory = directory
    self.writer = writer
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, _MANIFEST)
    if os.path.exists(path):
      with open(path) as f:
        manifest = json.load(f)
      stored = manifest.get("fingerprint", {})
      diff = sorted(k for k in set(stored) | set(fields)
                    if stored.get(k) != fields.get(k))
      if diff or manifest.get("version") != _VERSION:
        details = "; ".join(
            f"{k}: checkpoint has {stored.get(k)!r}, this call has "
            f"{fields.get(k)!r}" for k in diff)
        raise ValueError(
            f"checkpoint_dir {directory!r} holds a sweep made for a different "
            f"call ({details or 'format version'}). Use a new checkpoint_dir "
            f"or delete this one.")
      self.chunk_sizes = {int(k): v for k, v in manifest["chunk_sizes"].items()}
    else:
      self.chunk_sizes = {}
    self._fields = dict(fields)
    self._write_manifest()

  def _write_manifest(self) -> None:
    if not self.writer:
      return
    manifest = {"version": _VERSION, "fingerprint": self._fields,
                "chunk_sizes": {str(k): v for k, v in self.chunk_sizes.items()}}
    data = json.dumps(manifest, indent=1, sort_keys=True).encode()
    _atomic_write(os.path.join(self.directory, _MANIFEST),
                  lambda f: f.write(data))

  def set_chunk_size(self, group: int, size: int) -> None:
    self.chunk_sizes[group] = int(size)
    self._write_manifest()

  def _path(self, group: int, chunk: int) -> str:
    return os.path.join(self.directory, f"chunk-{group:04d}-{chunk:06d}.npz")

  def load(self, group: int, chunk: int) -> dict[str, np.ndarray] | None:
    """A finished chunk's metrics, or None when it is not on disk."""
    path = self._path(group, chunk)
    if not os.path.exists(path):
      return None
    with np.load(path, allow_pickle=False) as data:
      names = json.loads(str(data["__names__"]))
      return {n: data[f"m{i}"] for i, n in enumerate(names)}

  def save(self, group: int, chunk: int, metrics: Mapping[str, np.ndarray]):
    if not self.writer:
      return
    names = list(metrics)
    arrays = {f"m{i}": np.asarray(metrics[n]) for i, n in enumerate(names)}
    arrays["__names__"] = np.asarray(json.dumps(names))
    _atomic_write(self._path(group, chunk), lambda f: np.savez(f, **arrays))
