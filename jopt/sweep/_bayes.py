"""Batched Bayesian optimization: Optuna proposes, one vmapped batch trains.

Each round asks an Optuna study for ``batch_size`` trials, trains them as
one ``jit(vmap(train_fn))`` call (a fixed batch size, so one compile for the
whole search) and tells the study their results. Optuna is an optional
dependency: ``pip install "jopt[optuna]"``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jopt.sweep import _executor, _loop, _population, _result, _space, _stepwise

_INSTALL = 'optuna_search needs Optuna: pip install "jopt[optuna]"'


def _import_optuna():
  try:
    import optuna
  except ImportError as e:
    raise ImportError(_INSTALL) from e
  return optuna


@dataclasses.dataclass(repr=False)
class OptunaResult(_result.SweepResult):
  """A `SweepResult` of `optuna_search`, with the study and round of trials.

  Attributes (beyond `SweepResult`'s):
    study: the ``optuna.Study`` every trial was told to.
    rounds: [N] int: the round in which each trial was asked.
    metric, mode: what the search optimized.

  `save` writes everything but the study (load gives ``study=None``); keep
  a study across sessions with Optuna's own storage (``storage=...``).

  Example: see `optuna_search`; ``res.study.best_params`` and
  ``res.best()`` agree, ``res.to_pandas()`` lists every trial.
  """

  study: Any = None
  rounds: np.ndarray | None = None
  metric: str = ""
  mode: str = "min"

  _not_saved = ("study",)  # a live study: Optuna's storage persists it

  def __repr__(self) -> str:
    return (f"OptunaResult(num_trials={len(self)}, metric={self.metric!r}, "
            f"num_compiles={self.num_compiles})")

  def best(self, metric: str | None = None, mode: str | None = None):
    """The best trial (default: by the search's metric and mode)."""
    return super().best(metric or self.metric, mode or self.mode)

  def top_k(self, metric: str | None = None, k: int = 1,
            mode: str | None = None):
    """The ``k`` best trials (default: by the search's metric and mode)."""
    return super().top_k(metric or self.metric, k, mode or self.mode)


def _distribution(optuna, dist):
  d = optuna.distributions
  if isinstance(dist, _space.Choice):
    plain = all(isinstance(v, (str, int, float, bool)) for v in dist.values)
    return d.CategoricalDistribution(
        list(dist.values) if plain else list(range(len(dist.values))))
  if isinstance(dist, _space.IntUniform):
    return d.IntDistribution(dist.low, dist.high)
  return d.FloatDistribution(dist.low, dist.high,
                             log=isinstance(dist, _space.LogUniform))


def _passed(dist, value):
  """The value ``train_fn`` receives for an Optuna parameter value."""
  if isinstance(dist, _space.Choice):
    if not all(isinstance(v, (str, int, float, bool)) for v in dist.values):
      index = value
    else:
      index = dist.values.index(value)
    return dist.from_unit(np.array([(index + 0.5) / len(dist.values)]))[0]
  if isinstance(dist, _space.IntUniform):
    return np.int32(value)
  return np.float32(value)


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
    raise ValueError(f"sampler must be one of {sorted(factories)} or an "
                     f"optuna sampler, got {sampler!r}.")
  if sampler == "cmaes":
    try:
      import cmaes  # noqa: F401  (Optuna's CMA-ES sampler needs it)
    except ImportError as e:
      raise ImportError(
          "sampler='cmaes' needs the cmaes package: pip install cmaes") from e
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
    train_fn: Callable[[dict[str, jax.Array], jax.Array], dict[str, Any]],
    space: Mapping[str, Any],
    *,
    num_rounds: int,
    batch_size: int,
    key: jax.Array,
    metric: str,
    mode: str = "min",
    sampler: Any = None,
    study: Any = None,
    checkpoint_dir: str | None = None,
    progress: bool = False,
    devices: Sequence[jax.Device] | None = None,
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

  For a fixed number of trials, fewer and wider rounds finish sooner only
  where width is free (an accelerator); on CPU, where every device computes
  one trial at a time, more rounds of a smaller batch take about as long
  and let the sampler learn from more results. In `benchmarks/race.py` (24
  trials on 2 CPU cores) 6 rounds of 4 matched sequential Optuna's quality,
  3 rounds of 8 did not (`benchmarks/RACE.md`, run 4).

  Args:
    train_fn: ``train_fn(hparams, key) -> metrics`` for one trial, as for
      `jopt.sweep.run`.
    space: a dict ``name -> distribution`` (no static choices).
    num_rounds: ask/train/tell rounds (>= 1).
    batch_size: trials per round (>= 1).
    key: a JAX PRNG key (also seeds the sampler).
    metric: the metric to optimize.
    mode: ``"min"`` or ``"max"``.
    sampler: for a new study: ``"tpe"`` (the default; with the constant
      liar, for batches), ``"gp"``, ``"cmaes"``, ``"random"``, or an
      ``optuna.samplers`` instance. ``"cmaes"`` needs the ``cmaes`` package.
    study: an existing single-objective study to continue (default: a new
      in-memory one). It keeps its own sampler, and its direction must
      agree with ``mode``.
    checkpoint_dir: a folder where the study and every trial so far are
      saved after each round; the same call resumes from it to the same
      result, bit for bit (the study is pickled, so it must be in-memory).
    progress: show a progress bar (trials).
    devices: devices to shard a batch over; default ``jax.devices()``.
    lanes: trials computed side by side per device (see `jopt.sweep.run`).

  Returns:
    An `OptunaResult` with every trial, in the order they were asked.

  Raises:
    ImportError: Optuna is not installed.
    ValueError: a bad count or mode, a study whose direction disagrees
      with ``mode``, or both ``sampler`` and ``study``.

  Example:
    >>> import jax, jax.numpy as jnp, jopt
    >>> def train_fn(hp, key):
    ...   return {"loss": (jnp.log10(hp["lr"]) + 2.0) ** 2}
    >>> res = jopt.sweep.optuna_search(
    ...     train_fn, {"lr": jopt.sweep.log_uniform(1e-4, 1.0)},
    ...     num_rounds=3, batch_size=8, key=jax.random.key(0), metric="loss")
    >>> len(res), res.num_compiles
    (24, 1)

  References:
    Akiba et al., `Optuna: a next-generation hyperparameter optimization
    framework <https://arxiv.org/abs/1907.10902>`_, KDD 2019.
  """
  optuna = _import_optuna()
  _population.check_common(key, devices, lanes)
  space = _population.check_space(space, "optuna_search")
  for name, value in (("num_rounds", num_rounds), ("batch_size", batch_size)):
    if (not isinstance(value, numbers.Integral) or isinstance(value, bool)
        or value < 1):
      raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
  if mode not in ("min", "max"):
    raise ValueError(f"mode must be 'min' or 'max', got {mode!r}.")
  seed = int(_space.key_seed(key)[-1])
  direction = "minimize" if mode == "min" else "maximize"
  if study is None:
    with _quiet(optuna):
      study = optuna.create_study(
          direction=direction,
          sampler=_make_sampler(optuna, "tpe" if sampler is None else sampler,
                                seed))
  else:
    if sampler is not None:
      raise ValueError("sampler= is for a new study; the study passed keeps "
                       "its own sampler (set it when creating the study).")
    if len(study.directions) != 1:
      raise ValueError("study must be single-objective; got "
                       f"{len(study.directions)} directions.")
    if study.direction.name.lower() != direction:
      raise ValueError(
          f"mode={mode!r} disagrees with the study's direction "
          f"({study.direction.name.lower()}): pass mode="
          f"{'min' if study.direction.name == 'MINIMIZE' else 'max'!r}.")
  distributions = {n: _distribution(optuna, d) for n, d in space.items()}
  ex = _population.executor_for(batch_size, devices, lanes)
  search = _Optuna(optuna, ex, _executor.KeySpec(key), space, train_fn,
                   study, distributions, num_rounds=num_rounds,
                   batch_size=batch_size, metric=metric, mode=mode)
  ckpt = None
  if checkpoint_dir is not None:
    ckpt = _population.checkpoint_for(
        checkpoint_dir, "optuna_search", space=space, key=key,
        functions=[train_fn], ex=ex, program=search.program_digest(),
        num_rounds=num_rounds, batch_size=batch_size, metric=metric,
        mode=mode, sampler=repr(type(study.sampler).__name__))
  with _quiet(optuna):
    result, _ = _loop.iterate(search, ex, checkpoint=ckpt, progress=progress,
                              total=num_rounds * batch_size,
                              desc="jopt.sweep.optuna_search")
  return result


class _Optuna:
  """Batched ask/train/tell as a strategy: one step is one round.

  The study (with its sampler's random state) is part of the saved state,
  so a resumed search asks exactly what the uninterrupted one asked.
  """

  def __init__(self, optuna, ex, key, space, train_fn, study, distributions,
               *, num_rounds, batch_size, metric, mode):
    self.optuna, self.ex, self.key, self.space = optuna, ex, key, space
    self.train_fn = train_fn
    self.study = study
    self.distributions = distributions
    self.num_rounds, self.batch_size = num_rounds, batch_size
    self.metric, self.mode = metric, mode
    self.size, self.ndev = ex.padded(batch_size), ex.num_devices_for(
        batch_size)
    self._program = None

  def _one(self, hp, index, kd):
    return self.train_fn(hp, _executor.trial_key(self.key.wrap(kd), index))

  def program_digest(self) -> str:
    import hashlib

    hp = {n: jax.ShapeDtypeStruct((), np.asarray(_passed(
        d, _first_value(self.distributions[n]))).dtype)
          for n, d in self.space.items()}
    kd = jax.ShapeDtypeStruct(self.key.data.shape, self.key.data.dtype)
    text = jax.jit(self._one).lower(
        hp, jax.ShapeDtypeStruct((), np.int32), kd).as_text(debug_info=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]

  def init(self):
    return _loop.SearchState(0, {"passed": {n: [] for n in self.space},
                                 "metrics": {}, "rounds": []})

  def work(self, state):
    return state.step * self.batch_size

  def terminate(self, state):
    return state.step >= self.num_rounds

  def device_template(self, state):
    return None

  def step(self, state):
    ex, optuna = self.ex, self.optuna
    study = self.study
    trials = [study.ask(self.distributions) for _ in range(self.batch_size)]
    hp = {n: np.array([_passed(d, t.params[n]) for t in trials])
          for n, d in self.space.items()}
    ids = np.array([t.number for t in trials], np.int32)
    rows = _executor.pad_rows(self.batch_size, self.size)
    args = (ex.put({n: v[rows] for n, v in hp.items()}, self.ndev),
            ex.put(ids[rows], self.ndev),
            ex.put_replicated(self.key.data, self.ndev))
    if self._program is None:
      self._program = ex.compile(
          ex.per_trial(self._one, self.ndev, (0, 0, None)), args)
    ex.note_used(self._program)
    out = ex.gather(dict(self._program(*args)))
    out = {k: v[:self.batch_size] for k, v in out.items()}
    _population.check_metric(out, self.metric)
    values = _population.ranking_values(out, self.metric, "min")  # inf = bad
    raw = np.asarray(out[self.metric], np.float64).reshape(
        self.batch_size, -1)[:, -1]
    for t, v, ok in zip(trials, raw, np.isfinite(values), strict=True):
      if ok:
        study.tell(t, float(v))
      else:
        study.tell(t, state=optuna.trial.TrialState.FAIL)
    h = state.host
    metrics = {k: [*h["metrics"].get(k, []), v] for k, v in out.items()}
    host = {"passed": {n: [*h["passed"][n], hp[n]] for n in self.space},
            "metrics": metrics,
            "rounds": [*h["rounds"], np.full(self.batch_size, state.step)],
            "study": np.frombuffer(_pickle_study(study), np.uint8)}
    return _loop.SearchState(state.step + 1, host)

  def restore(self, state):
    """Adopts the study saved with a resumed state."""
    if "study" in state.host:
      import pickle

      self.study = pickle.loads(state.host["study"].tobytes())

  def postprocess(self, state):
    h = state.host
    hparams = {n: np.concatenate(v) for n, v in h["passed"].items()}
    return _stepwise.make_result(
        OptunaResult, self.space, hparams,
        {k: np.concatenate(v) for k, v in h["metrics"].items()},
        study=self.study, rounds=np.concatenate(h["rounds"]),
        metric=self.metric, mode=self.mode,
        num_compiles=self.ex.num_compiles)


def _pickle_study(study) -> bytes:
  import pickle

  try:
    return pickle.dumps(study)
  except Exception as e:  # noqa: BLE001  (storages that hold connections)
    raise ValueError(
        "checkpoint_dir needs a study that can be pickled (an in-memory "
        "one); a study with a database storage= persists itself: resume it "
        "by passing it again, without checkpoint_dir.") from e


def _first_value(dist):
  """A value of an Optuna distribution (for the dtype of what is passed)."""
  if hasattr(dist, "choices"):
    return dist.choices[0]
  return dist.low
