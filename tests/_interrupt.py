"""Interrupting `jopt.sweep.run` after a number of steps, and its state files."""

import glob
import os


class Interrupted(Exception):
  """Raised in place of the step after which a test interrupts a search."""


def interrupt_after(monkeypatch, steps):
  """Makes the next search of `jopt.sweep.run` stop (raise `Interrupted`)
  after ``steps`` steps, each saved to its checkpoint as usual."""
  from jopt.sweep.strategies import _run

  step = _run._RunSearch.step
  count = [0]

  def stopping(self, state, progress):
    if count[0] == steps:
      raise Interrupted
    count[0] += 1
    return step(self, state, progress)

  monkeypatch.setattr(_run._RunSearch, "step", stopping)
  return count


def state_files(folder):
  """The search-state files in a checkpoint folder, oldest step first."""
  return sorted(glob.glob(os.path.join(str(folder), "state-*.npz")))
