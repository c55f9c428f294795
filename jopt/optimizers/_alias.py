"""Optimizers: chains of building blocks under Optax's names and defaults."""

from __future__ import annotations

from typing import Any

from jopt import _base, _hyperparams
from jopt._base import ArrayLike, ScalarOrSchedule
from jopt._validation import DECAY, NON_NEGATIVE, UNIT
from jopt.transforms import _adaptive, _combine, _regularize, _scale


@_hyperparams.sweepable(learning_rate=NON_NEGATIVE, momentum=UNIT)
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
  if momentum is None:
    body = _base.identity()
  else:
    body = _scale.trace.plain(
      decay=momentum, nesterov=nesterov, accumulator_dtype=accumulator_dtype
    )
  return _combine.chain(
    body, _scale.scale_by_learning_rate.plain(learning_rate)
  )


# --- Adaptive optimizers -----------------------------------------------------


@_hyperparams.sweepable(
  learning_rate=NON_NEGATIVE,
  initial_accumulator_value=NON_NEGATIVE,
  eps=NON_NEGATIVE,
  init_only=("initial_accumulator_value",),
)
def adagrad(
  learning_rate: ScalarOrSchedule,
  initial_accumulator_value: ArrayLike = 0.1,
  eps: ArrayLike = 1e-7,
) -> _base.GradientTransformation:
  """AdaGrad: per-coordinate steps shrinking with the gradients seen so far.

  .. math::
     s_t = s_{t-1} + g_t^2,\\qquad
     \\theta_t = \\theta_{t-1} - \\eta_t \\frac{g_t}{\\sqrt{s_t + \\epsilon}},
     \\qquad s_0 = s_\\text{init}

  Args:
    learning_rate: a non-negative number or a schedule.
    initial_accumulator_value: the starting sum ``s_init`` (>= 0); read only by
      ``init``, so not kept in the state with the other hyperparameters.
    eps: added inside the square root (>= 0).

  Returns:
    A `GradientTransformation`: `scale_by_rss` then the learning rate. The
    numeric arguments but ``initial_accumulator_value`` live in the state
    (see `get_hyperparams`).

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.adagrad(learning_rate=0.1)
    >>> params = jnp.array([1.0, -2.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(2 * params, state, params)
    >>> jopt.apply_updates(params, updates)
    Array([ 0.90122706, -1.900311  ], dtype=float32)

  References:
    Duchi et al., 2011, `Adaptive subgradient methods for online learning
    and stochastic optimization
    <https://jmlr.org/papers/v12/duchi11a.html>`_.
  """
  return _combine.chain(
    _adaptive.scale_by_rss.plain(
      initial_accumulator_value=initial_accumulator_value, eps=eps
    ),
    _scale.scale_by_learning_rate.plain(learning_rate),
  )


