"""The task the race and the search-efficiency benchmark share.

The Flax NNX CNN of ``examples/cnn`` on scikit-learn's digits, AdamW, as
``init``/``segment``/``train_fn`` for jopt's searches, and the judge of a
search's pick: its TRUE quality, retrained from fresh seeds and scored on
the test split that no search sees.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jopt
from jopt import sweep

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "cnn"))
import data as cnn_data  # noqa: E402
import model as cnn_model  # noqa: E402
import train as cnn_train  # noqa: E402

NAMES = ("learning_rate", "weight_decay", "b1")
# The optimizer's values for a name that a search leaves out.
DEFAULTS = {"learning_rate": 1e-3, "weight_decay": 1e-4, "b1": 0.9}


@dataclasses.dataclass(frozen=True)
class Budget:
  """What every search gets.

  Attributes:
    features: channels of the CNN's two convolutions (the example's default
      is 16-32; 8-16 keeps the race inside 15 minutes on 2 loaded cores).
    batch_size: examples per step.
    segment_steps: steps between two validation losses.
    segments: segments of a full trial.
    repeats: keys each search is repeated with.
    seeds: fresh seeds a pick is retrained from.
    run_trials: sizes of the quasirandom `run` (one anytime point each).
    sh_trials: trials in successive halving's first rung.
    hb_iterations: Hyperband's iterations (its whole set of brackets).
    population: PBT members.
    batched: (rounds, batch size) of each `optuna_search` contestant.
    optuna_trials: trials of each sequential Optuna study, and of each Ray
      Tune study.
  """

  features: tuple[int, int] = (8, 16)
  batch_size: int = 32
  segment_steps: int = 15
  segments: int = 9
  repeats: int = 5
  seeds: int = 3
  run_trials: tuple[int, ...] = (8, 24)
  # The adaptive searches get about the member-steps an Optuna study spends
  # (2000-2300 in runs 1-3): successive halving 54 trials (1890), Hyperband
  # two iterations (2070), PBT 16 members (2160).
  sh_trials: int = 54
  hb_iterations: int = 2
  population: int = 16
  batched: tuple[tuple[int, int], ...] = ((3, 8), (6, 4))
  optuna_trials: int = 24


QUICK = Budget(
  features=(4, 8),
  segment_steps=4,
  segments=3,
  repeats=2,
  seeds=3,
  run_trials=(8,),
  sh_trials=9,
  hb_iterations=1,
  population=4,
  batched=((2, 4),),
  optuna_trials=6,
)


class Task:
  """The CNN's ``init``/``segment``/``train_fn`` and the true-quality judge.

  ``space`` defaults to learning rate, weight decay and ``b1``; a name it
  leaves out keeps its value in `DEFAULTS`.
  """

  def __init__(self, budget: Budget, space: dict | None = None):
    self.budget = budget
    splits = cnn_data.load_splits(seed=0)
    self.x_tr, self.y_tr = (
      jnp.asarray(splits.x_train),
      jnp.asarray(splits.y_train),
    )
    self.x_va, self.y_va = jnp.asarray(splits.x_val), jnp.asarray(splits.y_val)
    self.x_te, self.y_te = (
      jnp.asarray(splits.x_test),
      jnp.asarray(splits.y_test),
    )
    defaults = cnn_train.Config()
    self.cfg = cnn_train.Config(
      features=budget.features, dropout_rate=0.0, batch_size=budget.batch_size
    )
    self.space = space or {
      "learning_rate": sweep.log_uniform(*defaults.learning_rate),
      "weight_decay": sweep.log_uniform(*defaults.weight_decay),
      "b1": sweep.uniform(0.5, 0.99),
    }
    model = cnn_train.create_model(self.cfg, jax.random.key(0))
    self.graphdef, _, self.rest = nnx.split(model, nnx.Param, ...)
    # Built with placeholders: a trial's values live in its optimizer state
    # (set_hyperparams), so PBT can change them between rounds.
    self.tx = jopt.adamw(
      DEFAULTS["learning_rate"],
      b1=DEFAULTS["b1"],
      weight_decay=DEFAULTS["weight_decay"],
    )
    self.judge_fn = jax.jit(jax.vmap(self._true_loss))
    self.cache: dict[tuple, float] = {}
    self.judge_seconds = 0.0

  def xent(self, params, x, y):
    net = nnx.merge(self.graphdef, params, self.rest)
    return cnn_model.cross_entropy(net(x), y)

  def init(self, hp, key):
    k_model, k_data = jax.random.split(key)
    model = cnn_train.create_model(self.cfg, k_model)
    params = nnx.state(model, nnx.Param)
    opt_state = jopt.set_hyperparams(self.tx.init(params), **hp)
    # Raw key bits, not a typed key: successive halving and Hyperband gather
    # states through NumPy, which refuses typed keys.
    return params, opt_state, jax.random.key_data(k_data)

  def segment(self, state, hp):
    params, opt_state, key = state
    opt_state = jopt.set_hyperparams(opt_state, **hp)
    n, bs = self.x_tr.shape[0], self.budget.batch_size

    def step(carry, k):
      params, opt_state = carry
      idx = jax.random.randint(k, (bs,), 0, n)
      loss, g = jax.value_and_grad(self.xent)(
        params, self.x_tr[idx], self.y_tr[idx]
      )
      updates, opt_state = self.tx.update(g, opt_state, params)
      return (jopt.apply_updates(params, updates), opt_state), loss

    key, sub = jax.random.split(jax.random.wrap_key_data(key))
    (params, opt_state), _ = jax.lax.scan(
      step,
      (params, opt_state),
      jax.random.split(sub, self.budget.segment_steps),
    )
    val = self.xent(params, self.x_va, self.y_va)
    return (params, opt_state, jax.random.key_data(key)), {"val_loss": val}

  def train_fn(self, hp, key):
    """One full trial, for `run` and `optuna_search`."""

    def body(state, _):
      state, m = self.segment(state, hp)
      return state, m["val_loss"]

    _, curve = jax.lax.scan(
      body, self.init(hp, key), None, length=self.budget.segments
    )
    return {"val_loss": curve[-1], "val_curve": curve}

  def _true_loss(self, schedule, key):
    """Trains a per-segment schedule of hyperparameters; the TEST loss."""
    first = {k: v[0] for k, v in schedule.items()}

    def body(state, hp):
      return self.segment(state, hp)[0], None

    state, _ = jax.lax.scan(body, self.init(first, key), schedule)
    return self.xent(state[0], self.x_te, self.y_te)

  def true_quality(self, picks: list[dict]) -> list[float]:
    """Mean test loss of each pick retrained from ``seeds`` fresh seeds.

    A pick maps each name to a scalar or a per-segment [segments] array.
    Every pick uses the same seeds (common random numbers: differences
    between picks are not seed luck), none of which any search uses.
    """
    s = self.budget.segments
    scheds = [
      {
        k: np.broadcast_to(np.asarray(p.get(k, DEFAULTS[k]), np.float32), (s,))
        for k in NAMES
      }
      for p in picks
    ]
    tags = [
      tuple(np.round(np.concatenate([d[k] for k in NAMES]), 7)) for d in scheds
    ]
    todo = list(dict.fromkeys(t for t in tags if t not in self.cache))
    if todo:
      start = time.perf_counter()
      rows = [(t, seed) for t in todo for seed in range(self.budget.seeds)]
      width = 24
      losses = []
      for i in range(0, len(rows), width):
        chunk = rows[i : i + width]
        chunk = chunk + [chunk[0]] * (width - len(chunk))
        arr = np.asarray([t for t, _ in chunk], np.float32).reshape(
          width, len(NAMES), s
        )
        sched = {k: jnp.asarray(arr[:, j]) for j, k in enumerate(NAMES)}
        keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(10**6), i))(
          jnp.asarray([sd for _, sd in chunk])
        )
        losses.extend(
          np.asarray(self.judge_fn(sched, keys))[: len(rows[i : i + width])]
        )
      for j, t in enumerate(todo):
        vals = losses[j * self.budget.seeds : (j + 1) * self.budget.seeds]
        self.cache[t] = float(np.mean(vals))
      self.judge_seconds += time.perf_counter() - start
    return [self.cache[t] for t in tags]
