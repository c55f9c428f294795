"""Checkpoints of a search: a manifest, then one file per finished piece.

Every write is atomic (a temporary file in the same folder, then
`os.replace`), so a process killed at any instant leaves either a complete
file or none. The manifest holds a fingerprint of everything that decides
the trials' numbers (the space, the key, the strategy and its settings, the
training function's name, and a hash of the lowered program of one trial,
which covers its code, closed-over arrays, partial arguments and static
values). Every other file carries the fingerprint's digest and says what it
holds (`run`: the indices of its trials; stepwise searches: the step after
which the state was saved), and is checked when read. Results do not depend
on how trials are chunked, so a resumed search may use any chunk size.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt.sweep import _common, _space

_MANIFEST = "manifest.json"
# 3: files carry the digest and their trial indices; 4: metrics are stored
# under positional keys (any metric name, "__meta__" included, is safe).
_VERSION = 4


def function_identity(fn: Callable[..., Any]) -> str:
  """The qualified name of ``fn`` (for messages; the program is hashed too)."""
  base = fn
  while hasattr(base, "func"):  # functools.partial
    base = base.func
  base = inspect.unwrap(base)
  return (
    f"{getattr(base, '__module__', '?')}."
    f"{getattr(base, '__qualname__', type(base).__qualname__)}"
  )


def _value_identity(value: Any) -> str:
  """A description of a choice's value that is the same in every process."""
  if value is None or isinstance(value, (bool, int, float, str)):
    return repr(value)
  if isinstance(value, np.generic):
    return repr(value.item())
  return _space.value_name(value)


def space_identity(space: Mapping[str, Any]) -> str:
  """The space as a string with no memory addresses (reprs of functions)."""
  parts = []
  for name, dist in space.items():
    if isinstance(dist, _space.Choice):
      values = ", ".join(_value_identity(v) for v in dist.values)
      parts.append(f"{name!r}: choice([{values}], static={dist.static})")
    else:
      parts.append(f"{name!r}: {dist!r}")
  return "{" + ", ".join(parts) + "}"


def rule_identity(rule: Any) -> str:
  """A stopping rule (``init()``, ``update(state, value)``) as stable text.

  A number or None is its repr; a rule object is its type and a hash of its
  lowered programs, which hold the values it closes over (a patience, a
  margin), so the text is the same in every process and differs between
  rules that stop differently (a repr would hold function addresses).
  """
  if rule is None or isinstance(rule, (bool, int, float, np.generic)):
    return repr(rule.item() if isinstance(rule, np.generic) else rule)
  init = jax.jit(rule.init).lower()
  update = jax.jit(rule.update).lower(
    init.out_info, jax.ShapeDtypeStruct((), jnp.float32)
  )
  text = init.as_text(debug_info=False) + update.as_text(debug_info=False)
  return (
    f"{type(rule).__module__}.{type(rule).__qualname__}:"
    f"{hashlib.sha256(text.encode()).hexdigest()[:16]}"
  )


def fingerprint(**fields: Any) -> dict[str, str]:
  """Every field as a stable string (for the manifest and error messages)."""
  return {k: (v if isinstance(v, str) else repr(v)) for k, v in fields.items()}


def write_npz(
  path: str, meta: Mapping[str, Any], arrays: Mapping[str, Any]
) -> None:
  """Atomically writes ``arrays`` (any dtype) and JSON ``meta`` to ``path``."""
  if _META in arrays:
    raise ValueError(f"{_META!r} is a reserved array name.")
  _common.save_arrays(path, {**arrays, _META: np.asarray(json.dumps(meta))})


