"""`mecorch host teardown [HOST]`: remove everything mecorch made on an
edge host, with `mecorch serve` stopped and nothing left deployed.

Refused while a `mecorch serve` holds the host (its lease), while an
instance of the host is INSTANTIATED or an operation on it is unfinished,
and while packages are onboarded (their images live in the pool and the
registry). Then each driver that makes things of its own (an
`Uninstallable`) removes them and says what, one line each in its own
words (the Linux MEP: its iptables chains and hooks, dnsmasq, DNS files and
service link; libvirt: its NAT network and storage pool; Docker: its bridge
network); of another driver, that it has nothing to remove.

Ownership: each driver removes only what is marked or named as this host's
(the service link by its mark, the docker network by its label, the
chains by the host's prefix), and not an object another host of the same
configuration names too (two host entries configured to share one): that
one is kept, and a "kept" line says which host holds it.

It runs on the edge host's own machine, from the config `mecorch serve
--role all|mepm` runs with: not through an API, and not with an MEO's
configuration (an MEO has no edge host of its own).
"""

from __future__ import annotations

from pathlib import Path

from mecorch.driverapi.contracts import Uninstallable, load_driver
from mecorch.kernel.errors import Conflict, InvalidInput, NotFound
from mecorch.kernel.store import Store


def teardown(cfg: dict, host_id: str | None = None) -> list[str]:
    """Lines "removed <role>: <what>" and "kept <role>: <what>: <why>"."""
    if cfg.get("role") == "meo":
        raise InvalidInput("this configuration is an MEO's (role: meo): an MEO has no edge host "
                           "of its own to tear down; run `mecorch --config FILE host teardown "
                           "HOST` on each edge host's machine, with the config its MEPM runs "
                           "with (role mepm or all) and its `mecorch serve` stopped")
    hosts = {h["id"]: h for h in cfg["hosts"]}
    if host_id is None:
        if len(hosts) != 1:
            raise InvalidInput(f"name the host to tear down: {', '.join(hosts)}")
        host_id = next(iter(hosts))
    host = hosts.get(host_id)
    if host is None:
        raise NotFound(f"unknown edge host {host_id!r}; configured: {', '.join(hosts)}")
    from mecorch.mepm.lease import HostLease
    lease = HostLease(cfg["state_dir"], "mecorch host teardown")
    lease.acquire([host_id])            # Conflict while a serve holds the host
    try:
        _refuse_if_in_use(cfg, host_id)
        done: list[str] = []
        for role in ("mep", "vim", "cim"):     # rules first, then what they point at
            section = host.get(role)
            if not section:
                continue
            driver = load_driver(role, section)
            if not isinstance(driver, Uninstallable):
                done.append(f"{role}: driver {section.get('driver')} has nothing to remove")
                continue
            try:
                removed = driver.uninstall(keep=shared(cfg, host_id, role))
            finally:
                driver.close()
            done += [f"kept {role}: {line[5:]}" if line.startswith("kept ")
                     else f"removed {role}: {line}" for line in removed]
        return done
    finally:
        lease.release()


def shared(cfg: dict, host_id: str, role: str) -> dict[str, tuple[str, ...]]:
    """{key: the other hosts} of the host's objects another configured host
    names too (same driver, same value of a key its settings declare
    `OWNED`)."""
    from mecorch.kernel.config import settings_of
    mine = next(h for h in cfg["hosts"] if h["id"] == host_id).get(role) or {}
    module = settings_of(role, mine.get("driver"))
    out: dict[str, tuple[str, ...]] = {}
    for key in getattr(module, "OWNED", ()):
        users = [h["id"] for h in cfg["hosts"] if h["id"] != host_id
                 and (h.get(role) or {}).get("driver") == mine.get("driver")
                 and (h.get(role) or {}).get(key) == mine.get(key) is not None]
        if users:
            out[key] = tuple(users)
    return out


def _refuse_if_in_use(cfg: dict, host_id: str) -> None:
    db = Path(cfg["state_dir"]) / "mecorch.db"
    if not db.exists():
        return
    store = Store(db)
    try:
        live = [i["id"] for i in store.list("instances", hostId=host_id)
                if i["instantiationState"] == "INSTANTIATED"]
        if live:
            raise Conflict(f"{len(live)} instance(s) on host {host_id} are INSTANTIATED "
                           f"({', '.join(live[:5])}): terminate them first")
        busy = [o["id"] for o in store.list("op_occs")
                if o["operationState"] in ("STARTING", "PROCESSING")
                and (o.get("_plan") or {}).get("hostId") in (host_id, None)]
        if busy:
            raise Conflict(f"operation(s) {', '.join(busy[:5])} are unfinished: start "
                           "`mecorch serve` to finish or undo them first")
        pkgs = [p["id"] for p in store.list("packages")]
        if pkgs:
            raise Conflict(f"{len(pkgs)} app package(s) are onboarded (their images are in the "
                           "host's repositories): delete them first")
    finally:
        store.close()
