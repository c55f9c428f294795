"""Every public name has a page in the API reference.

The API pages (docs/api/*.rst) list names in autosummary tables, and Sphinx
generates a page per name from its docstring. Sphinx itself runs in .ci/run;
this test only reads the sources, so a name added to ``__all__`` without an
entry fails here, in the ordinary test run.
"""

import pathlib
import re

import jopt
from jopt import sweep

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"


def _autosummary_entries(page):
  """The names listed in a page's autosummary tables."""
  text = (DOCS / "api" / page).read_text()
  names = []
  for table in re.findall(r"\.\. autosummary::\n((?:[ \t]+.*\n|\n)+)", text):
    for line in table.splitlines():
      line = line.strip()
      if line and not line.startswith(":"):
        names.append(line)
  return names


def test_every_public_name_of_jopt_has_an_api_entry():
  entries = _autosummary_entries("jopt.rst")
  # The subpackage has a page of its own, the module documented there.
  public = set(jopt.__all__) - {"sweep"}
  assert public - set(entries) == set(), "add these to docs/api/jopt.rst"
  assert set(entries) - public == set(), "not in jopt.__all__"
  assert len(entries) == len(set(entries)), "a name is listed twice"


def test_every_public_name_of_jopt_sweep_has_an_api_entry():
  entries = _autosummary_entries("sweep.rst")
  public = set(sweep.__all__)
  assert public - set(entries) == set(), "add these to docs/api/sweep.rst"
  assert set(entries) - public == set(), "not in jopt.sweep.__all__"
  assert len(entries) == len(set(entries)), "a name is listed twice"


def test_the_sweep_page_documents_the_subpackage():
  assert "sweep" in jopt.__all__
  assert (
    ".. automodule:: jopt.sweep" in (DOCS / "api" / "sweep.rst").read_text()
  )


def test_every_page_is_in_a_toctree():
  index = (DOCS / "index.md").read_text()
  pages = [
    p.relative_to(DOCS).with_suffix("").as_posix()
    for p in DOCS.rglob("*.md")
    if "_build" not in p.parts
  ]
  pages += ["api/jopt", "api/sweep"]
  notebooks = DOCS.parent / "notebooks"
  pages += [f"notebooks/{p.stem}" for p in notebooks.glob("*.ipynb")]
  missing = [p for p in pages if p != "index" and p not in index]
  assert missing == [], "add these to a toctree in docs/index.md"