def read_npz(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """``(meta, arrays)`` of a `write_npz` file; ValueError naming a bad file."""
  arrays = _common.load_arrays(path)
  try:
    meta = json.loads(str(arrays.pop(_META)))
  except (KeyError, ValueError) as e:
    raise ValueError(
      f"{path}: not a jopt checkpoint file ({e}); delete it "
      f"to recompute what it held."
    ) from e
  return meta, arrays


_META = "__meta__"


class Checkpoint:
  """A search's checkpoint folder: a manifest, then the state after the
  last step (one file, replaced at each step).

  The manifest holds the fingerprint of the call; every other file carries
  the fingerprint's digest and is refused when it does not match, so files
  of another search are never adopted, even with the manifest deleted.
  Only the writer (process 0) writes; every process reads.
  """

  def __init__(self, directory: str, fields: Mapping[str, str], writer: bool):
    self.directory = directory
    self.writer = writer
    self.fields = dict(fields)
    self.digest = hashlib.sha256(
      json.dumps([_VERSION, self.fields], sort_keys=True).encode()
    ).hexdigest()[:24]
    path = os.path.join(directory, _MANIFEST)
    data = json.dumps(
      {"version": _VERSION, "fingerprint": self.fields, "digest": self.digest},
      indent=1,
      sort_keys=True,
    ).encode()

    def check_or_write():
      os.makedirs(directory, exist_ok=True)
      if os.path.exists(path):
        self._check_manifest(path)
      elif self.writer:
        with _common.atomic_write(path) as f:
          f.write(data)

    self._everywhere(check_or_write, writer_only=False)

  def _check_manifest(self, path: str) -> None:
    try:
      with open(path) as f:
        manifest = json.load(f)
    except (OSError, ValueError) as e:
      raise ValueError(
        f"{path} is not a readable manifest ({e}); delete "
        f"the folder or use a new checkpoint_dir."
      ) from e
    stored, fields = manifest.get("fingerprint", {}), self.fields
    diff = sorted(
      k for k in set(stored) | set(fields) if stored.get(k) != fields.get(k)
    )
    if diff or manifest.get("version") != _VERSION:
      details = "; ".join(
        f"{k}: checkpoint has {stored.get(k)!r}, this call has "
        f"{fields.get(k)!r}"
        for k in diff
      )
      raise ValueError(
        f"checkpoint_dir {self.directory!r} holds a search made for a "
        f"different call ({details or 'format version'}). Use a new "
        f"checkpoint_dir or delete this one."
      )

  def _everywhere(
    self, action: Callable[[], None], *, writer_only: bool = True
  ) -> None:
    """Runs ``action`` (in the writer only); if it fails anywhere, all raise.

    On a cluster every process learns whether any process failed (one
    tiny collective per write), so a failed write (a full disk, a
    read-only folder) stops every process instead of leaving the others
    waiting in the next collective.
    """
    error = None
    if self.writer or not writer_only:
      try:
        action()
      except Exception as e:  # noqa: BLE001  (re-raised below)
        error = e
    failed = error is not None
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      failed = bool(np.any(multihost_utils.process_allgather(np.int32(failed))))
    if error is not None:
      raise error
    if failed:
      raise RuntimeError(
        f"another process of the cluster failed to write or read "
        f"checkpoint_dir {self.directory!r} (its error says why); every "
        f"process stops."
      )

  def _check(self, path: str, meta: Mapping[str, Any]) -> None:
    if meta.get("digest") != self.digest:
      raise ValueError(
        f"{path} belongs to a different search than checkpoint_dir "
        f"{self.directory!r} now holds (its fingerprint does not match); "
        f"use a new checkpoint_dir or delete the file."
      )

  # States of searches: one file per step ------------------------------------

  def save_state(
    self, step: int, meta: Mapping[str, Any], arrays: Mapping[str, Any]
  ) -> None:
    """Saves the search state after ``step`` and drops the older ones."""
    path = os.path.join(self.directory, f"state-{step:06d}.npz")

    def write():
      write_npz(path, {"digest": self.digest, "step": step, **meta}, arrays)
      for name in os.listdir(self.directory):
        if name.startswith("state-") and name != os.path.basename(path):
          try:
            os.remove(os.path.join(self.directory, name))
          except FileNotFoundError:
            pass

    self._everywhere(write)

  def load_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """The latest saved state ``(meta, arrays)``, or None."""
    names = sorted(
      n
      for n in os.listdir(self.directory)
      if n.startswith("state-") and n.endswith(".npz")
    )
    if not names:
      return None
    path = os.path.join(self.directory, names[-1])
    meta, arrays = read_npz(path)
    self._check(path, meta)
    return meta, arrays
