"""The Adam family of optimizers: `adam`, `adamw`, `nadam`, `adamax`, `amsgrad`.

Each is a chain of building blocks from `jopt.transforms._adam` (and
`add_decayed_weights`) followed by the learning rate, under Optax's names,
signatures and defaults.
"""

from __future__ import annotations

from typing import Any

from jopt import _base, _hyperparams
from jopt._base import ArrayLike, ScalarOrSchedule
from jopt._validation import DECAY, NON_NEGATIVE, UNIT
from jopt.transforms import _adam, _combine, _regularize, _scale

_ADAM_RANGES = dict(
  learning_rate=NON_NEGATIVE,
  b1=DECAY,
  b2=DECAY,
  eps=NON_NEGATIVE,
  eps_root=NON_NEGATIVE,
)


@_hyperparams.sweepable(**_ADAM_RANGES)
def adam(
  learning_rate: ScalarOrSchedule,
  b1: ArrayLike = 0.9,
  b2: ArrayLike = 0.999,
  eps: ArrayLike = 1e-8,
  eps_root: ArrayLike = 0.0,
  mu_dtype: Any | None = None,
  *,
  nesterov: bool = False,
  nu_dtype: Any | None = None,
) -> _base.GradientTransformation:
  """Adam: steps from bias-corrected moving averages of g and g squared.

  .. math::
     m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t,\\qquad
     v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2,\\\\
     \\hat m_t = \\frac{m_t}{1-\\beta_1^t},\\qquad
     \\hat v_t = \\frac{v_t}{1-\\beta_2^t},\\qquad
     \\theta_t = \\theta_{t-1} - \\eta_t
     \\frac{\\hat m_t}{\\sqrt{\\hat v_t + \\epsilon_\\text{root}} + \\epsilon}

  With ``nesterov`` (NAdam, see `nadam`),
  :math:`\\hat m_t = \\beta_1 \\frac{m_t}{1-\\beta_1^{t+1}}
  + (1-\\beta_1) \\frac{g_t}{1-\\beta_1^t}`.

  Args:
    learning_rate: a non-negative number or a schedule.
    b1: the first moment's averaging coefficient, [0, 1).
    b2: the second moment's averaging coefficient, [0, 1).
    eps: added to the denominator outside the root (>= 0).
    eps_root: added inside the root (>= 0); keeps the update differentiable
      at zero gradients (meta-learning).
    mu_dtype: dtype of the first moment; defaults to the params' dtype.
    nesterov: use Nesterov momentum (NAdam).
    nu_dtype: NEW: dtype of the second moment; defaults to the params'
      dtype. Low precision needs ``1 - b2`` above half its epsilon
      (bfloat16: ``b2 <= 0.996``); see `scale_by_adam`.

  Returns:
    A `GradientTransformation`: `scale_by_adam` then the learning rate. The
    numeric arguments live in the state (see `get_hyperparams`).

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.adam(learning_rate=0.1)
    >>> params = jnp.array([1.0, -2.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(2 * params, state, params)
    >>> jopt.apply_updates(params, updates)
    Array([ 0.9000007, -1.9000007], dtype=float32)

  References:
    Kingma and Ba, 2015, `Adam: a method for stochastic optimization
    <https://arxiv.org/abs/1412.6980>`_.
  """
  return _combine.chain(
    _adam.scale_by_adam.plain(
      b1=b1,
      b2=b2,
      eps=eps,
      eps_root=eps_root,
      mu_dtype=mu_dtype,
      nesterov=nesterov,
      nu_dtype=nu_dtype,
    ),
    _scale.scale_by_learning_rate.plain(learning_rate),
  )


