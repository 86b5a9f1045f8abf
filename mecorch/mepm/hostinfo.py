"""What an edge host reports of itself to an MEO: the manners it runs, the
capacity it can still promise for each and what its driver declares it
admits (`Capabilities.admission`), its declared latency, its MEP's service
range (placement by fixed service addresses), its instances' resource
usage summed and each instance's last reading (mecorch.mepm.usage), where
its VIM takes a running VM in (a live relocation, mecorch.mepm.live). Served as
the `/mecorch/v1/hosts` extension (ETSI has no host inventory resource)."""

from __future__ import annotations

from mecorch.driverapi.contracts import LiveMovable
from mecorch.kernel.errors import MecorchError
from mecorch.kernel.states import DeploymentType
from mecorch.mepm.contract import HostInfo, MannerCapacity


def host_info(orch, host_id: str) -> HostInfo:
    """`orch`: the host-level Orchestrator that owns `host_id`."""
    host = orch.inventory.get(host_id)
    used = orch.lcm.used_by_host().get(host_id)
    manners = {}
    for manner in DeploymentType:
        if not host.has(manner):
            continue
        room = orch.inventory.room(host_id, manner, used)
        try:
            caps = host.compute(manner).capabilities()
        except MecorchError:
            caps = None
        manners[manner.value] = MannerCapacity(
            vcpu_total=room.vcpu_total, vcpu_used=room.vcpu_used,
            memory_mb_total=room.memory_mb_total, memory_mb_used=room.memory_mb_used,
            disk_gb_total=room.disk_gb_total, disk_gb_used=room.disk_gb_used,
            accel=caps.hardware_accel if caps and manner is DeploymentType.VM else "",
            admits=caps.admission() if caps else {})
    mepm_cfg = orch.cfg.get("mepm") or {}
    lat = mepm_cfg.get("latency_ms")
    reader = getattr(orch, "usage_reader", None)
    # the sum, and each instance's last reading (`byInstance`): an MEO keeps
    # them from its heartbeat (in memory) for its own `app show`
    usage = reader.host_sum(host_id, by_instance=True) if reader is not None else None
    return HostInfo(host_id, manners, float(lat) if lat is not None else None,
                    getattr(orch.mep, "mp1_url", None),
                    host.section("mep").get("service_cidr") or None, usage, live_endpoint(host))


def live_endpoint(host) -> dict | None:
    """{"uri", "networkCidr"} of the host's VIM when it is LiveMovable and
    configured for it, else None (read from its config: not opened)."""
    if not host.has(DeploymentType.VM):
        return None
    try:
        drv = host.driver("vim", opened=False)
        got = drv.live_endpoint() if isinstance(drv, LiveMovable) else None
    except MecorchError:
        return None
    return {"uri": got["uri"], "networkCidr": got["network_cidr"]} if got else None


def probe(host, role: str) -> tuple[str, bool, str]:
    """One backend of a host checked with a cheap real call (`capacity()` of
    a compute driver, `check()` of a MEP): (driver, up, detail). Never
    raises: a failure is what it reports."""
    driver = host.section(role).get("driver", "?")
    try:
        if role == "mep":
            failed = [f"{c.name}: {c.detail}" for c in host.mep().check() if not c.ok]
            up, detail = not failed, "; ".join(failed) or "ok"
        else:
            manner = DeploymentType.CONTAINER if role == "cim" else DeploymentType.VM
            cap = host.compute(manner).capacity()
            up, detail = True, f"{cap.cpu_total:g} CPUs, {cap.memory_mb_total} MB"
    except MecorchError as e:
        up, detail = False, e.detail
    except Exception as e:      # noqa: BLE001 - a probe reports, never raises
        up, detail = False, f"{type(e).__name__}: {e}"
    return driver, up, detail[:300]


def backend_health(orch, host_id: str) -> list[dict]:
    """Each configured backend of the host, probed now (the MEPM contract's
    `health` in process)."""
    host = orch.inventory.get(host_id)
    out = []
    for role in ("cim", "vim", "mep"):
        if host.section(role):
            driver, up, detail = probe(host, role)
            out.append({"role": role, "driver": driver, "ok": up, "detail": detail})
    return out
