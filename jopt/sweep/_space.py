"""Search spaces and samplers: grid, random and scrambled-Sobol trials.

A space is a dict ``name -> distribution``. `sample` turns it into one array
per hyperparameter, holding the values exactly as the training function
receives them: float32 for continuous and float choices, int32 for integers,
and an int32 *index* into ``values`` for a non-numeric choice (an optimizer
or activation name, picked inside the program with `jax.lax.switch`).
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import math
import numbers
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

STRATEGIES = ("grid", "random", "quasirandom")


def _is_number(v: Any) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def _is_int(v: Any) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


class Distribution:
  """Base class of the one-dimensional search distributions."""

  log: bool = False
  static: bool = False

  @property
  def numeric(self) -> bool:
    return True

  def from_unit(self, u: np.ndarray) -> np.ndarray:
    """Maps points of [0, 1) to the values passed to the training function."""
    raise NotImplementedError

  def grid_values(self, num_points: int | None, name: str) -> np.ndarray:
    """The grid points along this dimension (``num_points`` for ranges)."""
    if num_points is None:
      raise ValueError(
        f"strategy='grid' needs grid_points for the continuous dimension "
        f"{name!r} ({self!r}): pass grid_points={{{name!r}: n}} or an int."
      )
    if not _is_int(num_points) or num_points < 1:
      raise ValueError(
        f"grid_points for {name!r} must be an int >= 1, got {num_points!r}."
      )
    return self._grid(int(num_points))

  def _grid(self, n: int) -> np.ndarray:
    raise NotImplementedError

  def decode(self, passed: np.ndarray) -> np.ndarray:
    """Maps passed values back to the user's values (identity for numbers)."""
    return np.asarray(passed)


@dataclasses.dataclass(frozen=True, repr=False)
class Choice(Distribution):
  """A finite set of values; see `choice`."""

  values: tuple[Any, ...]
  static: bool = False

  def __repr__(self) -> str:
    return f"choice({list(self.values)!r}, static={self.static})"

  @property
  def numeric(self) -> bool:
    return all(_is_number(v) for v in self.values)

  @property
  def integer(self) -> bool:
    return all(_is_int(v) for v in self.values)

  @property
  def boolean(self) -> bool:
    return all(isinstance(v, (bool, np.bool_)) for v in self.values)

  @property
  def log(self) -> bool:  # type: ignore[override]
    if not self.numeric or len(self.values) < 3:
      return False
    vals = np.asarray(self.values, np.float64)
    return bool(np.all(vals > 0) and vals.max() / vals.min() >= 100.0)

  def _encode_indices(self, idx: np.ndarray) -> np.ndarray:
    idx = idx.astype(np.int32)
    if self.boolean:
      return np.asarray(self.values, bool)[idx]
    if not self.numeric:
      return idx
    dtype = np.int32 if self.integer else np.float32
    return np.asarray(self.values, dtype)[idx]

  def from_unit(self, u):
    n = len(self.values)
    return self._encode_indices(np.minimum(np.floor(u * n), n - 1))

  def grid_values(self, num_points, name):
    del num_points, name  # a choice's grid is all of its values
    return self._encode_indices(np.arange(len(self.values)))

  def decode(self, passed):
    passed = np.asarray(passed)
    if self.numeric:
      return passed
    if self.boolean:
      return passed.astype(bool)
    out = np.empty(passed.shape, dtype=object)
    for i, v in np.ndenumerate(passed):
      out[i] = self.values[int(v)]
    if all(isinstance(v, str) for v in self.values):
      return out.astype(str)
    return out

  def python_value(self, passed: Any) -> Any:
    """The user's value (a Python object) for one passed value."""
    if self.numeric:
      dtype = np.int32 if self.integer else np.float32
      for value in self.values:  # the value as written: 0.1, not 0.10000000149
        if np.asarray(value, dtype) == passed:
          return value
      return int(passed) if self.integer else float(passed)
    if self.boolean:
      return bool(passed)
    return self.values[int(passed)]


@dataclasses.dataclass(frozen=True, repr=False)
class Uniform(Distribution):
  """A float uniform on ``[low, high]``; see `uniform`."""

  low: float
  high: float

  def __repr__(self) -> str:
    return f"uniform({self.low!r}, {self.high!r})"

  def from_unit(self, u):
    return _to_float32(self.low + u * (self.high - self.low), self)

  def _grid(self, n):
    return np.linspace(self.low, self.high, n).astype(np.float32)