@_hyperparams.sweepable(**_ADAM_RANGES, weight_decay=NON_NEGATIVE)
def adamw(
  learning_rate: ScalarOrSchedule,
  b1: ArrayLike = 0.9,
  b2: ArrayLike = 0.999,
  eps: ArrayLike = 1e-8,
  eps_root: ArrayLike = 0.0,
  mu_dtype: Any | None = None,
  weight_decay: ScalarOrSchedule = 1e-4,
  mask: Any | None = None,
  *,
  nesterov: bool = False,
  nu_dtype: Any | None = None,
) -> _base.GradientTransformation:
  """AdamW: Adam with decoupled weight decay.

  .. math::
     \\theta_t = \\theta_{t-1} - \\eta_t \\left(
     \\frac{\\hat m_t}{\\sqrt{\\hat v_t + \\epsilon_\\text{root}} + \\epsilon}
     + \\lambda\\, \\theta_{t-1} \\right)

  with :math:`\\hat m_t, \\hat v_t` Adam's bias-corrected moments (see
  `adam`). The decay is scaled by the learning rate, as in Optax and
  PyTorch, but not by Adam's denominator.

  Args:
    learning_rate: a non-negative number or a schedule.
    b1: the first moment's averaging coefficient, [0, 1).
    b2: the second moment's averaging coefficient, [0, 1).
    eps: added to the denominator outside the root (>= 0).
    eps_root: added inside the root (>= 0).
    mu_dtype: dtype of the first moment; defaults to the params' dtype.
    weight_decay: the decay rate ``lambda`` (>= 0), or a schedule.
    mask: which params to decay: a pytree of bools with the params'
      structure (or a prefix of it), or a callable returning one given a
      tree shaped like the params (it is called on the updates). Biases and
      norm scales are often left out.
    nesterov: use Nesterov momentum (NAdamW).
    nu_dtype: NEW: dtype of the second moment (see `scale_by_adam` on low
      precision).

  Returns:
    A `GradientTransformation`: `scale_by_adam`, `add_decayed_weights`,
    then the learning rate; ``update`` needs ``params``.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array([1.0])}
    >>> no_bias = lambda p: {"w": True, "b": False}
    >>> tx = jopt.adamw(learning_rate=0.1, weight_decay=0.5, mask=no_bias)
    >>> state = tx.init(params)
    >>> grads = jax.tree.map(jnp.zeros_like, params)
    >>> updates, state = tx.update(grads, state, params)
    >>> jopt.apply_updates(params, updates)["w"]
    Array([ 0.95, -1.9 ], dtype=float32)

  References:
    Loshchilov and Hutter, 2019, `Decoupled weight decay regularization
    <https://arxiv.org/abs/1711.05101>`_.
  """
  return _combine.chain(
    _adam.scale_by_adam.plain(
      b1=b1,
      b2=b2,
      eps=eps,
      eps_root=eps_root,
      mu_dtype=mu_dtype,
      nesterov=nesterov,
      nu_dtype=nu_dtype,
    ),
    _regularize.add_decayed_weights.plain(weight_decay, mask),
    _scale.scale_by_learning_rate.plain(learning_rate),
  )


@_hyperparams.sweepable(**_ADAM_RANGES)
def nadam(
  learning_rate: ScalarOrSchedule,
  b1: ArrayLike = 0.9,
  b2: ArrayLike = 0.999,
  eps: ArrayLike = 1e-8,
  eps_root: ArrayLike = 0.0,
  mu_dtype: Any | None = None,
  *,
  nesterov: bool = True,
  nu_dtype: Any | None = None,
) -> _base.GradientTransformation:
  """NAdam: Adam with Nesterov momentum; `adam` with ``nesterov=True``.

  .. math::
     \\hat m_t = \\beta_1 \\frac{m_t}{1-\\beta_1^{t+1}}
     + (1-\\beta_1) \\frac{g_t}{1-\\beta_1^t},\\qquad
     \\theta_t = \\theta_{t-1} - \\eta_t
     \\frac{\\hat m_t}{\\sqrt{\\hat v_t + \\epsilon_\\text{root}} + \\epsilon}

  with :math:`m_t`, :math:`\\hat v_t` as in `adam`. Like Optax and
  PyTorch, the extra :math:`\\beta_2` factor of Dozat's algorithm 2 is left
  out.

  Args:
    learning_rate: a non-negative number or a schedule.
    b1: the first moment's averaging coefficient, [0, 1).
    b2: the second moment's averaging coefficient, [0, 1).
    eps: added to the denominator outside the root (>= 0).
    eps_root: added inside the root (>= 0).
    mu_dtype: dtype of the first moment; defaults to the params' dtype.
    nesterov: kept for Optax's signature; False gives plain Adam.
    nu_dtype: NEW: dtype of the second moment (see `scale_by_adam` on low
      precision).

  Returns:
    A `GradientTransformation`: `scale_by_adam` (Nesterov) then the
    learning rate.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.nadam(learning_rate=0.1)
    >>> params = jnp.array([1.0, -2.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(2 * params, state, params)
    >>> jopt.apply_updates(params, updates)
    Array([ 0.8526326, -1.8526325], dtype=float32)

  References:
    Dozat, 2016, `Incorporating Nesterov momentum into Adam
    <https://openreview.net/pdf?id=OM0jvwB8jIp57ZJjtNEZ>`_.
  """
  return adam.plain(
    learning_rate,
    b1=b1,
    b2=b2,
    eps=eps,
    eps_root=eps_root,
    mu_dtype=mu_dtype,
    nesterov=nesterov,
    nu_dtype=nu_dtype,
  )


