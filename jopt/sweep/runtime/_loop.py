"""One loop under every search: init, step, terminate, postprocess.

A strategy (`run`, `run_stepwise`, successive halving, Hyperband, PBT,
Optuna, `lr_find`) says only how it chooses what to train next; `iterate` drives it and owns
what every search needs alike: checkpoints at each step boundary (atomic,
fingerprinted, resumed bit for bit), progress, and the wall clock. A
strategy's state is a `SearchState`: host values (numpy arrays, numbers,
strings, lists and dicts of them) and a device part (the population's
training state, trial-sharded global arrays), which is gathered for saving
and placed back on the devices when resumed.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jopt.sweep import _common
from jopt.sweep.runtime import _checkpoint, _executor


@dataclasses.dataclass
class SearchState:
  """What a search needs to continue: host values and device arrays.

  Attributes:
    step: steps completed (rungs, rounds, segments...).
    host: plain values; numpy arrays anywhere inside lists and dicts.
    device: a pytree of trial-sharded arrays (or None).
    ndev: the devices ``device`` is spread over.
  """

  step: int
  host: dict[str, Any]
  device: Any = None
  ndev: int = 1


class Strategy(abc.ABC):
  """How one search chooses what to train next; `iterate` drives it.

  A strategy implements the abstract hooks; `iterate` owns checkpoints,
  progress and the clock.
  """

  @abc.abstractmethod
  def init(self) -> SearchState:
    """The state before the first step (a fresh search)."""

  @abc.abstractmethod
  def step(self, state: SearchState, progress: Progress) -> SearchState:
    """Trains what the search chose next; the state after it.

    A step that trains several segments counts each on ``progress``
    (`Progress.advance`) as it finishes, so the bar moves within the step.
    """

  @abc.abstractmethod
  def terminate(self, state: SearchState) -> bool:
    """Whether the search is done."""

  @abc.abstractmethod
  def postprocess(self, state: SearchState) -> Any:
    """The search's result, from its final state."""

  @abc.abstractmethod
  def work(self, state: SearchState) -> int:
    """Units of progress done by ``state`` (member-segments)."""

  @abc.abstractmethod
  def device_template(self, state: SearchState) -> Any:
    """The structure of a saved ``state.device`` (leaves may be anything).

    Called only when the saved state had a device part.
    """

  def relayout(self, state: SearchState, tree: Any) -> tuple[Any, int]:
    """A saved device state (host arrays) -> ``(tree, ndev)`` for this run.

    A search may resume on other devices than it was saved on, and its
    rows are laid out per device count: a strategy with a device state
    overrides this (`packed_relayout` for trials packed at the front). By
    default the rows stay as saved.
    """
    return tree, state.ndev

  def running(self, progress: Progress) -> contextlib.AbstractContextManager:
    """The context every step runs in, given the search's bar (a search
    whose running trials report progress themselves enters its reporter
    here). By default none."""
    del progress
    return contextlib.nullcontext()

  def restore(self, state: SearchState) -> None:
    """Rebuilds host objects the strategy keeps itself (a study) after a
    resumed ``state`` is loaded. By default there are none."""
    del state


def packed_relayout(
  ex: _executor.Executor, n: int, tree: Any, saved_ndev: int
) -> tuple[Any, int]:
  """Relayout of ``n`` trials in rows ``0..n-1``, then padding rows.

  Unchanged when the devices give the saved layout; otherwise the trials'
  rows are padded again for this executor's devices (results do not
  depend on them: every trial is computed at the same lane width).
  """
  size, ndev = ex.padded(n, ex.num_devices_for(n)), ex.num_devices_for(n)
  rows = len(jax.tree.leaves(tree)[0])
  if (rows, saved_ndev) == (size, ndev):
    return tree, ndev
  pad = _executor.pad_rows(n, size)
  return jax.tree.map(lambda x: x[:n][pad], tree), ndev


# --- Plain values <-> JSON + arrays -----------------------------------------------