@dataclasses.dataclass(frozen=True, repr=False)
class LogUniform(Distribution):
  """A float whose logarithm is uniform; see `log_uniform`."""

  low: float
  high: float
  log = True

  def __repr__(self) -> str:
    return f"log_uniform({self.low!r}, {self.high!r})"

  def from_unit(self, u):
    lo, hi = math.log(self.low), math.log(self.high)
    return _to_float32(np.exp(lo + u * (hi - lo)), self)

  def _grid(self, n):
    return np.geomspace(self.low, self.high, n).astype(np.float32)


@dataclasses.dataclass(frozen=True, repr=False)
class IntUniform(Distribution):
  """An integer uniform on ``{low, ..., high}``; see `int_uniform`."""

  low: int
  high: int

  def __repr__(self) -> str:
    return f"int_uniform({self.low!r}, {self.high!r})"

  def from_unit(self, u):
    span = self.high - self.low + 1
    return (self.low + np.minimum(np.floor(u * span), span - 1)).astype(
      np.int32
    )

  def _grid(self, n):
    pts = np.round(np.linspace(self.low, self.high, n))
    return np.unique(pts).astype(np.int32)


_INT32 = np.iinfo(np.int32)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_FLOAT32_TINY = float(np.finfo(np.float32).smallest_normal)


def _to_float32(values: np.ndarray, dist: Uniform | LogUniform) -> np.ndarray:
  """float64 samples as float32, never outside the float32 bounds.

  Rounding is monotone, so this only matters where ``exp(log(x))`` lands a
  float64 ulp outside ``[low, high]``.
  """
  return np.clip(
    values.astype(np.float32), np.float32(dist.low), np.float32(dist.high)
  )


def _check_int32(kind: str, what: str, values: Sequence[int]) -> None:
  """Integers reach the training function as int32: they must fit."""
  big = [v for v in values if not _INT32.min <= v <= _INT32.max]
  if big:
    raise ValueError(
      f"{kind}: {what} must fit in int32 "
      f"[{_INT32.min}, {_INT32.max}], got {big}."
    )


def _check_bounds(kind: str, low: Any, high: Any, smallest: float) -> None:
  """Bounds must be float32 numbers that float32 can tell apart.

  Values are drawn in float64 and passed as float32: a bound beyond
  float32's range would sample Inf, a log-uniform bound below its smallest
  normal number would sample 0 (or subnormals with few bits).
  """
  for name, v in (("low", low), ("high", high)):
    if not _is_number(v) or not math.isfinite(v):
      raise ValueError(f"{kind}: {name} must be a finite number, got {v!r}.")
    if not smallest <= v <= _FLOAT32_MAX:
      raise ValueError(
        f"{kind}: {name} must be in float32's range "
        f"[{smallest:.8g}, {_FLOAT32_MAX:.8g}], got {v!r}."
      )
  if low < high and np.float32(low) == np.float32(high):
    raise ValueError(
      f"{kind}: low={low!r} and high={high!r} are equal in "
      "float32, which hyperparameters are passed in; widen "
      "the range."
    )


def choice(values: Sequence[Any], *, static: bool = False) -> Choice:
  """A finite set of values: numbers, or names picked through an index.

  Numeric values reach the training function as scalar arrays (int32 when
  every value is an int, float32 otherwise), booleans as bool scalars. Any
  other values (strings such as ``"adam"``) reach it as an int32 index into
  ``values``, to be used with `jax.lax.switch`; results keep the original
  values. With ``static=True`` the value changes shapes or structure (a
  width, a batch size): trials are grouped by value, each group is compiled
  once, and the training function receives the plain Python value.

  Args:
    values: a non-empty sequence.
    static: pass Python values and compile once per distinct value.

  Returns:
    A `Choice` distribution.

  Example:
    >>> import jopt
    >>> jopt.sweep.choice(["adam", "sgd"])
    choice(['adam', 'sgd'], static=False)
  """
  if isinstance(values, (np.ndarray, range)):
    values = list(values)
  if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
    raise ValueError(f"choice: values must be a list or tuple, got {values!r}.")
  values = tuple(v.item() if isinstance(v, np.generic) else v for v in values)
  if not values:
    raise ValueError("choice: values must not be empty.")
  dist = Choice(values, bool(static))
  if dist.numeric and dist.integer:
    _check_int32("choice", "values", values)
  elif dist.numeric:
    big = [v for v in values if not abs(v) <= _FLOAT32_MAX]
    if big:
      raise ValueError(
        f"choice: values must be finite float32 numbers, got {big}."
      )
  return dist


