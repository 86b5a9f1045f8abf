"""The shape of the tests themselves: folders by kind, shared code in
tests/support/, and one lab for every real-backend test and benchmark.

Checked on the source (ast), so a test that starts `mecorch serve` or
defines its own free port with code of its own fails here with its file
and line, before it drifts from the lab everyone else uses."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
KINDS = {"unit", "core", "conformance", "backends", "e2e", "support", "openstack", "artifacts"}
LAB = TESTS / "support" / "lab.py"


def _sources() -> list[Path]:
    return sorted(p for root in (TESTS, REPO / "bench") for p in root.rglob("*.py"))


def _strings(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)]


def test_tests_live_in_folders_by_kind():
    loose = [p.name for p in TESTS.glob("*.py") if p.name != "conftest.py"]
    assert loose == [], f"test files outside a kind folder: {loose}"
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    assert folders <= KINDS, f"unknown test folders: {folders - KINDS}"


def test_no_test_module_imports_another():
    """Shared fixtures and helpers live in tests/support/, so moving or
    deleting one test file never breaks another."""
    found = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            found += [f"{path.relative_to(REPO)}:{node.lineno} imports {n}"
                      for n in names if n.split(".")[-1].startswith("test_")]
    assert found == []


def test_only_the_lab_starts_serve_or_picks_ports():
    """No test or benchmark starts `mecorch serve` (a command line holding
    both "mecorch.cli" and "serve"), or defines a free-port or free-subnet
    picker, with code of its own: tests/support/lab.py does."""
    found = []
    for path in _sources():
        if path == LAB:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name.lstrip("_") in (
                    "free_port", "free_cidr", "free_net", "free_vm_cidr", "free_subnet"):
                found.append(f"{path.relative_to(REPO)}:{node.lineno} defines {node.name}")
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in (
                    "Popen", "run", "check_call", "check_output", "call"):
                words = _strings(node)
                if "mecorch.cli" in words and "serve" in words:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} starts serve")
    assert found == []
