"""The learning-rate range test, vmapped over seeds.

The learning rate grows exponentially from ``min_lr`` to ``max_lr`` over
``num_steps`` training steps while the (exponentially smoothed,
bias-corrected) loss is recorded; a run stops once its smoothed loss exceeds
``diverge_threshold`` times the best seen. Seeds run as one vmapped
``lax.while_loop``: a diverged seed's state is frozen by a select, and the
loop ends when every seed has diverged, so the remaining steps cost nothing.

With ``num_rates``, the test is instead many short runs at fixed rates,
vmapped over rates and seeds: slower, but each point of the curve is the
loss a rate reaches on its own rather than just after the rates before it.
"""

from __future__ import annotations

import inspect
import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt.sweep.results._result import compile_stats
from jopt.sweep.runtime import _executor, _loop, _population, _programs
from jopt.sweep.strategies._lr_curve import (
  LRFindResult,
  _ema_noise,
  _mean_curve,
  _suggest,
)


def _smooth(avg, loss, t, smoothing):
  """The EMA of the loss and its bias-corrected value after step ``t``."""
  avg = smoothing * avg + (1 - smoothing) * jnp.asarray(loss, jnp.float32)
  return avg, avg / (1 - smoothing ** (t + 1).astype(jnp.float32))


def _rose(value, best, first, threshold):
  """Whether ``value`` rose too far above ``best`` (see `lr_find`).

  best > 0: value > threshold * best. Otherwise the rise is measured
  against |best| or the fall from ``first``, whichever is larger.
  """
  scale = jnp.where(best > 0, best, jnp.maximum(jnp.abs(best), first - best))
  rise = jnp.where(jnp.isfinite(best), value - best, -jnp.inf)
  return rise > (threshold - 1) * scale


def _legacy_form(init, step):
  """The old ``init(key)`` / ``step(state, lr, key)`` pair as init/segment.

  The adapted state carries the seed's step key and the step count, so
  step ``t`` gets ``fold_in(step_key, t)`` as before.
  """

  def new_init(hparams, key):
    del hparams
    k_init, k_steps = jax.random.split(key)
    return init(k_init), k_steps, jnp.zeros((), jnp.int32)

  def new_segment(state, hparams):
    inner, k_steps, t = state
    inner, loss = step(
      inner, hparams["learning_rate"], jax.random.fold_in(k_steps, t)
    )
    return (inner, k_steps, t + 1), {"loss": loss}

  return new_init, new_segment


def _is_legacy(init) -> bool:
  """Whether ``init`` is the deprecated one-argument ``init(key)``."""
  try:
    params = inspect.signature(init).parameters.values()
  except (TypeError, ValueError):
    return False
  positional = [
    p
    for p in params
    if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    and p.default is p.empty
  ]
  return len(positional) == 1 and not any(
    p.kind == p.VAR_POSITIONAL for p in params
  )


def _loss_of(metrics, metric):
  if not isinstance(metrics, dict) or metric not in metrics:
    raise ValueError(
      f"lr_find: the segment function must return a dict of "
      f"metrics holding {metric!r}."
    )
  return jnp.ravel(jnp.asarray(metrics[metric], jnp.float32))[-1]


def _ramp_trial(init, segment, lrs, metric, smoothing, diverge_threshold):
  """One seed of the range test: (raw losses [T], smoothed [T])."""
  num_steps = len(lrs)

  def one_seed(seed, key):
    del seed
    state = init({"learning_rate": jnp.asarray(lrs[0])}, key)
    nan = jnp.full((num_steps,), jnp.nan, jnp.float32)

    def cond(carry):
      t, *_, diverged = carry
      return (t < num_steps) & ~diverged

    def body(carry):
      t, state, avg, best, first, raw, smooth, diverged = carry
      new_state, metrics = segment(
        state, {"learning_rate": jnp.asarray(lrs)[t]}
      )
      loss = _loss_of(metrics, metric)
      avg, value = _smooth(avg, loss, t, smoothing)
      first = jnp.where(t == 0, value, first)
      diverged = ~jnp.isfinite(value) | _rose(
        value, best, first, diverge_threshold
      )
      state = jax.tree.map(
        lambda n, o: jnp.where(diverged, o, n), new_state, state
      )
      raw = raw.at[t].set(jnp.where(diverged, jnp.nan, loss))
      smooth = smooth.at[t].set(jnp.where(diverged, jnp.nan, value))
      best = jnp.where(diverged, best, jnp.minimum(best, value))
      return t + 1, state, avg, best, first, raw, smooth, diverged

    carry = (
      jnp.asarray(0),
      state,
      jnp.zeros((), jnp.float32),
      jnp.asarray(jnp.inf, jnp.float32),
      jnp.zeros((), jnp.float32),
      nan,
      nan,
      jnp.asarray(False),
    )
    _, _, _, _, _, raw, smooth, _ = jax.lax.while_loop(cond, body, carry)
    return raw, smooth

  return one_seed


