"""Helpers every search shares: divergence, array files, progress, extras.

* `is_inexact` and `diverged_mask`: one divergence rule for every float and
  complex dtype, bfloat16 and float16 included (numpy alone does not count
  ``ml_dtypes`` floats as inexact).
* `save_arrays`, `load_arrays` and `atomic_write`: array files that keep
  bfloat16 and the other ``ml_dtypes`` types, written to a temporary name
  and renamed, so a crash never leaves a half-written file under the real
  name; a damaged file is reported with its path.
* `progress_bar`: tqdm when it is installed, otherwise a bar that does
  nothing, so a missing optional package never fails a sweep.
* `require`: imports an optional package or raises an ImportError naming
  the extra to install.
* `MemoryBudgetWarning`: the warning of a call over the memory budget.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from typing import IO, Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np


class MemoryBudgetWarning(UserWarning):
  """A sweep runs one group of lanes per device over the memory budget.

  A `UserWarning`, so Python's default filters show it (they hide a
  ``ResourceWarning``): the advice (a smaller ``lanes=``, or a larger
  ``JOPT_SWEEP_MEMORY_BYTES``) comes before an out-of-memory failure.
  """


# Key of the entry that records the dtypes numpy's file format cannot name.
_DTYPES_KEY = "__dtypes__"
# The extra of pyproject.toml that installs matplotlib and pandas.
EXTRA = "plots"


def is_inexact(dtype: Any) -> bool:
  """Whether ``dtype`` is a float or complex type, ``ml_dtypes`` included.

  ``np.issubdtype(bfloat16, np.inexact)`` is False because numpy sees
  bfloat16 as an opaque 2-byte type; JAX's dtype lattice knows better.
  """
  return bool(jnp.issubdtype(np.dtype(dtype), jnp.inexact))


def diverged_mask(metrics: Mapping[str, Any], n: int) -> np.ndarray:
  """``[n]`` bool: the trials with a NaN or Inf in some inexact metric.

  Args:
    metrics: ``{name: array [n, ...]}``; integer and bool metrics cannot
      diverge and are ignored.
    n: the number of trials (the leading axis of every metric).

  Returns:
    A numpy bool array of shape ``[n]``.
  """
  mask = np.zeros(n, bool)
  for name, value in metrics.items():
    value = np.asarray(value)
    if value.ndim == 0 or value.shape[0] != n:
      raise ValueError(
        f"metric {name!r} must have a leading axis of {n} "
        f"trials, got shape {value.shape}."
      )
    if not is_inexact(value.dtype):
      continue
    if value.dtype.itemsize < 4 and not np.issubdtype(
      value.dtype, np.complexfloating
    ):
      value = value.astype(np.float32)  # exact for every narrower float
    mask |= ~np.isfinite(value.reshape(n, -1)).all(axis=1)
  return mask


def _ml_dtype(name: str) -> np.dtype:
  """The ``ml_dtypes`` dtype called ``name``, or ValueError."""
  kind = getattr(ml_dtypes, name, None)
  try:
    dtype = np.dtype(kind)
  except TypeError:
    dtype = None
  if kind is None or dtype is None or dtype.name != name:
    raise ValueError(f"unknown stored dtype {name!r}.")
  return dtype


def _to_storable(name: str, value: Any) -> tuple[np.ndarray, str | None]:
  """``value`` as numpy can write it, and the dtype to restore (or None)."""
  value = np.asarray(value)
  if value.dtype == object:
    raise TypeError(
      f"array {name!r} holds Python objects; only numeric, "
      "bool and string arrays can be saved."
    )
  if value.dtype.kind == "V":  # an ml_dtypes type numpy's format cannot name
    _ml_dtype(value.dtype.name)
    return value.view(f"u{value.dtype.itemsize}"), value.dtype.name
  return value, None


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[IO[bytes]]:
  """A binary file that replaces ``path`` only once it is fully written.

  Writes to a temporary file in the same folder, flushes it to disk and
  renames it over ``path`` with `os.replace` (atomic on POSIX and Windows),
  so a crash at any moment leaves either the old file or the new one. On
  an exception the temporary file is removed and ``path`` is untouched.
  """
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(
    dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
  )
  try:
    with os.fdopen(fd, "wb") as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise
  with contextlib.suppress(OSError):  # make the rename itself durable
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
      os.fsync(dir_fd)
    finally:
      os.close(dir_fd)


def save_arrays(
  target: str | os.PathLike | IO[bytes], arrays: Mapping[str, Any]
) -> None:
  """Writes ``{name: array}`` as a ``.npz`` archive, no pickle, dtypes kept.

  bfloat16, float8 and the other ``ml_dtypes`` types are stored as
  unsigned integers of the same width with their dtype name on the side,
  and come back bit for bit from `load_arrays`. A path is written with
  `atomic_write` (exactly that path: no ``.npz`` is appended); an open
  binary file is written as it is.

  Args:
    target: a path or an open binary file.
    arrays: string names to numeric, bool or string arrays (JAX arrays
      are fetched to the host).
  """
  if _DTYPES_KEY in arrays:
    raise ValueError(f"{_DTYPES_KEY!r} is a reserved array name.")
  stored, dtypes = {}, {}
  for name, value in arrays.items():
    if not isinstance(name, str):
      raise TypeError(f"array names must be strings, got {name!r}.")
    stored[name], dtype = _to_storable(name, value)
    if dtype is not None:
      dtypes[name] = dtype
  stored[_DTYPES_KEY] = np.asarray(json.dumps(dtypes))
  if isinstance(target, (str, os.PathLike)):
    with atomic_write(target) as f:
      np.savez(f, **stored)
  else:
    np.savez(target, **stored)


def load_arrays(source: str | os.PathLike | IO[bytes]) -> dict[str, np.ndarray]:
  """Reads every array `save_arrays` wrote, with its original dtype.

  Args:
    source: a path or an open binary file.

  Returns:
    ``{name: np.ndarray}`` in the order they were saved.

  Raises:
    ValueError: the file is truncated, corrupted or not such an archive;
      the message names the file.
  """
  where = (
    os.fspath(source)
    if isinstance(source, (str, os.PathLike))
    else getattr(source, "name", "<file>")
  )
  try:
    with contextlib.ExitStack() as stack:
      if isinstance(source, (str, os.PathLike)):
        # Opened here: np.load leaks its own handle when the zip is broken.
        source = stack.enter_context(open(source, "rb"))
      data = np.load(source, allow_pickle=False)
      if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError("a single array, not an .npz archive")
      with data:
        arrays = {name: data[name] for name in data.files}
    dtypes = json.loads(str(arrays.pop(_DTYPES_KEY, "{}")))
    for name, dtype in dtypes.items():
      arrays[name] = arrays[name].view(_ml_dtype(dtype))
  except (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    KeyError,
    ValueError,
    json.JSONDecodeError,
  ) as e:
    raise ValueError(
      f"{where}: not a readable array file written by jopt "
      f"(truncated or corrupted?): {e}"
    ) from e
  return arrays


class _NoBar:
  """Stands in for a tqdm bar: accepts the same calls, shows nothing."""

  def update(self, n: int = 1) -> None:
    del n

  def set_postfix(self, *args: Any, **kwargs: Any) -> None:
    del args, kwargs

  def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
    del args, kwargs

  def set_description(self, *args: Any, **kwargs: Any) -> None:
    del args, kwargs

  def close(self) -> None:
    pass

  def __enter__(self) -> _NoBar:
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()


def progress_wanted(enabled: bool) -> bool:
  """``enabled`` unless ``JOPT_PROGRESS=0``: the same in every process."""
  return bool(enabled) and os.environ.get("JOPT_PROGRESS", "1") != "0"


def progress_bar(
  total: int, desc: str, *, unit: str = "trial", enabled: bool = True
) -> Any:
  """A progress bar with ``update(n)`` and ``close()``.

  tqdm's (``tqdm.auto``: a widget in notebooks) when ``enabled`` and tqdm
  can be imported and started; otherwise a bar that shows nothing, so the
  bar never decides whether a sweep succeeds. ``JOPT_PROGRESS=0`` in the
  environment disables it too, and so does being any process but 0 of a
  JAX cluster.
  """
  if not progress_wanted(enabled) or jax.process_index() != 0:
    # one bar per cluster
    return _NoBar()
  try:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit)
  except Exception:  # noqa: BLE001  (missing or broken tqdm: no bar)
    return _NoBar()


def require(module: str, extra: str, what: str) -> Any:
  """Imports ``module`` or raises ImportError naming the extra to install.

  Args:
    module: the module to import, e.g. ``"matplotlib.figure"``.
    extra: the jopt extra that provides it, e.g. ``"plots"``.
    what: what needs it, for the message, e.g. ``"SweepResult.plot"``.
  """
  try:
    return importlib.import_module(module)
  except ImportError as e:
    top = module.split(".")[0]
    raise ImportError(f'{what} needs {top}: pip install "jopt[{extra}]"') from e
