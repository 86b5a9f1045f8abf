"""Each driver owns the schema of its config section (`ROLE` and `SCHEMA` in
drivers/<name>/settings.py); the core's configuration composes them through
the `mecorch.drivers` entry points and checks a file in one pass: a typo in
a driver's section names the key, its path and the closest key, and
`mecorch config show` shows every key with its source. No backend."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from mecorch.kernel import config
from mecorch.kernel.errors import InvalidInput
from mecorch.kernel.schema import DRIVER_GROUP

REPO = Path(__file__).resolve().parents[2]
DRIVERS = {"docker": ("docker_cim", "cim"), "libvirt": ("libvirt_vim", "vim"),
           "openstack": ("openstack_vim", "vim"), "linux": ("linux_mep", "mep")}


def test_the_core_holds_no_driver_row():
    """kernel/config.py's own table names no driver: every driver row of the
    composed table is one of a driver's SCHEMA, under its role."""
    tree = ast.parse((REPO / "mecorch/kernel/config.py").read_text())
    named = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call)
             and any(k.arg == "driver" for k in n.keywords)
             and isinstance(n.func, ast.Name) and n.func.id in ("_k", "key")]
    assert named == []
    for name, (package, role) in DRIVERS.items():
        settings = importlib.import_module(f"drivers.{package}.settings")
        assert settings.ROLE == role
        rows = [k for k in config.KEYS if k.driver == name]
        assert [k.path for k in rows] == [f"hosts[].{role}.{k.path}" for k in settings.SCHEMA]
        assert [(k.default, k.type, k.choices) for k in rows] == \
            [(k.default, k.type, k.choices) for k in settings.SCHEMA]


def test_a_settings_role_is_its_drivers_kind():
    for ep in metadata.entry_points(group=DRIVER_GROUP):
        settings = importlib.import_module(config._settings_module(ep.value))
        assert settings.ROLE == ep.load().kind, ep.name


def test_the_schema_module_is_found_beside_the_entry_point():
    assert config._settings_module("drivers.libvirt_vim:LibvirtVIM") == \
        "drivers.libvirt_vim.settings"
    assert config._settings_module("drivers.libvirt_vim.driver:LibvirtVIM") == \
        "drivers.libvirt_vim.settings"
    assert config._settings_module("__main__:FakeCIM") is None       # tests' own drivers
    assert config._settings_module("nowhere_at_all:X") is None


def test_composing_the_schema_imports_no_backend_library():
    code = ("import sys; from mecorch.kernel import config; "
            "assert len(config.driver_schemas()) == 4; "
            "print(sorted(m for m in ('docker', 'libvirt', 'openstack') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def write(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    return f


@pytest.mark.parametrize("text, path, hint", [
    ("hosts: [{id: a, vim: {boot_timout_s: 5}}]\n", "hosts[0].vim.boot_timout_s",
     "boot_timeout_s"),
    ("hosts: [{id: a, cim: {registy: 'x:1'}}]\n", "hosts[0].cim.registy", "registry"),
    ("hosts: [{id: a, vim: {driver: openstack, cloud: c, network: n, regin: R}}]\n",
     "hosts[0].vim.regin", "region"),
])
def test_a_typo_in_a_drivers_section_names_key_path_and_closest(tmp_path, text, path, hint):
    with pytest.raises(InvalidInput) as e:
        config.load(write(tmp_path, text))
    assert f"unknown key {path.rsplit('.', 1)[-1]!r} at {path}; did you mean {hint!r}" \
        in e.value.detail, e.value.detail


def test_each_driver_of_a_role_has_its_own_keys(tmp_path):
    # `network` is libvirt's and openstack's, each its own row
    cfg = config.load(write(tmp_path, "hosts: [{id: a, vim: {driver: openstack, cloud: c, "
                                      "network: n, boot_timeout_s: 600}}]\n"))
    assert cfg["hosts"][0]["vim"]["boot_timeout_s"] == 600
    with pytest.raises(InvalidInput, match=r"hosts\[0\].vim.flavor_prefix is a key of the "
                                           r"openstack driver, not of 'libvirt'"):
        config.load(write(tmp_path, "hosts: [{id: a, vim: {flavor_prefix: x}}]\n"))
    with pytest.raises(InvalidInput, match=r"hosts\[0\].vim.accel must be one of"):
        config.load(write(tmp_path, "hosts: [{id: a, vim: {accel: fast}}]\n"))


def test_config_show_shows_every_key_with_its_source(tmp_path):
    f = write(tmp_path, "hosts: [{id: e1, cim: {network: n1}, vim: {}, mep: {dns_port: 5399}}]\n")
    r = subprocess.run([sys.executable, "-m", "mecorch.cli", "--config", str(f), "config",
                        "show"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    shown = {ln.split()[0]: ln.split()[-1] for ln in r.stdout.splitlines()[1:] if ln.strip()}
    src: dict = {}
    cfg = config.load(f, sources=src)
    assert set(shown) == {path for path, _ in config.flatten(cfg)}
    assert shown["hosts[0].cim.network"] == str(f)
    assert shown["hosts[0].mep.dns_port"] == str(f)
    assert shown["hosts[0].cim.registry"] == "host"         # "default host"
    assert shown["hosts[0].vim.uri"] == "host"
    for name, (package, role) in DRIVERS.items():
        if name == "openstack":
            continue                          # not the default VIM: not in the default host
        settings = importlib.import_module(f"drivers.{package}.settings")
        for row in settings.SCHEMA:
            if row.default is not config.ABSENT:
                assert f"hosts[0].{role}.{row.path}" in shown, row.path
