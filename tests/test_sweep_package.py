"""The sweep package itself: its docs name only existing names, its sources
carry no workflow markers, and optional packages are optional (a silent
progress stand-in without tqdm, ImportErrors that name the extra).
"""

import pathlib
import re
import sys

import ml_dtypes
import numpy as np
import pytest

import jopt
from jopt import sweep
from jopt.sweep import _common

BF16 = np.dtype(ml_dtypes.bfloat16)
F8 = np.dtype(ml_dtypes.float8_e4m3fn)  # has NaN but no Inf


def _result(metrics, diverged=None, n=None):
  n = n or len(next(iter(metrics.values())))
  return sweep.SweepResult(
    hparams={"lr": np.linspace(0.1, 1.0, n).astype(np.float32)},
    metrics=metrics,
    diverged=np.zeros(n, bool) if diverged is None else diverged,
    space={"lr": sweep.uniform(0.0, 1.0)},
  )


# --- dead code and references ----------------------------------------------

_SWEEP_SOURCES = sorted(pathlib.Path(sweep.__file__).parent.glob("*.py"))


def test_sweep_docs_reference_only_names_that_exist():
  missing = []
  for path in _SWEEP_SOURCES:
    for name in re.findall(r"`(jopt(?:\.\w+)+)", path.read_text()):
      obj = jopt
      try:
        for part in name.split(".")[1:]:
          obj = getattr(obj, part)
      except AttributeError:
        missing.append(f"{path.name}: {name}")
  assert not missing


def test_sweep_sources_carry_no_workflow_markers():
  marked = [p.name for p in _SWEEP_SOURCES if "[helper-" in p.read_text()]
  assert not marked


# --- optional packages ------------------------------------------------------


def test_progress_bar_without_tqdm_is_a_silent_stand_in(monkeypatch):
  monkeypatch.delenv("JOPT_PROGRESS", raising=False)
  monkeypatch.setitem(sys.modules, "tqdm", None)
  monkeypatch.setitem(sys.modules, "tqdm.auto", None)
  bar = _common.progress_bar(10, "jopt.sweep")
  bar.update(3)
  bar.set_postfix(loss=0.5)
  bar.close()
  assert not hasattr(bar, "n")


def test_progress_bar_is_tqdm_when_installed(monkeypatch):
  tqdm = pytest.importorskip("tqdm")
  monkeypatch.delenv("JOPT_PROGRESS", raising=False)
  bar = _common.progress_bar(10, "jopt.sweep", enabled=True)
  try:
    assert isinstance(bar, tqdm.tqdm)
    bar.update(3)
    assert bar.n == 3
  finally:
    bar.close()
  assert not isinstance(_common.progress_bar(10, "x", enabled=False), tqdm.tqdm)
  monkeypatch.setenv("JOPT_PROGRESS", "0")
  assert not isinstance(_common.progress_bar(10, "x"), tqdm.tqdm)


@pytest.mark.parametrize(
  "missing, call",
  [
    ("pandas", lambda res: res.to_pandas()),
    ("matplotlib", lambda res: res.plot("loss")),
    ("matplotlib", lambda res: res.plot_curves("curve")),
    ("matplotlib", lambda res: res.plot_parallel("loss")),
  ],
)
def test_optional_features_name_the_extra_when_missing(
  monkeypatch, missing, call
):
  for name in list(sys.modules):
    if name == missing or name.startswith(missing + "."):
      monkeypatch.setitem(sys.modules, name, None)
  monkeypatch.setitem(sys.modules, missing, None)
  res = _result(
    {
      "loss": np.array([0.1, 0.2], np.float32),
      "curve": np.ones((2, 3), np.float32),
    }
  )
  with pytest.raises(ImportError, match=r'pip install "jopt\[plots\]"'):
    call(res)


def test_lr_find_plot_names_the_extra_when_matplotlib_is_missing(monkeypatch):
  for name in list(sys.modules):
    if name == "matplotlib" or name.startswith("matplotlib."):
      monkeypatch.setitem(sys.modules, name, None)
  monkeypatch.setitem(sys.modules, "matplotlib", None)
  res = sweep.LRFindResult(
    np.geomspace(1e-3, 1, 5),
    np.ones((1, 5)),
    np.ones((1, 5)),
    np.ones(5),
    {"minimum": 1e-2},
  )
  with pytest.raises(ImportError, match=r'pip install "jopt\[plots\]"'):
    res.plot()
