"""Batched Bayesian optimization: Optuna proposes, one vmapped batch trains.

Each round asks an Optuna study for ``batch_size`` trials, trains them as
one ``jit(vmap(train_fn))`` call (a fixed batch size, so one compile for the
whole search) and tells the study their results; on the stepwise form the
round trains segment by segment and the study's pruner stops trials between
segments (the strategies are in `_bayes_rounds.py`). Optuna is an optional
dependency: ``pip install "jopt[optuna]"``.
"""

from __future__ import annotations

import contextlib
import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from jopt.sweep import _space
from jopt.sweep.runtime import _executor, _loop, _population
from jopt.sweep.strategies._bayes_rounds import (
  OptunaResult,
  _Optuna,
  _OptunaStepwise,
)

_INSTALL = 'optuna_search needs Optuna: pip install "jopt[optuna]"'


def _import_optuna():
  try:
    import optuna
  except ImportError as e:
    raise ImportError(_INSTALL) from e
  return optuna


def _distribution(optuna, dist):
  d = optuna.distributions
  if isinstance(dist, _space.Choice):
    plain = all(isinstance(v, (str, int, float, bool)) for v in dist.values)
    return d.CategoricalDistribution(
      list(dist.values) if plain else list(range(len(dist.values)))
    )
  if isinstance(dist, _space.IntUniform):
    return d.IntDistribution(dist.low, dist.high)
  return d.FloatDistribution(
    dist.low, dist.high, log=isinstance(dist, _space.LogUniform)
  )


def _make_sampler(optuna, sampler, seed):
  if not isinstance(sampler, str):
    return sampler
  factories = {
    "tpe": lambda: optuna.samplers.TPESampler(seed=seed, constant_liar=True),
    "gp": lambda: optuna.samplers.GPSampler(seed=seed),
    "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed),
    "random": lambda: optuna.samplers.RandomSampler(seed=seed),
  }
  if sampler not in factories:
    raise ValueError(
      f"sampler must be one of {sorted(factories)} or an "
      f"optuna sampler, got {sampler!r}."
    )
  if sampler == "cmaes":
    try:
      import cmaes  # noqa: F401  (Optuna's CMA-ES sampler needs it)
    except ImportError as e:
      raise ImportError(
        "sampler='cmaes' needs the cmaes package: pip install cmaes"
      ) from e
  with warnings.catch_warnings():
    # constant_liar (what makes TPE propose diverse batches) is flagged
    # experimental by Optuna.
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    return factories[sampler]()


@contextlib.contextmanager
def _quiet(optuna):
  level = optuna.logging.get_verbosity()
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  try:
    yield
  finally:
    optuna.logging.set_verbosity(level)


