"""Runs the docstring examples of every jopt module (under the strict
environment of conftest.py: strict dtype promotion, rank promotion raises)."""

import doctest
import importlib
import pkgutil

import pytest

import jopt


def _module_names():
  names = [jopt.__name__]
  for info in pkgutil.walk_packages(jopt.__path__, prefix="jopt."):
    names.append(info.name)
  return sorted(names)


@pytest.mark.parametrize("module_name", _module_names())
def test_doctests(module_name):
  module = importlib.import_module(module_name)
  finder = doctest.DocTestFinder(exclude_empty=True)
  runner = doctest.DocTestRunner(
    optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
  )
  # Only the module's own objects: re-exports are tested where defined.
  tests = [t for t in finder.find(module, module_name) if t.examples]
  for test in tests:
    runner.run(test)
  result = runner.summarize(verbose=False)
  assert result.failed == 0, (
    f"{result.failed} of {result.attempted} doctest examples failed in "
    f"{module_name} (output above)."
  )
