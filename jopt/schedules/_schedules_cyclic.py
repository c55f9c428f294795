"""Cyclic schedules: SGDR warm restarts and one-cycle schedules.

As in ``_schedules.py``, every numeric argument may be traced (so
``transition_steps`` or ``pct_start`` can be swept); the phase boundaries are
``floor(pct * transition_steps)`` computed in float32 for concrete and traced
values alike, so a vmapped sweep equals a loop over the same values. (Optax
computes ``int(pct * transition_steps)`` in float64, which differs where the
product falls just below an integer: ``pct_start=0.29`` with 100 steps
peaks at step 28 in Optax and at step 29 here.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import jax
import jax.numpy as jnp

from jopt import _validation
from jopt._base import ArrayLike, Schedule
from jopt.schedules._schedules import (
  as_float,
  join_schedules,
  warmup_cosine_decay_schedule,
)


def _check_onecycle(
  transition_steps, div_factor, final_div_factor, **fractions: ArrayLike
) -> None:
  """The argument checks the one-cycle schedules share."""
  _validation.check_range(
    "transition_steps", transition_steps, low=0, low_open=True
  )
  for name, value in fractions.items():
    _validation.check_range(name, value, low=0.0, high=1.0)
  _validation.check_range("div_factor", div_factor, low=0, low_open=True)
  _validation.check_range(
    "final_div_factor", final_div_factor, low=0, low_open=True
  )


def _piecewise_interpolate(
  count: ArrayLike,
  boundaries: list[jax.Array],
  values: list[jax.Array],
  cosine: bool,
) -> jax.Array:
  """Interpolates between ``values[k]`` at ``boundaries[k]`` (k = 0..n).

  Before ``boundaries[0]`` nothing is active (the boundaries start at 0 and
  steps are >= 0); from ``boundaries[-1]`` on, the value is ``values[-1]``.
  """
  t = as_float(count)[..., None]  # The phase axis goes last.

  def phases(xs):  # [n] with leading singleton axes to match ``t``.
    x = jnp.stack(xs)
    return x.reshape((1,) * (t.ndim - 1) + x.shape)

  starts, ends = phases(boundaries[:-1]), phases(boundaries[1:])
  low, high = phases(values[:-1]), phases(values[1:])
  frac = (t - starts) / jnp.maximum(ends - starts, 1.0)
  if cosine:
    interpolated = high + (low - high) / 2.0 * (jnp.cos(jnp.pi * frac) + 1.0)
  else:
    interpolated = (high - low) * frac + low
  active = (starts <= t) & (t < ends)
  inside = jnp.sum(jnp.where(active, interpolated, 0.0), axis=-1)
  t = t[..., 0]
  return inside + jnp.where(boundaries[-1] <= t, values[-1], 0.0)


def linear_onecycle_schedule(
  transition_steps: ArrayLike,
  peak_value: ArrayLike,
  pct_start: ArrayLike = 0.3,
  pct_final: ArrayLike = 0.85,
  div_factor: ArrayLike = 25.0,
  final_div_factor: ArrayLike = 1e4,
) -> Schedule:
  """One-cycle schedule with three linear phases.

  With :math:`T` = ``transition_steps``, :math:`P` = ``peak_value`` and
  :math:`v_0 = P / \\text{div\\_factor}`: from step 0 to
  :math:`\\lfloor \\text{pct\\_start}\\, T \\rfloor` the value rises linearly
  from :math:`v_0` to :math:`P`; to
  :math:`\\lfloor \\text{pct\\_final}\\, T \\rfloor` it falls back to
  :math:`v_0`; to :math:`T` it falls to :math:`v_0 /
  \\text{final\\_div\\_factor}` and stays there.

  Args:
    transition_steps: the cycle length ``T``; must be > 0.
    peak_value: the peak ``P``.
    pct_start: fraction of the cycle spent rising, in [0, 1].
    pct_final: fraction of the cycle at which the value is back at ``v0``, in
      [``pct_start``, 1].
    div_factor: ``v0 = peak_value / div_factor``; > 0.
    final_div_factor: the final value is ``v0 / final_div_factor``; > 0.

  Returns:
    A schedule ``step -> value`` (float32).

  Example:
    >>> import jopt
    >>> sched = jopt.linear_onecycle_schedule(100, peak_value=1.0)
    >>> sched(30)
    Array(1., dtype=float32)

  References:
    Smith & Topin, 2017, `Super-Convergence: Very Fast Training of Neural
    Networks Using Large Learning Rates <https://arxiv.org/abs/1708.07120>`_.
  """
  _check_onecycle(
    transition_steps,
    div_factor,
    final_div_factor,
    pct_start=pct_start,
    pct_final=pct_final,
  )
  if _validation.is_concrete(pct_start) and _validation.is_concrete(pct_final):
    if float(pct_start) > float(pct_final):
      raise ValueError(
        f"`pct_start` must be <= `pct_final`; got {float(pct_start):g} > "
        f"{float(pct_final):g}."
      )

  def schedule(count):
    steps = as_float(transition_steps)
    div = as_float(div_factor)
    scales = [as_float(peak_value) / div, div, 1.0 / div]
    scales.append(1.0 / as_float(final_div_factor))
    values = list(jnp.cumprod(jnp.stack(scales)))
    boundaries = [
      jnp.zeros([], jnp.float32),
      jnp.floor(as_float(pct_start) * steps),
      jnp.floor(as_float(pct_final) * steps),
      steps,
    ]
    return _piecewise_interpolate(count, boundaries, values, cosine=False)

  return schedule


def cosine_onecycle_schedule(
  transition_steps: ArrayLike,
  peak_value: ArrayLike,
  pct_start: ArrayLike = 0.3,
  div_factor: ArrayLike = 25.0,
  final_div_factor: ArrayLike = 1e4,
) -> Schedule:
  """One-cycle schedule with two cosine phases.

  With :math:`v_0 = P / \\text{div\\_factor}`, the value rises along half a
  cosine from :math:`v_0` to :math:`P` over the first
  :math:`\\lfloor \\text{pct\\_start}\\, T \\rfloor` steps, then falls along
  half a cosine to :math:`v_0 / \\text{final\\_div\\_factor}` at step
  :math:`T`, and stays there. Between boundary values :math:`a \\to b`:

  .. math:: v = b + \\tfrac{a - b}{2}\\,(1 + \\cos(\\pi\\, \\text{frac}))

  Args:
    transition_steps: the cycle length ``T``; must be > 0.
    peak_value: the peak ``P``.
    pct_start: fraction of the cycle spent rising, in [0, 1].
    div_factor: ``v0 = peak_value / div_factor``; > 0.
    final_div_factor: the final value is ``v0 / final_div_factor``; > 0.

  Returns:
    A schedule ``step -> value`` (float32).

  Example:
    >>> import jopt
    >>> sched = jopt.cosine_onecycle_schedule(100, peak_value=1.0)
    >>> sched(30)
    Array(1., dtype=float32)

  References:
    Smith & Topin, 2017, `Super-Convergence: Very Fast Training of Neural
    Networks Using Large Learning Rates <https://arxiv.org/abs/1708.07120>`_.
  """
  _check_onecycle(
    transition_steps, div_factor, final_div_factor, pct_start=pct_start
  )

  def schedule(count):
    steps = as_float(transition_steps)
    div = as_float(div_factor)
    scales = [as_float(peak_value) / div, div]
    scales.append(1.0 / (div * as_float(final_div_factor)))
    values = list(jnp.cumprod(jnp.stack(scales)))
    boundaries = [
      jnp.zeros([], jnp.float32),
      jnp.floor(as_float(pct_start) * steps),
      steps,
    ]
    return _piecewise_interpolate(count, boundaries, values, cosine=True)

  return schedule


def sgdr_schedule(cosine_kwargs: Iterable[Mapping[str, ArrayLike]]) -> Schedule:
  """SGD with warm restarts: warmup-cosine cycles, one after the other.

  Cycle ``k`` is ``warmup_cosine_decay_schedule(**cosine_kwargs[k])`` and
  lasts its ``decay_steps``; the next cycle restarts from its own
  ``init_value``:

  .. math:: v(t) = c_k(t - T_k),\\qquad T_k = \\sum_{j<k} \\text{decay\\_steps}_j
     \\le t < T_{k+1}

  Args:
    cosine_kwargs: one dict of `warmup_cosine_decay_schedule` arguments per
      cycle (their values may be traced).

  Returns:
    A schedule ``step -> value`` (float32).

  Example:
    >>> import jopt
    >>> cycle = dict(init_value=0.0, peak_value=1.0, warmup_steps=2,
    ...              decay_steps=10)
    >>> sched = jopt.sgdr_schedule([cycle, cycle])
    >>> sched(2), sched(12)
    (Array(1., dtype=float32), Array(1., dtype=float32))

  References:
    Loshchilov & Hutter, 2017, `SGDR: Stochastic Gradient Descent with Warm
    Restarts <https://arxiv.org/abs/1608.03983>`_.
  """
  cycles = [dict(kwargs) for kwargs in cosine_kwargs]
  if not cycles:
    raise ValueError("`cosine_kwargs` must describe at least one cycle.")
  schedules, boundaries, start = [], [], 0
  for kwargs in cycles:
    schedules.append(warmup_cosine_decay_schedule(**kwargs))
    start = start + kwargs["decay_steps"]
    boundaries.append(start)
  return join_schedules(schedules, boundaries[:-1])
