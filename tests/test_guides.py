"""Runs every Python block of the documentation pages, as a reader would.

The blocks of a page run in order, in one namespace, from an empty working
directory (``tmp_path``, also where `tempfile` puts what a block writes),
under the strict dtype and rank promotion of ``conftest.py``. README.md's
blocks are run by test_readme.py.

A block that cannot run here (a cluster of processes, an accelerator, a
long benchmark) says so in the page's source, on the line just before it::

  <!-- not run: the reason -->

It is still compiled, so its syntax cannot rot. Shell commands and output
go in ```bash and ```text blocks, which are not Python.
"""

import pathlib
import re
import tempfile
import textwrap

import pytest

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(
  p for p in DOCS.rglob("*.md") if "_build" not in p.relative_to(DOCS).parts
)
# A ```python (or ```py) fence, at any indent (inside a list item, say),
# with the marker that excludes it on the line before.
BLOCK = re.compile(
  r"^(?:[ \t]*<!-- not run: (?P<reason>.*?) -->\n)?"
  r"(?P<indent>[ \t]*)```(?:python|py)[ \t]*\n(?P<code>.*?)^(?P=indent)```",
  flags=re.S | re.M,
)
OPENING_FENCE = re.compile(r"^[ \t]*```(?:python|py)[ \t]*$", flags=re.M)


def _name(page):
  return page.relative_to(DOCS).with_suffix("").as_posix()


def _blocks(page):
  """``(code, reason)`` per Python block; ``reason`` is None for one to run."""
  return [
    (textwrap.dedent(m["code"]), m["reason"])
    for m in BLOCK.finditer(page.read_text())
  ]


PAGES_WITH_CODE = [p for p in PAGES if _blocks(p)]


def test_the_guides_have_examples():
  names = {_name(p) for p in PAGES_WITH_CODE}
  assert {"guides/hyperparameters", "guides/sweeps", "guides/stepwise"} <= names


def test_every_python_fence_is_found():
  # A fence the pattern missed would be a block that no test runs.
  for page in PAGES:
    opening = OPENING_FENCE.findall(page.read_text())
    assert len(opening) == len(_blocks(page)), _name(page)


def test_an_excluded_block_says_why():
  reasons = [r for p in PAGES for _, r in _blocks(p) if r is not None]
  assert all(r.strip() for r in reasons)


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=_name)
def test_page_runs(page, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
  namespace = {"__name__": "__main__"}
  for index, (code, reason) in enumerate(_blocks(page)):
    compiled = compile(code, f"{_name(page)}.md block {index}", "exec")
    if reason is None:
      exec(compiled, namespace)
