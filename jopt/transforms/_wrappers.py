"""Wrappers around an optimizer: `apply_if_finite`, `MultiSteps`.

Both decide per step, from values in the state, whether the inner optimizer
runs; the decision is a `jax.lax.cond` on traced values (a select under
`jax.vmap`), never a Python branch, so a wrapped train step jits and vmaps.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from jopt import _base, _numerics, _validation
from jopt.transforms import _combine


def _all_finite(tree: Any) -> jax.Array:
  flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return functools.reduce(jnp.logical_and, flags, jnp.array(True))


def _zeros_like_output(fn: Callable[[], Any]) -> Any:
  """Zeros with the shapes and dtypes of ``fn()``'s output, without running it."""
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn))


def _keep_dtypes(new: Any, old: Any) -> Any:
  # Both branches of a `lax.cond` must give the same dtypes; an inner state
  # may hold Python numbers (an Optax transformation's ``{'foo': 1}``), which
  # become arrays of their own dtype in both branches.
  return jax.tree.map(
    lambda n, o: jnp.asarray(n).astype(jnp.asarray(o).dtype), new, old
  )


# --- apply_if_finite --------------------------------------------------------


class ApplyIfFiniteState(NamedTuple):
  """State of `apply_if_finite`.

  Attributes:
    notfinite_count: consecutive steps with a non-finite update, reset to 0
      by a finite one.
    last_finite: whether the last update was finite.
    total_notfinite: steps with a non-finite update since ``init``.
    inner_state: the state of the wrapped transformation.
  """

  notfinite_count: jax.Array
  last_finite: jax.Array
  total_notfinite: jax.Array
  inner_state: Any


