"""Sphinx configuration for jopt's documentation.

Build with ``sphinx-build -W -b html docs docs/_build/html`` from the
repository root, after ``pip install -e ".[docs]"``.
"""

import pathlib
import shutil
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
# Import the jopt of this checkout, whatever is installed.
sys.path.insert(0, str(ROOT))

# The notebooks live in notebooks/ (where tests run them); Sphinx reads only
# its source folder, so each build copies them into docs/notebooks/, which
# git ignores. They are shown as committed, without being executed.
_NOTEBOOKS = DOCS / "notebooks"
_NOTEBOOKS.mkdir(exist_ok=True)
for _notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
  shutil.copyfile(_notebook, _NOTEBOOKS / _notebook.name)

project = "jopt"
author = "the jopt authors"
copyright = "the jopt authors"  # noqa: A001  (Sphinx's name for it)

extensions = [
  "myst_nb",
  "sphinx.ext.autodoc",
  "sphinx.ext.autosummary",
  "sphinx.ext.mathjax",
  "sphinx.ext.napoleon",
  "sphinx.ext.viewcode",
]

source_suffix = {
  ".rst": "restructuredtext",
  ".md": "myst-nb",
  ".ipynb": "myst-nb",
}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
templates_path = ["_templates"]

# API pages: one generated page per public name, from its docstring.
autosummary_generate = True
autosummary_imported_members = True
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
# Markdown-style `name` in docstrings reads as code, not as a cross-reference.
default_role = "code"

# Markdown guides and notebooks.
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "off"

html_theme = "sphinx_book_theme"
html_title = "jopt"
html_theme_options = {
  "show_toc_level": 2,
  "use_download_button": True,
}


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
  """Leaves out a NamedTuple's generated field docs ("Alias for field ...").

  A state's fields are described once, in its docstring's Attributes.
  """
  del app, what, name, options
  doc = getattr(obj, "__doc__", None) or ""
  return True if doc.startswith("Alias for field number") else skip


def setup(app):
  app.connect("autodoc-skip-member", _skip_namedtuple_fields)