def _fixed_trial(
  init, segment, num_steps, metric, smoothing, diverge_threshold
):
  """One (rate, seed) run: its last raw and smoothed loss, NaN if diverged."""
  steps = jnp.arange(num_steps)

  def one_run(lr, key):
    hp = {"learning_rate": lr}

    def body(carry, t):
      state, avg = carry
      state, metrics = segment(state, hp)
      loss = _loss_of(metrics, metric)
      avg, value = _smooth(avg, loss, t, smoothing)
      return (state, avg), (loss, value)

    carry = (init(hp, key), jnp.zeros((), jnp.float32))
    _, (raw, smooth) = jax.lax.scan(body, carry, steps)
    finite = jnp.all(jnp.isfinite(smooth))
    best = jnp.min(jnp.where(jnp.isfinite(smooth), smooth, jnp.inf))
    diverged = ~finite | _rose(smooth[-1], best, smooth[0], diverge_threshold)
    return (
      jnp.where(diverged, jnp.nan, raw[-1]),
      jnp.where(diverged, jnp.nan, smooth[-1]),
    )

  return one_run


class _LRFind(_loop.Strategy):
  """The range test as a one-step strategy (checkpointed when done)."""

  def __init__(
    self,
    ex,
    key,
    one,
    lrs,
    num_seeds,
    num_rates,
    smoothing,
    num_steps,
    *,
    owner=None,
    settings=(),
    keep=None,
  ):
    self.ex, self.key, self.one = ex, key, one
    # What the compiled runs are cached by (see `_programs.get`).
    self.owner, self.settings, self.keep = owner, settings, keep
    self.lrs, self.num_seeds, self.num_rates = lrs, num_seeds, num_rates
    self.smoothing, self.num_steps = smoothing, num_steps

  def init(self):
    return _loop.SearchState(0, {})

  def work(self, state):
    return state.step

  def terminate(self, state):
    return state.step >= 1

  def device_template(self, state):
    return None

  def step(self, state, progress):
    ex, spec = self.ex, self.key
    seeds = np.arange(self.num_seeds, dtype=np.int32)
    if self.num_rates is None:
      lr = np.zeros(self.num_seeds, np.float32)  # unused: the ramp is fixed
      seed = seeds
    else:  # every rate with every seed: rate-major
      lr = np.repeat(self.lrs, self.num_seeds)
      seed = np.tile(seeds, len(self.lrs))
    one = self.one
    # Runs that do not fit the memory budget together run in calls.
    raw, smooth = _programs.run_trials(
      ex,
      lambda row, kd: one(row[0], _executor.trial_key(spec.wrap(kd), row[1])),
      (lr, seed),
      spec.data,
      owner=self.owner,
      name="lr_find",
      key=self.settings,
      keep=self.keep,
    )
    if self.num_rates is not None:
      raw = raw.reshape(len(self.lrs), self.num_seeds).T
      smooth = smooth.reshape(len(self.lrs), self.num_seeds).T
    return _loop.SearchState(1, {"raw": raw, "smooth": smooth})

  def postprocess(self, state):
    raw, smooth = state.host["raw"], state.host["smooth"]
    curve = _mean_curve(smooth)
    noise = _ema_noise(self.smoothing, self.num_steps)
    if self.num_rates is None:
      return LRFindResult(
        self.lrs,
        raw,
        smooth,
        curve,
        _suggest(self.lrs, curve, raw, noise),
        **compile_stats(self.ex),
      )
    # Fixed rates: each point is its own run's smoothed final loss, so the
    # points themselves are the samples whose scatter is the noise (the
    # last raw loss would not be on the curve's scale).
    return LRFindResult(
      self.lrs,
      raw,
      smooth,
      curve,
      _suggest(
        self.lrs, curve, smooth, np.ones(len(self.lrs)), divide_minimum=1.0
      ),
      **compile_stats(self.ex),
    )


