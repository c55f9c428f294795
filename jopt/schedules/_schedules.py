"""Schedules: pure functions ``step -> value`` (decays, warmup, joins).

Every numeric argument of a schedule constructor may be a traced array, so a
schedule's own parameters can be swept under `jax.vmap` (a peak learning rate,
a decay length, a warmup length...). Only structural arguments (``staircase``,
the number of boundaries, the number of joined schedules) are static. Values
are computed in float32. Concrete invalid arguments raise ``ValueError``
naming the argument; traced ones cannot be checked and are the caller's
responsibility.

The cyclic schedules (SGDR, one-cycle) live in ``_schedules_cyclic.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt import _validation
from jopt._base import ArrayLike, Schedule


def as_float(x: ArrayLike) -> jax.Array:
  """Casts a step count or a schedule parameter to float32.

  Python and numpy numbers go through numpy, so a step count beyond int32
  (``decay_steps=10**10``) is rounded to float32 instead of overflowing.
  """
  if isinstance(x, (int, float, np.generic, np.ndarray)):
    return jnp.asarray(np.asarray(x, dtype=np.float32))
  return jnp.asarray(x).astype(jnp.float32)


def check_sorted(name: str, values: Sequence[Any]) -> None:
  """Raises ``ValueError`` if concrete ``values`` are not non-decreasing."""
  concrete = [v for v in values if _validation.is_concrete(v)]
  if len(concrete) != len(values):
    return
  floats = [float(v) for v in concrete]
  if any(b < a for a, b in zip(floats, floats[1:], strict=False)):
    raise ValueError(f"`{name}` must be sorted increasingly; got {floats}.")


def _check_less(
  low_name: str, low: Any, high_name: str, high: Any, strict: bool
) -> None:
  """Raises ``ValueError`` when concrete ``low`` is not below ``high``."""
  if low is None or high is None:
    return
  if not (_validation.is_concrete(low) and _validation.is_concrete(high)):
    return
  lo, hi = float(low), float(high)
  if (lo >= hi) if strict else (lo > hi):
    sign = "<" if strict else "<="
    raise ValueError(
      f"`{low_name}` must be {sign} `{high_name}`; got {low_name}={lo:g}, "
      f"{high_name}={hi:g}."
    )


def constant_schedule(value: ArrayLike) -> Schedule:
  """A schedule that always returns ``value``.

  .. math:: v(t) = v

  Args:
    value: the value held constant.

  Returns:
    A schedule ``step -> value``, broadcast to the shape of ``step``.

  Example:
    >>> import jopt
    >>> jopt.constant_schedule(0.5)(100)
    Array(0.5, dtype=float32, weak_type=True)

  References:
    Optax's `constant_schedule
    <https://optax.readthedocs.io/en/latest/api/optimizer_schedules.html>`_.
  """

  def schedule(count):
    return jnp.broadcast_to(jnp.asarray(value), jnp.shape(count))

  return schedule


def _polynomial(count, init_value, end_value, power, transition_steps, begin):
  """The polynomial transition, without validation (shared with warmups)."""
  steps = as_float(transition_steps)
  t = jnp.clip(as_float(count) - as_float(begin), 0.0, steps)
  frac = 1.0 - t / steps
  init, end = as_float(init_value), as_float(end_value)
  return (init - end) * frac ** as_float(power) + end


def polynomial_schedule(
  init_value: ArrayLike,
  end_value: ArrayLike,
  power: ArrayLike,
  transition_steps: ArrayLike,
  transition_begin: ArrayLike = 0,
) -> Schedule:
  """Polynomial transition from ``init_value`` to ``end_value``.

  With :math:`I` = ``init_value``, :math:`E` = ``end_value``, :math:`p` =
  ``power``, :math:`T` = ``transition_steps``, :math:`B` =
  ``transition_begin`` and :math:`s = \\min(\\max(t - B, 0), T)`:

  .. math:: v(t) = (I - E)\\,(1 - s / T)^p + E

  so the value is :math:`I` until step :math:`B` and :math:`E` from step
  :math:`B + T` on. With ``end_value=0`` this is the :math:`a(1 - t/T)^p`
  decay.

  Args:
    init_value: the value before the transition.
    end_value: the value after it.
    power: the exponent ``p`` (1 is linear).
    transition_steps: the length ``T`` of the transition; must be > 0 (Optax
      silently returns a constant schedule instead; jopt raises).
    transition_begin: the step ``B`` at which the transition starts; >= 0.

  Returns:
    A schedule ``step -> value`` (float32).

  Example:
    >>> import jopt
    >>> sched = jopt.polynomial_schedule(1.0, 0.0, power=2, transition_steps=10)
    >>> sched(5)
    Array(0.25, dtype=float32)

  References:
    Optax's `polynomial_schedule
    <https://optax.readthedocs.io/en/latest/api/optimizer_schedules.html>`_.
  """
  _validation.check_range(
    "transition_steps", transition_steps, low=0, low_open=True
  )
  _validation.check_range("transition_begin", transition_begin, low=0)

  def schedule(count):
    return _polynomial(
      count, init_value, end_value, power, transition_steps, transition_begin
    )

  return schedule


def linear_schedule(
  init_value: ArrayLike,
  end_value: ArrayLike,
  transition_steps: ArrayLike,
  transition_begin: ArrayLike = 0,
) -> Schedule:
  """Linear transition from ``init_value`` to ``end_value``.

  .. math:: v(t) = I + (E - I)\\,\\min(\\max(t - B, 0), T) / T

  This is `polynomial_schedule` with ``power=1``.

  Args:
    init_value: the value ``I`` before the transition.
    end_value: the value ``E`` after it.
    transition_steps: the length ``T`` of the transition; must be > 0.
    transition_begin: the step ``B`` at which it starts; >= 0.

  Returns:
    A schedule ``step -> value`` (float32).

  Example:
    >>> import jopt
    >>> jopt.linear_schedule(0.0, 1.0, transition_steps=4)(1)
    Array(0.25, dtype=float32)

  References:
    Optax's `linear_schedule
    <https://optax.readthedocs.io/en/latest/api/optimizer_schedules.html>`_.
  """
  return polynomial_schedule(
    init_value, end_value, 1.0, transition_steps, transition_begin
  )


def exponential_decay(
  init_value: ArrayLike,
  transition_steps: ArrayLike,
  decay_rate: ArrayLike,
  transition_begin: ArrayLike = 0,
  staircase: bool = False,
  end_value: ArrayLike | None = None,
) -> Schedule:
  """Exponential decay (or growth), continuous or in steps.

  With :math:`I` = ``init_value``, :math:`r` = ``decay_rate``, :math:`T` =
  ``transition_steps`` and :math:`B` = ``transition_begin``:

  .. math::
     v(t) = I\\, r^{(t - B)/T} \\;\\text{for}\\; t > B,\\qquad v(t) = I
     \\;\\text{otherwise},

  with the exponent floored (:math:`\\lfloor (t-B)/T \\rfloor`) when
  ``staircase`` is true: the step decay "multiply by r every T steps". With
  ``end_value``, the value is clipped at it: from below when ``r < 1``, from
  above when ``r >= 1``.

  Args:
    init_value: the initial value ``I``.
    transition_steps: the step length ``T``; must be > 0.
    decay_rate: the factor ``r`` per ``T`` steps; must be > 0 (Optax returns
      a constant schedule for 0; jopt raises).
    transition_begin: steps to hold ``init_value`` before decaying; >= 0.
    staircase: decay at discrete intervals (static).
    end_value: optional bound the value stops at.

  Returns:
    A schedule ``step -> value`` (float32).

  Example:
    >>> import jopt
    >>> sched = jopt.exponential_decay(1.0, 10, 0.5, staircase=True)
    >>> sched(25)
    Array(0.25, dtype=float32)

  References:
    Optax's `exponential_decay
    <https://optax.readthedocs.io/en/latest/api/optimizer_schedules.html>`_.
  """
  _validation.check_range(
    "transition_steps", transition_steps, low=0, low_open=True
  )
  _validation.check_range("decay_rate", decay_rate, low=0, low_open=True)
  _validation.check_range("transition_begin", transition_begin, low=0)

  def schedule(count):
    init, rate = as_float(init_value), as_float(decay_rate)
    elapsed = as_float(count) - as_float(transition_begin)
    exponent = elapsed / as_float(transition_steps)
    if staircase:
      exponent = jnp.floor(exponent)
    value = jnp.where(elapsed <= 0, init, init * rate**exponent)
    if end_value is not None:
      end = as_float(end_value)
      value = jnp.where(
        rate < 1.0, jnp.maximum(value, end), jnp.minimum(value, end)
      )
    return value

  return schedule


def piecewise_constant_schedule(
  init_value: ArrayLike,
  boundaries_and_scales: Mapping[int, ArrayLike] | None = None,
) -> Schedule:
  """A constant value multiplied by a factor at each boundary.

  .. math:: v(t) = I \\prod_{i:\\, t \\ge b_i} s_i

  Args:
    init_value: the value ``I`` before the first boundary.
    boundaries_and_scales: ``{step b_i: scale s_i}``; steps must be >= 0
      (static: they are dict keys), scales >= 0 (may be traced).

  Returns:
    A schedule ``step -> value`` (float32).

  Example:
    >>> import jopt
    >>> sched = jopt.piecewise_constant_schedule(1.0, {10: 0.1, 20: 0.1})
    >>> sched(15), sched(25)
    (Array(0.1, dtype=float32), Array(0.01, dtype=float32))

  References:
    Optax's `piecewise_constant_schedule
    <https://optax.readthedocs.io/en/latest/api/optimizer_schedules.html>`_.
  """
  items = sorted((boundaries_and_scales or {}).items())
  for boundary, scale in items:
    _validation.check_range("boundaries_and_scales (a step)", boundary, low=0)
    _validation.check_range("boundaries_and_scales (a scale)", scale, low=0)

  def schedule(count):
    t = as_float(count)
    value = jnp.broadcast_to(as_float(init_value), t.shape)
    for boundary, scale in items:
      value = jnp.where(t < as_float(boundary), value, value * as_float(scale))
    return value

  return schedule


def join_schedules(
  schedules: Sequence[Schedule], boundaries: Sequence[ArrayLike]
) -> Schedule:
  """Runs ``schedules`` one after the other, switching at ``boundaries``.

  Schedule ``k`` is evaluated at ``t - boundaries[k-1]``: each one starts
  counting from 0 at its boundary.

  .. math:: v(t) = s_k(t - b_{k-1}) \\quad\\text{for } b_{k-1} \\le t < b_k,
     \\qquad b_{-1} = 0,\\; b_K = \\infty

  Args:
    schedules: the schedules, in order.
    boundaries: ``len(schedules) - 1`` steps, sorted, >= 0 (may be traced).

  Returns:
    A schedule ``step -> value``.

  Example:
    >>> import jopt
    >>> sched = jopt.join_schedules(
    ...     [jopt.constant_schedule(1.0), jopt.linear_schedule(1.0, 0.0, 10)],
    ...     boundaries=[5])
    >>> sched(10)
    Array(0.5, dtype=float32)

  References:
    Optax's `join_schedules
    <https://optax.readthedocs.io/en/latest/api/optimizer_schedules.html>`_.
  """
  schedules, boundaries = list(schedules), list(boundaries)
  if not schedules:
    raise ValueError("`schedules` must contain at least one schedule.")
  if len(boundaries) != len(schedules) - 1:
    raise ValueError(
      f"`boundaries` must have len(schedules) - 1 = {len(schedules) - 1} "
      f"entries; got {len(boundaries)}."
    )
  for boundary in boundaries:
    _validation.check_range("boundaries", boundary, low=0)
  check_sorted("boundaries", boundaries)

  def schedule(count):
    value = schedules[0](count)
    for boundary, sched in zip(boundaries, schedules[1:], strict=True):
      step, start = count, boundary
      integral = all(
        jnp.issubdtype(jnp.result_type(x), jnp.integer) for x in (step, start)
      )
      if not integral:
        step, start = as_float(step), as_float(start)
      value = jnp.where(step < start, value, sched(step - start))
    return value

  return schedule


def cosine_decay_schedule(
  init_value: ArrayLike,
  decay_steps: ArrayLike,
  alpha: ArrayLike = 0.0,
  exponent: ArrayLike = 1.0,
) -> Schedule:
  """Cosine decay from ``init_value`` to ``alpha * init_value``.

  With :math:`T` = ``decay_steps``, :math:`p` = ``exponent`` and
  :math:`s = \\min(t, T)`:

  .. math::
     v(t) = I\\left[(1 - \\alpha)\\left(\\tfrac{1}{2}(1 + \\cos(\\pi s / T))
     \\right)^p + \\alpha\\right]

  Args:
    init_value: the initial value ``I``.
    decay_steps: the length ``T`` of the decay; must be > 0.
    alpha: the final value as a fraction of ``init_value``.
    exponent: the power ``p`` applied to the cosine factor; >= 0.

  Returns:
    A schedule ``step -> value`` (float32).

  Example:
    >>> import jopt
    >>> sched = jopt.cosine_decay_schedule(1.0, decay_steps=10)
    >>> print(f"{sched(0):.3f} {sched(5):.3f} {sched(10):.3f}")
    1.000 0.500 0.000

  References:
    Loshchilov & Hutter, 2017, `SGDR: Stochastic Gradient Descent with Warm
    Restarts <https://arxiv.org/abs/1608.03983>`_.
  """
  _validation.check_range("decay_steps", decay_steps, low=0, low_open=True)
  _validation.check_range("exponent", exponent, low=0)

  def schedule(count):
    return _cosine(count, init_value, decay_steps, alpha, exponent)

  return schedule


def _cosine(count, init_value, decay_steps, alpha, exponent):
  steps = as_float(decay_steps)
  t = jnp.minimum(as_float(count), steps)
  cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * t / steps))
  alpha = as_float(alpha)
  return as_float(init_value) * (
    (1.0 - alpha) * cosine ** as_float(exponent) + alpha
  )


def warmup_cosine_decay_schedule(
  init_value: ArrayLike,
  peak_value: ArrayLike,
  warmup_steps: ArrayLike,
  decay_steps: ArrayLike,
  end_value: ArrayLike = 0.0,
  exponent: ArrayLike = 1.0,
) -> Schedule:
  """Linear warmup to ``peak_value``, then cosine decay to ``end_value``.

  With :math:`W` = ``warmup_steps`` and :math:`D` = ``decay_steps`` (the
  total length, warmup included):

  .. math::
     v(t) = \\begin{cases}
       I + (P - I)\\, t / W & t < W \\\\
       E + (P - E)\\left(\\tfrac{1}{2}(1 + \\cos(\\pi \\tfrac{\\min(t - W,
       D - W)}{D - W}))\\right)^p & t \\ge W
     \\end{cases}

  (for ``exponent`` :math:`p \\ne 1` the cosine factor multiplies
  :math:`P - E` after being raised to :math:`p`, as in Optax).

  Args:
    init_value: the value ``I`` at step 0.
    peak_value: the value ``P`` at the end of the warmup.
    warmup_steps: the warmup length ``W``; >= 0.
    decay_steps: the total length ``D``; must be > ``warmup_steps``.
    end_value: the final value ``E``.
    exponent: the power ``p`` of the cosine factor; >= 0.

  Returns:
    A schedule ``step -> value`` (float32).

  Example:
    >>> import jopt
    >>> sched = jopt.warmup_cosine_decay_schedule(0.0, 1.0, 10, 110)
    >>> print(f"{sched(5):.3f} {sched(10):.3f} {sched(60):.3f}")
    0.500 1.000 0.500

  References:
    Loshchilov & Hutter, 2017, `SGDR: Stochastic Gradient Descent with Warm
    Restarts <https://arxiv.org/abs/1608.03983>`_; Goyal et al., 2017,
    `Accurate, Large Minibatch SGD <https://arxiv.org/abs/1706.02677>`_.
  """
  _validation.check_range("warmup_steps", warmup_steps, low=0)
  _validation.check_range("decay_steps", decay_steps, low=0, low_open=True)
  _validation.check_range("exponent", exponent, low=0)
  _check_less("warmup_steps", warmup_steps, "decay_steps", decay_steps, True)

  def schedule(count):
    warmup = as_float(warmup_steps)
    peak, end = as_float(peak_value), as_float(end_value)
    alpha = jnp.where(peak == 0.0, 0.0, end / jnp.where(peak == 0.0, 1.0, peak))
    # A zero-length warmup is never active (t >= 0 = W), so any positive
    # divisor keeps its unused branch finite.
    ramp = _polynomial(
      count, init_value, peak, 1.0, jnp.maximum(warmup, 1.0), 0.0
    )
    decay = _cosine(
      as_float(count) - warmup,
      peak,
      as_float(decay_steps) - warmup,
      alpha,
      exponent,
    )
    return jnp.where(as_float(count) < warmup, ramp, decay)

  return schedule
