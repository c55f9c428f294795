"""The Adam family: `scale_by_adam`, `scale_by_adamax`, `scale_by_amsgrad`.

Each keeps Optax's state fields (``count``, ``mu``, ``nu``...). Moments are
stored in their own dtype (``mu_dtype``, NEW ``nu_dtype``), updated in the
wider of that and the gradient's dtype, and updates come out in the
gradient's dtype.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt import _base, _hyperparams, _numerics, _validation
from jopt._base import ArrayLike
from jopt._numerics import (
  abs_sq,
  cast_tree,
  debias,
  ema,
  one_minus,
  promote,
  state_dtype,
  tree_zeros_like,
)
from jopt._validation import DECAY, NON_NEGATIVE, UNIT


class ScaleByAdamState(NamedTuple):
  """State of `scale_by_adam` and `scale_by_adamax`.

  Attributes:
    count: the number of updates so far (int32).
    mu: the first moment (moving average of gradients).
    nu: the second moment (Adam) or the decayed infinity norm (Adamax).
  """

  count: jax.Array
  mu: Any
  nu: Any


def _normalise(m, v, g, eps, eps_root):
  """``m / (sqrt(v + eps_root) + eps)``, returned in ``g``'s dtype."""
  denominator = jnp.sqrt(
    v + _numerics.cast_like(eps_root, v)
  ) + _numerics.cast_like(eps, v)
  dtype = promote(m.dtype, v.dtype)
  return (m.astype(dtype) / denominator.astype(dtype)).astype(g.dtype)


def _warn_if_frozen(
  dtype_name: str, dtype: Any, decay_name: str, decay: Any
) -> None:
  """Warns when a moment stored in ``dtype`` cannot move at ``decay``."""
  if dtype is None or not isinstance(decay, (int, float)):
    return  # default dtype, or a traced / swept decay: nothing to check
  eps = float(jnp.finfo(dtype).eps)
  if 0 < 1 - decay < eps / 2:
    warnings.warn(
      f"{dtype_name}={jnp.dtype(dtype).name} with {decay_name}={decay}: a "
      f"step changes the moment by about {1 - decay:.1e} relative, under "
      f"half of {jnp.dtype(dtype).name}'s epsilon ({eps:.1e}), so the "
      f"stored moment stops moving. Use a wider {dtype_name} or "
      f"{decay_name} <= {1 - eps / 2:.4g}.",
      stacklevel=3,
    )


