"""docs/safety.md names, under each rule, the tests that hold it: every one must exist.

The document is the repository's list of safety and security rules (the code cites them by
number), so a renamed or deleted test must not leave it pointing at nothing.  Tests are
found by reading the files' syntax trees (nothing is imported or run): a module-level
``test_*`` function, or ``Class::test_*`` for a method.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "safety.md"
#: `tests/x/test_y.py::test_z` or `tests/x/test_y.py::TestClass::test_z`, in backticks.
CITED = re.compile(r"`(tests/[\w/]+\.py)::([\w:]+)`")
RULE = re.compile(r"^### (\d+)\. ", re.MULTILINE)


def citations() -> list[tuple[str, str]]:
    return CITED.findall(DOC.read_text(encoding="utf-8"))


@cache
def defined(path: str) -> set[str]:
    """The test nodes a file defines: ``name`` and ``Class::name``."""
    tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
    out = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            out.add(node.name)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    out.add(f"{node.name}::{item.name}")
    return {name for name in out if name.rsplit("::", 1)[-1].startswith("test_")}


def test_the_document_cites_tests() -> None:
    assert len(citations()) > 100  # the pattern still matches how the document cites


@pytest.mark.parametrize(("path", "name"), citations(), ids=[f"{p}::{n}" for p, n in citations()])
def test_every_cited_test_exists(path: str, name: str) -> None:
    assert (REPO / path).is_file(), f"{path} does not exist"
    assert name in defined(path), f"{path} defines no test {name}"


def test_every_rule_the_code_cites_is_in_the_document() -> None:
    """Rules 1-22 in order, each with at least one test; the code cites them by number."""
    text = DOC.read_text(encoding="utf-8")
    numbers = [int(n) for n in RULE.findall(text)]
    assert numbers == list(range(1, 23))
    sections = RULE.split(text)[1:]
    for number, body in zip(sections[::2], sections[1::2], strict=True):
        assert CITED.search(body), f"rule {number} names no test"
    cited = set()
    for folder in ("photodup_tui", "photodupd"):
        for source in (REPO / folder).rglob("*.py"):
            for match in re.finditer(r"\b[Rr]ules? (\d+)", source.read_text(encoding="utf-8")):
                cited.add(int(match.group(1)))
    assert cited and cited <= set(numbers)
