"""The suite's own rules. A test skips only through conftest's ``unavailable()`` or
``requires()``: under CI=true those fail instead, so a green CI run means every test ran."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

SKIPS = {"skip", "skipif", "importorskip", "xfail"}
ALLOWED = {("conftest.py", "unavailable"), ("conftest.py", "requires")}


def skips_in(path: Path) -> list[str]:
    """Where ``path`` skips on its own (pytest.skip(...), pytest.mark.skipif(...) and kin),
    outside the two helpers allowed to."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    allowed = {id(node) for function in ast.walk(tree)
               if isinstance(function, ast.FunctionDef) and (path.name, function.name) in ALLOWED
               for node in ast.walk(function)}
    return sorted(f"{path.name}:{node.lineno} {ast.unparse(node)}" for node in ast.walk(tree)
                  if isinstance(node, ast.Attribute) and node.attr in SKIPS
                  and ast.unparse(node.value).split(".")[0] == "pytest"
                  and id(node) not in allowed)


def test_skips_go_through_unavailable_or_requires() -> None:
    files = sorted((REPO / "tests").rglob("*.py"))
    assert REPO / "tests" / "conftest.py" in files
    assert [found for path in files for found in skips_in(path)] == []


def test_a_skip_of_its_own_is_found(tmp_path: Path) -> None:
    probe = tmp_path / "conftest.py"
    probe.write_text("import pytest\n\n"
                     "def unavailable(why):\n    pytest.skip(why)\n\n"
                     "def test_x():\n    pytest.skip('no server')\n\n"
                     "@pytest.mark.skipif(True, reason='')\ndef test_y():\n    pass\n",
                     encoding="utf-8")
    assert skips_in(probe) == ["conftest.py:7 pytest.skip", "conftest.py:9 pytest.mark.skipif"]