def optuna_search(
  train_fn: Callable[[dict[str, jax.Array], jax.Array], dict[str, Any]]
  | tuple[_population.InitFn, _population.SegmentFn],
  space: Mapping[str, Any],
  *,
  num_rounds: int,
  batch_size: int,
  key: jax.Array,
  metric: str,
  mode: str = "min",
  num_segments: int | None = None,
  steps_per_segment: int = 1,
  sampler: Any = None,
  pruner: Any = None,
  study: Any = None,
  checkpoint_dir: str | None = None,
  progress: bool = False,
  devices: Sequence[jax.Device] | None = None,
  compiler_options: Mapping[str, Any] | None = None,
  lanes: int | None = None,
) -> OptunaResult:
  """Bayesian optimization with Optuna, ``batch_size`` trials per program.

  Each of ``num_rounds`` rounds asks the study for ``batch_size`` trials,
  trains them together as one vmapped (and device-sharded) call of
  ``train_fn``, and tells the study each trial's ``metric`` (a curve's last
  value; a non-finite value is told as a failed trial). The batch size is
  fixed, so ``train_fn`` compiles once. Each trial gets the key
  ``fold_in(key, number)``, ``number`` being its Optuna trial number, so a
  continued study never repeats a key.

  Pruning: pass ``train_fn`` as the stepwise pair ``(init, segment)`` of
  `run_stepwise` and ``num_segments``. A round's trials then train segment
  by segment; after each segment every live trial reports its ``metric``
  with ``trial.report(value, step)`` (``step``: the segment's index, from
  0) and asks ``trial.should_prune()``, as the objective of a sequential
  study does. A pruned trial is told ``TrialState.PRUNED`` and stops
  training; the others go on unchanged (the same bits as without
  pruning). The survivors are packed into the fewest groups of ``lanes``,
  so pruned trials stop costing compute once they free a whole group on a
  device (every pruned trial on CPU, where a group is one trial);
  ``segments_run`` and ``member_steps`` count only the segments each trial
  was trained. A trial whose value turns non-finite stops and is told as
  failed. A trial that reaches its last segment completes. Optuna's
  pruners compare a trial with finished trials, so the trials of a round
  are judged against earlier rounds, as in a study run with ``n_jobs``
  equal to the batch size.

  For a fixed number of trials, fewer and wider rounds finish sooner only
  where width is free (an accelerator); on CPU, where every device computes
  one trial at a time, more rounds of a smaller batch take about as long
  and let the sampler learn from more results. In `benchmarks/race.py` (24
  trials on 2 CPU cores) 6 rounds of 4 matched sequential Optuna's quality,
  3 rounds of 8 did not (`benchmarks/RACE.md`, run 4).

  Args:
    train_fn: ``train_fn(hparams, key) -> metrics`` for one trial, as for
      `jopt.sweep.run`; or the pair ``(init, segment)``, ``init(hparams,
      key) -> state`` and ``segment(state, hparams) -> (state, metrics)``,
      as for `jopt.sweep.run_stepwise` (needed for pruning).
    space: a dict ``name -> distribution`` (no static choices).
    num_rounds: ask/train/tell rounds (>= 1).
    batch_size: trials per round (>= 1).
    key: a JAX PRNG key (also seeds the sampler).
    metric: the metric to optimize (and, stepwise, to report and prune by).
    mode: ``"min"`` or ``"max"``.
    num_segments: segments of a full trial, for the ``(init, segment)``
      form (>= 1; only with it).
    steps_per_segment: training steps in one segment, for ``member_steps``.
    sampler: for a new study: ``"tpe"`` (the default; with the constant
      liar, for batches), ``"gp"``, ``"cmaes"``, ``"random"``, or an
      ``optuna.samplers`` instance. ``"cmaes"`` needs the ``cmaes`` package.
    pruner: for a new study: an ``optuna.pruners.BasePruner`` (needs the
      ``(init, segment)`` form), or None: no pruning (``NopPruner``).
    study: an existing single-objective study to continue (default: a new
      in-memory one). It keeps its own sampler and pruner, as a study does
      in Optuna (``create_study`` gives a ``MedianPruner`` unless told
      otherwise; it prunes only in the ``(init, segment)`` form), and its
      direction must agree with ``mode``.
    checkpoint_dir: a folder where the study and every trial so far are
      saved after each round; the same call resumes from it to the same
      result, bit for bit (the study is pickled, so it must be in-memory).
      The study of the resumed call (``study`` or a new one) receives the
      saved trials and the saved sampler, then every new trial; a study
      holding trials the checkpoint does not is refused.
    progress: show a progress bar (trials; stepwise: member-segments).
    devices: devices to shard a batch over; default ``jax.devices()``.
    compiler_options: XLA options for the search's programs (see
      `jopt.sweep.run`).
    lanes: trials computed side by side per device (see `jopt.sweep.run`).

  Returns:
    An `OptunaResult` with every trial, in the order they were asked; in
    the stepwise form each metric is a [N, num_segments] curve of the
    values after each segment (held after a trial stopped), and
    ``pruned_at`` gives the step at which each trial was pruned (-1: not
    pruned).

  Raises:
    ImportError: Optuna is not installed.
    ValueError: a bad count or mode, a study whose direction disagrees
      with ``mode``, ``sampler`` or ``pruner`` with ``study``, a pruner
      without the ``(init, segment)`` form, or ``num_segments`` missing
      with it.

  Example:
    >>> import jax, jax.numpy as jnp, jopt
    >>> def train_fn(hp, key):
    ...   return {"loss": (jnp.log10(hp["lr"]) + 2.0) ** 2}
    >>> res = jopt.sweep.optuna_search(
    ...     train_fn, {"lr": jopt.sweep.log_uniform(1e-4, 1.0)},
    ...     num_rounds=3, batch_size=8, key=jax.random.key(0), metric="loss")
    >>> len(res), res.num_compiles
    (24, 1)

    With pruning, on the stepwise form:

    >>> import optuna
    >>> init = lambda hp, key: jnp.ones(())
    >>> def segment(x, hp):
    ...   x = x * (1 - hp["lr"])
    ...   return x, {"loss": x * x}
    >>> res = jopt.sweep.optuna_search(
    ...     (init, segment), {"lr": jopt.sweep.uniform(0.0, 0.5)},
    ...     num_rounds=3, batch_size=4, num_segments=5,
    ...     key=jax.random.key(0), metric="loss",
    ...     pruner=optuna.pruners.MedianPruner(n_startup_trials=4))
    >>> bool(res.pruned.any()), res.member_steps < 3 * 4 * 5
    (True, True)

  References:
    Akiba et al., `Optuna: a next-generation hyperparameter optimization
    framework <https://arxiv.org/abs/1907.10902>`_, KDD 2019.
  """
  optuna = _import_optuna()
  _population.check_common(key, devices, lanes, compiler_options)
  space = _population.check_space(space, "optuna_search")
  for name, value in (("num_rounds", num_rounds), ("batch_size", batch_size)):
    if (
      not isinstance(value, numbers.Integral)
      or isinstance(value, bool)
      or value < 1
    ):
      raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
  if mode not in ("min", "max"):
    raise ValueError(f"mode must be 'min' or 'max', got {mode!r}.")
  stepwise = isinstance(train_fn, tuple)
  if stepwise:
    if len(train_fn) != 2 or not all(map(callable, train_fn)):
      raise ValueError(
        "train_fn must be a function or the pair (init, "
        "segment) of the stepwise form."
      )
    if num_segments is None:
      raise ValueError(
        "num_segments is needed with the (init, segment) "
        "form: the segments of a full trial."
      )
    num_segments = _population.check_int("num_segments", num_segments, 1)
  elif num_segments is not None:
    raise ValueError(
      "num_segments is for the (init, segment) form; a "
      "train_fn trains a whole trial in one call."
    )
  steps_per_segment = _population.check_int(
    "steps_per_segment", steps_per_segment, 1
  )
  if pruner is not None:
    if not isinstance(pruner, optuna.pruners.BasePruner):
      raise ValueError(
        "pruner must be an optuna.pruners.BasePruner, got "
        f"{type(pruner).__name__}."
      )
    if not stepwise:
      raise ValueError(
        "pruner= needs values during training: pass train_fn as the "
        "pair (init, segment) with num_segments=."
      )
  seed = int(_space.key_seed(key)[-1])
  direction = "minimize" if mode == "min" else "maximize"
  if study is None:
    with _quiet(optuna):
      study = optuna.create_study(
        direction=direction,
        sampler=_make_sampler(
          optuna, "tpe" if sampler is None else sampler, seed
        ),
        pruner=optuna.pruners.NopPruner() if pruner is None else pruner,
      )
  else:
    for name, value in (("sampler", sampler), ("pruner", pruner)):
      if value is not None:
        raise ValueError(
          f"{name}= is for a new study; the study passed keeps its own "
          f"{name} (set it when creating the study)."
        )
    if len(study.directions) != 1:
      raise ValueError(
        "study must be single-objective; got "
        f"{len(study.directions)} directions."
      )
    if study.direction.name.lower() != direction:
      raise ValueError(
        f"mode={mode!r} disagrees with the study's direction "
        f"({study.direction.name.lower()}): pass mode="
        f"{'min' if study.direction.name == 'MINIMIZE' else 'max'!r}."
      )
  distributions = {n: _distribution(optuna, d) for n, d in space.items()}
  ex = _population.executor_for(batch_size, devices, lanes, compiler_options)
  key_spec = _executor.KeySpec(key)
  settings = dict(
    num_rounds=num_rounds,
    batch_size=batch_size,
    metric=metric,
    mode=mode,
    sampler=repr(type(study.sampler).__name__),
  )
  if stepwise:
    search = _OptunaStepwise(
      optuna,
      ex,
      key_spec,
      space,
      _population.population_for(*train_fn),
      study,
      distributions,
      num_rounds=num_rounds,
      batch_size=batch_size,
      num_segments=num_segments,
      steps_per_segment=steps_per_segment,
      metric=metric,
      mode=mode,
    )
    functions, total = list(train_fn), num_rounds * batch_size * num_segments
    settings.update(
      num_segments=num_segments, pruner=type(study.pruner).__name__
    )
  else:
    search = _Optuna(
      optuna,
      ex,
      key_spec,
      space,
      train_fn,
      study,
      distributions,
      num_rounds=num_rounds,
      batch_size=batch_size,
      metric=metric,
      mode=mode,
    )
    functions, total = [train_fn], num_rounds * batch_size
  ckpt = None
  if checkpoint_dir is not None:
    ckpt = _population.checkpoint_for(
      checkpoint_dir,
      "optuna_search",
      space=space,
      key=key,
      functions=functions,
      ex=ex,
      program=search.program_digest(),
      **settings,
    )
  with _quiet(optuna):
    result, _ = _loop.iterate(
      search,
      ex,
      checkpoint=ckpt,
      progress=progress,
      total=total,
      desc="jopt.sweep.optuna_search",
    )
  return result
