"""A running VM moved live by the libvirt VIM (LiveMovable): the real
libvirtd + QEMU (TCG) of this machine as the source host, a second libvirtd
in namespaces of its own as the target host (tests/support/livelab.py),
both networks on the SAME range, the sample VM with a data disk.

No reboot: the sample guest keeps what its /cgi-bin/notify receives in
/run/notices, a tmpfs: a notice posted before the move and read back
after it from the target proves the guest's memory went across (a reboot
empties /run). The data disk: a pattern written with qemu-io while the
domain is shut off, before the move, read back from the target's copy
(qemu-io -U: read only, beside the running QEMU).
"""

from __future__ import annotations

import os
import secrets
import time
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")

from drivers.libvirt_vim import LibvirtVIM                     # noqa: E402
from drivers.libvirt_vim import xmlrender as X                 # noqa: E402
from mecorch.driverapi.contracts import LiveMovable, load_driver   # noqa: E402
from mecorch.driverapi.model import PortSpec, ResourceRequest, VolumeSpec  # noqa: E402
from mecorch.kernel import errors                              # noqa: E402
from mecorch.kernel.states import DeploymentType, ObservedState  # noqa: E402

from conftest import run                                       # noqa: E402
from support.lab import http_get, private_dir                  # noqa: E402
from support.libvirtlab import conn, domains, vim_cfg, volumes  # noqa: E402,F401 (fixtures)
from support.livelab import OnHost, SecondLibvirtd, in_netns   # noqa: E402

pytestmark = pytest.mark.libvirt

MIB = 1 << 20


def _request(iid: str, **kw) -> ResourceRequest:
    return ResourceRequest(instance_id=iid, app_d_id="appd-live", manner=DeploymentType.VM,
                           image="sample", disk_gb=1, memory_mb=192, ports=(PortSpec(80),),
                           volumes=(VolumeSpec("data", 0.25),), **kw)


def _target_cfg(lab: SecondLibvirtd, tag: str, cidr: str, base: Path) -> dict:
    return {"driver": "libvirt", "uri": lab.uri, "pool": f"mct-{tag}", "network": f"mct-{tag}",
            "bridge": f"mct-{tag}", "network_cidr": cidr, "accel": "tcg",
            "state_dir": str(base / tag / "state"), "run_dir": str(base / tag / "run"),
            "host_id": f"test-{tag}", "boot_timeout_s": 90,
            "live_uri": lab.uri, "live_address": lab.ip}


@pytest.fixture
def lab(uid):
    second = SecondLibvirtd(uid)
    try:
        second.start()
        yield second
    finally:
        second.close()
        assert not (Path("/run/netns") / second.netns.name).exists()
        assert not second.dir.exists()


@pytest.fixture
def hosts(vim_cfg, lab, uid, sample_vm):
    """The source (this machine's libvirtd), the target (the second's, the
    same range) and another target on another range, each with the image."""
    base = private_dir(f"live-{uid}")
    src = load_driver("vim", vim_cfg)
    dst = load_driver("vim", _target_cfg(lab, f"{uid}t", vim_cfg["network_cidr"], base))
    other_cidr = "10.199.251.0/24" if vim_cfg["network_cidr"] != "10.199.251.0/24" \
        else "10.199.252.0/24"
    odd = load_driver("vim", _target_cfg(lab, f"{uid}o", other_cidr, base))
    for d in (src, dst, odd):
        assert isinstance(d, LibvirtVIM) and isinstance(d, LiveMovable)
        d.import_image("sample", sample_vm["path"], sample_vm["sha256"])
    try:
        yield src, OnHost(dst, lab.netns.name), OnHost(odd, lab.netns.name)
    finally:
        for d in (src, dst, odd):
            d.close()
        import shutil
        shutil.rmtree(base, ignore_errors=True)


