"""The layers of jopt's import graph: each module's level and the longest chain.

A module's level is 0 when it imports no other jopt module, else one more
than the highest level it imports. Read from the source (module-level
``import``/``from`` statements), so nothing is executed.

    python benchmarks/import_levels.py            # jopt's core modules
    python benchmarks/import_levels.py --all      # with jopt.sweep
"""

from __future__ import annotations

import argparse
import ast
import functools
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "jopt"


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: pathlib.Path, known: set[str]) -> set[str]:
  found = set()
  for node in ast.parse(path.read_text()).body:
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      # ``from jopt import _base`` imports jopt._base (not the package's
      # own __init__, for layering); ``from jopt._base import X``, _base.
      submodules = [f"{node.module}.{a.name}" for a in node.names]
      names = [n for n in submodules if n in known] or [node.module]
    else:
      continue
    found |= {n for n in names if n in known}
  return found


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--all", action="store_true", help="include jopt.sweep")
  args = parser.parse_args()
  paths = {module_name(p): p for p in ROOT.rglob("*.py")}
  if not args.all:
    paths = {m: p for m, p in paths.items() if not m.startswith("jopt.sweep")}
  known = set(paths)
  graph = {m: imports(p, known) - {m} for m, p in paths.items()}

  @functools.cache
  def chain(module: str) -> tuple[str, ...]:
    longest = max((chain(d) for d in graph[module]), key=len, default=())
    return (module, *longest)

  for module in sorted(graph, key=lambda m: (len(chain(m)), m)):
    print(f"{len(chain(module)) - 1:2d}  {module}")
  deepest = max((chain(m) for m in graph), key=len)
  print(f"levels: {len(deepest)}  longest chain: {' -> '.join(deepest)}")


if __name__ == "__main__":
  main()
