"""Reacting to a monitored value: `reduce_on_plateau` and `early_stopping`.

Both are pure and jit/vmap-friendly: every decision is a `jnp.where`, so in a
vmapped sweep each trial reduces its learning rate, or stops, on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jopt import _base, _hyperparams, _numerics
from jopt._base import ArrayLike
from jopt._validation import NON_NEGATIVE, Range


def _as_int(x: ArrayLike) -> jax.Array:
  # Integer hyperparameters are stored as float32 (exact below 2**24).
  return jnp.round(jnp.asarray(x)).astype(jnp.int32)


class ReduceLROnPlateauState(NamedTuple):
  """State of `reduce_on_plateau` (inside a `HyperparamsState`).

  Attributes:
    scale: the current factor applied to the updates (float32).
    best_value: the best accumulated value so far (float32; +inf at first).
    plateau_count: accumulated values since the last improvement (int32).
    cooldown_count: accumulations left before counting again (int32).
    count: values accumulated towards the next average (int32).
    avg_value: the running average of those values (float32).
  """

  scale: jax.Array
  best_value: jax.Array
  plateau_count: jax.Array
  cooldown_count: jax.Array
  count: jax.Array
  avg_value: jax.Array


@_hyperparams.sweepable(
  factor=Range(low=0.0, high=1.0, low_open=True, high_open=True),
  patience=Range(low=1, integer=True),
  rtol=Range(low=0.0, high=1.0),
  atol=NON_NEGATIVE,
  cooldown=Range(low=0, integer=True),
  accumulation_size=Range(low=1, integer=True),
  min_scale=NON_NEGATIVE,
)
def reduce_on_plateau(
  factor: ArrayLike = 0.1,
  patience: ArrayLike = 10,
  rtol: ArrayLike = 1e-4,
  atol: ArrayLike = 0.0,
  cooldown: ArrayLike = 0,
  accumulation_size: ArrayLike = 1,
  min_scale: ArrayLike = 0.0,
) -> _base.GradientTransformation:
  """Scales updates down by ``factor`` when a monitored value stops improving.

  ``update`` reads the monitored value (a validation or training loss) from
  its ``value=`` keyword argument. Values are averaged over
  ``accumulation_size`` calls; each average :math:`\\bar v` is compared to
  the best one so far, :math:`v^*`. It is an improvement when

  .. math:: \\bar v < v^* - \\text{rtol}\\,|v^*| - \\text{atol},

  which is correct for negative values too (Optax's ``(1 - rtol) v^*`` is
  not: optax#1767). After ``patience`` averages without improvement the
  scale becomes :math:`\\max(\\text{factor} \\cdot \\text{scale},
  \\text{min\\_scale})`, the count restarts, and the next ``cooldown``
  averages are not counted. Updates are multiplied by the scale (cast to
  each update's dtype).

  All arguments live in the state (see `get_hyperparams`), so they can be
  changed without recompiling and swept under `jax.vmap`. The integer ones
  (``patience``, ``cooldown``, ``accumulation_size``) are stored as float32
  and rounded to int32 when used.

  Args:
    factor: the multiplier applied at each reduction, in (0, 1).
    patience: averages without improvement before a reduction; an integer
      >= 1.
    rtol: relative tolerance of an improvement, in [0, 1].
    atol: absolute tolerance of an improvement, >= 0.
    cooldown: averages ignored after a reduction; an integer >= 0.
    accumulation_size: values averaged before each comparison; an integer
      >= 1 (use more than 1 when ``value`` is a noisy minibatch loss).
    min_scale: the scale never goes below this, >= 0.

  Returns:
    A `GradientTransformation` whose state is a `HyperparamsState` holding a
    `ReduceLROnPlateauState` (the scale is ``state.inner_state.scale``).

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.chain(jopt.sgd(1.0), jopt.reduce_on_plateau(patience=2))
    >>> params = jnp.zeros(1)
    >>> state = tx.init(params)
    >>> for loss in [-1.0, -1.0, -1.0]:  # No improvement after the first.
    ...   updates, state = tx.update(jnp.ones(1), state, params, value=loss)
    >>> updates
    Array([-0.1], dtype=float32)

  References:
    PyTorch's `ReduceLROnPlateau <https://pytorch.org/docs/stable/generated/
    torch.optim.lr_scheduler.ReduceLROnPlateau.html>`_; Optax's
    `reduce_on_plateau <https://optax.readthedocs.io/en/latest/api/
    contrib.html>`_ and `optax#1767
    <https://github.com/google-deepmind/optax/issues/1767>`_.
  """

  def init_fn(params):
    del params
    return ReduceLROnPlateauState(
      scale=jnp.ones([], jnp.float32),
      best_value=jnp.full([], jnp.inf, jnp.float32),
      plateau_count=jnp.zeros([], jnp.int32),
      cooldown_count=jnp.zeros([], jnp.int32),
      count=jnp.zeros([], jnp.int32),
      avg_value=jnp.zeros([], jnp.float32),
    )

  def compare(state: ReduceLROnPlateauState) -> ReduceLROnPlateauState:
    best, avg = state.best_value, state.avg_value
    margin = jnp.asarray(rtol, jnp.float32) * jnp.abs(best) + atol
    # best is +inf until the first comparison, and inf - inf is nan.
    threshold = jnp.where(jnp.isfinite(best), best - margin, best)
    improved = avg < threshold
    plateau = jnp.where(
      improved, 0, _numerics.safe_increment(state.plateau_count)
    )
    in_cooldown = state.cooldown_count > 0
    reduce = ~in_cooldown & (plateau >= _as_int(patience))
    reduced = jnp.where(reduce, state.scale * factor, state.scale)
    scale = jnp.where(in_cooldown, state.scale, jnp.maximum(reduced, min_scale))
    cooldown_count = jnp.where(
      in_cooldown,
      state.cooldown_count - 1,
      jnp.where(reduce, _as_int(cooldown), 0),
    )
    return ReduceLROnPlateauState(
      scale=scale.astype(jnp.float32),
      best_value=jnp.where(improved, avg, best),
      plateau_count=jnp.where(in_cooldown | reduce, 0, plateau),
      cooldown_count=cooldown_count.astype(jnp.int32),
      count=jnp.zeros([], jnp.int32),
      avg_value=jnp.zeros([], jnp.float32),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params
    value = extra_args.get("value")
    if value is None:
      raise ValueError(
        "reduce_on_plateau needs the monitored value: call "
        "`update(updates, state, params, value=loss)`."
      )
    count = _numerics.safe_increment(state.count)
    total = state.avg_value * state.count.astype(jnp.float32)
    avg = (total + jnp.asarray(value).astype(jnp.float32)) / count.astype(
      jnp.float32
    )
    accumulated = state._replace(count=count, avg_value=avg)
    compared = compare(accumulated)
    ready = count >= _as_int(accumulation_size)
    new_state = jax.tree.map(
      lambda new, old: jnp.where(ready, new, old), compared, accumulated
    )
    updates = jax.tree.map(
      lambda u: u * _numerics.cast_like(new_state.scale, u), updates
    )
    return updates, new_state

  return _base.GradientTransformation(init_fn, update_fn)


class EarlyStoppingState(NamedTuple):
  """State of `early_stopping`.

  Attributes:
    best: the best value seen (float32; +inf, or -inf for ``mode="max"``,
      before the first update).
    bad_steps: consecutive updates without improvement (int32).
    stopped: whether training should stop (bool; stays True once set).
  """

  best: jax.Array
  bad_steps: jax.Array
  stopped: jax.Array


class EarlyStopping(NamedTuple):
  """A pure early-stopping rule: ``init() -> state``, ``update(state, v)``."""

  init: Callable[[], EarlyStoppingState]
  update: Callable[[EarlyStoppingState, ArrayLike], EarlyStoppingState]


def early_stopping(
  patience: ArrayLike,
  *,
  min_delta: ArrayLike = 0.0,
  mode: str = "min",
) -> EarlyStopping:
  """Stops after ``patience`` updates in a row without improvement.

  A value :math:`v` improves on the best :math:`v^*` when
  :math:`v < v^* - \\delta` (``mode="min"``) or :math:`v > v^* + \\delta`
  (``mode="max"``), with :math:`\\delta` = ``min_delta``. ``stopped``
  becomes True once ``patience`` consecutive updates have not improved, and
  from then on the state no longer changes. A nan value never improves.

  The rule is pure (no Python control flow on values), so it runs inside
  `jax.jit`, `jax.lax.scan` and `jax.vmap`: in a vmapped sweep every trial
  has its own ``stopped`` flag (the caller freezes a stopped trial, e.g.
  with ``jnp.where(state.stopped, old_params, new_params)``). ``patience``
  and ``min_delta`` may be traced, so they can be swept too.

  Args:
    patience: updates without improvement before stopping; an integer >= 1.
    min_delta: the margin an improvement must beat; >= 0.
    mode: ``"min"`` (a loss) or ``"max"`` (an accuracy).

  Returns:
    An `EarlyStopping` with ``init() -> EarlyStoppingState`` and
    ``update(state, value) -> EarlyStoppingState``.

  Example:
    >>> import jopt
    >>> stopper = jopt.early_stopping(patience=2)
    >>> state = stopper.init()
    >>> for loss in [3.0, 2.0, 2.5, 2.1, 1.0]:
    ...   state = stopper.update(state, loss)
    >>> bool(state.stopped), float(state.best)  # Stopped at 2.1: best is 2.
    (True, 2.0)

  References:
    Prechelt, 1998, `Early Stopping - But When?
    <https://doi.org/10.1007/3-540-49430-8_3>`_.
  """
  if mode not in ("min", "max"):
    raise ValueError(f"`mode` must be 'min' or 'max'; got {mode!r}.")
  Range(low=1, integer=True).check("patience", patience)
  NON_NEGATIVE.check("min_delta", min_delta)
  sign = 1.0 if mode == "min" else -1.0

  def init_fn() -> EarlyStoppingState:
    return EarlyStoppingState(
      best=jnp.full([], sign * jnp.inf, jnp.float32),
      bad_steps=jnp.zeros([], jnp.int32),
      stopped=jnp.zeros([], bool),
    )

  def update_fn(state: EarlyStoppingState, value: ArrayLike):
    value = jnp.asarray(value).astype(jnp.float32)
    delta = jnp.asarray(min_delta).astype(jnp.float32)
    improved = sign * value < sign * state.best - delta
    bad_steps = jnp.where(
      improved, 0, _numerics.safe_increment(state.bad_steps)
    )
    new = EarlyStoppingState(
      best=jnp.where(improved, value, state.best),
      bad_steps=bad_steps,
      stopped=bad_steps >= _as_int(patience),
    )
    return jax.tree.map(
      lambda old, fresh: jnp.where(state.stopped, old, fresh), state, new
    )

  return EarlyStopping(init_fn, update_fn)