def uniform(low: float, high: float) -> Uniform:
  """A float32 hyperparameter uniform on ``[low, high]``.

  Args:
    low: the lower bound, a finite float32 number (``|low| <= 3.4e38``).
    high: the upper bound, greater than ``low`` in float32.

  Returns:
    A `Uniform` distribution.

  Example:
    >>> import jopt
    >>> jopt.sweep.uniform(0.0, 0.99)
    uniform(0.0, 0.99)
  """
  _check_bounds("uniform", low, high, -_FLOAT32_MAX)
  if low >= high:
    raise ValueError(f"uniform: need low < high, got low={low}, high={high}.")
  return Uniform(float(low), float(high))


def log_uniform(low: float, high: float) -> LogUniform:
  """A positive float32 hyperparameter whose logarithm is uniform.

  The usual space for learning rates and weight decays: each decade between
  ``low`` and ``high`` gets the same share of the trials, and plots use a
  log axis.

  Args:
    low: the lower bound, at least float32's smallest normal number
      (about 1.18e-38).
    high: the upper bound, greater than ``low`` in float32 and at most
      float32's largest (about 3.4e38).

  Returns:
    A `LogUniform` distribution.

  Example:
    >>> import jopt
    >>> jopt.sweep.log_uniform(1e-4, 1e-1)
    log_uniform(0.0001, 0.1)
  """
  if _is_number(low) and low <= 0:
    raise ValueError(f"log_uniform: need low > 0, got low={low}.")
  _check_bounds("log_uniform", low, high, _FLOAT32_TINY)
  if low >= high:
    raise ValueError(
      f"log_uniform: need low < high, got low={low}, high={high}."
    )
  return LogUniform(float(low), float(high))


def int_uniform(low: int, high: int) -> IntUniform:
  """An int32 hyperparameter uniform on ``{low, ..., high}`` (inclusive).

  Args:
    low: the smallest value.
    high: the largest value, >= ``low``.

  Returns:
    An `IntUniform` distribution.

  Example:
    >>> import jopt
    >>> jopt.sweep.int_uniform(1, 8)
    int_uniform(1, 8)
  """
  for name, v in (("low", low), ("high", high)):
    if not _is_int(v):
      raise ValueError(f"int_uniform: {name} must be an int, got {v!r}.")
  if low > high:
    raise ValueError(
      f"int_uniform: need low <= high, got low={low}, high={high}."
    )
  _check_int32("int_uniform", "low and high", (low, high))
  return IntUniform(int(low), int(high))


def validate_space(space: Any) -> dict[str, Distribution]:
  """Checks that ``space`` is a non-empty dict of distributions."""
  if not isinstance(space, Mapping):
    raise ValueError(
      f"space must be a dict name -> distribution, got {type(space).__name__}."
    )
  if not space:
    raise ValueError("space must not be empty.")
  for name, dist in space.items():
    if not isinstance(name, str):
      raise ValueError(f"space names must be strings, got {name!r}.")
    if not isinstance(dist, Distribution):
      raise ValueError(
        f"space[{name!r}] must be a jopt.sweep distribution (choice, "
        f"uniform, log_uniform, int_uniform), got {dist!r}."
      )
  return dict(space)


def key_seed(key: Any) -> np.ndarray:
  """The raw uint32 data of a JAX PRNG key (typed or legacy)."""
  if key is None:
    raise ValueError(
      "key must be a JAX PRNG key (jax.random.key(seed)), got None."
    )
  try:
    key = jax.numpy.asarray(key) if not isinstance(key, jax.Array) else key
  except (TypeError, ValueError) as e:
    raise ValueError(f"key must be a JAX PRNG key, got {key!r}.") from e
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  data = np.asarray(key)
  if data.dtype != np.uint32 or data.size < 1:
    raise ValueError(f"key must be a JAX PRNG key, got {key!r}.")
  return data.ravel()


