"""Batch-size schedules (NEW) and the data-side helpers that use them.

A batch-size schedule maps a step to an int32 batch size >= 1. Like every
jopt schedule, its numeric arguments may be traced, so the batch-size
schedule can be part of a vmapped sweep.

Inside `jax.jit` array shapes are static, so a batch whose size changes
with the step cannot be a differently-shaped array. `sample_batch` therefore
draws a fixed block of ``max_batch_size`` indices and returns a mask whose
first ``batch_size(step)`` entries are active; `masked_mean` averages a
per-example loss over the active entries only. The loss (and its gradient)
is then exactly the mean over a random minibatch of the scheduled size, at
the compute cost of a ``max_batch_size`` batch.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jopt import _validation
from jopt._base import ArrayLike
from jopt.schedules._schedules import as_float

BatchSizeSchedule = Callable[[ArrayLike], jax.Array]


def _to_batch_size(value: jax.Array, upper: ArrayLike | None = None):
  size = jnp.maximum(jnp.round(value), 1.0)
  if upper is not None:
    size = jnp.minimum(size, as_float(upper))
  return size.astype(jnp.int32)


def polynomial_batch_size_schedule(
  init_batch_size: ArrayLike,
  end_batch_size: ArrayLike,
  power: ArrayLike,
  transition_steps: ArrayLike,
  transition_begin: ArrayLike = 0,
) -> BatchSizeSchedule:
  """Batch size moving polynomially from ``init_batch_size`` to ``end``.

  With :math:`b_0` = ``init_batch_size``, :math:`b_1` = ``end_batch_size``,
  :math:`p` = ``power``, :math:`T` = ``transition_steps``, :math:`B` =
  ``transition_begin`` and :math:`s = \\min(\\max(t - B, 0), T)`:

  .. math:: b(t) = \\max\\left(1,\\ \\mathrm{round}\\left((b_0 - b_1)
     (1 - s/T)^p + b_1\\right)\\right)

  (rounding half to even). With ``end_batch_size=0`` this is the
  :math:`b_0 (1 - t/T)^p` decay, floored at a batch of one; with
  ``end_batch_size > init_batch_size`` it is a polynomial growth. The result
  is monotone in ``t`` either way.

  Args:
    init_batch_size: the batch size before the transition; >= 1.
    end_batch_size: the batch size after it; >= 0.
    power: the exponent ``p`` (1 is linear); >= 0.
    transition_steps: the length ``T`` of the transition; > 0.
    transition_begin: the step ``B`` at which it starts; >= 0.

  Returns:
    A schedule ``step -> batch size`` (int32, >= 1).

  Example:
    >>> import jopt
    >>> sched = jopt.polynomial_batch_size_schedule(256, 0, 2.0, 100)
    >>> sched(0), sched(50), sched(100)
    (Array(256, dtype=int32), Array(64, dtype=int32), Array(1, dtype=int32))

  References:
    Smith et al., 2018, `Don't Decay the Learning Rate, Increase the Batch
    Size <https://arxiv.org/abs/1711.00489>`_.
  """
  _validation.check_range("init_batch_size", init_batch_size, low=1)
  _validation.check_range("end_batch_size", end_batch_size, low=0)
  _validation.check_range("power", power, low=0)
  _validation.check_range(
    "transition_steps", transition_steps, low=0, low_open=True
  )
  _validation.check_range("transition_begin", transition_begin, low=0)

  def schedule(count):
    steps = as_float(transition_steps)
    t = jnp.clip(as_float(count) - as_float(transition_begin), 0.0, steps)
    init, end = as_float(init_batch_size), as_float(end_batch_size)
    frac = (1.0 - t / steps) ** as_float(power)
    return _to_batch_size((init - end) * frac + end)

  return schedule


def exponential_batch_size_schedule(
  init_batch_size: ArrayLike,
  max_batch_size: ArrayLike,
  growth_steps: ArrayLike,
  growth_factor: ArrayLike = 2.0,
  transition_begin: ArrayLike = 0,
) -> BatchSizeSchedule:
  """Batch size multiplied by ``growth_factor`` every ``growth_steps`` steps.

  .. math:: b(t) = \\min\\left(b_{\\max},\\ \\mathrm{round}\\left(b_0\\,
     g^{\\lfloor \\max(t - B, 0) / K \\rfloor}\\right)\\right)

  The schedule of Smith et al. (2018): instead of dividing the learning rate
  by ``g`` every ``K`` steps, multiply the batch size by ``g``.

  Args:
    init_batch_size: the first batch size ``b_0``; >= 1.
    max_batch_size: the cap ``b_max``; >= ``init_batch_size``.
    growth_steps: steps ``K`` between two growths; > 0.
    growth_factor: the factor ``g``; >= 1.
    transition_begin: steps ``B`` to hold ``init_batch_size`` first; >= 0.

  Returns:
    A schedule ``step -> batch size`` (int32, in [1, max_batch_size]).

  Example:
    >>> import jopt
    >>> sched = jopt.exponential_batch_size_schedule(32, 128, growth_steps=10)
    >>> sched(0), sched(10), sched(25), sched(1000)
    (Array(32, dtype=int32), Array(64, dtype=int32), Array(128, dtype=int32), Array(128, dtype=int32))

  References:
    Smith et al., 2018, `Don't Decay the Learning Rate, Increase the Batch
    Size <https://arxiv.org/abs/1711.00489>`_.
  """
  _validation.check_range("init_batch_size", init_batch_size, low=1)
  _validation.check_range("max_batch_size", max_batch_size, low=1)
  _validation.check_range("growth_steps", growth_steps, low=0, low_open=True)
  _validation.check_range("growth_factor", growth_factor, low=1)
  _validation.check_range("transition_begin", transition_begin, low=0)
  if _validation.is_concrete(init_batch_size) and _validation.is_concrete(
    max_batch_size
  ):
    if float(init_batch_size) > float(max_batch_size):
      raise ValueError(
        "`init_batch_size` must be <= `max_batch_size`; got "
        f"{float(init_batch_size):g} > {float(max_batch_size):g}."
      )

  def schedule(count):
    elapsed = jnp.maximum(as_float(count) - as_float(transition_begin), 0.0)
    growths = jnp.floor(elapsed / as_float(growth_steps))
    size = as_float(init_batch_size) * as_float(growth_factor) ** growths
    # inf (an overflowing power) is capped before the cast to int32.
    return _to_batch_size(size, upper=max_batch_size)

  return schedule


def sample_batch(
  key: jax.Array,
  data_size: int,
  step: ArrayLike,
  schedule: BatchSizeSchedule | ArrayLike,
  max_batch_size: int,
  *,
  replace: bool = False,
) -> tuple[jax.Array, jax.Array]:
  """Draws a fixed-shape index block with the scheduled batch size active.

  Returns ``max_batch_size`` random indices into a dataset of ``data_size``
  examples and a boolean mask whose first ``min(schedule(step),
  max_batch_size)`` entries are True. Gather the block (``x[indices]``),
  compute a per-example loss, and average it with `masked_mean`: the result
  is the mean over a uniformly drawn minibatch of the scheduled size. Shapes
  do not depend on ``step``, so this works inside `jax.jit`, `jax.lax.scan`
  and `jax.vmap`.

  Pass a ``max_batch_size`` at least as large as the schedule's largest
  value (its ``init_batch_size`` for a decay, ``max_batch_size`` for a
  growth): larger scheduled sizes are capped at ``max_batch_size``.

  Args:
    key: a PRNG key.
    data_size: the number of examples (static).
    step: the training step (may be traced).
    schedule: a batch-size schedule, or a fixed (possibly traced) size.
    max_batch_size: the size of the index block (static); must be <=
      ``data_size`` unless ``replace``.
    replace: draw with replacement (default: the block has distinct
      indices, so the active minibatch has no repeats).

  Returns:
    ``(indices, mask)``: int32 ``[max_batch_size]`` and bool
    ``[max_batch_size]``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import jopt
    >>> sched = jopt.exponential_batch_size_schedule(2, 8, growth_steps=100)
    >>> idx, mask = jopt.sample_batch(jax.random.key(0), 50, 150, sched, 8)
    >>> idx.shape, int(mask.sum())
    ((8,), 4)
    >>> losses = jnp.arange(8.0)
    >>> jopt.masked_mean(losses, mask)  # (0 + 1 + 2 + 3) / 4
    Array(1.5, dtype=float32)
  """
  if data_size < 1:
    raise ValueError(f"`data_size` must be >= 1; got {data_size}.")
  if max_batch_size < 1:
    raise ValueError(f"`max_batch_size` must be >= 1; got {max_batch_size}.")
  if not replace and max_batch_size > data_size:
    raise ValueError(
      f"`max_batch_size` ({max_batch_size}) must be <= `data_size` "
      f"({data_size}) when sampling without replacement."
    )
  size = schedule(step) if callable(schedule) else schedule
  indices = jax.random.choice(
    key, data_size, (max_batch_size,), replace=replace
  ).astype(jnp.int32)
  mask = jnp.arange(max_batch_size, dtype=jnp.int32) < jnp.asarray(size)
  return indices, mask


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of ``values`` over the examples where ``mask`` is True.

  ``values`` has the batch axis first (``[batch, ...]``); ``mask`` is
  ``[batch]``. Every entry of an active example counts, so
  ``masked_mean(v, mask) == v[:b].mean()`` when the first ``b`` entries of
  ``mask`` are active. An all-False mask gives 0.

  .. math:: \\bar v = \\frac{\\sum_i m_i \\sum_j v_{ij}}
     {\\max(1, \\sum_i m_i)\\; n_{\\text{per example}}}

  Args:
    values: per-example values (a loss, say), batch axis first.
    mask: a bool (or 0/1) ``[batch]`` mask, from `sample_batch`.

  Returns:
    A scalar in the dtype of ``values``.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> jopt.masked_mean(jnp.array([1.0, 3.0, 100.0]),
    ...                  jnp.array([True, True, False]))
    Array(2., dtype=float32)
  """
  values = jnp.asarray(values)
  mask = jnp.asarray(mask).astype(bool)
  if mask.ndim != 1 or values.ndim < 1 or values.shape[0] != mask.shape[0]:
    raise ValueError(
      f"`mask` must be [batch] and `values` [batch, ...]; got shapes "
      f"{mask.shape} and {values.shape}."
    )
  wide = mask.reshape(mask.shape + (1,) * (values.ndim - 1))
  total = jnp.sum(jnp.where(wide, values, jnp.zeros([], values.dtype)))
  per_example = 1
  for dim in values.shape[1:]:
    per_example *= dim
  count = jnp.maximum(jnp.sum(mask), 1) * per_example
  return total / count.astype(values.dtype)
