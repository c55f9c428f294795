"""Runs Optax's own unit tests with jopt substituted for the code under test.

For each Optax test file below, the module the file tests (``optax._src.alias``
for ``alias_test.py``, ``optax.transforms._masking`` for ``_masking_test.py``...)
and the public namespaces that re-export it get every name jopt also exports
replaced by jopt's object, before the test file is imported. No assertion or
tolerance is changed. A test counts as *applicable* when it calls at least one
jopt substitute; the others (tests of what jopt does not implement) are
reported separately and not counted.

The test sources are read from the installed Optax package (the 0.2.8 wheel
ships them); when they are missing the script says so and exits. Each file runs
in its own pytest process, so each starts from a clean Optax.

    python benchmarks/optax_suite.py              # every file
    python benchmarks/optax_suite.py --files alias_test.py,update_test.py
    python benchmarks/optax_suite.py --failures   # also list what fails

Prints, per file and in total, passed / applicable tests.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile

# Optax's modules of the contrib optimizers jopt implements.
_CONTRIB = [
  "optax.contrib._dadapt_adamw",
  "optax.contrib._prodigy",
  "optax.contrib._dog",
  "optax.contrib._mechanic",
  "optax.contrib._schedule_free",
  "optax.contrib._reduce_on_plateau",
]

# Test file (relative to the optax package) -> modules whose names jopt
# replaces: the module under test, then the namespaces re-exporting it.
SUBJECTS = {
  "_src/alias_test.py": ["optax._src.alias", "optax"],
  "_src/transform_test.py": [
    "optax._src.transform",
    "optax.transforms",
    "optax",
  ],
  "_src/combine_test.py": ["optax._src.combine", "optax"],
  "transforms/_clipping_test.py": [
    "optax.transforms._clipping",
    "optax.transforms",
    "optax",
  ],
  "transforms/_masking_test.py": [
    "optax.transforms._masking",
    "optax.transforms",
    "optax",
  ],
  "transforms/_accumulation_test.py": [
    "optax.transforms._accumulation",
    "optax.transforms",
    "optax",
  ],
  "transforms/_conditionality_test.py": [
    "optax.transforms._conditionality",
    "optax.transforms",
    "optax",
  ],
  "transforms/_adding_test.py": [
    "optax.transforms._adding",
    "optax.transforms",
    "optax",
  ],
  "schedules/_schedule_test.py": [
    "optax.schedules._schedule",
    "optax.schedules",
    "optax",
  ],
  "schedules/_join_test.py": [
    "optax.schedules._join",
    "optax.schedules",
    "optax",
  ],
  "contrib/_reduce_on_plateau_test.py": [
    "optax.contrib._reduce_on_plateau",
    "optax.contrib",
    "optax",
  ],
  "contrib/_mechanic_test.py": ["optax.contrib._mechanic", "optax.contrib"],
  "contrib/_schedule_free_test.py": [
    "optax.contrib._schedule_free",
    "optax.contrib",
  ],
  # The suite every contrib optimizer runs; Optax's core optimizers (the
  # `sgd` or `adam` that `mechanize` wraps) stay Optax's.
  "contrib/_common_test.py": [*_CONTRIB, "optax.contrib"],
  "_src/update_test.py": ["optax._src.update", "optax"],
  "_src/float64_test.py": [
    "optax._src.alias",
    "optax._src.transform",
    "optax._src.base",
    "optax._src.update",
    "optax.transforms",
    "optax",
  ],
}

# Names jopt exports that are types or helpers, not the code under test:
# Optax's own classes stay (tests build states and check isinstance on them).
_KEEP = {"GradientTransformation", "EmptyState", "MaskedNode", "sweep"}


class _Plugin:
  """Patches Optax before collection; records which tests used jopt."""

  def __init__(self, modules: list[str], report: str):
    self.modules = modules
    self.report = report
    self.used = False
    self.results: dict[str, dict] = {}

  def _mark(self, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
      self.used = True
      return fn(*args, **kwargs)

    return wrapper

  def _substitute(self, obj):
    if isinstance(obj, type):  # MultiSteps: a class; keep it one.
      plugin = self

      class Marked(obj):
        def __init__(self, *args, **kwargs):
          plugin.used = True
          super().__init__(*args, **kwargs)

      Marked.__name__ = obj.__name__
      return Marked
    return self._mark(obj)

  def pytest_configure(self, config):
    del config
    import jopt

    substitutes = {}
    for name in jopt.__all__:
      obj = getattr(jopt, name)
      if name in _KEEP or not callable(obj):
        continue
      if isinstance(obj, type) and issubclass(obj, tuple):
        continue  # state NamedTuples
      substitutes[name] = self._substitute(obj)
    for module_name in self.modules:
      module = importlib.import_module(module_name)
      for name, sub in substitutes.items():
        if hasattr(module, name):
          setattr(module, name, sub)

  def pytest_runtest_setup(self, item):
    del item
    self.used = False

  def pytest_runtest_logreport(self, report):
    entry = self.results.setdefault(
      report.nodeid, {"outcome": "passed", "used": False}
    )
    if report.failed:
      entry["outcome"] = "failed"
      crash = getattr(report.longrepr, "reprcrash", None)
      message = (
        crash.message.splitlines()[0]
        if crash
        else str(report.longrepr).splitlines()[-1]
      )
      entry["message"] = message[:300]
    elif report.skipped and entry["outcome"] == "passed":
      entry["outcome"] = "skipped"
    if report.when == "call" or report.failed:
      entry["used"] = entry["used"] or self.used

  def pytest_sessionfinish(self, session):
    del session
    with open(self.report, "w") as f:
      json.dump(self.results, f)


def _run_one(path: str, modules: list[str], report: str) -> int:
  import pytest

  with tempfile.TemporaryDirectory() as tmp:
    ini = pathlib.Path(tmp) / "pytest.ini"
    ini.write_text("[pytest]\n")
    return pytest.main(
      [
        path,
        "-q",
        "-p",
        "no:cacheprovider",
        "-c",
        str(ini),
        "--rootdir",
        tmp,
        "-W",
        "ignore",
      ],
      plugins=[_Plugin(modules, report)],
    )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--files", default="", help="comma-separated file names (default: all)"
  )
  parser.add_argument(
    "--failures", action="store_true", help="list the failing applicable tests"
  )
  parser.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args._child:
    path, report = args._child
    rel = next(k for k in SUBJECTS if path.endswith(k))
    sys.exit(_run_one(path, SUBJECTS[rel], report))

  import optax

  root = pathlib.Path(optax.__file__).parent
  wanted = [f for f in args.files.split(",") if f]
  files = [k for k in SUBJECTS if not wanted or pathlib.Path(k).name in wanted]
  missing = [k for k in files if not (root / k).exists()]
  if missing:
    sys.exit(
      f"Optax's test sources are not installed ({missing[0]} is "
      f"missing under {root}); nothing to run."
    )
  print(f"optax {optax.__version__} from {root}")
  total_pass = total_applicable = 0
  failures = []
  for rel in files:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
      report = f.name
    env = dict(
      os.environ,
      PYTHONPATH=os.pathsep.join(
        [str(pathlib.Path(__file__).resolve().parents[1])]
        + os.environ.get("PYTHONPATH", "").split(os.pathsep)
      ),
    )
    subprocess.run(
      [sys.executable, __file__, "--_child", str(root / rel), report],
      env=env,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
      check=False,
    )
    with open(report) as f:
      text = f.read()
    os.unlink(report)
    results = json.loads(text) if text else {}
    applicable = {
      k: v
      for k, v in results.items()
      if v["used"] and v["outcome"] != "skipped"
    }
    passed = sum(v["outcome"] == "passed" for v in applicable.values())
    failures += [
      (k, v.get("message", ""))
      for k, v in applicable.items()
      if v["outcome"] == "failed"
    ]
    total_pass += passed
    total_applicable += len(applicable)
    print(
      f"{rel:40s} {passed:4d} / {len(applicable):4d} "
      f"(not applicable: {len(results) - len(applicable)})",
      flush=True,
    )
  print(f"{'total':40s} {total_pass:4d} / {total_applicable:4d}")
  if args.failures:
    for nodeid, message in failures:
      print(f"FAIL {nodeid.split('::', 1)[-1]}: {message}")


if __name__ == "__main__":
  main()
