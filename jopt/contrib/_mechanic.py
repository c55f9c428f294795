"""Mechanic: `mechanize`, a learning-rate tuner wrapped around any optimizer.

Under optax.contrib's name, signature and defaults. ``s_init`` seeds the
scale factors when the first update reads them (not at ``init``), so
`set_hyperparams` between ``init`` and the first step takes effect.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt import _base, _hyperparams, _numerics, _tree_math, _validation
from jopt._base import ArrayLike
from jopt.transforms import _combine


class MechanicState(NamedTuple):
  """State of `mechanize` (Optax's fields).

  Attributes:
    base_optimizer_state: the wrapped optimizer's state.
    count: the number of updates so far (int32).
    r: the per-beta reward (wealth gained) accumulators.
    m: the per-beta running maxima of ``|h|``.
    v: the per-beta sums of ``h^2``.
    s: the per-beta scale factors; their sum scales the base updates.
    x0: the params at the first update.
  """

  base_optimizer_state: Any
  count: jax.Array
  r: jax.Array
  m: jax.Array
  v: jax.Array
  s: jax.Array
  x0: Any


@_hyperparams.sweepable("weight_decay", "eps", "s_init")
def mechanize(
  base_optimizer: Any,
  weight_decay: ArrayLike = 1e-2,
  eps: ArrayLike = 1e-8,
  s_init: ArrayLike = 1e-6,
  num_betas: int = 6,
) -> _base.GradientTransformation:
  """Mechanic: learns the scale of a base optimizer's updates online.

  With :math:`u_t` the base optimizer's update, :math:`S_t = \\sum_i
  s_{t,i}` and :math:`\\beta_i = 1 - 10^{-i}`, :math:`i = 1..n`:

  .. math::
     \\Delta_t = \\frac{x_0 - x_t}{S_{t-1}},\\quad
     h_t = \\left\\langle g_t + \\lambda S_{t-1}
     \\frac{\\lVert g_t\\rVert}{\\lVert x_t\\rVert}\\, x_t,\\;
     \\Delta_t \\right\\rangle,\\\\
     m_{t,i} = \\max(\\beta_i m_{t-1,i}, |h_t| + \\epsilon),\\quad
     v_{t,i} = \\beta_i^2 v_{t-1,i} + h_t^2,\\quad
     r_{t,i} = \\beta_i r_{t-1,i} + \\operatorname{clip}(h_t, \\pm
     m_{t-1,i})\\, s_{t-1,i},\\\\
     s_{t,i} = \\frac{\\frac{s_\\text{init}}{n} m_{t,i} + \\max(r_{t,i},0)}
     {\\sqrt{v_{t,i}} + \\epsilon},\\qquad
     x_{t+1} = x_0 - S_t (\\Delta_t - u_t)

  Args:
    base_optimizer: the transformation whose updates are scaled (give it
      learning rate 1, or a schedule with peak 1); a jopt optimizer keeps
      its own hyperparameters in its state.
    weight_decay: Mechanic's own decay (>= 0), which steadies the scale
      across seeds; not the base optimizer's weight decay.
    eps: a small positive constant for the divisions (>= 0).
    s_init: the initial total scale (> 0).
    num_betas: the number ``n`` of averaging horizons (>= 1).

  Returns:
    A `GradientTransformation` with state `MechanicState`; ``update`` needs
    ``params``.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.mechanize(jopt.sgd(1.0))
    >>> params = jnp.array([1.0, -2.0])
    >>> state = tx.init(params)
    >>> for _ in range(3):
    ...   updates, state = tx.update(params, state, params)
    ...   params = jopt.apply_updates(params, updates)
    >>> state.inner_state.s.shape
    (6,)

  References:
    Cutkosky et al., 2023, `Mechanic: a learning rate tuner
    <https://arxiv.org/abs/2306.00144>`_.
  """
  _validation.check_range("weight_decay", weight_decay, low=0.0)
  _validation.check_range("eps", eps, low=0.0)
  _validation.check_range("s_init", s_init, low=0.0, low_open=True)
  if (
    isinstance(num_betas, bool)
    or not isinstance(num_betas, int)
    or (num_betas < 1)
  ):
    raise ValueError(f"`num_betas` must be an int >= 1; got {num_betas!r}.")
  if not (
    hasattr(base_optimizer, "init") and hasattr(base_optimizer, "update")
  ):
    raise ValueError(
      "`base_optimizer` must be a gradient transformation; got "
      f"{type(base_optimizer).__name__}."
    )

  def init_fn(params):
    dtype = _tree_math.scalar_dtype(params)
    zeros = jnp.zeros([num_betas], dtype)
    return MechanicState(
      base_optimizer_state=base_optimizer.init(params),
      count=jnp.zeros([], jnp.int32),
      r=zeros,
      m=zeros,
      v=zeros,
      s=jnp.full([num_betas], jnp.asarray(s_init).astype(dtype)),
      x0=jax.tree.map(jnp.array, params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    _tree_math.require_params("mechanize", params)
    _validation.check_tree_match("updates", state.x0, updates)
    dtype = state.s.dtype
    wd, eps_, s0 = (
      jnp.asarray(v).astype(dtype) for v in (weight_decay, eps, s_init)
    )
    first = state.count == 0
    s_prev = jnp.where(first, jnp.full([num_betas], s0), state.s)
    base_updates, base_state = _combine.call_update(
      base_optimizer,
      updates,
      state.base_optimizer_state,
      params,
      **extra_args,
    )
    x0 = jax.tree.map(lambda p, x: jnp.where(first, p, x), params, state.x0)
    s_sum = jnp.sum(s_prev)
    grad_norm = jnp.sqrt(_tree_math.sq_norm(updates, dtype))
    param_norm = jnp.sqrt(_tree_math.sq_norm(params, dtype))
    decay = wd * s_sum * grad_norm / (param_norm + eps_)
    decayed = jax.tree.map(
      lambda g, p: (
        _tree_math.wide(g, dtype) + decay * _tree_math.wide(p, dtype)
      ),
      updates,
      params,
    )
    delta_prev = jax.tree.map(
      lambda p, x: (
        (_tree_math.wide(x, dtype) - _tree_math.wide(p, dtype)) / (s_sum + eps_)
      ),
      params,
      x0,
    )
    h = _tree_math.vdot(decayed, delta_prev, dtype)
    betas = jnp.asarray([1.0 - 0.1**i for i in range(1, num_betas + 1)], dtype)
    clipped_h = jnp.clip(h, -state.m, state.m)
    m = jnp.maximum(betas * state.m, jnp.abs(h) + eps_)
    v = betas**2 * state.v + h**2
    r = betas * state.r + clipped_h * s_prev
    wealth = (s0 / num_betas) * m + jnp.maximum(r, 0)
    s = wealth / (jnp.sqrt(v) + eps_)
    s_total = jnp.sum(s)

    def step(p, x, dp, u):
      delta = dp - _tree_math.wide(u, dtype)
      new_p = _tree_math.wide(x, dtype) - s_total * delta
      return (new_p - _tree_math.wide(p, dtype)).astype(
        _numerics.float_dtype(p)
      )

    new_updates = jax.tree.map(step, params, x0, delta_prev, base_updates)
    return new_updates, MechanicState(
      base_optimizer_state=base_state,
      count=_numerics.safe_increment(state.count),
      r=r,
      m=m,
      v=v,
      s=s,
      x0=x0,
    )

  return _base.GradientTransformation(init_fn, update_fn)