def _lab_state(lab: SecondLibvirtd, drv, iid: str) -> dict:
    """What the target holds of instance `iid`: domain, volumes, DHCP host
    entries, the incoming record."""
    s = drv.settings

    def read() -> dict:
        c = libvirt.open(lab.uri)
        try:
            doms = [d.name() for d in c.listAllDomains(0) if iid in d.name()]
            vols, hosts = [], []
            if s.pool in [p.name() for p in c.listAllStoragePools(0)]:   # made at open
                pool = c.storagePoolLookupByName(s.pool)
                pool.refresh(0)
                vols = [v.name() for v in pool.listAllVolumes(0)
                        if v.name().startswith(f"{iid}-")]
            if s.network in [n.name() for n in c.listAllNetworks(0)]:
                hosts = ET.fromstring(c.networkLookupByName(s.network).XMLDesc(0)).findall(
                    "./ip/dhcp/host")
        finally:
            c.close()
        return {"domains": doms, "volumes": vols,
                "dhcp_hosts": [(h.get("mac"), h.get("ip")) for h in hosts],
                "record": (s.state_dir / "incoming" / f"{iid}.json").exists()}
    return in_netns(lab.netns.name, read)


NOTHING = {"domains": [], "volumes": [], "dhcp_hosts": [], "record": False}


