"""The optional driver capabilities are declared, never found by name: every
driver class (each driver package's, and the test fakes) inherits exactly
the `driverapi.contracts` ABCs whose methods it has, and no module of
mecorch/ or drivers/ asks for one of their verbs with getattr/hasattr.
Imports the driver modules (their backend libraries, no daemon)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import drivers
from support import fakes
from mecorch.driverapi import contracts
from mecorch.driverapi.contracts import OPTIONAL, Driver

REPO = Path(__file__).resolve().parents[2]
VERBS = {name for proto in OPTIONAL for name in proto.__abstractmethods__}


def _driver_classes() -> list[type]:
    found = []
    for mod in pkgutil.walk_packages(drivers.__path__, "drivers."):
        module = importlib.import_module(mod.name)
        found += [c for _, c in inspect.getmembers(module, inspect.isclass)
                  if issubclass(c, Driver) and c.__module__ == module.__name__]
    found += [c for _, c in inspect.getmembers(fakes, inspect.isclass)
              if issubclass(c, Driver) and c.__module__ == fakes.__name__]
    return found


def test_the_optional_verbs_are_declared():
    assert VERBS == {"watch", "revive", "uninstall", "rules_applied", "snapshot",
                     "serve_dns_on", "exec_in", "read_usage", "export_data",
                     "live_endpoint", "live_source", "prepare_incoming", "migrate_out",
                     "abort_incoming"}


def test_every_driver_package_has_its_class():
    names = {c.__name__ for c in _driver_classes()}
    assert {"DockerCIM", "LibvirtVIM", "OpenStackVIM", "LinuxMEP", "FakeCompute",
            "FakeMep"} <= names, names


@pytest.mark.parametrize("cls", _driver_classes(), ids=lambda c: c.__name__)
def test_a_driver_declares_what_it_has(cls):
    for proto in OPTIONAL:
        has = {name for name in proto.__abstractmethods__
               if callable(inspect.getattr_static(cls, name, None))}
        if issubclass(cls, proto):
            assert not inspect.isabstract(cls), f"{cls.__name__} lacks {cls.__abstractmethods__}"
        else:
            assert not has, (f"{cls.__name__} has {sorted(has)} but does not declare "
                             f"{proto.__name__}")


def test_the_declared_sets():
    want = {"DockerCIM": {"Watchable", "Revivable", "Uninstallable", "ExecInside",
                          "UsageReadable", "DataMovable"},
            "LibvirtVIM": {"Watchable", "Uninstallable", "UsageReadable", "DataMovable",
                           "LiveMovable"},
            "OpenStackVIM": {"UsageReadable"},
            "LinuxMEP": {"RuleAudit", "DnsOnAppNetworks", "Uninstallable"},
            "FakeCompute": set(), "MeteredCompute": {"UsageReadable"},
            "CarryingCompute": {"DataMovable"}, "FakeMep": set()}
    got = {c.__name__: {p.__name__ for p in OPTIONAL if issubclass(c, p)}
           for c in _driver_classes() if c.__name__ in want}
    assert got == want


def verb_lookups(root: Path) -> list[str]:
    """getattr/hasattr calls naming one of the optional verbs as a string
    literal, in every module under root/mecorch and root/drivers."""
    out = []
    for top in ("mecorch", "drivers"):
        for path in sorted((root / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                        and node.func.id in ("getattr", "hasattr") \
                        and any(isinstance(a, ast.Constant) and a.value in VERBS
                                for a in node.args):
                    out.append(f"{path.relative_to(root)}:{node.lineno} "
                               f"{node.func.id}(... {ast.unparse(node.args[1])})")
    return out


def test_no_verb_is_found_by_name():
    assert verb_lookups(REPO) == []


def test_the_scan_sees_a_lookup(tmp_path):
    """The scan can fail: a getattr of a verb is reported."""
    (tmp_path / "mecorch").mkdir()
    (tmp_path / "drivers").mkdir()
    (tmp_path / "mecorch" / "probe.py").write_text(
        "def f(d):\n    return getattr(d, 'watch', None) or hasattr(d, 'revive')\n")
    assert [x.split(" ")[0] for x in verb_lookups(tmp_path)] == ["mecorch/probe.py:2"] * 2


def test_contracts_module_says_how_to_declare():
    assert "isinstance" in contracts.__doc__