@_hyperparams.sweepable(
  learning_rate=NON_NEGATIVE, b1=DECAY, b2=UNIT, eps=NON_NEGATIVE
)
def adamax(
  learning_rate: ScalarOrSchedule,
  b1: ArrayLike = 0.9,
  b2: ArrayLike = 0.999,
  eps: ArrayLike = 1e-8,
) -> _base.GradientTransformation:
  """Adamax: Adam with the infinity norm in place of the second moment.

  .. math::
     m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t,\\qquad
     v_t = \\max(\\beta_2 v_{t-1},\\, |g_t| + \\epsilon),\\qquad
     \\theta_t = \\theta_{t-1} - \\eta_t \\frac{m_t}{(1-\\beta_1^t)\\, v_t}

  Args:
    learning_rate: a non-negative number or a schedule.
    b1: the first moment's averaging coefficient, [0, 1).
    b2: the infinity norm's decay, [0, 1).
    eps: added to ``|g|`` (>= 0), keeping the denominator positive.

  Returns:
    A `GradientTransformation`: `scale_by_adamax` then the learning rate.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.adamax(learning_rate=0.1)
    >>> params = jnp.array([1.0, -2.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(2 * params, state, params)
    >>> jopt.apply_updates(params, updates)
    Array([ 0.90000004, -1.9       ], dtype=float32)

  References:
    Kingma and Ba, 2015, `Adam: a method for stochastic optimization
    <https://arxiv.org/abs/1412.6980>`_ (section 7.1).
  """
  return _combine.chain(
    _adam.scale_by_adamax.plain(b1=b1, b2=b2, eps=eps),
    _scale.scale_by_learning_rate.plain(learning_rate),
  )


@_hyperparams.sweepable(**_ADAM_RANGES)
def amsgrad(
  learning_rate: ScalarOrSchedule,
  b1: ArrayLike = 0.9,
  b2: ArrayLike = 0.999,
  eps: ArrayLike = 1e-8,
  eps_root: ArrayLike = 0.0,
  mu_dtype: Any | None = None,
  bias_correction_mu: bool = True,
  bias_correction_nu: bool = True,
) -> _base.GradientTransformation:
  """AMSGrad: Adam divided by the running maximum of its second moment.

  .. math::
     \\hat v^{\\max}_t = \\max(\\hat v^{\\max}_{t-1}, \\hat v_t),\\qquad
     \\theta_t = \\theta_{t-1} - \\eta_t
     \\frac{\\hat m_t}{\\sqrt{\\hat v^{\\max}_t + \\epsilon_\\text{root}}
     + \\epsilon}

  with :math:`\\hat m_t, \\hat v_t` Adam's moments (see `adam`); the
  denominator never shrinks, which restores convergence where Adam can
  fail.

  Args:
    learning_rate: a non-negative number or a schedule.
    b1: the first moment's averaging coefficient, [0, 1).
    b2: the second moment's averaging coefficient, [0, 1).
    eps: added to the denominator outside the root (>= 0).
    eps_root: added inside the root (>= 0).
    mu_dtype: dtype of the first moment; defaults to the params' dtype.
    bias_correction_mu: bias-correct the first moment (False: the paper).
    bias_correction_nu: bias-correct the second moment before the maximum
      (False: the paper).

  Returns:
    A `GradientTransformation`: `scale_by_amsgrad` then the learning rate.

  Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.amsgrad(learning_rate=0.1)
    >>> params = jnp.array([1.0, -2.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(2 * params, state, params)
    >>> jopt.apply_updates(params, updates)
    Array([ 0.9000007, -1.9000007], dtype=float32)

  References:
    Reddi et al., 2018, `On the convergence of Adam and beyond
    <https://openreview.net/forum?id=ryQu7f-RZ>`_.
  """
  return _combine.chain(
    _adam.scale_by_amsgrad.plain(
      b1=b1,
      b2=b2,
      eps=eps,
      eps_root=eps_root,
      mu_dtype=mu_dtype,
      bias_correction_mu=bias_correction_mu,
      bias_correction_nu=bias_correction_nu,
    ),
    _scale.scale_by_learning_rate.plain(learning_rate),
  )