@_hyperparams.sweepable(
  b1=DECAY, b2=DECAY, eps=NON_NEGATIVE, eps_root=NON_NEGATIVE
)
def scale_by_adam(
  b1: ArrayLike = 0.9,
  b2: ArrayLike = 0.999,
  eps: ArrayLike = 1e-8,
  eps_root: ArrayLike = 0.0,
  mu_dtype: Any | None = None,
  *,
  nesterov: bool = False,
  nu_dtype: Any | None = None,
) -> _base.GradientTransformation:
  """Rescales updates by Adam's bias-corrected moment estimates.

  .. math::
     m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t,\\qquad
     v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2,\\\\
     \\hat m_t = \\frac{m_t}{1-\\beta_1^t},\\qquad
     \\hat v_t = \\frac{v_t}{1-\\beta_2^t},\\qquad
     u_t = \\frac{\\hat m_t}{\\sqrt{\\hat v_t + \\epsilon_\\text{root}}
     + \\epsilon}

  With ``nesterov`` (NAdam),
  :math:`\\hat m_t = \\beta_1 \\frac{m_t}{1-\\beta_1^{t+1}}
  + (1-\\beta_1)\\frac{g_t}{1-\\beta_1^t}`. See `adam` for the optimizer.

  Args:
    b1: the first moment's averaging coefficient, [0, 1).
    b2: the second moment's averaging coefficient, [0, 1).
    eps: added to the denominator outside the root (>= 0).
    eps_root: added inside the root (>= 0); makes the rescaling
      differentiable at zero gradients (meta-learning).
    mu_dtype: dtype of the first moment; defaults to the params' dtype.
    nesterov: use Nesterov momentum (NAdam).
    nu_dtype: NEW: dtype of the second moment; defaults to the params' dtype.
      A step moves ``nu`` by about ``1 - b2`` relative, so a low-precision
      ``nu`` needs ``1 - b2`` above half its epsilon (bfloat16: ``b2 <=
      0.996``): with bfloat16 and ``b2=0.999``, ``nu`` would stop moving, and
      a warning says so.

  Returns:
    A `GradientTransformation` with state `ScaleByAdamState`.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.scale_by_adam()
    >>> tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))[0]
    Array([ 0.9999934, -0.9999934], dtype=float32)

  References:
    Kingma and Ba, 2015, `Adam: a method for stochastic optimization
    <https://arxiv.org/abs/1412.6980>`_; Dozat, 2016, `Incorporating
    Nesterov momentum into Adam <https://openreview.net/pdf?id=OM0jvwB8jIp57ZJjtNEZ>`_.
  """
  mu_dtype = state_dtype(mu_dtype)
  nu_dtype = state_dtype(nu_dtype)
  _warn_if_frozen("nu_dtype", nu_dtype, "b2", b2)
  _warn_if_frozen("mu_dtype", mu_dtype, "b1", b1)

  def init_fn(params):
    return ScaleByAdamState(
      count=jnp.zeros([], jnp.int32),
      mu=tree_zeros_like(params, mu_dtype),
      nu=tree_zeros_like(params, nu_dtype),
    )

  def update_fn(updates, state, params=None, **extra_args):
    updates = _numerics.tree_as_float(updates)
    del params, extra_args
    _validation.check_tree_match("updates", state.mu, updates)
    count = _numerics.safe_increment(state.count)
    mu = jax.tree.map(lambda g, m: ema(g, m, b1), updates, state.mu)
    nu = jax.tree.map(lambda g, v: ema(abs_sq(g), v, b2), updates, state.nu)
    if nesterov:
      next_count = _numerics.safe_increment(count)

      def lookahead(m, g):
        m = debias(m, b1, next_count)
        g = debias(g, b1, count)
        dtype = promote(m.dtype, g.dtype)
        m, g = m.astype(dtype), g.astype(dtype)
        return _numerics.cast_like(b1, m) * m + one_minus(b1, g) * g

      mu_hat = jax.tree.map(lookahead, mu, updates)
    else:
      mu_hat = jax.tree.map(lambda m: debias(m, b1, count), mu)
    nu_hat = jax.tree.map(lambda v: debias(v, b2, count), nu)
    updates = jax.tree.map(
      lambda m, v, g: _normalise(m, v, g, eps, eps_root),
      mu_hat,
      nu_hat,
      updates,
    )
    new_state = ScaleByAdamState(
      count=count, mu=cast_tree(mu, state.mu), nu=cast_tree(nu, state.nu)
    )
    return updates, new_state

  return _base.GradientTransformation(init_fn, update_fn)


@_hyperparams.sweepable(b1=DECAY, b2=UNIT, eps=NON_NEGATIVE)
def scale_by_adamax(
  b1: ArrayLike = 0.9,
  b2: ArrayLike = 0.999,
  eps: ArrayLike = 1e-8,
) -> _base.GradientTransformation:
  """Rescales updates by Adamax's decayed infinity norm of the gradients.

  .. math::
     m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t,\\qquad
     v_t = \\max(\\beta_2 v_{t-1},\\, |g_t| + \\epsilon),\\qquad
     u_t = \\frac{m_t}{(1-\\beta_1^t)\\, v_t}

  See `adamax` for the optimizer.

  Args:
    b1: the first moment's averaging coefficient, [0, 1).
    b2: the infinity norm's decay, [0, 1).
    eps: added to ``|g|`` (>= 0), keeping the denominator positive.

  Returns:
    A `GradientTransformation` with state `ScaleByAdamState` (``nu`` holds
    the infinity norm).

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.scale_by_adamax(eps=0.0)
    >>> tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))[0]
    Array([ 0.9999998, -0.9999998], dtype=float32)

  References:
    Kingma and Ba, 2015, `Adam: a method for stochastic optimization
    <https://arxiv.org/abs/1412.6980>`_ (section 7.1).
  """

  def init_fn(params):
    return ScaleByAdamState(
      count=jnp.zeros([], jnp.int32),
      mu=tree_zeros_like(params, None),
      nu=tree_zeros_like(params, None),
    )

  def update_fn(updates, state, params=None, **extra_args):
    updates = _numerics.tree_as_float(updates)
    del params, extra_args
    _validation.check_tree_match("updates", state.mu, updates)
    count = _numerics.safe_increment(state.count)
    mu = jax.tree.map(lambda g, m: ema(g, m, b1), updates, state.mu)

    def infinity_norm(g, v):
      magnitude = jnp.abs(g).astype(v.dtype) + _numerics.cast_like(eps, v)
      return jnp.maximum(magnitude, _numerics.cast_like(b2, v) * v)

    nu = jax.tree.map(infinity_norm, updates, state.nu)

    def direction(m, v, g):
      m = debias(m, b1, count)
      dtype = promote(m.dtype, v.dtype)
      return (m.astype(dtype) / v.astype(dtype)).astype(g.dtype)

    updates = jax.tree.map(direction, mu, nu, updates)
    new_state = ScaleByAdamState(
      count=count, mu=cast_tree(mu, state.mu), nu=cast_tree(nu, state.nu)
    )
    return updates, new_state

  return _base.GradientTransformation(init_fn, update_fn)