def apply_if_finite(
  inner: Any, max_consecutive_errors: int
) -> _base.GradientTransformation:
  """Skips steps whose updates hold a NaN or an Inf, a few times in a row.

  With :math:`c_t` the number of consecutive non-finite steps up to ``t``,

  .. math::
     (u_t, s_t) = \\begin{cases}
       \\text{inner}(g_t, s_{t-1}) & g_t \\text{ finite or } c_t > N \\\\
       (0, s_{t-1}) & \\text{otherwise} \\end{cases}

  A skipped step returns zero updates and leaves the inner state unchanged.
  After ``N = max_consecutive_errors`` skips in a row the wrapper gives up
  and lets the non-finite update through, so a run that has truly diverged
  does not stall silently.

  Args:
    inner: the transformation to protect (jopt or Optax).
    max_consecutive_errors: how many non-finite steps in a row to skip
      (an integer >= 0).

  Returns:
    A `GradientTransformation` with state `ApplyIfFiniteState`.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.apply_if_finite(jopt.sgd(0.1), max_consecutive_errors=2)
    >>> state = tx.init(jnp.zeros(2))
    >>> updates, state = tx.update(jnp.array([1.0, jnp.nan]), state)
    >>> updates, state.total_notfinite
    (Array([0., 0.], dtype=float32), Array(1, dtype=int32))

  References:
    Optax's `apply_if_finite
    <https://optax.readthedocs.io/en/latest/api/optimizer_wrappers.html#optax.apply_if_finite>`_.
  """
  _validation.check_transform("`inner`", inner)
  if isinstance(max_consecutive_errors, bool) or not isinstance(
    max_consecutive_errors, numbers.Integral
  ):
    raise TypeError(
      "`max_consecutive_errors` must be an int; got "
      f"{type(max_consecutive_errors).__name__}."
    )
  _validation.check_range(
    "max_consecutive_errors", max_consecutive_errors, low=0
  )
  max_consecutive_errors = int(max_consecutive_errors)  # numpy ints too

  def init_fn(params):
    return ApplyIfFiniteState(
      notfinite_count=jnp.zeros([], jnp.int32),
      last_finite=jnp.array(True),
      total_notfinite=jnp.zeros([], jnp.int32),
      inner_state=inner.init(params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    finite = _all_finite(updates)
    notfinite_count = jnp.where(
      finite,
      jnp.zeros([], jnp.int32),
      _numerics.safe_increment(state.notfinite_count),
    )

    def run_inner():
      return _combine.call_update(
        inner, updates, state.inner_state, params, **extra_args
      )

    def apply(_):
      new_updates, inner_state = run_inner()
      return new_updates, _keep_dtypes(inner_state, state.inner_state)

    def skip(_):
      zeros, _ = _zeros_like_output(run_inner)
      return zeros, _keep_dtypes(state.inner_state, state.inner_state)

    new_updates, inner_state = jax.lax.cond(
      finite | (notfinite_count > max_consecutive_errors), apply, skip, None
    )
    return new_updates, ApplyIfFiniteState(
      notfinite_count=notfinite_count,
      last_finite=finite,
      total_notfinite=jnp.where(
        finite,
        state.total_notfinite,
        _numerics.safe_increment(state.total_notfinite),
      ),
      inner_state=inner_state,
    )

  return _base.GradientTransformation(init_fn, update_fn)


# --- MultiSteps -------------------------------------------------------------


class ShouldSkipUpdateFunction(Protocol):
  """``(updates, gradient_step, params) -> (skip: bool scalar, skip_state)``."""

  def __call__(
    self, updates: Any, gradient_step: jax.Array, params: Any
  ) -> tuple[jax.Array, Any]: ...


def skip_not_finite(
  updates: Any, gradient_step: jax.Array, params: Any
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """A `MultiSteps` skip rule: drop minibatches whose gradients hold NaN/Inf.

  Args:
    updates: the minibatch gradients.
    gradient_step: unused.
    params: unused.

  Returns:
    ``(should_skip, {"should_skip": ..., "num_not_finite": ...})``.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> skip, info = jopt.skip_not_finite(jnp.array([1.0, jnp.inf]), 0, None)
    >>> bool(skip), int(info["num_not_finite"])
    (True, 1)
  """
  del gradient_step, params
  counts = [jnp.sum(~jnp.isfinite(x)) for x in jax.tree.leaves(updates)]
  num_not_finite = functools.reduce(jnp.add, counts, jnp.zeros([], jnp.int32))
  should_skip = num_not_finite > 0
  return should_skip, {
    "should_skip": should_skip,
    "num_not_finite": num_not_finite,
  }


class MultiStepsState(NamedTuple):
  """State of `MultiSteps`.

  Attributes:
    mini_step: minibatches accumulated in the current group (0-based).
    gradient_step: inner optimizer steps taken so far.
    inner_opt_state: the state of the wrapped optimizer.
    acc_grads: the running mean (or sum) of the current group's gradients.
    skip_state: what ``should_skip_update_fn`` last reported (``()`` if none).
  """

  mini_step: jax.Array
  gradient_step: jax.Array
  inner_opt_state: Any
  acc_grads: Any
  skip_state: Any = ()


class MultiSteps:
  """Gradient accumulation: one inner step per ``k`` minibatches.

  With :math:`k_j` = ``every_k_schedule(j)`` at inner step :math:`j`, the
  gradients :math:`g_1 \\dots g_{k_j}` of a group of minibatches are averaged
  (summed if ``use_grad_mean=False``) and given to the inner optimizer once:

  .. math::
     \\bar g_j = \\frac{1}{k_j} \\sum_{i=1}^{k_j} g_i,\\qquad
     (u_j, s_j) = \\text{opt}(\\bar g_j, s_{j-1})

  ``update`` returns zero updates for the first :math:`k_j - 1` minibatches
  of a group and :math:`u_j` for the last. A schedule that grows ``k`` grows
  the effective batch size during training, which acts like a decaying
  learning rate (Smith et al., 2018). The mean is a running (Welford) mean,
  accumulated in ``accumulator_dtype``.

  Args:
    opt: the wrapped optimizer (jopt or Optax).
    every_k_schedule: ``k``, an int >= 1, or a function of the inner step
      count ``j`` (0-based) returning an integer >= 1.
    use_grad_mean: average the group's gradients (True) or sum them.
    should_skip_update_fn: optional rule ``(updates, gradient_step, params)
      -> (skip, skip_state)``; a skipped minibatch leaves the state as if it
      had not happened (see `skip_not_finite`).
    accumulator_dtype: dtype of the accumulated gradients.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.MultiSteps(jopt.sgd(1.0), every_k_schedule=2)
    >>> state = tx.init(jnp.zeros(1))
    >>> u1, state = tx.update(jnp.array([1.0]), state)
    >>> u2, state = tx.update(jnp.array([3.0]), state)
    >>> u1, u2, bool(tx.has_updated(state))
    (Array([0.], dtype=float32), Array([-2.], dtype=float32), True)

  References:
    Smith et al., 2018, `Don't decay the learning rate, increase the batch
    size <https://arxiv.org/abs/1711.00489>`_; Optax's `MultiSteps
    <https://optax.readthedocs.io/en/latest/api/optimizer_wrappers.html#optax.MultiSteps>`_.
  """

  def __init__(
    self,
    opt: Any,
    every_k_schedule: int | Callable[[jax.Array], Any],
    use_grad_mean: bool = True,
    should_skip_update_fn: ShouldSkipUpdateFunction | None = None,
    accumulator_dtype: Any = jnp.float32,
  ):
    _validation.check_transform("`opt`", opt)
    if callable(every_k_schedule):
      self._every_k_schedule = every_k_schedule
    else:
      if isinstance(every_k_schedule, bool) or not isinstance(
        every_k_schedule, numbers.Integral
      ):
        raise TypeError(
          "`every_k_schedule` must be an int or a function of the step; "
          f"got {type(every_k_schedule).__name__}."
        )
      _validation.check_range("every_k_schedule", every_k_schedule, low=1)
      every_k_schedule = int(every_k_schedule)  # numpy ints too
      self._every_k_schedule = lambda step: every_k_schedule
    self._opt = opt
    self._use_grad_mean = use_grad_mean
    self._should_skip_update_fn = should_skip_update_fn
    self._accumulator_dtype = jnp.dtype(accumulator_dtype)

  @property
  def inner_opt(self) -> Any:
    """The wrapped optimizer."""
    return self._opt

  def _skip(self, updates, gradient_step, params):
    if self._should_skip_update_fn is None:
      return jnp.array(False), ()
    skip, skip_state = self._should_skip_update_fn(
      updates, gradient_step, params
    )
    skip = jnp.asarray(skip)
    if skip.dtype != jnp.bool_ or skip.shape != ():
      raise ValueError(
        "`should_skip_update_fn` must return a scalar bool as its first "
        f"output; got dtype {skip.dtype} and shape {skip.shape}."
      )
    return skip, skip_state

  def init(self, params: _base.Params) -> MultiStepsState:
    """Returns the initial `MultiStepsState` for ``params``."""
    gradient_step = jnp.zeros([], jnp.int32)
    _, skip_state = self._skip(
      _numerics.tree_zeros_like(params), gradient_step, params
    )
    return MultiStepsState(
      mini_step=jnp.zeros([], jnp.int32),
      gradient_step=gradient_step,
      inner_opt_state=self._opt.init(params),
      acc_grads=_numerics.tree_zeros_like(params, self._accumulator_dtype),
      skip_state=skip_state,
    )

  def _accumulate(self, updates, state, params, extra_args):
    """Adds one minibatch; runs the inner optimizer if it closes a group."""
    _validation.check_tree_match("updates", state.acc_grads, updates)
    k = jnp.asarray(self._every_k_schedule(state.gradient_step))
    k = k.astype(jnp.int32)
    n = state.mini_step

    def add(g, acc):
      g = jnp.asarray(g).astype(acc.dtype)
      if self._use_grad_mean:
        return acc + (g - acc) / (n + 1).astype(acc.dtype)
      return acc + g

    acc_grads = jax.tree.map(add, updates, state.acc_grads)
    emit = n >= k - 1

    def run_inner():
      grads = jax.tree.map(
        lambda a, u: a.astype(_numerics.float_dtype(u)), acc_grads, updates
      )
      return _combine.call_update(
        self._opt, grads, state.inner_opt_state, params, **extra_args
      )

    def apply(_):
      new_updates, inner_state = run_inner()
      return new_updates, _keep_dtypes(inner_state, state.inner_opt_state)

    def hold(_):
      zeros, _ = _zeros_like_output(run_inner)
      return zeros, _keep_dtypes(state.inner_opt_state, state.inner_opt_state)

    new_updates, inner_state = jax.lax.cond(emit, apply, hold, None)
    new_state = MultiStepsState(
      mini_step=jnp.where(emit, jnp.zeros_like(n), n + 1),
      gradient_step=jnp.where(
        emit, _numerics.safe_increment(state.gradient_step), state.gradient_step
      ),
      inner_opt_state=inner_state,
      acc_grads=jax.tree.map(
        lambda a: jnp.where(emit, jnp.zeros_like(a), a), acc_grads
      ),
      skip_state=state.skip_state,
    )
    return new_updates, new_state

  def update(
    self,
    updates: _base.Updates,
    state: MultiStepsState,
    params: _base.Params | None = None,
    **extra_args: Any,
  ) -> tuple[_base.Updates, MultiStepsState]:
    """Accumulates ``updates``; returns the inner update when a group closes."""
    skip, skip_state = self._skip(updates, state.gradient_step, params)

    def accumulate(_):
      return self._accumulate(updates, state, params, extra_args)

    if self._should_skip_update_fn is None:
      new_updates, new_state = accumulate(None)
    else:

      def drop(_):
        zeros = _zeros_like_output(lambda: accumulate(None)[0])
        return zeros, _keep_dtypes(state, state)

      new_updates, new_state = jax.lax.cond(skip, drop, accumulate, None)
    return new_updates, new_state._replace(skip_state=skip_state)

  def has_updated(self, state: MultiStepsState) -> jax.Array:
    """Whether the last ``update`` ran the inner optimizer."""
    return (state.mini_step == 0) & (state.gradient_step > 0)

  def gradient_transformation(self) -> _base.GradientTransformation:
    """This wrapper as a plain `GradientTransformation`."""
    return _base.GradientTransformation(self.init, self.update)