def lr_find(
  init: Callable[..., Any],
  segment: Callable[..., Any],
  *,
  key: jax.Array,
  min_lr: float = 1e-7,
  max_lr: float = 10.0,
  num_steps: int = 100,
  num_seeds: int = 1,
  smoothing: float = 0.98,
  diverge_threshold: float = 4.0,
  num_rates: int | None = None,
  metric: str = "loss",
  checkpoint_dir: str | None = None,
  devices: Sequence[jax.Device] | None = None,
  compiler_options: Mapping[str, Any] | None = None,
  lanes: int | None = None,
) -> LRFindResult:
  r"""The learning-rate range test: loss against an exponential LR ramp.

  Step ``t`` trains at :math:`\eta_t = \eta_{min} (\eta_{max} /
  \eta_{min})^{t / (T - 1)}`. With smoothing :math:`\beta`, the recorded
  loss is :math:`\bar\ell_t / (1 - \beta^{t+1})`, where :math:`\bar\ell_t =
  \beta \bar\ell_{t-1} + (1 - \beta) \ell_t`; a seed stops at the first step
  where it exceeds ``diverge_threshold`` times its lowest value so far, or is
  not finite. For a loss that reaches zero or below (a log-likelihood, an
  ELBO), "times the lowest" means nothing; there a seed stops when the loss
  rises above its lowest by ``diverge_threshold - 1`` times the larger of
  ``|lowest|`` and the fall from the first value to the lowest.

  The training function has the stepwise form every adaptive search takes,
  with one step per segment: ``init(hparams, key) -> state`` and
  ``segment(state, hparams) -> (state, metrics)``, where ``hparams`` is
  ``{"learning_rate": lr}`` (a float32 scalar: pass it to a jopt
  constructor or `jopt.set_hyperparams`) and ``metrics[metric]`` is the loss
  of the batch it trained on. Seeds (and, with ``num_rates``, rates) are
  the trials of one program run by the sweep executor. The older form
  ``init(key)`` / ``step(state, lr, key) -> (state, loss)`` still works and
  warns (DeprecationWarning).

  Args:
    init: ``init(hparams, key) -> state``: the model and optimizer state.
    segment: ``segment(state, hparams) -> (state, metrics)``: one training
      step at ``hparams["learning_rate"]``; the state carries its own data
      key.
    key: a JAX PRNG key; seed ``s`` gets ``fold_in(key, s)``.
    min_lr: the first learning rate (> 0).
    max_lr: the last learning rate (> ``min_lr``).
    num_steps: steps of the ramp (>= 3).
    num_seeds: independent runs (>= 1).
    smoothing: the smoothing factor :math:`\beta`, in ``[0, 1)``.
    diverge_threshold: stop when the loss exceeds this times its best (> 1;
      see above for losses that reach zero or below).
    num_rates: None for the range test above. An int (>= 3): instead,
      ``num_rates`` log-spaced fixed rates from ``min_lr`` to ``max_lr``,
      each trained for ``num_steps`` steps from the seed's ``init``, all
      rates and seeds in one program. A run counts as diverged when its
      smoothed loss is ever non-finite or ends above the rule above (its
      best so far being the lowest point of its own run).
    metric: the metric holding the loss.
    checkpoint_dir: a folder where the finished curves are saved; the same
      call then returns them without training, and a folder of another
      call is refused.
    devices: devices to shard seeds (and rates) over; default all.
    compiler_options: XLA options for the search's programs (see
      `jopt.sweep.run`).
    lanes: runs computed side by side per device (see `jopt.sweep.run`).

  Returns:
    An `LRFindResult` with the curves, the suggestions, ``plot()`` and
    the compile statistics every search reports (see `jopt.sweep.run`).

  Example:
    >>> import jax, jax.numpy as jnp, jopt
    >>> init = lambda hp, key: jnp.ones(())
    >>> def segment(w, hp):  # gradient descent on w**2 / 2
    ...   return w - hp["learning_rate"] * w, {"loss": 0.5 * w * w}
    >>> res = jopt.sweep.lr_find(init, segment, key=jax.random.key(0),
    ...                          min_lr=1e-3, max_lr=10.0, num_steps=50)
    >>> 0.1 < res.suggestions["valley"] < 3.0
    True

  References:
    Smith, `Cyclical learning rates for training neural networks
    <https://arxiv.org/abs/1506.01186>`_, WACV 2017.
  """
  _population.check_common(key, devices, lanes, compiler_options)
  if not (0 < min_lr < max_lr < np.inf):
    raise ValueError(
      f"need 0 < min_lr < max_lr < inf, got min_lr={min_lr}, max_lr={max_lr}."
    )
  for name, value, low in (
    ("num_steps", num_steps, 3),
    ("num_seeds", num_seeds, 1),
  ):
    if not isinstance(value, numbers.Integral) or value < low:
      raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
  if not 0.0 <= smoothing < 1.0:
    raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}.")
  if not diverge_threshold > 1.0:
    raise ValueError(
      f"diverge_threshold must be > 1, got {diverge_threshold!r}."
    )
  if num_rates is not None and (
    not isinstance(num_rates, numbers.Integral)
    or isinstance(num_rates, bool)
    or num_rates < 3
  ):
    raise ValueError(
      f"num_rates must be None or an int >= 3, got {num_rates!r}."
    )
  if _is_legacy(init):
    warnings.warn(
      "lr_find(init(key), step(state, lr, key)) is deprecated: pass "
      "init(hparams, key) and segment(state, hparams) -> (state, metrics), "
      "the form every jopt search takes, with hparams['learning_rate'].",
      DeprecationWarning,
      stacklevel=2,
    )
    init, segment = _legacy_form(init, segment)
    metric = "loss"
  if num_rates is None:
    lrs = np.geomspace(min_lr, max_lr, num_steps).astype(np.float32)
    ramp = _ramp_trial(init, segment, lrs, metric, smoothing, diverge_threshold)
    one = lambda lr, key: ramp(lr, key)  # noqa: E731
  else:
    lrs = np.geomspace(min_lr, max_lr, int(num_rates)).astype(np.float32)
    one = _fixed_trial(
      init, segment, num_steps, metric, smoothing, diverge_threshold
    )
  runs = num_seeds * (1 if num_rates is None else int(num_rates))
  ex = _population.executor_for(runs, devices, lanes, compiler_options)
  key_spec = _executor.KeySpec(key)
  search = _LRFind(
    ex,
    key_spec,
    one,
    lrs,
    int(num_seeds),
    num_rates,
    smoothing,
    num_steps,
    owner=segment,
    settings=(
      id(init),
      metric,
      float(smoothing),
      float(diverge_threshold),
      num_rates,
      int(num_steps),
      float(min_lr),
      float(max_lr),
    ),
    keep=init,
  )
  ckpt = None
  if checkpoint_dir is not None:
    kd = jax.ShapeDtypeStruct(key_spec.data.shape, key_spec.data.dtype)
    program = _programs.digest(
      (
        lambda lr, kd: one(lr, key_spec.wrap(kd)),
        (jax.ShapeDtypeStruct((), np.float32), kd),
      )
    )
    ckpt = _population.checkpoint_for(
      checkpoint_dir,
      "lr_find",
      space={},
      key=key,
      functions=[init, segment],
      ex=ex,
      program=program,
      min_lr=min_lr,
      max_lr=max_lr,
      num_steps=num_steps,
      num_seeds=num_seeds,
      smoothing=smoothing,
      diverge_threshold=diverge_threshold,
      num_rates=num_rates,
      metric=metric,
    )
  result, _ = _loop.iterate(search, ex, checkpoint=ckpt)
  return result
