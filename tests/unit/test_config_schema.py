"""The configuration schema: typos and wrong types refused with the key, its
path and the closest valid key; host entries inherit the default host's
keys for the roles they name; `mecorch config show` tells where each value
came from. Pure logic plus the real CLI as a subprocess (no backend)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mecorch.kernel import config
from mecorch.kernel.errors import InvalidInput


def write(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    return f


@pytest.mark.parametrize("text, path, hint", [
    ("api: {lisen: 127.0.0.1:1}\n", "api.lisen", "listen"),
    ("orchestrator: {reconcile_intervall_s: 5}\n", "orchestrator.reconcile_intervall_s",
     "reconcile_interval_s"),
    ("stat_dir: /tmp/x\n", "stat_dir", "state_dir"),
    ("hosts: [{id: a, cim: {netwrk: n}}]\n", "hosts[0].cim.netwrk", "network"),
    ("hosts: [{id: a}, {id: b, mep: {dns_prot: 1}}]\n", "hosts[1].mep.dns_prot", "dns_port"),
    ("meo: {mepms: [{url: 'http://x', tokn_file: /t}]}\n", "meo.mepms[0].tokn_file", "token_file"),
])
def test_unknown_key_names_key_path_and_closest(tmp_path, text, path, hint):
    with pytest.raises(InvalidInput) as e:
        config.load(write(tmp_path, text))
    msg = e.value.detail
    assert f"at {path}" in msg and f"did you mean {hint!r}" in msg, msg
    assert str(tmp_path / "c.yaml") in msg


@pytest.mark.parametrize("text, path, want", [
    ("api: {listen: 8080}\n", "api.listen", "a string"),
    ("api: {max_body_bytes: '1M'}\n", "api.max_body_bytes", "an integer"),
    ("api: {max_body_bytes: true}\n", "api.max_body_bytes", "an integer"),
    ("orchestrator: {cpu_allocation_ratio: lots}\n", "orchestrator.cpu_allocation_ratio",
     "a number"),
    ("api: {callback_networks: 10.0.0.0/8}\n", "api.callback_networks", "a list of strings"),
    ("api: null\n", "api", "a mapping"),
    ("hosts: {id: a}\n", "hosts", "a list"),
    ("hosts: [{id: a, vim: {boot_timeout_s: slow}}]\n", "hosts[0].vim.boot_timeout_s",
     "a number"),
])
def test_wrong_type_names_key_and_type(tmp_path, text, path, want):
    with pytest.raises(InvalidInput) as e:
        config.load(write(tmp_path, text))
    assert f"{path} must be {want}" in e.value.detail, e.value.detail


def test_choices_refused_with_closest(tmp_path):
    with pytest.raises(InvalidInput, match=r"role must be one of all, meo, mepm .*'mepm'"):
        config.load(write(tmp_path, "role: mepn\n"))
    with pytest.raises(InvalidInput, match="hosts\\[0\\].vim.accel must be one of"):
        config.load(write(tmp_path, "hosts: [{id: a, vim: {accel: kvmm}}]\n"))


def test_required_item_key(tmp_path):
    with pytest.raises(InvalidInput, match=r"meo.mepms\[0\] needs 'url'"):
        config.load(write(tmp_path, "meo: {mepms: [{id: e1, token_file: /t}]}\n"))


def test_host_entry_inherits_default_host_keys_for_named_roles(tmp_path):
    cfg = config.load(write(tmp_path, "hosts:\n  - id: edge1\n    cim: {network: n1}\n"
                                      "    mep: {dns_port: 5399}\n"))
    (host,) = cfg["hosts"]
    base = config.DEFAULT["hosts"][0]
    assert host["cim"]["driver"] == "docker"          # the reported failure: driver None
    assert host["cim"]["network"] == "n1"
    assert host["cim"]["registry"] == base["cim"]["registry"]
    # the names of what the host makes on the machine are its own (derived
    # from its id), not the default host's: only the default keys are
    assert host["mep"]["dns_port"] == 5399 and host["mep"]["chain_prefix"] == "MC_edge1"
    assert host["mep"]["dns_ttl"] == base["mep"]["dns_ttl"]
    assert "vim" not in host                          # not named: not on this host
    assert host["cim"]["host_id"] == "edge1"
    assert host["cim"]["state_dir"] == "/var/lib/mecorch/hosts/edge1"


def test_null_role_means_none(tmp_path):
    cfg = config.load(write(tmp_path, "hosts: [{id: a, cim: {}, vim: null}]\n"))
    assert cfg["hosts"][0]["vim"] is None
    assert cfg["hosts"][0]["cim"]["network"] == "mecorch-a"     # the host's own


def test_other_driver_inherits_nothing_and_keeps_its_keys(tmp_path):
    cfg = config.load(write(tmp_path, "hosts: [{id: a, cim: {driver: podman, socket: /s}}]\n"))
    assert cfg["hosts"][0]["cim"] == {"driver": "podman", "socket": "/s",
                                      "state_dir": "/var/lib/mecorch/hosts/a",
                                      "run_dir": "/run/mecorch/a", "host_id": "a"}


def test_key_of_another_driver_refused(tmp_path):
    # docker_host is the docker driver's; on the default (docker) it is fine
    config.load(write(tmp_path, "hosts: [{id: a, cim: {docker_host: 'unix:///x'}}]\n"))
    with pytest.raises(InvalidInput, match="unknown key 'docker_host' at hosts\\[0\\].vim"):
        config.load(write(tmp_path, "hosts: [{id: a, vim: {docker_host: 'unix:///x'}}]\n"))


def test_full_sections_as_written_by_labs_still_load(tmp_path):
    import yaml
    base = config.DEFAULT["hosts"][0]
    doc = {"hosts": [{"id": "lab1", "cim": dict(base["cim"]),
                      "mep": {**base["mep"], "service_interface": "lab1-svc"}}]}
    cfg = config.load(write(tmp_path, yaml.safe_dump(doc)))
    assert cfg["hosts"][0]["mep"]["service_interface"] == "lab1-svc"


def test_empty_file_is_the_default(tmp_path):
    cfg = config.load(write(tmp_path, ""))
    assert cfg["api"] == config.DEFAULT["api"]


def test_sources_say_where_each_value_came_from(tmp_path):
    f = write(tmp_path, "api: {listen: 127.0.0.1:9999}\nhosts: [{id: e1, cim: {network: n}}]\n")
    src: dict = {}
    config.load(f, sources=src)
    assert src["api.listen"] == str(f)
    assert src["api.page_size"] == "default"
    assert src["hosts[0].id"] == str(f)
    assert src["hosts[0].cim.network"] == str(f)
    assert src["hosts[0].cim.registry"] == "default host"
    assert src["hosts[0].cim.state_dir"] == "derived"


def test_every_default_value_has_a_schema_row():
    # the documented file is checked by the same schema it is made from
    for path, _ in config.flatten(config.DEFAULT):
        assert config._schema_path(path) in config.BY_PATH, path
    config.check(config.DEFAULT)


def cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mecorch.cli", *argv],
                          capture_output=True, text=True, timeout=60)


def test_config_show_cli(tmp_path):
    f = write(tmp_path, "api: {listen: 127.0.0.1:9999}\n")
    r = cli("--config", str(f), "config", "show")
    assert r.returncode == 0, r.stderr
    lines = {ln.split()[0]: ln.split()[1:] for ln in r.stdout.splitlines()[1:] if ln.strip()}
    assert lines["api.listen"] == ["127.0.0.1:9999", str(f)]
    assert lines["api.page_size"] == ["500", "default"]
    assert lines["hosts[0].cim.host_id"] == ["default", "derived"]
    r = cli("--config", str(f), "config", "show", "--output", "json")
    doc = json.loads(r.stdout)
    assert doc["config"]["api"]["listen"] == "127.0.0.1:9999"
    assert doc["sources"]["api.listen"] == str(f)


def test_serve_refuses_a_typo_at_start(tmp_path):
    f = write(tmp_path, f"state_dir: {tmp_path}/s\napi: {{lisen: 127.0.0.1:1}}\n")
    r = cli("--config", str(f), "serve")
    assert r.returncode == 2
    assert "unknown key 'lisen' at api.lisen; did you mean 'listen'?" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "s").exists()           # refused before anything was made


def test_the_example_meo_and_mepm_configs_load():
    from pathlib import Path
    repo = Path(__file__).resolve().parents[2]
    meo = config.load(repo / "config/meo.example.yaml")
    assert meo["role"] == "meo" and [m["id"] for m in meo["meo"]["mepms"]] == ["edge1", "edge2"]
    mepm = config.load(repo / "config/mepm.example.yaml")
    assert mepm["role"] == "mepm" and mepm["hosts"][0]["id"] == "edge3"
    assert mepm["hosts"][0]["cim"]["driver"] == "docker"        # inherited