def _encode(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
  if isinstance(obj, _executor.HostKeys):
    return {"__keys__": _encode(obj.data, arrays), "impl": obj.impl}
  if (
    isinstance(obj, (np.ndarray, np.generic))
    and not isinstance(obj, (np.bool_,))
    or isinstance(obj, np.ndarray)
  ):
    name = f"h{len(arrays)}"
    arrays[name] = np.asarray(obj)
    return {"__array__": name}
  if isinstance(obj, np.bool_):
    return bool(obj)
  if isinstance(obj, Mapping):
    return {"__dict__": [[k, _encode(v, arrays)] for k, v in obj.items()]}
  if isinstance(obj, (list, tuple)):
    return [_encode(v, arrays) for v in obj]
  if obj is None or isinstance(obj, (bool, int, float, str)):
    return obj
  raise TypeError(f"cannot checkpoint a {type(obj).__name__}")


def _decode(obj: Any, arrays: Mapping[str, np.ndarray]) -> Any:
  if isinstance(obj, dict):
    if "__array__" in obj:
      return arrays[obj["__array__"]]
    if "__keys__" in obj:
      return _executor.HostKeys(_decode(obj["__keys__"], arrays), obj["impl"])
    return {k: _decode(v, arrays) for k, v in obj["__dict__"]}
  if isinstance(obj, list):
    return [_decode(v, arrays) for v in obj]
  return obj


def save(
  ckpt: _checkpoint.Checkpoint, ex: _executor.Executor, state: SearchState
) -> None:
  arrays: dict[str, np.ndarray] = {}
  host = _encode(state.host, arrays)
  leaves = jax.tree.leaves(ex.gather(state.device))
  impls = {}
  for i, leaf in enumerate(leaves):
    if isinstance(leaf, _executor.HostKeys):
      impls[str(i)] = leaf.impl
      leaf = leaf.data
    arrays[f"d{i}"] = leaf
  ckpt.save_state(
    state.step,
    {
      "host": host,
      "num_leaves": len(leaves),
      "key_impls": impls,
      "has_device": state.device is not None,
      "ndev": state.ndev,
    },
    arrays,
  )


def load(
  ckpt: _checkpoint.Checkpoint, ex: _executor.Executor, strategy: Strategy
) -> SearchState | None:
  saved = ckpt.load_state()
  if saved is None:
    return None
  meta, arrays = saved
  host = _decode(meta["host"], arrays)
  state = SearchState(int(meta["step"]), host, None, int(meta["ndev"]))
  if meta.get("has_device"):
    template = strategy.device_template(state)
    treedef = jax.tree.structure(template)
    impls = meta.get("key_impls", {})
    leaves = [
      _executor.HostKeys(arrays[f"d{i}"], impls[str(i)])
      if str(i) in impls
      else arrays[f"d{i}"]
      for i in range(int(meta["num_leaves"]))
    ]
    if treedef.num_leaves != len(leaves):
      raise ValueError(
        f"the state in {ckpt.directory!r} does not fit this "
        f"search's training state; use a new checkpoint_dir."
      )
    tree = jax.tree.unflatten(treedef, leaves)
    tree, state.ndev = strategy.relayout(state, tree)
    state.device = ex.put(tree, state.ndev)
  strategy.restore(state)
  return state


# --- The loop -------------------------------------------------------------------


class Progress:
  """The bar of a search: member-segments done and the best value so far.

  `iterate` passes it to every step; a strategy that trains several
  segments in one step calls `advance` after each, so the bar moves with
  every segment without the user writing anything.
  """

  def __init__(self, bar: Any):
    self.bar = bar
    self.count = 0
    self.best: float | None = None

  def advance(
    self,
    member_segments: int,
    values: Any = None,
    sign: float = 1.0,
    name: str = "",
  ) -> None:
    """Counts ``member_segments`` and the trials' latest ``values``."""
    self.count += int(member_segments)
    self.bar.update(int(member_segments))
    if values is not None:
      values = np.asarray(values, np.float64).ravel()
      values = values[np.isfinite(values)]
      if values.size:
        best = float(np.min(sign * values)) * sign
        if self.best is None or sign * best < sign * self.best:
          self.best = best
          self.bar.set_postfix_str(f"best {name}={best:.4g}")


def iterate(
  strategy: Strategy,
  ex: _executor.Executor,
  *,
  checkpoint: _checkpoint.Checkpoint | None = None,
  progress: bool = False,
  total: int | None = None,
  desc: str = "jopt.sweep",
  unit: str = "segment",
) -> tuple[Any, float]:
  """Runs ``strategy`` to the end; returns ``(result, wall seconds)``.

  With ``checkpoint`` the state is saved after every step and a saved
  state is resumed from; a resumed search returns the same result, bit for
  bit, as one never interrupted.
  """
  start = time.perf_counter()
  state = load(checkpoint, ex, strategy) if checkpoint is not None else None
  if state is None:
    state = strategy.init()
  bar = _common.progress_bar(total or 0, desc, unit=unit, enabled=progress)
  tracker = Progress(bar)
  try:
    done = strategy.work(state)
    bar.update(done)
    with strategy.running(tracker):
      while not strategy.terminate(state):
        counted = tracker.count
        state = strategy.step(state, tracker)
        if checkpoint is not None:
          save(checkpoint, ex, state)
        now = strategy.work(state)
        # What the step did not count itself (strategies without segments).
        bar.update(max(0, now - done - (tracker.count - counted)))
        done = now
  finally:
    bar.close()
  return strategy.postprocess(state), time.perf_counter() - start