def check_num_trials(num_trials: Any, strategy: str) -> None:
  if num_trials is None:
    if strategy != "grid":
      raise ValueError(f"strategy={strategy!r} needs num_trials.")
    return
  if not _is_int(num_trials) or num_trials <= 0:
    raise ValueError(f"num_trials must be a positive int, got {num_trials!r}.")


def _grid_points_for(grid_points: Any, name: str) -> int | None:
  if isinstance(grid_points, Mapping):
    return grid_points.get(name)
  return grid_points


def sample(
  space: Mapping[str, Distribution],
  num_trials: int | None,
  key: jax.Array,
  strategy: str = "random",
  *,
  grid_points: int | Mapping[str, int] | None = None,
) -> dict[str, np.ndarray]:
  """Draws the trials of a sweep: one array of values per hyperparameter.

  * ``"grid"``: the cartesian product of every choice's values (continuous
    dimensions get ``grid_points`` points, linear or log-spaced), in the
    order of the space's keys, last key fastest. ``num_trials`` may be None;
    when given it must equal the grid's size.
  * ``"random"``: independent draws, reproducible from ``key``.
  * ``"quasirandom"``: a scrambled Sobol sequence (`scipy.stats.qmc`),
    seeded from ``key``: low-discrepancy coverage of the unit cube, mapped
    through each dimension's distribution.

  Args:
    space: a dict ``name -> distribution``.
    num_trials: the number of trials (> 0); optional for the grid.
    key: a JAX PRNG key.
    strategy: ``"grid"``, ``"random"`` or ``"quasirandom"``.
    grid_points: points per continuous dimension for the grid: an int, or a
      dict ``name -> int``.

  Returns:
    ``{name: np.ndarray [num_trials]}``, values as passed to the training
    function (int32 indices for non-numeric choices).

  Example:
    >>> import jax, jopt
    >>> space = {"lr": jopt.sweep.log_uniform(1e-3, 1e-1),
    ...          "opt": jopt.sweep.choice(["adam", "sgd"])}
    >>> trials = jopt.sweep.sample(space, 4, jax.random.key(0))
    >>> trials["lr"].shape, trials["opt"].dtype
    ((4,), dtype('int32'))
  """
  space = validate_space(space)
  if strategy not in STRATEGIES:
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}.")
  check_num_trials(num_trials, strategy)
  seed = key_seed(key)
  if strategy == "grid":
    axes = [
      d.grid_values(_grid_points_for(grid_points, n), n)
      for n, d in space.items()
    ]
    size = math.prod(len(a) for a in axes)
    if num_trials is not None and num_trials != size:
      raise ValueError(
        f"strategy='grid' has {size} points; got num_trials="
        f"{num_trials} (leave it None for the full grid)."
      )
    idx = np.array(list(itertools.product(*[range(len(a)) for a in axes])))
    return {
      n: a[idx[:, j]] for j, (n, a) in enumerate(zip(space, axes, strict=True))
    }
  dim = len(space)
  rng = np.random.default_rng(np.random.SeedSequence(seed.tolist()))
  if strategy == "random":
    u = rng.random((num_trials, dim))
  else:
    from scipy.stats import qmc

    sobol = qmc.Sobol(d=dim, scramble=True, seed=rng)
    with warnings.catch_warnings():
      # Sobol's balance needs a power-of-two count; any count is still fine.
      warnings.simplefilter("ignore", UserWarning)
      u = sobol.random(num_trials)
  return {n: d.from_unit(u[:, j]) for j, (n, d) in enumerate(space.items())}


def value_name(value: Any) -> str:
  """A non-numeric choice value as text that is the same in every process.

  Strings as they are, functions by module and qualified name, anything
  else by its ``str`` without memory addresses.
  """
  if isinstance(value, str):
    return value
  base = inspect.unwrap(value) if callable(value) else value
  name = getattr(base, "__qualname__", None) or getattr(base, "__name__", None)
  if name is not None:
    return f"{getattr(base, '__module__', None) or '?'}.{name}"
  return re.sub(r" at 0x[0-9a-fA-F]+", "", str(value))
