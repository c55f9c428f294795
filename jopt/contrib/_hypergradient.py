"""Hypergradient descent: `sgd_hd` and `adam_hd` learn their learning rate.

Baydin et al. (2018) take a gradient step on the learning rate itself: the
derivative of the loss at the new params with respect to the learning rate
used for the last step is ``-<g_t, d_{t-1}>``, with ``d`` the step's
direction, so one inner product per step (and one stored copy of the last
direction) adapts a global learning rate. ``learning_rate`` is the initial
rate ``alpha_0`` (read when the first update runs, so `set_hyperparams`
between ``init`` and the first step takes effect) and ``hypergrad_lr`` the
hyper-learning rate ``beta``; both, like the base optimizer's coefficients,
live in the state.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt import _base, _hyperparams, _numerics, _tree_math, _validation
from jopt._base import ArrayLike
from jopt.transforms import _adam, _combine, _scale


class ScaleByHypergradientState(NamedTuple):
  """State of `sgd_hd` and `adam_hd`.

  Attributes:
    count: the number of updates so far (int32).
    learning_rate: the current, adapted learning rate ``alpha_t``.
    direction: the last step's direction ``d_{t-1}`` (the update is
      ``-alpha_t d_t``).
    inner_state: the state of the transformation giving the direction
      (momentum or Adam's moments).
  """

  count: jax.Array
  learning_rate: jax.Array
  direction: Any
  inner_state: Any


def _scale_by_hypergradient(
  direction: _base.GradientTransformation,
  learning_rate: ArrayLike,
  hypergrad_lr: ArrayLike,
) -> _base.GradientTransformation:
  """``-alpha_t d_t`` with ``alpha_t = alpha_{t-1} + beta <g_t, d_{t-1}>``."""

  def init_fn(params):
    dtype = _tree_math.scalar_dtype(params)
    return ScaleByHypergradientState(
      count=jnp.zeros([], jnp.int32),
      learning_rate=jnp.asarray(learning_rate).astype(dtype),
      direction=_numerics.tree_zeros_like(params),
      inner_state=direction.init(params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    _validation.check_tree_match("updates", state.direction, updates)
    dtype = state.learning_rate.dtype
    alpha = jnp.where(
      state.count == 0,
      jnp.asarray(learning_rate).astype(dtype),
      state.learning_rate,
    )
    hypergradient = -_tree_math.vdot(updates, state.direction, dtype)
    alpha = alpha - jnp.asarray(hypergrad_lr).astype(dtype) * hypergradient
    new_direction, inner_state = _combine.call_update(
      direction, updates, state.inner_state, params, **extra_args
    )
    new_updates = jax.tree.map(
      lambda d: (-alpha * _tree_math.wide(d, dtype)).astype(d.dtype),
      new_direction,
    )
    return new_updates, ScaleByHypergradientState(
      count=_numerics.safe_increment(state.count),
      learning_rate=alpha,
      direction=jax.tree.map(
        lambda d, old: d.astype(old.dtype), new_direction, state.direction
      ),
      inner_state=inner_state,
    )

  return _base.GradientTransformation(init_fn, update_fn)


def _check(learning_rate: Any, hypergrad_lr: Any) -> None:
  _validation.check_range("learning_rate", learning_rate, low=0.0)
  _validation.check_range("hypergrad_lr", hypergrad_lr, low=0.0)


@_hyperparams.sweepable("learning_rate", "hypergrad_lr", "momentum")
def sgd_hd(
  learning_rate: ArrayLike = 1e-3,
  hypergrad_lr: ArrayLike = 1e-3,
  momentum: ArrayLike | None = None,
  nesterov: bool = False,
) -> _base.GradientTransformation:
  """SGD-HD: SGD whose learning rate follows its own hypergradient.

  .. math::
     \\alpha_t = \\alpha_{t-1} + \\beta\\, \\langle g_t, d_{t-1} \\rangle,
     \\qquad \\theta_t = \\theta_{t-1} - \\alpha_t d_t

  with :math:`d_t = g_t` (plain), :math:`v_t = \\mu v_{t-1} + g_t`,
  :math:`d_t = v_t` (momentum) or :math:`d_t = g_t + \\mu v_t` (Nesterov,
  the paper's SGDN-HD), :math:`d_0 = 0`. The rate grows while successive
  directions agree and shrinks when they oppose. Defaults are the paper's.

  Args:
    learning_rate: the initial learning rate :math:`\\alpha_0` (>= 0).
    hypergrad_lr: the hyper-learning rate :math:`\\beta` (>= 0); 0 is SGD.
    momentum: :math:`\\mu` in [0, 1), or None for plain SGD-HD.
    nesterov: use Nesterov momentum (SGDN-HD).

  Returns:
    A `GradientTransformation` with a `ScaleByHypergradientState` inside
    (its ``learning_rate`` field is the adapted rate). The numeric
    arguments live in the state.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.sgd_hd(learning_rate=0.1, hypergrad_lr=0.01)
    >>> params = jnp.array([1.0, -2.0])
    >>> state = tx.init(params)
    >>> for _ in range(2):
    ...   updates, state = tx.update(2 * params, state, params)
    ...   params = jopt.apply_updates(params, updates)
    >>> state.inner_state.learning_rate  # 0.1 + 0.01 * <g_2, g_1>
    Array(0.26, dtype=float32)

  References:
    Baydin et al., 2018, `Online learning rate adaptation with hypergradient
    descent <https://arxiv.org/abs/1703.04782>`_.
  """
  _check(learning_rate, hypergrad_lr)
  _validation.check_range(
    "momentum", momentum, low=0.0, high=1.0, high_open=True
  )
  if momentum is None:
    direction = _base.identity()
  else:
    direction = _scale.trace.plain(decay=momentum, nesterov=nesterov)
  return _scale_by_hypergradient(direction, learning_rate, hypergrad_lr)


@_hyperparams.sweepable("learning_rate", "hypergrad_lr", "b1", "b2", "eps")
def adam_hd(
  learning_rate: ArrayLike = 1e-3,
  hypergrad_lr: ArrayLike = 1e-7,
  b1: ArrayLike = 0.9,
  b2: ArrayLike = 0.999,
  eps: ArrayLike = 1e-8,
) -> _base.GradientTransformation:
  """Adam-HD: Adam whose learning rate follows its own hypergradient.

  .. math::
     \\alpha_t = \\alpha_{t-1} + \\beta \\left\\langle g_t,
     \\frac{\\hat m_{t-1}}{\\sqrt{\\hat v_{t-1}} + \\epsilon}
     \\right\\rangle,\\qquad
     \\theta_t = \\theta_{t-1} - \\alpha_t
     \\frac{\\hat m_t}{\\sqrt{\\hat v_t} + \\epsilon}

  with :math:`\\hat m_t, \\hat v_t` Adam's bias-corrected moments (see
  `adam`) and the first direction's predecessor zero. Defaults are the
  paper's (its :math:`\\beta = 10^{-7}` suits gradients summed over a
  large model; small models need a larger one).

  Args:
    learning_rate: the initial learning rate :math:`\\alpha_0` (>= 0).
    hypergrad_lr: the hyper-learning rate :math:`\\beta` (>= 0); 0 is Adam.
    b1: the first moment's averaging coefficient, [0, 1).
    b2: the second moment's averaging coefficient, [0, 1).
    eps: added to the denominator outside the root (>= 0).

  Returns:
    A `GradientTransformation` with a `ScaleByHypergradientState` inside.
    The numeric arguments live in the state.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.adam_hd(learning_rate=0.1, hypergrad_lr=0.01)
    >>> params = jnp.array([1.0, -2.0])
    >>> state = tx.init(params)
    >>> for _ in range(2):
    ...   updates, state = tx.update(2 * params, state, params)
    ...   params = jopt.apply_updates(params, updates)
    >>> state.inner_state.learning_rate  # 0.1 + 0.01 * <g_2, sign(g_1)>
    Array(0.156, dtype=float32)

  References:
    Baydin et al., 2018, `Online learning rate adaptation with hypergradient
    descent <https://arxiv.org/abs/1703.04782>`_.
  """
  _check(learning_rate, hypergrad_lr)
  _validation.check_range("b1", b1, low=0.0, high=1.0, high_open=True)
  _validation.check_range("b2", b2, low=0.0, high=1.0, high_open=True)
  _validation.check_range("eps", eps, low=0.0)
  direction = _adam.scale_by_adam.plain(b1=b1, b2=b2, eps=eps)
  return _scale_by_hypergradient(direction, learning_rate, hypergrad_lr)
