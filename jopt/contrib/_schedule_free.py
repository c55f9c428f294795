"""Schedule-Free learning: `schedule_free`, its SGD and AdamW forms, and
`schedule_free_eval_params`.

Under optax.contrib's names, signatures and defaults. The interpolation
coefficient ``b1``, the learning rate and the averaging power live in the
state like every jopt hyperparameter; ``b1`` is also copied into
`ScheduleFreeState` at every update, so `schedule_free_eval_params` needs
only the state.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt import _base, _hyperparams, _numerics, _tree_math, _validation
from jopt._base import ArrayLike, ScalarOrSchedule
from jopt.schedules import _schedules
from jopt.transforms import _adaptive, _combine, _regularize, _scale


class ScheduleFreeState(NamedTuple):
  """State of `schedule_free` (Optax's fields).

  Attributes:
    b1: the interpolation coefficient used by the last update (float32, or
      float64 for float64 params).
    weight_sum: the sum of the averaging weights so far.
    step_count: the number of updates so far plus one (int32).
    max_lr: the largest learning rate seen so far.
    base_optimizer_state: the state of the base optimizer.
    z: the base optimizer's iterate (the un-averaged sequence).
  """

  b1: jax.Array
  weight_sum: jax.Array
  step_count: jax.Array
  max_lr: jax.Array
  base_optimizer_state: Any
  z: Any


def _find_state(state: Any) -> ScheduleFreeState | None:
  found = [
    leaf
    for leaf in jax.tree.leaves(
      state, is_leaf=lambda x: isinstance(x, ScheduleFreeState)
    )
    if isinstance(leaf, ScheduleFreeState)
  ]
  return found[0] if len(found) == 1 else None


def schedule_free_eval_params(state: Any, params: Any) -> Any:
  """Returns the averaged parameters at which to evaluate a Schedule-Free run.

  .. math:: x_t = \\frac{y_t - (1 - \\beta_1) z_t}{\\beta_1}

  Training steps are taken at the interpolation :math:`y_t` (the params);
  the average :math:`x_t` is what to evaluate (and to keep).

  Args:
    state: the state of `schedule_free`, `schedule_free_sgd` or
      `schedule_free_adamw` (possibly inside a `chain` or wrapper; vmapped
      states work under ``jax.vmap``).
    params: the current (training) params.

  Returns:
    The evaluation params, with the structure and dtypes of ``params``.

  Raises:
    ValueError: ``state`` holds no (or more than one) `ScheduleFreeState`.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.schedule_free_sgd(learning_rate=0.5)
    >>> params = jnp.array([1.0, -2.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(params, state, params)
    >>> params = jopt.apply_updates(params, updates)
    >>> jopt.schedule_free_eval_params(state, params)
    Array([ 0.5, -1. ], dtype=float32)

  References:
    Defazio et al., 2024, `The road less scheduled
    <https://arxiv.org/abs/2405.15682>`_.
  """
  sf = _find_state(state)
  if sf is None:
    raise ValueError(
      "`state` must hold exactly one ScheduleFreeState (the state of "
      "schedule_free, schedule_free_sgd or schedule_free_adamw)."
    )

  def average(y, z):
    dtype = _numerics.promote(jnp.float32, y.dtype)
    b1 = sf.b1.astype(dtype)
    x = (y.astype(dtype) - (1 - b1) * z.astype(dtype)) / b1
    return x.astype(y.dtype)

  return jax.tree.map(average, params, sf.z)


@_hyperparams.sweepable("learning_rate", "b1", "weight_lr_power")
def schedule_free(
  base_optimizer: Any,
  learning_rate: ScalarOrSchedule,
  b1: ArrayLike = 0.9,
  weight_lr_power: ArrayLike = 2.0,
  state_dtype: Any | None = None,
) -> _base.GradientTransformation:
  """Makes a base optimizer schedule-free: momentum by interpolation and
  averaging instead of a decaying learning-rate schedule.

  .. math::
     y_t = (1-\\beta_1) z_t + \\beta_1 x_t,\\qquad
     z_{t+1} = z_t + \\text{base}(\\nabla f(y_t)),\\\\
     c_{t+1} = \\frac{\\gamma_{\\max,t}^{p}}{\\sum_{i\\le t}
     \\gamma_{\\max,i}^{p}},\\qquad
     x_{t+1} = (1-c_{t+1})\\, x_t + c_{t+1}\\, z_{t+1}

  with :math:`\\gamma_{\\max,t}` the largest learning rate so far and
  :math:`p` = ``weight_lr_power``. The params are :math:`y`; evaluate at
  :math:`x` with `schedule_free_eval_params`. The base optimizer should have
  no momentum of its own.

  Args:
    base_optimizer: the transformation giving the steps of :math:`z`
      (e.g. ``jopt.sgd(lr)``); a jopt optimizer keeps its own
      hyperparameters in its state.
    learning_rate: the learning rate (>= 0) or a schedule (warmup, no
      decay), used to weight the average; give the base optimizer the same.
    b1: the interpolation coefficient, in (0, 1].
    weight_lr_power: the power of the learning rate in the averaging
      weights (>= 0); downweights the warmup steps.
    state_dtype: dtype of :math:`z`; defaults to the params' dtype (float
      for integer params).

  Returns:
    A `GradientTransformation` with state `ScheduleFreeState`; ``update``
    needs ``params``.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.schedule_free(jopt.sgd(0.5), learning_rate=0.5)
    >>> params = jnp.array([1.0, -2.0])
    >>> updates, state = tx.update(params, tx.init(params), params)
    >>> jopt.apply_updates(params, updates)  # the first step is SGD's
    Array([ 0.5, -1. ], dtype=float32)

  References:
    Defazio et al., 2024, `The road less scheduled
    <https://arxiv.org/abs/2405.15682>`_.
  """
  _validation.check_range("learning_rate", learning_rate, low=0.0)
  _validation.check_range("b1", b1, low=0.0, high=1.0, low_open=True)
  _validation.check_range("weight_lr_power", weight_lr_power, low=0.0)
  if not (
    hasattr(base_optimizer, "init") and hasattr(base_optimizer, "update")
  ):
    raise ValueError(
      "`base_optimizer` must be a gradient transformation; got "
      f"{type(base_optimizer).__name__}."
    )
  state_dtype = _numerics.state_dtype(state_dtype)

  def init_fn(params):
    dtype = _tree_math.scalar_dtype(params)
    z = jax.tree.map(
      lambda p: jnp.array(p, dtype=state_dtype or _numerics.float_dtype(p)),
      params,
    )
    return ScheduleFreeState(
      b1=jnp.asarray(b1).astype(dtype),
      weight_sum=jnp.zeros([], dtype),
      step_count=jnp.ones([], jnp.int32),
      max_lr=jnp.zeros([], dtype),
      base_optimizer_state=base_optimizer.init(params),
      z=z,
    )

  def update_fn(updates, state, params=None, **extra_args):
    _tree_math.require_params("schedule_free", params)
    _validation.check_tree_match("updates", state.z, updates)
    dtype = state.max_lr.dtype
    lr = (
      learning_rate(state.step_count)
      if callable(learning_rate)
      else (learning_rate)
    )
    lr = jnp.asarray(lr).astype(dtype)
    max_lr = jnp.maximum(state.max_lr, lr)
    weight = max_lr ** jnp.asarray(weight_lr_power).astype(dtype)
    weight_sum = state.weight_sum + weight
    # 0 / 0 at a zero learning rate (warmup's first step) means "no weight
    # yet", not NaN; a NaN weight still propagates.
    ck = jnp.where(
      jnp.isnan(weight) | jnp.isnan(weight_sum),
      jnp.nan,
      jnp.nan_to_num(weight / weight_sum, nan=0.0, posinf=jnp.inf),
    )
    base_updates, base_state = _combine.call_update(
      base_optimizer,
      updates,
      state.base_optimizer_state,
      params,
      **extra_args,
    )
    z = jax.tree.map(
      lambda zi, ui: (zi + ui.astype(zi.dtype)).astype(zi.dtype),
      state.z,
      base_updates,
    )
    b1_ = jnp.asarray(b1).astype(dtype)

    def step(y, z_old, z_new):
      wide = _numerics.promote(dtype, y.dtype)
      c, b = ck.astype(wide), b1_.astype(wide)
      x = (y.astype(wide) - (1 - b) * z_old.astype(wide)) / b
      x = (1 - c) * x + c * z_new.astype(wide)
      new_y = b * x + (1 - b) * z_new.astype(wide)
      return (new_y - y.astype(wide)).astype(_numerics.float_dtype(y))

    updates = jax.tree.map(step, params, state.z, z)
    return updates, ScheduleFreeState(
      b1=b1_,
      weight_sum=weight_sum,
      step_count=_numerics.safe_increment(state.step_count),
      max_lr=max_lr,
      base_optimizer_state=base_state,
      z=z,
    )

  return _base.GradientTransformation(init_fn, update_fn)


def _warmup(learning_rate: ArrayLike, warmup_steps: ArrayLike | None):
  """Optax's ``warmup_constant_schedule(0, learning_rate, warmup_steps)``."""
  if warmup_steps is None:
    return learning_rate
  _validation.check_range("warmup_steps", warmup_steps, low=1.0)
  return _schedules.join_schedules(
    [
      _schedules.linear_schedule(0.0, learning_rate, warmup_steps),
      _schedules.constant_schedule(learning_rate),
    ],
    [warmup_steps],
  )


@_hyperparams.sweepable(
  "learning_rate", "warmup_steps", "b1", "weight_decay", "weight_lr_power"
)
def schedule_free_sgd(
  learning_rate: ArrayLike = 1.0,
  warmup_steps: ArrayLike | None = None,
  b1: ArrayLike = 0.9,
  weight_decay: ArrayLike | None = None,
  weight_lr_power: ArrayLike = 2.0,
  state_dtype: Any | None = None,
) -> _base.GradientTransformation:
  """Schedule-Free SGD: SGD steps on :math:`z`, evaluated at an average.

  .. math::
     y_t = (1-\\beta_1) z_t + \\beta_1 x_t,\\qquad
     z_{t+1} = z_t - \\gamma_t (\\nabla f(y_t) + \\lambda y_t),\\qquad
     x_{t+1} = (1-c_{t+1})\\, x_t + c_{t+1}\\, z_{t+1}

  with :math:`\\gamma_t` the learning rate after a linear warmup and
  :math:`c_{t+1}` the averaging weight of `schedule_free`. Train at the
  params (:math:`y`); evaluate at `schedule_free_eval_params`.

  Args:
    learning_rate: the peak learning rate (>= 0).
    warmup_steps: length of a linear warmup from 0 (>= 1), or None.
    b1: the interpolation coefficient, in (0, 1].
    weight_decay: L2 weight decay added to the gradient, scaled by the
      learning rate (>= 0), or None.
    weight_lr_power: the power of the learning rate in the averaging
      weights (>= 0).
    state_dtype: dtype of :math:`z`; defaults to the params' dtype (float
      for integer params).

  Returns:
    A `GradientTransformation` with a `ScheduleFreeState` inside; ``update``
    needs ``params``. The numeric arguments live in the state.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.schedule_free_sgd(learning_rate=0.5)
    >>> params = jnp.array([1.0, -2.0])
    >>> updates, state = tx.update(params, tx.init(params), params)
    >>> jopt.apply_updates(params, updates)  # the first step is SGD's
    Array([ 0.5, -1. ], dtype=float32)

  References:
    Defazio et al., 2024, `The road less scheduled
    <https://arxiv.org/abs/2405.15682>`_.
  """
  _validation.check_range("learning_rate", learning_rate, low=0.0)
  _validation.check_range("weight_decay", weight_decay, low=0.0)
  lr = _warmup(learning_rate, warmup_steps)
  base = _scale.scale_by_learning_rate.plain(lr)
  if weight_decay is not None:
    base = _combine.chain(
      _regularize.add_decayed_weights.plain(weight_decay), base
    )
  return schedule_free.plain(
    base,
    lr,
    b1=b1,
    weight_lr_power=weight_lr_power,
    state_dtype=state_dtype,
  )


@_hyperparams.sweepable(
  "learning_rate",
  "warmup_steps",
  "b1",
  "eps",
  "weight_decay",
  "weight_lr_power",
  b2=_validation.DECAY,
)
def schedule_free_adamw(
  learning_rate: ArrayLike = 0.0025,
  warmup_steps: ArrayLike | None = None,
  b1: ArrayLike = 0.9,
  b2: ArrayLike = 0.999,
  eps: ArrayLike = 1e-8,
  weight_decay: ArrayLike = 0.0,
  weight_lr_power: ArrayLike = 2.0,
  state_dtype: Any | None = None,
) -> _base.GradientTransformation:
  """Schedule-Free AdamW: AdamW without momentum on :math:`z`, averaged.

  .. math::
     v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2,\\qquad
     z_{t+1} = z_t - \\gamma_t \\left(\\frac{g_t}{\\sqrt{v_t /
     (1-\\beta_2^t)} + \\epsilon} + \\lambda y_t\\right)

  with :math:`g_t = \\nabla f(y_t)`, and :math:`y, x` as in
  `schedule_free_sgd`. The winner of AlgoPerf's 2024 self-tuning track.

  Args:
    learning_rate: the peak learning rate (>= 0).
    warmup_steps: length of a linear warmup from 0 (>= 1), or None.
    b1: the interpolation coefficient, in (0, 1].
    b2: the second moment's averaging coefficient, [0, 1).
    eps: added to the denominator outside the root (>= 0).
    weight_decay: decoupled weight decay, scaled by the learning rate (>= 0).
    weight_lr_power: the power of the learning rate in the averaging
      weights (>= 0).
    state_dtype: dtype of :math:`z`; defaults to the params' dtype (float
      for integer params).

  Returns:
    A `GradientTransformation` with a `ScheduleFreeState` inside; ``update``
    needs ``params``. The numeric arguments live in the state.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.schedule_free_adamw(learning_rate=0.1)
    >>> params = jnp.array([1.0, -2.0])
    >>> updates, state = tx.update(params, tx.init(params), params)
    >>> # The first step is sign(g), to float32 rounding of 1 - b2**t.
    >>> jnp.round(jopt.apply_updates(params, updates), 5)
    Array([ 0.9, -1.9], dtype=float32)

  References:
    Defazio et al., 2024, `The road less scheduled
    <https://arxiv.org/abs/2405.15682>`_; Kasimbeg et al., 2025,
    `Accelerating neural network training: an analysis of the AlgoPerf
    competition <https://arxiv.org/abs/2502.15015>`_.
  """
  # b2 is declared a decay: a Python number keeps 1 - b2 at full precision
  # in the state, as Optax computes it (its range is checked there too).
  _validation.check_range("learning_rate", learning_rate, low=0.0)
  _validation.check_range("eps", eps, low=0.0)
  _validation.check_range("weight_decay", weight_decay, low=0.0)
  lr = _warmup(learning_rate, warmup_steps)
  base = _combine.chain(
    _adaptive.scale_by_rms.plain(
      decay=b2, eps=eps, eps_in_sqrt=False, bias_correction=True
    ),
    _regularize.add_decayed_weights.plain(weight_decay),
    _scale.scale_by_learning_rate.plain(lr),
  )
  return schedule_free.plain(
    base,
    lr,
    b1=b1,
    weight_lr_power=weight_lr_power,
    state_dtype=state_dtype,
  )