class ScaleByAmsgradState(NamedTuple):
  """State of `scale_by_amsgrad`.

  Attributes:
    count: the number of updates so far (int32).
    mu: the first moment.
    nu: the second moment.
    nu_max: the running maximum of the (bias-corrected) second moment.
  """

  count: jax.Array
  mu: Any
  nu: Any
  nu_max: Any


@_hyperparams.sweepable(
  b1=DECAY, b2=DECAY, eps=NON_NEGATIVE, eps_root=NON_NEGATIVE
)
def scale_by_amsgrad(
  b1: ArrayLike = 0.9,
  b2: ArrayLike = 0.999,
  eps: ArrayLike = 1e-8,
  eps_root: ArrayLike = 0.0,
  mu_dtype: Any | None = None,
  bias_correction_mu: bool = True,
  bias_correction_nu: bool = True,
) -> _base.GradientTransformation:
  """Rescales updates like Adam, by the running maximum of the second moment.

  .. math::
     \\hat v^{\\max}_t = \\max(\\hat v^{\\max}_{t-1}, \\hat v_t),\\qquad
     u_t = \\frac{\\hat m_t}{\\sqrt{\\hat v^{\\max}_t + \\epsilon_\\text{root}}
     + \\epsilon}

  with :math:`\\hat m_t, \\hat v_t` Adam's moments, bias-corrected unless
  ``bias_correction_mu`` / ``bias_correction_nu`` is False (the paper's
  form). See `amsgrad` for the optimizer.

  Args:
    b1: the first moment's averaging coefficient, [0, 1).
    b2: the second moment's averaging coefficient, [0, 1).
    eps: added to the denominator outside the root (>= 0).
    eps_root: added inside the root (>= 0).
    mu_dtype: dtype of the first moment; defaults to the params' dtype.
    bias_correction_mu: bias-correct the first moment.
    bias_correction_nu: bias-correct the second moment before the maximum.

  Returns:
    A `GradientTransformation` with state `ScaleByAmsgradState`.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.scale_by_amsgrad()
    >>> tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))[0]
    Array([ 0.9999934, -0.9999934], dtype=float32)

  References:
    Reddi et al., 2018, `On the convergence of Adam and beyond
    <https://openreview.net/forum?id=ryQu7f-RZ>`_.
  """
  mu_dtype = state_dtype(mu_dtype)

  def init_fn(params):
    return ScaleByAmsgradState(
      count=jnp.zeros([], jnp.int32),
      mu=tree_zeros_like(params, mu_dtype),
      nu=tree_zeros_like(params, None),
      nu_max=tree_zeros_like(params, None),
    )

  def update_fn(updates, state, params=None, **extra_args):
    updates = _numerics.tree_as_float(updates)
    del params, extra_args
    _validation.check_tree_match("updates", state.mu, updates)
    count = _numerics.safe_increment(state.count)
    mu = jax.tree.map(lambda g, m: ema(g, m, b1), updates, state.mu)
    nu = jax.tree.map(lambda g, v: ema(abs_sq(g), v, b2), updates, state.nu)
    mu_hat = mu
    if bias_correction_mu:
      mu_hat = jax.tree.map(lambda m: debias(m, b1, count), mu)
    nu_hat = nu
    if bias_correction_nu:
      nu_hat = jax.tree.map(lambda v: debias(v, b2, count), nu)
    nu_max = jax.tree.map(
      lambda old, v: jnp.maximum(old.astype(v.dtype), v), state.nu_max, nu_hat
    )
    updates = jax.tree.map(
      lambda m, v, g: _normalise(m, v, g, eps, eps_root),
      mu_hat,
      nu_max,
      updates,
    )
    new_state = ScaleByAmsgradState(
      count=count,
      mu=cast_tree(mu, state.mu),
      nu=cast_tree(nu, state.nu),
      nu_max=cast_tree(nu_max, state.nu_max),
    )
    return updates, new_state

  return _base.GradientTransformation(init_fn, update_fn)
