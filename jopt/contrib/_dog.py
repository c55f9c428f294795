"""DoG (Distance over Gradients): `scale_by_dog` and `dog`.

Under optax.contrib's names, signatures and defaults. Optax's ``init_step``
pair ``(kind, value)`` keeps its kind static and its value in the state as
the hyperparameter ``init_step_value``. The initial distance is computed when
the first update reads it, from the params given to ``init`` and the value
in the state then, so `set_hyperparams` between ``init`` and the first step
takes effect.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from jopt import _base, _hyperparams, _tree_math, _validation
from jopt._base import ArrayLike, ScalarOrSchedule
from jopt.transforms import _combine, _regularize, _scale

InitStepKind = Literal["distance", "learning_rate", "heuristic"]
_KINDS = ("distance", "learning_rate", "heuristic")


class DoGState(NamedTuple):
  """State of `scale_by_dog` (Optax's fields).

  Attributes:
    is_init_step: True until the first update.
    init_params: the params at ``init``, ``x_0``.
    max_dist: the largest distance from ``x_0`` so far, ``r_t``.
    sum_sq_norm_grads: the sum of squared gradient norms, ``G_t``.
  """

  is_init_step: jax.Array
  init_params: Any
  max_dist: jax.Array
  sum_sq_norm_grads: jax.Array


def _check_init_step(init_step: Any) -> tuple[str, Any]:
  if (
    not isinstance(init_step, (tuple, list))
    or len(init_step) != 2
    or init_step[0] not in _KINDS
  ):
    raise ValueError(
      f"`init_step` must be a pair (kind, value) with kind one of {_KINDS}; "
      f"got {init_step!r}."
    )
  kind, value = init_step
  # 0 is accepted, as Optax accepts it: DoG's first steps are then 0 until
  # the params move away from ``x_0`` by other means.
  _validation.check_range("init_step", value, low=0.0)
  return kind, value


@_hyperparams.sweepable("init_step_value", "eps")
def _scale_by_dog(
  init_step_kind: str, init_step_value: ArrayLike, eps: ArrayLike
) -> _base.GradientTransformation:
  def init_fn(params):
    dtype = _tree_math.scalar_dtype(params)
    return DoGState(
      is_init_step=jnp.asarray(True),
      init_params=jax.tree.map(jnp.array, params),
      max_dist=jnp.zeros([], dtype),
      sum_sq_norm_grads=jnp.zeros([], dtype),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    _tree_math.require_params("scale_by_dog", params)
    _validation.check_tree_match("updates", state.init_params, updates)
    dtype = state.max_dist.dtype
    value = jnp.asarray(init_step_value).astype(dtype)
    if init_step_kind == "distance":
      r_epsilon = value
    elif init_step_kind == "heuristic":
      x0_norm = jnp.sqrt(_tree_math.sq_norm(state.init_params, dtype))
      r_epsilon = value * (1 + x0_norm)
    else:
      r_epsilon = jnp.zeros([], dtype)
    max_dist = jnp.where(state.is_init_step, r_epsilon, state.max_dist)
    diff = jax.tree.map(
      lambda p0, p: _tree_math.wide(p0, dtype) - _tree_math.wide(p, dtype),
      state.init_params,
      params,
    )
    max_dist = jnp.maximum(max_dist, jnp.sqrt(_tree_math.sq_norm(diff, dtype)))
    sum_sq = state.sum_sq_norm_grads + _tree_math.sq_norm(updates, dtype)
    lr = max_dist / jnp.sqrt(sum_sq + jnp.asarray(eps).astype(dtype))
    if init_step_kind == "learning_rate":
      lr = jnp.where(state.is_init_step, value, lr)
    new_updates = jax.tree.map(
      lambda g: (lr * _tree_math.wide(g, dtype)).astype(g.dtype), updates
    )
    return new_updates, DoGState(
      is_init_step=jnp.asarray(False),
      init_params=state.init_params,
      max_dist=max_dist,
      sum_sq_norm_grads=sum_sq,
    )

  return _base.GradientTransformation(init_fn, update_fn)


def scale_by_dog(
  init_step: tuple[InitStepKind, ArrayLike],
  eps: ArrayLike = 1e-8,
) -> _base.GradientTransformation:
  """Scales updates by DoG's step size, distance over gradient norms.

  .. math::
     \\bar r_t = \\max(r_\\epsilon, \\max_{k \\le t}\\lVert x_k - x_0\\rVert),
     \\qquad
     u_t = \\frac{\\bar r_t}{\\sqrt{\\sum_{k\\le t}\\lVert g_k\\rVert^2 +
     \\epsilon}}\\, g_t

  See `dog` for the optimizer and ``init_step``.

  Args:
    init_step: ``(kind, value)``, kind one of ``"distance"``,
      ``"learning_rate"``, ``"heuristic"``; value >= 0, stored in the state
      as ``init_step_value``.
    eps: added to the sum of squared norms (>= 0).

  Returns:
    A `GradientTransformation` with state `DoGState`; ``update`` needs
    ``params``.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.scale_by_dog(("distance", 0.5), eps=0.0)
    >>> params = jnp.array([3.0, 4.0])
    >>> tx.update(params, tx.init(params), params)[0]
    Array([0.3, 0.4], dtype=float32)

  References:
    Ivgi et al., 2023, `DoG is SGD's best friend: a parameter-free dynamic
    step size schedule <https://arxiv.org/abs/2302.12022>`_.
  """
  kind, value = _check_init_step(init_step)
  _validation.check_range("eps", eps, low=0.0)
  return _scale_by_dog(kind, value, eps)


@_hyperparams.sweepable(
  "learning_rate", "init_step_value", "eps", "weight_decay"
)
def _dog(
  learning_rate, init_step_kind, init_step_value, eps, weight_decay, mask
) -> _base.GradientTransformation:
  decay = (
    _base.identity()
    if weight_decay is None
    else _regularize.add_decayed_weights.plain(weight_decay, mask)
  )
  return _combine.chain(
    decay,
    _scale_by_dog.plain(init_step_kind, init_step_value, eps),
    _scale.scale_by_learning_rate.plain(learning_rate),
  )


def dog(
  learning_rate: ScalarOrSchedule = 1.0,
  init_step: tuple[InitStepKind, ArrayLike] = ("heuristic", 1e-6),
  eps: ArrayLike = 1e-8,
  weight_decay: ArrayLike | None = None,
  mask: Any | Callable[[Any], Any] | None = None,
) -> _base.GradientTransformation:
  """DoG: SGD whose step is the distance travelled over the gradient norms.

  .. math::
     r_t = \\lVert x_t - x_0\\rVert,\\quad
     \\bar r_t = \\max(r_\\epsilon, \\max_{k\\le t} r_k),\\quad
     G_t = \\sum_{k\\le t}\\lVert g_k\\rVert^2,\\quad
     x_{t+1} = x_t - \\eta_t \\frac{\\bar r_t}{\\sqrt{G_t + \\epsilon}}\\, g_t

  Args:
    learning_rate: a multiplier (>= 0) or a schedule; 1 is DoG.
    init_step: ``(kind, value)`` setting the first step: ``"distance"``
      sets :math:`r_\\epsilon` = value, ``"learning_rate"`` the first step
      size, ``"heuristic"`` :math:`r_\\epsilon` = value
      :math:`(1 + \\lVert x_0\\rVert)` (the paper suggests 1e-6, 1e-4 with
      batch norm). The value (>= 0) lives in the state as
      ``init_step_value``.
    eps: added to :math:`G_t` (>= 0).
    weight_decay: L2 weight decay added to the gradient (>= 0), or None.
    mask: which params to decay (see `add_decayed_weights`).

  Returns:
    A `GradientTransformation`; ``update`` needs ``params``. Give ``init``
    the real initial params (the heuristic and the distances use them).

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.dog(init_step=("learning_rate", 0.1))
    >>> params = jnp.array([1.0, -2.0])
    >>> updates, state = tx.update(params, tx.init(params), params)
    >>> jopt.apply_updates(params, updates)
    Array([ 0.9, -1.8], dtype=float32)

  References:
    Ivgi et al., 2023, `DoG is SGD's best friend: a parameter-free dynamic
    step size schedule <https://arxiv.org/abs/2302.12022>`_.
  """
  kind, value = _check_init_step(init_step)
  _validation.check_range("learning_rate", learning_rate, low=0.0)
  _validation.check_range("eps", eps, low=0.0)
  _validation.check_range("weight_decay", weight_decay, low=0.0)
  return _dog(learning_rate, kind, value, eps, weight_decay, mask)
