"""D-Adaptation: `dadapt_adamw` and `prodigy`, AdamW with an estimated step.

Both estimate the distance to the solution, ``d``, from inner products of
gradients and steps, and use it as AdamW's learning rate (``learning_rate``
is a multiplier on it: 1, or a schedule with 1 as its peak). Under
optax.contrib's names, signatures and defaults; Optax's ``betas`` pair is
stored in the state as the hyperparameters ``b1`` and ``b2``.

The state's ``estim_lr`` starts at ``estim_lr0`` when the first update reads
it, not when ``init`` runs, so `set_hyperparams` between ``init`` and the
first step (how a sweep sets it) takes effect.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt import _base, _hyperparams, _numerics, _tree_math, _validation
from jopt._base import ArrayLike, ScalarOrSchedule


class DAdaptAdamWState(NamedTuple):
  """State of `dadapt_adamw` (Optax's fields).

  Attributes:
    exp_avg: the first moment of the scaled gradients.
    exp_avg_sq: the second moment of the gradients.
    grad_sum: the weighted sum of scaled gradients ``s``.
    estim_lr: the current estimate ``d`` of the distance to the solution.
    numerator_weighted: the weighted sum of inner products behind ``d``.
    count: the number of updates so far (int32).
  """

  exp_avg: Any
  exp_avg_sq: Any
  grad_sum: Any
  estim_lr: jax.Array
  numerator_weighted: jax.Array
  count: jax.Array


class ProdigyState(NamedTuple):
  """State of `prodigy` (Optax's fields).

  Attributes:
    exp_avg: the first moment of the scaled gradients.
    exp_avg_sq: the second moment of the scaled gradients.
    grad_sum: the weighted sum of scaled gradients ``s``.
    params0: the params at ``init``.
    estim_lr: the current estimate ``d`` of the distance to the solution.
    numerator_weighted: the weighted sum of inner products behind ``d``.
    count: the number of updates so far (int32).
  """

  exp_avg: Any
  exp_avg_sq: Any
  grad_sum: Any
  params0: Any
  estim_lr: jax.Array
  numerator_weighted: jax.Array
  count: jax.Array


def _schedule_value(learning_rate, count, dtype):
  value = learning_rate(count) if callable(learning_rate) else learning_rate
  return jnp.asarray(value).astype(dtype)


def _bias_correction(b1, b2, count, dtype):
  """``sqrt(1 - b2^t) / (1 - b1^t)``."""
  # Powers as Optax takes them under jit: ``lax.pow`` with the integer count
  # (and ``x ** 0.5``, which rounds unlike ``sqrt``); the estimate of d
  # amplifies a one-ulp difference to 1e-4 over 60 steps.
  b1, b2 = jnp.asarray(b1).astype(dtype), jnp.asarray(b2).astype(dtype)
  return (1 - jax.lax.pow(b2, count)) ** 0.5 / (1 - jax.lax.pow(b1, count))


def _estimate(current, numerator, denominator):
  """``max(d, numerator / denominator)``; ``d`` while nothing has moved.

  Optax divides 0 by 0 (NaN) when every gradient so far is zero.
  """
  safe = jnp.where(denominator > 0, denominator, 1)
  return jnp.where(
    denominator > 0, jnp.maximum(current, numerator / safe), current
  )


def _check_common(learning_rate, eps, estim_lr0, weight_decay):
  _validation.check_range("learning_rate", learning_rate, low=0.0)
  _validation.check_range("eps", eps, low=0.0)
  _validation.check_range("estim_lr0", estim_lr0, low=0.0, low_open=True)
  _validation.check_range("weight_decay", weight_decay, low=0.0)


@_hyperparams.sweepable(
  "learning_rate", "b1", "b2", "eps", "estim_lr0", "weight_decay"
)
def _dadapt_adamw(
  learning_rate, b1, b2, eps, estim_lr0, weight_decay
) -> _base.GradientTransformation:
  def init_fn(params):
    dtype = _tree_math.scalar_dtype(params)
    return DAdaptAdamWState(
      exp_avg=_numerics.tree_zeros_like(params),
      exp_avg_sq=_numerics.tree_zeros_like(params),
      grad_sum=_numerics.tree_zeros_like(params),
      estim_lr=jnp.asarray(estim_lr0).astype(dtype),
      numerator_weighted=jnp.zeros([], dtype),
      count=jnp.zeros([], jnp.int32),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    _tree_math.require_params("dadapt_adamw", params)
    _validation.check_tree_match("updates", state.exp_avg, updates)
    dtype = state.estim_lr.dtype
    beta1, beta2, eps_, wd = (
      jnp.asarray(v).astype(dtype) for v in (b1, b2, eps, weight_decay)
    )
    sb2 = beta2**0.5
    d = jnp.where(
      state.count == 0, jnp.asarray(estim_lr0).astype(dtype), state.estim_lr
    )
    count = _numerics.safe_increment(state.count)
    sched = _schedule_value(learning_rate, state.count, dtype)
    dlr = d * sched * _bias_correction(beta1, beta2, count, dtype)
    s_weighted = jax.tree.map(
      lambda s, v: (
        _tree_math.wide(s, dtype) / (jnp.sqrt(_tree_math.wide(v, dtype)) + eps_)
      ),
      state.grad_sum,
      state.exp_avg_sq,
    )
    numerator_acum = _tree_math.vdot(updates, s_weighted, dtype)

    def moments(g, m, v, s):
      g, m, v, s = (_tree_math.wide(x, dtype) for x in (g, m, v, s))
      m = beta1 * m + (1 - beta1) * dlr * g
      v = beta2 * v + (1 - beta2) * g * g
      s = sb2 * s + (1 - sb2) * dlr * g
      return m, v, s

    new = jax.tree.map(
      moments, updates, state.exp_avg, state.exp_avg_sq, state.grad_sum
    )
    exp_avg, exp_avg_sq, grad_sum = _tree_math.unzip(new, updates, 3)
    numerator = (
      sb2 * state.numerator_weighted + (1 - sb2) * dlr * numerator_acum
    )
    estim_lr = _estimate(
      d, numerator, (1 - sb2) * _tree_math.sum_abs(grad_sum, dtype)
    )

    def step(m, v, p):
      p_wide = _tree_math.wide(p, dtype)
      out = -wd * dlr * p_wide - m / (jnp.sqrt(v) + eps_)
      return out.astype(_numerics.float_dtype(p))

    new_updates = jax.tree.map(step, exp_avg, exp_avg_sq, params)
    return new_updates, DAdaptAdamWState(
      exp_avg=_cast(exp_avg, state.exp_avg),
      exp_avg_sq=_cast(exp_avg_sq, state.exp_avg_sq),
      grad_sum=_cast(grad_sum, state.grad_sum),
      estim_lr=estim_lr,
      numerator_weighted=numerator,
      count=count,
    )

  return _base.GradientTransformation(init_fn, update_fn)


def _cast(tree, like):
  return jax.tree.map(lambda x, y: x.astype(y.dtype), tree, like)


def dadapt_adamw(
  learning_rate: ScalarOrSchedule = 1.0,
  betas: tuple[ArrayLike, ArrayLike] = (0.9, 0.999),
  eps: ArrayLike = 1e-8,
  estim_lr0: ArrayLike = 1e-6,
  weight_decay: ArrayLike = 0.0,
) -> _base.GradientTransformation:
  """D-Adaptation AdamW: AdamW whose learning rate is estimated on the fly.

  With :math:`\\beta_1, \\beta_2` = ``betas``, :math:`\\eta_t` the
  ``learning_rate`` multiplier and :math:`d_0` = ``estim_lr0``:

  .. math::
     \\lambda_t = d_t \\eta_t \\frac{\\sqrt{1-\\beta_2^t}}{1-\\beta_1^t},\\quad
     m_t = \\beta_1 m_{t-1} + (1-\\beta_1) \\lambda_t g_t,\\quad
     v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2,\\\\
     s_t = \\sqrt{\\beta_2} s_{t-1} + (1-\\sqrt{\\beta_2}) \\lambda_t g_t,
     \\quad
     r_t = \\sqrt{\\beta_2} r_{t-1} + (1-\\sqrt{\\beta_2}) \\lambda_t
     \\left\\langle g_t, \\frac{s_{t-1}}{\\sqrt{v_{t-1}}+\\epsilon}
     \\right\\rangle,\\\\
     d_{t+1} = \\max\\left(d_t, \\frac{r_t}{(1-\\sqrt{\\beta_2})
     \\lVert s_t\\rVert_1}\\right),\\qquad
     \\theta_{t} = \\theta_{t-1} - \\frac{m_t}{\\sqrt{v_t}+\\epsilon}
     - \\lambda\\lambda_t\\theta_{t-1}

  Args:
    learning_rate: a multiplier of the estimated rate (>= 0), or a schedule
      with peak 1 (a linear decay to 0 after a short warmup is
      recommended).
    betas: AdamW's ``(b1, b2)``, each in [0, 1); stored in the state as
      ``b1`` and ``b2``.
    eps: added to the denominator outside the root (>= 0).
    estim_lr0: the initial (under-)estimate ``d_0`` (> 0).
    weight_decay: decoupled weight decay (>= 0), scaled by the step.

  Returns:
    A `GradientTransformation` with state `DAdaptAdamWState`; ``update``
    needs ``params``.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.dadapt_adamw()
    >>> params = jnp.array([1.0, -2.0])
    >>> state = tx.init(params)
    >>> for _ in range(30):
    ...   updates, state = tx.update(params, state, params)
    ...   params = jopt.apply_updates(params, updates)
    >>> bool(state.inner_state.estim_lr > 1e-2)  # grown from estim_lr0=1e-6
    True

  References:
    Defazio and Mishchenko, 2023, `Learning-rate-free learning by
    D-Adaptation <https://arxiv.org/abs/2301.07733>`_.
  """
  b1, b2 = _tree_math.check_betas(betas)
  _check_common(learning_rate, eps, estim_lr0, weight_decay)
  return _dadapt_adamw(learning_rate, b1, b2, eps, estim_lr0, weight_decay)


@_hyperparams.sweepable(
  "learning_rate",
  "b1",
  "b2",
  "beta3",
  "eps",
  "estim_lr0",
  "estim_lr_coef",
  "weight_decay",
)
def _prodigy(
  learning_rate,
  b1,
  b2,
  beta3,
  eps,
  estim_lr0,
  estim_lr_coef,
  weight_decay,
  safeguard_warmup,
) -> _base.GradientTransformation:
  def init_fn(params):
    dtype = _tree_math.scalar_dtype(params)
    return ProdigyState(
      exp_avg=_numerics.tree_zeros_like(params),
      exp_avg_sq=_numerics.tree_zeros_like(params),
      grad_sum=_numerics.tree_zeros_like(params),
      params0=jax.tree.map(jnp.array, params),
      estim_lr=jnp.asarray(estim_lr0).astype(dtype),
      numerator_weighted=jnp.zeros([], dtype),
      count=jnp.zeros([], jnp.int32),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    _tree_math.require_params("prodigy", params)
    _validation.check_tree_match("updates", state.exp_avg, updates)
    dtype = state.estim_lr.dtype
    beta1, beta2, eps_, wd, d0, coef = (
      jnp.asarray(v).astype(dtype)
      for v in (b1, b2, eps, weight_decay, estim_lr0, estim_lr_coef)
    )
    # The paper's default: the square root of b2, following b2 when swept.
    b3 = beta2**0.5 if beta3 is None else jnp.asarray(beta3).astype(dtype)
    d = jnp.where(state.count == 0, d0, state.estim_lr)
    count = _numerics.safe_increment(state.count)
    sched = _schedule_value(learning_rate, state.count, dtype)
    dlr = d * sched * _bias_correction(beta1, beta2, count, dtype)
    param_diff = jax.tree.map(
      lambda p0, p: _tree_math.wide(p0, dtype) - _tree_math.wide(p, dtype),
      state.params0,
      params,
    )
    numerator_acum = _tree_math.vdot(updates, param_diff, dtype)
    s_scale = d / d0 if safeguard_warmup else dlr / d0

    def moments(g, m, v, s):
      dg = d * _tree_math.wide(g, dtype)
      m, v, s = (_tree_math.wide(x, dtype) for x in (m, v, s))
      m = beta1 * m + (1 - beta1) * dg
      v = beta2 * v + (1 - beta2) * dg * dg
      s = b3 * s + s_scale * dg
      return m, v, s

    new = jax.tree.map(
      moments, updates, state.exp_avg, state.exp_avg_sq, state.grad_sum
    )
    exp_avg, exp_avg_sq, grad_sum = _tree_math.unzip(new, updates, 3)
    numerator = b3 * state.numerator_weighted + (d / d0) * dlr * numerator_acum
    estim_lr = _estimate(
      d, coef * numerator, _tree_math.sum_abs(grad_sum, dtype)
    )

    def step(m, v, p):
      p_wide = _tree_math.wide(p, dtype)
      out = -wd * dlr * p_wide - dlr * m / (jnp.sqrt(v) + estim_lr * eps_)
      return out.astype(_numerics.float_dtype(p))

    new_updates = jax.tree.map(step, exp_avg, exp_avg_sq, params)
    return new_updates, ProdigyState(
      exp_avg=_cast(exp_avg, state.exp_avg),
      exp_avg_sq=_cast(exp_avg_sq, state.exp_avg_sq),
      grad_sum=_cast(grad_sum, state.grad_sum),
      params0=state.params0,
      estim_lr=estim_lr,
      numerator_weighted=numerator,
      count=count,
    )

  return _base.GradientTransformation(init_fn, update_fn)


def prodigy(
  learning_rate: ScalarOrSchedule = 1.0,
  betas: tuple[ArrayLike, ArrayLike] = (0.9, 0.999),
  beta3: ArrayLike | None = None,
  eps: ArrayLike = 1e-8,
  estim_lr0: ArrayLike = 1e-6,
  estim_lr_coef: ArrayLike = 1.0,
  weight_decay: ArrayLike = 0.0,
  safeguard_warmup: bool = False,
) -> _base.GradientTransformation:
  """Prodigy: D-Adaptation AdamW that weights recent gradients more.

  With :math:`\\lambda_t = d_t \\eta_t \\sqrt{1-\\beta_2^t}/(1-\\beta_1^t)`
  and :math:`d_0` = ``estim_lr0``:

  .. math::
     m_t = \\beta_1 m_{t-1} + (1-\\beta_1) d_t g_t,\\qquad
     v_t = \\beta_2 v_{t-1} + (1-\\beta_2) d_t^2 g_t^2,\\\\
     s_t = \\beta_3 s_{t-1} + \\frac{\\lambda_t d_t}{d_0} g_t,\\qquad
     r_t = \\beta_3 r_{t-1} + \\frac{d_t \\lambda_t}{d_0}
     \\langle g_t, \\theta_0 - \\theta_{t-1}\\rangle,\\\\
     d_{t+1} = \\max\\left(d_t, c\\, \\frac{r_t}{\\lVert s_t\\rVert_1}
     \\right),\\qquad
     \\theta_t = \\theta_{t-1} - \\lambda_t \\frac{m_t}{\\sqrt{v_t} +
     d_{t+1}\\epsilon} - \\lambda \\lambda_t \\theta_{t-1}

  Args:
    learning_rate: a multiplier of the estimated rate (>= 0), or a schedule
      with peak 1.
    betas: AdamW's ``(b1, b2)``, each in [0, 1); stored in the state as
      ``b1`` and ``b2``.
    beta3: the decay of ``s`` and ``r`` in [0, 1); None uses
      ``sqrt(b2)`` (recomputed from ``b2`` when ``b2`` is swept).
    eps: added to the denominator outside the root (>= 0).
    estim_lr0: the initial (under-)estimate ``d_0`` (> 0).
    estim_lr_coef: ``c``, a multiplier of the estimates (>= 0).
    weight_decay: decoupled weight decay (>= 0), scaled by the step.
    safeguard_warmup: leave the learning rate out of ``s`` (helps when a
      warmup starts the schedule at 0).

  Returns:
    A `GradientTransformation` with state `ProdigyState`; ``update`` needs
    ``params``.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.prodigy()
    >>> params = jnp.array([1.0, -2.0])
    >>> state = tx.init(params)
    >>> for _ in range(30):
    ...   updates, state = tx.update(params, state, params)
    ...   params = jopt.apply_updates(params, updates)
    >>> bool(state.inner_state.estim_lr > 1e-2)  # grown from estim_lr0=1e-6
    True

  References:
    Mishchenko and Defazio, 2024, `Prodigy: an expeditiously adaptive
    parameter-free learner <https://arxiv.org/abs/2306.06101>`_.
  """
  b1, b2 = _tree_math.check_betas(betas)
  _check_common(learning_rate, eps, estim_lr0, weight_decay)
  _validation.check_range("beta3", beta3, low=0.0, high=1.0, high_open=True)
  _validation.check_range("estim_lr_coef", estim_lr_coef, low=0.0)
  return _prodigy(
    learning_rate,
    b1,
    b2,
    beta3,
    eps,
    estim_lr0,
    estim_lr_coef,
    weight_decay,
    safeguard_warmup,
  )
