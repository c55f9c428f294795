"""Adaptive preconditioners: `scale_by_rss`, `scale_by_rms`, `scale_by_lion`.

Moments follow `jopt._numerics`: updated in the wider of the gradient's and
the moment's dtype, stored in their own, updates in the gradient's dtype.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from jopt import _base, _hyperparams, _numerics, _validation
from jopt._base import ArrayLike
from jopt._numerics import (
  abs_sq,
  cast_tree,
  debias,
  ema,
  promote,
  state_dtype,
  tree_full_like,
  tree_zeros_like,
)
from jopt._validation import DECAY, NON_NEGATIVE

# --- AdaGrad -----------------------------------------------------------------


class ScaleByRssState(NamedTuple):
  """State of `scale_by_rss`: the running sum of squared gradients."""

  sum_of_squares: Any


@_hyperparams.sweepable(
  initial_accumulator_value=NON_NEGATIVE,
  eps=NON_NEGATIVE,
  init_only=("initial_accumulator_value",),
)
def scale_by_rss(
  initial_accumulator_value: ArrayLike = 0.1,
  eps: ArrayLike = 1e-7,
) -> _base.GradientTransformation:
  """Divides updates by the root of the sum of all squared gradients so far.

  .. math::
     s_t = s_{t-1} + g_t^2,\\qquad u_t = \\frac{g_t}{\\sqrt{s_t + \\epsilon}}
     \\quad(u_t = 0 \\text{ where } s_t = 0),\\qquad s_0 = s_\\text{init}

  See `adagrad` for the optimizer.

  Args:
    initial_accumulator_value: the starting value ``s_init`` (>= 0); read
      only by ``init``, so not kept in the state with the other hyperparameters.
    eps: added inside the square root (>= 0).

  Returns:
    A `GradientTransformation` with state `ScaleByRssState`.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.scale_by_rss(initial_accumulator_value=0.0, eps=0.0)
    >>> tx.update(jnp.array([3.0, -4.0]), tx.init(jnp.zeros(2)))[0]
    Array([ 1., -1.], dtype=float32)

  References:
    Duchi et al., 2011, `Adaptive subgradient methods for online learning
    and stochastic optimization
    <https://jmlr.org/papers/v12/duchi11a.html>`_.
  """

  def init_fn(params):
    return ScaleByRssState(
      sum_of_squares=tree_full_like(params, initial_accumulator_value)
    )

  def update_fn(updates, state, params=None, **extra_args):
    updates = _numerics.tree_as_float(updates)
    del params, extra_args
    _validation.check_tree_match("updates", state.sum_of_squares, updates)

    def accumulate(g, s):
      return (abs_sq(g).astype(s.dtype) + s).astype(s.dtype)

    sums = jax.tree.map(accumulate, updates, state.sum_of_squares)

    def precondition(g, s):
      inv = jnp.where(
        s > 0, jax.lax.rsqrt(s + _numerics.cast_like(eps, s)), jnp.zeros_like(s)
      )
      dtype = promote(g.dtype, s.dtype)
      return (inv.astype(dtype) * g.astype(dtype)).astype(g.dtype)

    updates = jax.tree.map(precondition, updates, sums)
    return updates, ScaleByRssState(sum_of_squares=sums)

  return _base.GradientTransformation(init_fn, update_fn)


# --- RMSprop -----------------------------------------------------------------


class ScaleByRmsState(NamedTuple):
  """State of `scale_by_rms`.

  Attributes:
    count: the number of updates so far (used by ``bias_correction``).
    mu: the moving average of gradients when ``centered``, else None.
    nu: the moving average of squared gradients.
  """

  count: jax.Array
  mu: Any
  nu: Any


@_hyperparams.sweepable(
  decay=DECAY,
  eps=NON_NEGATIVE,
  initial_scale=NON_NEGATIVE,
  init_only=("initial_scale",),
)
def scale_by_rms(
  decay: ArrayLike = 0.9,
  eps: ArrayLike = 1e-8,
  initial_scale: ArrayLike = 0.0,
  eps_in_sqrt: bool = True,
  bias_correction: bool = False,
  centered: bool = False,
) -> _base.GradientTransformation:
  """Divides updates by the root of a moving average of squared gradients.

  .. math::
     \\nu_t = \\rho\\,\\nu_{t-1} + (1-\\rho)\\,g_t^2,\\qquad
     u_t = \\frac{g_t}{\\sqrt{\\nu_t + \\epsilon}}
     \\;\\text{or}\\; \\frac{g_t}{\\sqrt{\\nu_t} + \\epsilon}

  Centered (the gradient's moving standard deviation instead of its root
  mean square): also keep :math:`m_t = \\rho m_{t-1} + (1-\\rho) g_t` and
  use :math:`\\nu_t - m_t^2` under the root. With ``bias_correction`` the
  averages are divided by :math:`1 - \\rho^t` first. ``centered=True``
  computes what Optax's ``scale_by_stddev`` computes.

  Args:
    decay: the averaging coefficient ``rho`` in [0, 1).
    eps: the stabilising term (>= 0).
    initial_scale: the starting value of ``nu`` (>= 0); read only by
      ``init``, so not kept in the state with the other hyperparameters.
    eps_in_sqrt: add ``eps`` inside the square root (else outside).
    bias_correction: correct the averages' bias towards their start.
    centered: divide by the moving standard deviation.

  Returns:
    A `GradientTransformation` with state `ScaleByRmsState`.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.scale_by_rms(decay=0.75, eps=0.0)
    >>> tx.update(jnp.array([2.0, -2.0]), tx.init(jnp.zeros(2)))[0]
    Array([ 2., -2.], dtype=float32)

  References:
    Hinton, `Lecture 6.5 of Neural Networks for Machine Learning
    <https://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf>`_;
    Graves, 2013, `Generating sequences with recurrent neural networks
    <https://arxiv.org/abs/1308.0850>`_ (centered).
  """

  def init_fn(params):
    return ScaleByRmsState(
      count=jnp.zeros([], jnp.int32),
      mu=tree_zeros_like(params) if centered else None,
      nu=tree_full_like(params, initial_scale),
    )

  def update_fn(updates, state, params=None, **extra_args):
    updates = _numerics.tree_as_float(updates)
    del params, extra_args
    _validation.check_tree_match("updates", state.nu, updates)
    count = _numerics.safe_increment(state.count)
    nu = jax.tree.map(lambda g, v: ema(abs_sq(g), v, decay), updates, state.nu)
    nu_hat = nu
    if bias_correction:
      nu_hat = jax.tree.map(lambda v: debias(v, decay, count), nu)
    if centered:
      mu = jax.tree.map(lambda g, m: ema(g, m, decay), updates, state.mu)
      mu_hat = mu
      if bias_correction:
        mu_hat = jax.tree.map(lambda m: debias(m, decay, count), mu)
      # The variance of the averaged gradients is >= 0 exactly; in floats
      # the difference can round below 0 (with bias correction it is 0 at
      # the first step), and its root would be NaN. It is clamped at 0.
      nu_hat = jax.tree.map(
        lambda m, v: jnp.maximum(v - abs_sq(m).astype(v.dtype), 0),
        mu_hat,
        nu_hat,
      )
      new_mu = cast_tree(mu, state.mu)
    else:
      new_mu = None

    def precondition(g, v):
      if eps_in_sqrt:
        scaling = jax.lax.rsqrt(v + _numerics.cast_like(eps, v))
      else:
        scaling = 1 / (jnp.sqrt(v) + _numerics.cast_like(eps, v))
      dtype = promote(g.dtype, v.dtype)
      return (scaling.astype(dtype) * g.astype(dtype)).astype(g.dtype)

    updates = jax.tree.map(precondition, updates, nu_hat)
    new_state = ScaleByRmsState(
      count=count, mu=new_mu, nu=cast_tree(nu, state.nu)
    )
    return updates, new_state

  return _base.GradientTransformation(init_fn, update_fn)


# --- Lion --------------------------------------------------------------------


class ScaleByLionState(NamedTuple):
  """State of `scale_by_lion`: the step count and the momentum ``mu``."""

  count: jax.Array
  mu: Any


@_hyperparams.sweepable(b1=DECAY, b2=DECAY, smooth_beta=NON_NEGATIVE)
def scale_by_lion(
  b1: ArrayLike = 0.9,
  b2: ArrayLike = 0.99,
  mu_dtype: Any | None = None,
  *,
  mode: Literal["hard", "smooth", "refined"] = "hard",
  smooth_beta: ArrayLike = 1.0,
) -> _base.GradientTransformation:
  """The Lion direction: the sign of an interpolated momentum.

  .. math::
     c_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t,\\qquad u_t = \\mathrm{sign}(c_t),
     \\qquad m_t = \\beta_2 m_{t-1} + (1-\\beta_2) g_t

  ``mode="smooth"`` uses :math:`\\tanh(\\beta_s c_t)` and ``mode="refined"``
  keeps :math:`c_t` where :math:`|c_t| < 1`, its sign elsewhere.

  Args:
    b1: the interpolation weight of the momentum in the direction, [0, 1).
    b2: the momentum's averaging coefficient, [0, 1).
    mu_dtype: dtype of the momentum; defaults to the params' dtype.
    mode: ``"hard"`` (sign), ``"smooth"`` (tanh) or ``"refined"``.
    smooth_beta: the tanh slope ``beta_s`` in smooth mode (>= 0).

  Returns:
    A `GradientTransformation` with state `ScaleByLionState`.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.scale_by_lion()
    >>> tx.update(jnp.array([0.3, -2.0, 0.0]), tx.init(jnp.zeros(3)))[0]
    Array([ 1., -1.,  0.], dtype=float32)

  References:
    Chen et al., 2023, `Symbolic discovery of optimization algorithms
    <https://arxiv.org/abs/2302.06675>`_.
  """
  if mode not in ("hard", "smooth", "refined"):
    raise ValueError(
      f"`mode` must be 'hard', 'smooth' or 'refined'; got {mode!r}."
    )
  mu_dtype = state_dtype(mu_dtype)

  def init_fn(params):
    return ScaleByLionState(
      count=jnp.zeros([], jnp.int32), mu=tree_zeros_like(params, mu_dtype)
    )

  def update_fn(updates, state, params=None, **extra_args):
    updates = _numerics.tree_as_float(updates)
    del params, extra_args
    _validation.check_tree_match("updates", state.mu, updates)

    def direction(g, m):
      c = ema(g, m, b1)
      if mode == "hard":
        d = jnp.sign(c)
      elif mode == "smooth":
        d = jnp.tanh(_numerics.cast_like(smooth_beta, c) * c)
      else:
        d = jnp.where(jnp.abs(c) < 1, c, jnp.sign(c))
      return d.astype(g.dtype)

    new_updates = jax.tree.map(direction, updates, state.mu)
    mu = jax.tree.map(lambda g, m: ema(g, m, b2), updates, state.mu)
    new_state = ScaleByLionState(
      count=_numerics.safe_increment(state.count), mu=cast_tree(mu, state.mu)
    )
    return new_updates, new_state

  return _base.GradientTransformation(init_fn, update_fn)
