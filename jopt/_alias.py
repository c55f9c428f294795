"""Optimizers: chains of building blocks under Optax's names and defaults."""

from __future__ import annotations

from typing import Any

from jopt import _base, _combine, _hyperparams, _scale
from jopt._base import ArrayLike, ScalarOrSchedule


@_hyperparams.sweepable("learning_rate", "momentum")
def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: ArrayLike | None = None,
    nesterov: bool = False,
    accumulator_dtype: Any | None = None,
) -> _base.GradientTransformation:
  """Stochastic gradient descent, with optional (Nesterov) momentum.

  .. math::
     m_t = \\mu m_{t-1} + g_t,\\qquad
     \\theta_t = \\theta_{t-1} - \\eta_t\\, m_t
     \\quad(\\text{Nesterov: } - \\eta_t (g_t + \\mu m_t))

  Args:
    learning_rate: a non-negative number or a schedule.
    momentum: the momentum coefficient in [0, 1), or None for plain SGD.
    nesterov: use Nesterov momentum.
    accumulator_dtype: dtype of the momentum buffer.

  Returns:
    A `GradientTransformation`; ``learning_rate`` and ``momentum`` live in
    the state (see `get_hyperparams`).

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.sgd(learning_rate=0.1, momentum=0.9)
    >>> params = jnp.array([1.0, -2.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(2 * params, state, params)
    >>> jopt.apply_updates(params, updates)
    Array([ 0.8, -1.6], dtype=float32)

  References:
    Sutskever et al., 2013, `On the importance of initialization and momentum
    in deep learning <http://proceedings.mlr.press/v28/sutskever13.pdf>`_.
  """
  _base.check_range("momentum", momentum, low=0.0, high=1.0, high_open=True)
  if momentum is None:
    body = _base.identity()
  else:
    body = _scale.trace(
        decay=momentum, nesterov=nesterov, accumulator_dtype=accumulator_dtype
    )
  return _combine.chain(body, _scale.scale_by_learning_rate(learning_rate))
