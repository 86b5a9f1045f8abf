"""Configuration: an embedded default for one edge node, overlaid by an
optional YAML file. `config/mecorch.yaml` documents the same default."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from .errors import InvalidInput
from .yamlsafe import load_yaml

DEFAULT: dict[str, Any] = {
    "state_dir": "/var/lib/mecorch",
    "run_dir": "/run/mecorch",
    "api": {"listen": "127.0.0.1:8080", "token_file": None,
            "max_body_bytes": 1048576, "page_size": 500,
            "callback_networks": ["127.0.0.0/8", "::1/128"], "mp1_url": None},
    "orchestrator": {"cpu_allocation_ratio": 4.0, "graceful_timeout_s": 30,
                     "reconcile_interval_s": 30, "trusted_key": None,
                     "max_package_bytes": 2147483648},
    "hosts": [{
        "id": "default",
        "cim": {"driver": "docker", "docker_host": "unix:///var/run/docker.sock",
                "registry": "127.0.0.1:5000", "network": "mecorch"},
        "vim": {"driver": "libvirt", "uri": "qemu:///system", "pool": "mecorch",
                "network": "mecorch", "network_cidr": "192.168.150.0/24",
                "accel": "auto", "boot_timeout_s": 120, "probe_timeout_s": 20,
                "probe_image": "/var/cache/mecorch/workloads/sample-vm.qcow2"},
        "mep": {"driver": "linux", "dns_listen": "127.0.0.1", "dns_port": 5353,
                "chain_prefix": "MECORCH", "netns": None,
                "service_cidr": "10.90.0.0/24", "dns_ttl": 0},
    }],
}

ROLES = ("cim", "vim", "mep")


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load(path: str | Path | None = None) -> dict[str, Any]:
    """The embedded default, overlaid by the YAML file at `path` if given.

    Each driver section gets `state_dir`, `run_dir` and `host_id` so a
    driver needs nothing but its own section.
    """
    cfg = copy.deepcopy(DEFAULT)
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise InvalidInput(f"cannot read config {path}: {e.strerror}") from None
        user = load_yaml(text, what=f"config {path}")
        if not isinstance(user, dict):
            raise InvalidInput(f"config {path}: top level must be a mapping")
        cfg = _merge(cfg, user)
    seen = set()
    for host in cfg["hosts"]:
        hid = host.get("id")
        if not isinstance(hid, str) or not hid or hid in seen:
            raise InvalidInput(f"config: every host needs a unique id (got {hid!r})")
        seen.add(hid)
        for role in ROLES:
            section = host.get(role)
            if section is None:
                continue
            section.setdefault("state_dir", str(Path(cfg["state_dir"]) / "hosts" / hid))
            section.setdefault("run_dir", str(Path(cfg["run_dir"]) / hid))
            section["host_id"] = hid
    return cfg