def _post(url: str, body: bytes) -> str:
    req = urllib.request.Request(url, data=body, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read().decode()


def test_a_running_vm_moves_live_and_keeps_its_address_memory_and_disks(
        hosts, lab, vim_cfg, conn, uid, tmp_path):
    src, dst, odd = hosts
    iid, iid2 = f"lv-{uid}", f"lv2-{uid}"
    alloc = src.deploy(_request(iid))
    ip, mac = alloc.addresses[0].ip, alloc.addresses[0].mac
    data_src = str(Path(vim_cfg["state_dir"]) / "pool" / X.data_volume_name(iid, "data"))

    # a pattern on the data disk, written while it is shut off
    src.stop(alloc.handle, 30)
    with pytest.raises(errors.Conflict, match="not running"):
        src.live_source(alloc.handle)
    run("qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a {8 * MIB} {MIB}", data_src)
    src.start(alloc.handle)
    http_get(f"http://{ip}/", tries=300)
    # something only the guest's memory holds
    token = secrets.token_hex(8)
    assert "noted" in _post(f"http://{ip}/cgi-bin/notify", token.encode())
    assert token in http_get(f"http://{ip}/cgi-bin/mec?notices")

    facts = src.live_source(alloc.handle)
    assert facts["addresses"] == [{"ip": ip, "mac": mac}]
    assert dst.live_endpoint() == {"uri": lab.uri, "network_cidr": vim_cfg["network_cidr"]}
    assert src.live_endpoint() is None

    # another range: refused, naming both, nothing left
    with pytest.raises(errors.Conflict) as e:
        odd.prepare_incoming(_request(iid2), facts)
    assert vim_cfg["network_cidr"] in str(e.value) and odd.settings.network_cidr in str(e.value)
    assert _lab_state(lab, odd, iid2) == NOTHING

    # a prepare undone: nothing left
    offer = dst.prepare_incoming(_request(iid2), facts)
    assert _lab_state(lab, dst, iid2)["dhcp_hosts"] == [(mac, ip)]
    assert len(_lab_state(lab, dst, iid2)["volumes"]) == 2
    dst.abort_incoming(iid2)
    dst.abort_incoming(iid2)                   # gone is success
    assert _lab_state(lab, dst, iid2) == NOTHING

    # a target that cannot be reached: fails, the instance runs here still
    offer = dst.prepare_incoming(_request(iid2), facts)
    # (meanwhile another guest cannot take that address here)
    other = dict(facts, addresses=[{"ip": ip, "mac": "52:54:00:00:00:42"}])
    with pytest.raises(errors.Conflict, match=f"{ip} is reserved for another guest"):
        dst.prepare_incoming(_request(f"lv3-{uid}"), other)
    assert _lab_state(lab, dst, f"lv3-{uid}") == {**NOTHING, "dhcp_hosts": [(mac, ip)]}
    bad = dict(offer, uri="qemu+tcp://127.0.0.1:1/system")
    with pytest.raises(errors.BackendError, match="127.0.0.1"):
        src.migrate_out(alloc.handle, bad, 30)
    assert src.inspect(alloc.handle).state == ObservedState.RUNNING
    assert token in http_get(f"http://{ip}/cgi-bin/mec?notices")

    # the move
    t0 = time.monotonic()
    src.migrate_out(alloc.handle, offer, 300)
    migrate_s = time.monotonic() - t0
    try:        # libvirt's own figures of the finished job (the source keeps them)
        job = conn.lookupByName(alloc.handle["domain"]).jobStats(
            libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    except libvirt.libvirtError:
        job = {}
    t1 = time.monotonic()
    alloc2 = dst.deploy(replace(_request(iid2), incoming=offer))
    adopt_s = time.monotonic() - t1
    assert [(a.ip, a.mac) for a in alloc2.addresses] == [(ip, mac)]
    assert alloc2.handle["domain"] == X.domain_name(iid2)
    assert [v["name"] for v in alloc2.storage] == ["root", "data"]
    assert dst.inspect(alloc2.handle).state == ObservedState.RUNNING
    # the same guest, not rebooted, at the same address, from the target's side
    assert token in lab.http_get(f"http://{ip}/cgi-bin/mec?notices")
    assert lab.http_get(f"http://{ip}/disks").split() == ["vda", "vdb"]
    data_dst = str(Path(dst.settings.state_dir) / "pool" / X.data_volume_name(iid2, "data"))
    run("qemu-io", "-r", "-U", "-f", "qcow2", "-c", f"read -P 0x5a {8 * MIB} {MIB}", data_dst)
    assert _lab_state(lab, dst, iid2)["dhcp_hosts"] == [(mac, ip)]
    dst.abort_incoming(iid2)                   # adopted: the instance's now, not undone
    assert dst.inspect(alloc2.handle).state == ObservedState.RUNNING
    # moved again from here: its address comes from the reservation (no lease yet)
    assert dst.live_source(alloc2.handle)["addresses"] == [{"ip": ip, "mac": mac}]

    # the source: shut off, defined, no autostart; destroy leaves nothing
    dom = conn.lookupByName(alloc.handle["domain"])
    assert dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF and dom.isPersistent()
    assert dom.autostart() == 0
    stopped = src.inspect(alloc.handle)
    assert stopped.state == ObservedState.STOPPED and "migrated" in stopped.detail
    src.destroy(alloc.handle)
    assert X.domain_name(iid) not in domains(conn)
    assert [v for v in volumes(conn, vim_cfg["pool"]) if v.startswith(f"{iid}-")] == []
    assert not [f for f in os.listdir(Path(vim_cfg["state_dir"]) / "pool")
                if f.startswith(f"{iid}-")]

    dst.destroy(alloc2.handle)
    assert _lab_state(lab, dst, iid2) == NOTHING
    figures = {k: job[k] for k in ("time_elapsed", "downtime", "memory_total", "disk_total")
               if k in job}
    print(f"\nlive migration (TCG guest, 192 MiB, 1 GiB overlay + 256 MiB data disk): "
          f"migrate_out {migrate_s:.2f} s, adoption {adopt_s:.2f} s; libvirt's job: {figures}")


def test_a_migration_past_its_timeout_is_aborted_and_the_vm_runs_on(hosts, lab, uid, conn):
    src, dst, _ = hosts
    iid, iid2 = f"lt-{uid}", f"lt2-{uid}"
    alloc = src.deploy(_request(iid))
    ip = alloc.addresses[0].ip
    offer = dst.prepare_incoming(_request(iid2), src.live_source(alloc.handle))
    # its memory sent at 1 MiB/s: the move outlasts the 1 s timeout (a
    # fresh guest otherwise moves in about 1 s here, and the abort came
    # after the migration's end: no Timeout, the domain left on the target)
    conn.lookupByName(alloc.handle["domain"]).migrateSetMaxSpeed(1, 0)
    with pytest.raises(errors.Timeout, match="aborted"):
        src.migrate_out(alloc.handle, offer, 1)
    assert src.inspect(alloc.handle).state == ObservedState.RUNNING
    http_get(f"http://{ip}/", tries=50)
    assert _lab_state(lab, dst, iid2)["domains"] == []     # libvirt removed the half-arrived one
    with pytest.raises(errors.Conflict, match="has not arrived"):
        dst.deploy(replace(_request(iid2), incoming=offer))
    assert _lab_state(lab, dst, iid2) == NOTHING           # the failed adoption undid the prepare
    src.destroy(alloc.handle)
