"""Every notebook in notebooks/ runs top to bottom, and is committed clean.

Notebooks execute with nbclient in a fresh ``python3`` kernel, from the
repository root (so ``import jopt`` finds this checkout and the install cell
is skipped), with ``JOPT_CI_SMALL=1`` selecting each notebook's small
configuration.
"""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_three_notebooks_exist():
  names = {path.stem for path in NOTEBOOKS}
  assert {"quickstart", "cnn_sweep", "regression"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
  nb = nbformat.read(path, as_version=4)
  nbformat.validate(nb)
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, monkeypatch):
  monkeypatch.setenv("JOPT_CI_SMALL", "1")
  monkeypatch.setenv("MPLBACKEND", "Agg")
  monkeypatch.setenv(
    "PYTHONPATH",
    os.pathsep.join(
      [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    ),
  )
  # As in the test suite, no silent dtype promotion; rank promotion stays
  # allowed, so the notebooks keep the idiomatic ``x @ w + b``.
  monkeypatch.setenv("JAX_NUMPY_DTYPE_PROMOTION", "strict")
  monkeypatch.setenv("JAX_NUMPY_RANK_PROMOTION", "allow")
  nb = nbformat.read(path, as_version=4)
  client = NotebookClient(
    nb,
    kernel_name="python3",
    timeout=300,
    resources={"metadata": {"path": str(ROOT)}},
  )
  client.execute()  # Raises CellExecutionError on the first failing cell.
  outputs = [
    o
    for cell in nb.cells
    if cell.cell_type == "code"
    for o in cell.get("outputs", [])
  ]
  assert not [o for o in outputs if o.output_type == "error"]
