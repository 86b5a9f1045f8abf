"""The import graph of mecorch/ and drivers/ against the declared layers
(docs/architecture.md): a module may import its own layer and those below
it, never one above. Lazy imports inside functions count too (a hidden
cycle through a function-level import is still a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Lowest first. A package's modules sit in its layer; `mecorch` itself
# (the root __init__: the version) is below everything.
LAYERS = ["kernel", "driverapi", "spec", "package", "notifications", "mepm", "meo", "api",
          "cli"]
# What a backend driver may use of mecorch: the core below the engines.
DRIVERS_MAY_USE = {"kernel", "driverapi", "spec"}


def _module(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the file, relative ones
    resolved, including `from pkg import submodule`."""
    mod = _module(path).split(".")
    pkg = mod if path.name == "__init__.py" else mod[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg[:len(pkg) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return out


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "mecorch" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in LAYERS else None


def _sources(top: str):
    return sorted(p for p in (REPO / top).rglob("*.py") if "__pycache__" not in p.parts)


def test_every_mecorch_module_lives_in_a_layer():
    loose = [str(p.relative_to(REPO)) for p in (REPO / "mecorch").glob("*.py")
             if p.name != "__init__.py"]
    assert loose == [], f"modules outside every layer: {loose}"
    packages = {p.name for p in (REPO / "mecorch").iterdir()
                if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= set(LAYERS), f"packages in no layer: {packages - set(LAYERS)}"


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for path in _sources("mecorch"):
        own = _layer(_module(path))
        if own is None:
            continue
        for line, target in _imports(path):
            theirs = _layer(target)
            if theirs is not None and LAYERS.index(theirs) > LAYERS.index(own):
                upward.append(f"{path.relative_to(REPO)}:{line} ({own}) imports {target} "
                              f"({theirs})")
    assert upward == [], "upward imports:\n" + "\n".join(sorted(set(upward)))


def test_drivers_import_only_the_core():
    wrong = []
    for path in _sources("drivers"):
        for line, target in _imports(path):
            theirs = _layer(target)
            if theirs is not None and theirs not in DRIVERS_MAY_USE:
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {target}")
            if target.startswith("drivers.") and not target.startswith(
                    "drivers." + path.relative_to(REPO / "drivers").parts[0]):
                wrong.append(f"{path.relative_to(REPO)}:{line} imports another driver: "
                             f"{target}")
    assert wrong == [], "\n".join(wrong)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The check itself can fail: a kernel module importing the host engine
    is reported."""
    fake = REPO / "mecorch" / "kernel" / "_layer_probe.py"
    fake.write_text("def f():\n    from mecorch.mepm import lcm\n")
    try:
        try:
            test_no_module_imports_a_layer_above_its_own()
        except AssertionError as e:
            assert "_layer_probe.py:2 (kernel) imports mecorch.mepm" in str(e)
        else:
            raise AssertionError("the upward import was not reported")
    finally:
        fake.unlink()
