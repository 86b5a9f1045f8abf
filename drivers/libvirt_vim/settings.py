"""The driver's config section, validated once (names here become libvirt
object names, a bridge name and paths)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mecorch.kernel import validate
from mecorch.kernel.errors import InvalidInput

_BRIDGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")    # IFNAMSIZ: 15 chars
ACCEL_MODES = ("auto", "kvm", "tcg")


@dataclass(frozen=True)
class Settings:
    uri: str
    pool: str
    network: str
    bridge: str
    network_cidr: str
    accel: str
    state_dir: Path
    run_dir: Path
    host_id: str
    boot_timeout_s: float
    probe_timeout_s: float
    probe_image: str | None            # a bootable qcow2 `check()` may probe KVM with

    @property
    def pool_dir(self) -> Path:
        return self.state_dir / "pool"

    @property
    def env_dir(self) -> Path:
        """The guests' environment files (fw_cfg), one per domain."""
        return self.state_dir / "vm-env"

    @property
    def console_dir(self) -> Path:
        return self.run_dir / "vm"

    @property
    def accel_cache(self) -> Path:
        return self.state_dir / "accel-probe.json"


def default_bridge(network: str) -> str:
    return "mecorch-br0" if network == "mecorch" else f"mc-{network}"[:15].rstrip("-.")


def parse(cfg: dict[str, Any]) -> Settings:
    network = validate.ident(cfg.get("network", "mecorch"), "vim.network")
    bridge = cfg.get("bridge") or default_bridge(network)
    if not isinstance(bridge, str) or not _BRIDGE.fullmatch(bridge):
        raise InvalidInput("vim.bridge: must be 1-15 characters of letters, digits, '_', '.', '-'")
    cidr = validate.network(cfg.get("network_cidr", "192.168.150.0/24"), "vim.network_cidr", 4)
    if ipaddress.ip_network(cidr).prefixlen > 29:
        raise InvalidInput("vim.network_cidr: needs at least a /29")
    accel = cfg.get("accel", "auto")
    if accel not in ACCEL_MODES:
        raise InvalidInput(f"vim.accel: must be one of {', '.join(ACCEL_MODES)}")
    for key in ("state_dir", "run_dir"):
        if not isinstance(cfg.get(key), str) or not cfg[key].startswith("/"):
            raise InvalidInput(f"vim.{key}: must be an absolute path")
    return Settings(
        uri=validate.text(cfg.get("uri", "qemu:///system"), "vim.uri"),
        pool=validate.ident(cfg.get("pool", "mecorch"), "vim.pool"),
        network=network, bridge=bridge, network_cidr=cidr, accel=accel,
        state_dir=Path(cfg["state_dir"]), run_dir=Path(cfg["run_dir"]),
        host_id=validate.ident(cfg.get("host_id", "default"), "vim.host_id"),
        boot_timeout_s=validate.number(cfg.get("boot_timeout_s", 120), "vim.boot_timeout_s",
                                       1, 3600),
        probe_image=_abs_or_none(cfg.get("probe_image"), "vim.probe_image"),
        probe_timeout_s=validate.number(cfg.get("probe_timeout_s", 20), "vim.probe_timeout_s",
                                        1, 600),
    )


def _abs_or_none(value, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/"):
        raise InvalidInput(f"{field}: must be an absolute path")
    return validate.text(value, field, 1024)
