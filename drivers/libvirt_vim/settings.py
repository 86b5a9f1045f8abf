"""The driver's config section (`hosts[].vim` with `driver: libvirt`): its
schema (`SCHEMA`: types, defaults, choices), which the core composes into
the configuration's and checks when the configuration is loaded, and
`parse`, which reads the section by it and checks what the schema cannot
say (names here become libvirt object names, a bridge name and paths).
Light to import: no libvirt library."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mecorch.kernel import validate
from mecorch.kernel.errors import InvalidInput
from mecorch.kernel.schema import ABSENT, DEFAULT_HOST, NUMBER, STR, host_name, key, read

# a libvirt URI another host's libvirtd may connect to (peer to peer)
_LIVE_URI = re.compile(r"qemu\+(tcp|tls|ssh)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]{0,252})"
                       r"(:[0-9]{1,5})?/system")
_BRIDGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")    # IFNAMSIZ: 15 chars
ACCEL_MODES = ("auto", "kvm", "tcg")

ROLE = "vim"
SCHEMA = (
    key("uri", STR, "qemu:///system", "libvirt connection URI"),
    key("pool", STR, "mecorch", "storage pool mecorch makes for the host; default: mecorch "
        "for the host `default`, mecorch-<host id> for another"),
    key("network", STR, "mecorch", "NAT network mecorch makes for the host; default as the "
        "pool's"),
    key("network_cidr", STR, "192.168.150.0/24", "its addresses"),
    key("accel", STR, "auto", "auto | kvm | tcg", choices=ACCEL_MODES),
    key("boot_timeout_s", NUMBER, 120, "wait for a guest's lease and first port"),
    key("probe_timeout_s", NUMBER, 20, "KVM probe: no lease by then means TCG"),
    key("probe_image", STR, "/var/cache/mecorch/workloads/sample-vm.qcow2",
        "bootable disk the KVM probe uses", nullable=True),
    key("bridge", STR, ABSENT, "bridge name of the NAT network (default: mecorch-br0 for "
        "the network mecorch, mc-<network> for another)"),
    key("live_uri", STR, None, "live migration: the libvirt URI another host's libvirtd "
        "connects to for this host (qemu+tcp|qemu+tls|qemu+ssh://<host>/system); unset: "
        "this host takes no live migration in (a move to it is cold)", nullable=True),
    key("live_address", STR, None, "live migration: the IPv4 address of this host the "
        "source's QEMU sends the guest's memory and disks to (tcp://<address>); required "
        "with live_uri", nullable=True),
)

OWNED = ("network", "pool")       # the bridge goes with its network


def per_host(host_id: str) -> dict:
    """The network's and pool's names when the section sets none: the
    machine's `default` host keeps today's, another host gets its own."""
    name = "mecorch" if host_id == DEFAULT_HOST else host_name("mecorch", host_id, 64)
    return {"network": name, "pool": name}


def check_section(section: dict) -> None:
    parse(section)


def check_hosts(sections: list[tuple[str, dict]]) -> None:
    """Two networks of one libvirt on overlapping ranges: the second would
    not start."""
    seen: list = []
    for path, s in sections:
        net = ipaddress.ip_network(s["network_cidr"])
        for other_path, other_net, other in seen:
            if (other.get("uri") == s.get("uri") and other.get("network") != s.get("network")
                    and net.overlaps(other_net)):
                raise InvalidInput(f"{path}.network_cidr: {net} overlaps {other_path}."
                                   f"network_cidr {other_net}: give each host a range of its own")
        seen.append((path, net, s))



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
    live_uri: str | None = None        # see SCHEMA: live migration in
    live_address: str | None = None

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
    """mecorch-br0 for the network `mecorch` (an installed node's), else
    mc-<network>, cut with a hash of the whole name when too long (two
    networks never share a bridge because their names were cut)."""
    return "mecorch-br0" if network == "mecorch" else host_name("mc", network, 15)


def parse(cfg: dict[str, Any]) -> Settings:
    """The section's values (its own, else the schema's defaults), with what
    the schema cannot check: names, the bridge, the network's size, paths,
    ranges. A section built by hand (tests, benches) without `probe_image`
    has none: `check()` probes nothing."""
    probe_image = cfg.get("probe_image")
    # a section built by hand without names: the host's own, as the
    # configuration gives them
    own = per_host(cfg.get("host_id", DEFAULT_HOST) if isinstance(cfg.get("host_id"), str)
                   else DEFAULT_HOST)
    cfg = read(SCHEMA, {**{k: v for k, v in own.items() if k not in cfg}, **cfg})
    network = validate.ident(cfg["network"], "vim.network")
    bridge = cfg["bridge"] or default_bridge(network)
    if not isinstance(bridge, str) or not _BRIDGE.fullmatch(bridge):
        raise InvalidInput("vim.bridge: must be 1-15 characters of letters, digits, '_', '.', '-'")
    cidr = validate.network(cfg["network_cidr"], "vim.network_cidr", 4)
    if ipaddress.ip_network(cidr).prefixlen > 29:
        raise InvalidInput("vim.network_cidr: needs at least a /29")
    for name in ("state_dir", "run_dir"):
        if not isinstance(cfg.get(name), str) or not cfg[name].startswith("/"):
            raise InvalidInput(f"vim.{name}: must be an absolute path")
    return Settings(
        uri=validate.text(cfg["uri"], "vim.uri"),
        pool=validate.ident(cfg["pool"], "vim.pool"),
        network=network, bridge=bridge, network_cidr=cidr, accel=cfg["accel"],
        state_dir=Path(cfg["state_dir"]), run_dir=Path(cfg["run_dir"]),
        host_id=validate.ident(cfg.get("host_id", "default"), "vim.host_id"),
        boot_timeout_s=validate.number(cfg["boot_timeout_s"], "vim.boot_timeout_s", 1, 3600),
        probe_image=_abs_or_none(probe_image, "vim.probe_image"),
        probe_timeout_s=validate.number(cfg["probe_timeout_s"], "vim.probe_timeout_s", 1, 600),
        **_live(cfg.get("live_uri"), cfg.get("live_address")),
    )


def _live(uri, address) -> dict:
    """live_uri and live_address, checked: both or neither."""
    if uri is None:
        if address is not None:
            raise InvalidInput("vim.live_address: set only with vim.live_uri")
        return {}
    if not isinstance(uri, str) or not _LIVE_URI.fullmatch(uri):
        raise InvalidInput("vim.live_uri: must be qemu+tcp://, qemu+tls:// or qemu+ssh:// "
                           "<host>[:port]/system")
    if address is None:
        raise InvalidInput("vim.live_address: required with vim.live_uri (where the "
                           "migration stream arrives)")
    return {"live_uri": uri, "live_address": validate.ip_address(address, "vim.live_address", 4)}


def _abs_or_none(value, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/"):
        raise InvalidInput(f"{field}: must be an absolute path")
    return validate.text(value, field, 1024)
