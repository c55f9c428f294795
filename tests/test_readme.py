"""Runs every Python block of README.md, so what the README shows cannot drift."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples():
  assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # Plots the README writes land in tmp_path.
  exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), {})


def test_quickstart_is_two_commands_and_ci_runs_the_second():
  quickstart = README.read_text().split("## Quickstart", 1)[1]
  block = re.search(r"```(?:bash|sh)?\n(.*?)```", quickstart, flags=re.S)
  commands = [line for line in block.group(1).splitlines() if line.strip()]
  assert len(commands) == 2
  assert "pytest" in commands[1]
  ci = (README.parent / ".ci" / "run").read_text()
  assert "Quickstart" in ci  # .ci/run extracts and runs that very line.
