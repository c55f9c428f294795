"""Scaling: `scale`, `scale_by_learning_rate`, `scale_by_schedule`, `trace`."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt import _base, _hyperparams, _numerics, _validation
from jopt._base import ArrayLike, ScalarOrSchedule
from jopt._validation import ANY, NON_NEGATIVE, Range


@_hyperparams.sweepable(step_size=ANY)
def scale(step_size: ArrayLike) -> _base.GradientTransformation:
  """Multiplies updates by a fixed ``step_size``.

  .. math:: u \\leftarrow \\alpha\\, u

  Args:
    step_size: the factor ``alpha`` (any sign).

  Returns:
    A `GradientTransformation` whose state holds ``step_size``.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.scale(-2.0)
    >>> tx.update(jnp.ones(2), tx.init(jnp.ones(2)))[0]
    Array([-2., -2.], dtype=float32)

  References:
    Optax's `scale <https://optax.readthedocs.io/en/latest/api/transformations.html>`_.
  """

  def init_fn(params):
    del params
    return _base.EmptyState()

  def update_fn(updates, state, params=None, **extra_args):
    updates = _numerics.tree_as_float(updates)
    del params, extra_args
    updates = jax.tree.map(
      lambda u: u * _numerics.cast_like(step_size, u), updates
    )
    return updates, state

  return _base.GradientTransformation(init_fn, update_fn)


class ScaleByScheduleState(NamedTuple):
  """State of `scale_by_schedule`: the number of updates so far."""

  count: jax.Array


def scale_by_schedule(
  step_size_fn: _base.Schedule,
) -> _base.GradientTransformation:
  """Multiplies updates by ``step_size_fn(count)``, count = updates so far.

  .. math:: u_t \\leftarrow \\alpha(t)\\, u_t,\\qquad t = 0, 1, \\dots

  Args:
    step_size_fn: a schedule, a function of the step count (0-based).

  Returns:
    A `GradientTransformation` keeping the step count.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.scale_by_schedule(lambda t: 1.0 / (t.astype(jnp.float32) + 1))
    >>> state = tx.init(jnp.ones(1))
    >>> _, state = tx.update(jnp.ones(1), state)
    >>> tx.update(jnp.ones(1), state)[0]
    Array([0.5], dtype=float32)

  References:
    Optax's `scale_by_schedule
    <https://optax.readthedocs.io/en/latest/api/transformations.html#optax.scale_by_schedule>`_.
  """
  if not callable(step_size_fn):
    raise TypeError(
      "`step_size_fn` must be a callable schedule: step -> value."
    )

  def init_fn(params):
    del params
    return ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    updates = _numerics.tree_as_float(updates)
    del params, extra_args
    step_size = step_size_fn(state.count)
    updates = jax.tree.map(
      lambda u: u * _numerics.cast_like(step_size, u), updates
    )
    return updates, ScaleByScheduleState(
      count=_numerics.safe_increment(state.count)
    )

  return _base.GradientTransformation(init_fn, update_fn)


@_hyperparams.sweepable(learning_rate=NON_NEGATIVE)
def scale_by_learning_rate(
  learning_rate: ScalarOrSchedule | None = None, *, flip_sign: bool = True
) -> _base.GradientTransformation:
  """Multiplies updates by the learning rate, negated by default.

  .. math:: u \\leftarrow -\\eta_t\\, u

  Args:
    learning_rate: a non-negative number or a schedule ``step -> value``;
      None leaves the updates unscaled (`identity`), as in Optax.
    flip_sign: negate (the default, for gradient descent).

  Returns:
    A `GradientTransformation`; a numeric ``learning_rate`` lives in the state.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.scale_by_learning_rate(0.1)
    >>> tx.update(jnp.ones(2), tx.init(jnp.ones(2)))[0]
    Array([-0.1, -0.1], dtype=float32)

  References:
    Robbins and Monro, 1951, `A stochastic approximation method
    <https://doi.org/10.1214/aoms/1177729586>`_.
  """
  if learning_rate is None:
    return _base.identity()
  sign = -1.0 if flip_sign else 1.0
  if callable(learning_rate):
    return scale_by_schedule(lambda count: sign * learning_rate(count))
  return scale.plain(sign * jnp.asarray(learning_rate))


class TraceState(NamedTuple):
  """State of `trace`: the momentum buffer."""

  trace: Any


# 1 is allowed, as in Optax: the trace is then the running sum of the
# updates (`sgd` still asks for momentum < 1).
@_hyperparams.sweepable(decay=Range(low=0.0, high=1.0))
def trace(
  decay: ArrayLike,
  nesterov: bool = False,
  accumulator_dtype: Any | None = None,
) -> _base.GradientTransformation:
  """Momentum: keeps a decaying sum of past updates.

  .. math::
     m_t = \\beta m_{t-1} + g_t,\\qquad
     u_t = m_t \\;\\text{(heavy ball)}\\;\\text{or}\\; g_t + \\beta m_t
     \\;\\text{(Nesterov)}

  Args:
    decay: the momentum coefficient ``beta`` in [0, 1]; 1 keeps the running
      sum of all updates.
    nesterov: use Nesterov's accelerated form.
    accumulator_dtype: dtype of the buffer; defaults to the params' dtype.

  Returns:
    A `GradientTransformation` with state `TraceState`.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.trace(decay=0.5)
    >>> state = tx.init(jnp.zeros(1))
    >>> _, state = tx.update(jnp.ones(1), state)
    >>> tx.update(jnp.ones(1), state)[0]
    Array([1.5], dtype=float32)

  References:
    Sutskever et al., 2013, `On the importance of initialization and momentum
    in deep learning <http://proceedings.mlr.press/v28/sutskever13.pdf>`_.
  """

  def init_fn(params):
    return TraceState(
      trace=_numerics.tree_zeros_like(params, accumulator_dtype)
    )

  def update_fn(updates, state, params=None, **extra_args):
    updates = _numerics.tree_as_float(updates)
    del params, extra_args
    _validation.check_tree_match("updates", state.trace, updates)

    # The sum is taken in the wider of the gradient's and the trace's dtype
    # (a bf16 trace must not round each step's float32 gradient), decay * t
    # in the trace's dtype as Optax computes it; only the stored trace is
    # cast to the accumulator dtype.
    def step(g, t):
      wide = _numerics.promote(g.dtype, t.dtype)
      return g.astype(wide) + (_numerics.cast_like(decay, t) * t).astype(wide)

    def out(g, new):
      if nesterov:
        new = g.astype(new.dtype) + _numerics.cast_like(decay, new) * new
      return new.astype(g.dtype)

    new_trace = jax.tree.map(step, updates, state.trace)
    updates = jax.tree.map(out, updates, new_trace)
    new_trace = jax.tree.map(
      lambda n, t: n.astype(t.dtype), new_trace, state.trace
    )
    return updates, TraceState(trace=new_trace)

  return _base.GradientTransformation(init_fn, update_fn)
