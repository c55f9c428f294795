"""Loads a module of an example from its file, under a unique name.

Examples are scripts, not packages, and several have a module called
``main`` or ``model``; loading each under its own name keeps them apart.
"""

import importlib.util
import pathlib
import sys

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def load_example_module(example: str, module: str = "main"):
  name = f"_jopt_example_{example}_{module}"
  spec = importlib.util.spec_from_file_location(
    name, EXAMPLES / example / f"{module}.py"
  )
  loaded = importlib.util.module_from_spec(spec)
  sys.modules[name] = loaded  # Flax's dataclasses look modules up there.
  spec.loader.exec_module(loaded)
  return loaded