@_hyperparams.sweepable(
  learning_rate=NON_NEGATIVE,
  decay=DECAY,
  eps=NON_NEGATIVE,
  initial_scale=NON_NEGATIVE,
  momentum=UNIT,
  init_only=("initial_scale",),
)
def rmsprop(
  learning_rate: ScalarOrSchedule,
  decay: ArrayLike = 0.9,
  eps: ArrayLike = 1e-8,
  initial_scale: ArrayLike = 0.0,
  eps_in_sqrt: bool = True,
  centered: bool = False,
  momentum: ArrayLike | None = None,
  nesterov: bool = False,
  bias_correction: bool = False,
) -> _base.GradientTransformation:
  """RMSprop: steps scaled by a moving root mean square of the gradients.

  .. math::
     \\nu_t = \\rho\\,\\nu_{t-1} + (1-\\rho)\\,g_t^2,\\qquad
     d_t = \\eta_t \\frac{g_t}{\\sqrt{\\nu_t + \\epsilon}},\\qquad
     \\theta_t = \\theta_{t-1} - d_t

  ``eps_in_sqrt=False`` uses :math:`\\sqrt{\\nu_t} + \\epsilon`;
  ``centered`` subtracts the squared moving mean :math:`m_t^2` under the
  root; ``bias_correction`` divides the averages by :math:`1-\\rho^t`; with
  ``momentum`` :math:`\\mu`, the steps :math:`d_t` are accumulated,
  :math:`b_t = \\mu b_{t-1} + d_t`, and :math:`b_t` is applied (Nesterov:
  :math:`d_t + \\mu b_t`).

  Args:
    learning_rate: a non-negative number or a schedule.
    decay: the averaging coefficient ``rho`` in [0, 1).
    eps: the stabilising term (>= 0).
    initial_scale: the starting value of ``nu`` (>= 0); read only by
      ``init``, so not kept in the state with the other hyperparameters.
    eps_in_sqrt: add ``eps`` inside the square root (else outside).
    centered: divide by the moving standard deviation (Graves, 2013).
    momentum: the momentum coefficient in [0, 1), or None.
    nesterov: use Nesterov momentum.
    bias_correction: correct the averages' bias towards their start.

  Returns:
    A `GradientTransformation`: `scale_by_rms`, the learning rate, then
    `trace` when ``momentum`` is given.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.rmsprop(learning_rate=0.01)
    >>> params = jnp.array([1.0, -2.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(2 * params, state, params)
    >>> jopt.apply_updates(params, updates)
    Array([ 0.96837723, -1.9683772 ], dtype=float32)

  References:
    Hinton, `Lecture 6.5 of Neural Networks for Machine Learning
    <https://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf>`_;
    Graves, 2013, `Generating sequences with recurrent neural networks
    <https://arxiv.org/abs/1308.0850>`_.
  """
  if momentum is None:
    accumulate = _base.identity()
  else:
    accumulate = _scale.trace.plain(decay=momentum, nesterov=nesterov)
  return _combine.chain(
    _adaptive.scale_by_rms.plain(
      decay=decay,
      eps=eps,
      initial_scale=initial_scale,
      eps_in_sqrt=eps_in_sqrt,
      bias_correction=bias_correction,
      centered=centered,
    ),
    _scale.scale_by_learning_rate.plain(learning_rate),
    accumulate,
  )


@_hyperparams.sweepable(
  learning_rate=NON_NEGATIVE, b1=DECAY, b2=DECAY, weight_decay=NON_NEGATIVE
)
def lion(
  learning_rate: ScalarOrSchedule,
  b1: ArrayLike = 0.9,
  b2: ArrayLike = 0.99,
  mu_dtype: Any | None = None,
  weight_decay: ScalarOrSchedule = 1e-3,
  mask: Any | None = None,
) -> _base.GradientTransformation:
  """Lion: the sign of an interpolated momentum, with decoupled weight decay.

  .. math::
     c_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t,\\qquad
     \\theta_t = \\theta_{t-1}
     - \\eta_t \\left(\\mathrm{sign}(c_t) + \\lambda\\,\\theta_{t-1}\\right),
     \\qquad m_t = \\beta_2 m_{t-1} + (1-\\beta_2) g_t

  Every coordinate moves by the same magnitude, so Lion usually wants a
  learning rate 3-10x smaller than AdamW's and a weight decay 3-10x larger.

  Args:
    learning_rate: a non-negative number or a schedule.
    b1: the momentum's weight in the direction, [0, 1).
    b2: the momentum's averaging coefficient, [0, 1).
    mu_dtype: dtype of the momentum; defaults to the params' dtype.
    weight_decay: the decay rate ``lambda`` (>= 0), or a schedule.
    mask: which params to decay, as in `adamw`.

  Returns:
    A `GradientTransformation`: `scale_by_lion`, `add_decayed_weights`, then
    the learning rate; ``update`` needs ``params``.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.lion(learning_rate=0.1, weight_decay=0.0)
    >>> params = jnp.array([1.0, -2.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(2 * params, state, params)
    >>> jopt.apply_updates(params, updates)
    Array([ 0.9, -1.9], dtype=float32)

  References:
    Chen et al., 2023, `Symbolic discovery of optimization algorithms
    <https://arxiv.org/abs/2302.06675>`_.
  """
  return _combine.chain(
    _adaptive.scale_by_lion.plain(b1=b1, b2=b2, mu_dtype=mu_dtype),
    _regularize.add_decayed_weights.plain(weight_decay, mask),
    _scale.scale_by_learning_rate.plain(learning_rate),
  )
