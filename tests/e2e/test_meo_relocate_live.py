"""A VM relocated live through the MEO's API, against real processes and
real libvirtds: one MEO (`mecorch serve --role meo` on loopback) over two
MEPMs (`mecorch serve --role mepm`), each the only user of a libvirtd of
its own (tests/support/livelab.py's SecondLibvirtd) and running INSIDE
that libvirtd's network namespace (`ip netns exec`): both hosts' guest
networks have the SAME range (a live migration keeps the guest's
address), so each host's guests are reachable only in its own namespace.

- The MEO reaches each MEPM over the namespace's veth to the root one:
  HTTPS (a certificate made here, the MEO given it as the CA) and a
  bearer token, as any MEPM listening off loopback.
- The two libvirtds (libvirtd->libvirtd) and their QEMUs (the migration
  stream and the disks' copy) reach each other over a direct veth between
  the two namespaces (livelab.peer).
- The hosts are VIM-only (no CIM, no MEP): the sample VM package is
  onboarded without its DNS and traffic rules (a MEP would set them).

The test: the VM deployed onto host 1, a notice posted into its tmpfs
(/cgi-bin/notify keeps it in /run/notices: a reboot empties it),
`POST .../relocate {"live": true, "hostId": host 2}` at the MEO; the op COMPLETES as a live
move onto host 2, same instance id; the notice is read back from host 2's
namespace at the same guest address (the guest did not reboot); host 1's
libvirtd holds no domain and no volume of it. Everything (processes by
pid, namespaces, veths, directories) is removed after, and that is
asserted.
"""

from __future__ import annotations

import secrets
import shutil
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")


from conftest import run                                           # noqa: E402
from support import lab                                            # noqa: E402
from support.certs import self_signed                              # noqa: E402
from support.livelab import SecondLibvirtd, peer                   # noqa: E402

pytestmark = pytest.mark.libvirt

INST, HOSTS = lab.INST, "/mecorch/v1/hosts"
MEPM_PORT = 8443
APP = "sample-vm-live"


def _socket_uri(libvirtd: SecondLibvirtd) -> str:
    """Its UNIX socket, in its private run dir (bind-mounted on /run/libvirt
    in its own mount namespace; the same file from the root one)."""
    return f"qemu+unix:///system?socket={libvirtd.dir}/run/libvirt/libvirt-sock"


def _held(libvirtd: SecondLibvirtd) -> dict:
    """What a host's libvirtd holds: its domains (name -> XML) and the
    volumes of each pool (pool -> names)."""
    conn = libvirt.open(_socket_uri(libvirtd))
    try:
        doms = {d.name(): d.XMLDesc(0) for d in conn.listAllDomains(0)}
        vols = {}
        for pool in conn.listAllStoragePools(0):
            if pool.isActive():
                pool.refresh(0)
                vols[pool.name()] = sorted(v.name() for v in pool.listAllVolumes(0))
        return {"domains": doms, "volumes": vols}
    finally:
        conn.close()


def _guest_ip(libvirtd: SecondLibvirtd, domain: str) -> str:
    """The guest's IPv4 address from its network's DHCP lease."""
    conn = libvirt.open(_socket_uri(libvirtd))
    try:
        ifaces = conn.lookupByName(domain).interfaceAddresses(
            libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, 0)
    finally:
        conn.close()
    return next(a["addr"] for i in ifaces.values() for a in i["addrs"] or []
                if a["type"] == libvirt.VIR_IP_ADDR_TYPE_IPV4)


def _mac(xml: str) -> str:
    return ET.fromstring(xml).find("./devices/interface/mac").get("address")


def _reservations(libvirtd: SecondLibvirtd, xml: str) -> list[tuple[str, str]]:
    """The DHCP host entries (mac, ip) of the network of a domain's NIC."""
    net = ET.fromstring(xml).find("./devices/interface/source").get("network")
    conn = libvirt.open(_socket_uri(libvirtd))
    try:
        hosts = ET.fromstring(conn.networkLookupByName(net).XMLDesc(0)).findall(
            "./ip/dhcp/host")
    finally:
        conn.close()
    return [(h.get("mac"), h.get("ip")) for h in hosts]


def _disks(xml: str) -> list[tuple[str, str]]:
    """A domain's disks as (pool, volume) or ("", file)."""
    out = []
    for src in ET.fromstring(xml).findall("./devices/disk[@device='disk']/source"):
        out.append((src.get("pool"), src.get("volume")) if src.get("pool")
                   else ("", src.get("file")))
    return out


def _curl(libvirtd: SecondLibvirtd, url: str, *args: str) -> str:
    """curl from inside the host's namespace ('' when nothing answers)."""
    return libvirtd.exec("curl", "-sS", "--max-time", "10", *args, url, check=False).stdout


@pytest.fixture
def system(sample_vm, uid, request):
    tmp = lab.private_dir("live-e2e")
    tag = uid[:6]
    libvirtds: list[SecondLibvirtd] = []
    procs: dict[str, lab.Serve] = {}
    hosts: dict[str, dict] = {}
    cleared: list[str] = []
    try:
        for k in (1, 2):
            # a /30 of its own for its veth to the root namespace
            subnet = lab.free_subnet("10.213.0.0/16", 30).split("/")[0]
            libvirtds.append(SecondLibvirtd(f"{'ab'[k - 1]}{tag}", subnet=subnet).start())
        peer(libvirtds[0], libvirtds[1], lab.free_subnet("10.214.0.0/16", 30))
        cert, key = self_signed(tmp, [lv.ip for lv in libvirtds], "mepm.live.test", ca=True)
        tokens = {who: secrets.token_hex(16) for who in ("meo", "edge1", "edge2")}
        for who, token in tokens.items():
            (tmp / f"{who}.token").write_text(token + "\n")
            (tmp / f"{who}.token").chmod(0o600)
        cidr = lab.free_subnet()                 # the SAME guest range on both hosts
        for k, lv in enumerate(libvirtds, 1):
            name = f"edge{k}"
            host_id = f"hlive{k}{tag}"
            entry = {"id": host_id, "cim": None, "mep": None,
                     "vim": {"driver": "libvirt", "uri": _socket_uri(lv),
                             "network_cidr": cidr, "accel": "tcg", "boot_timeout_s": 180,
                             "live_uri": lv.uri, "live_address": lv.ip}}
            cfg = {"role": "mepm", "state_dir": str(tmp / name),
                   "run_dir": str(tmp / "run" / name),
                   "api": {"token_file": str(tmp / f"{name}.token"),
                           "tls_cert": cert, "tls_key": key},
                   "hosts": [entry]}
            procs[name] = lab.Serve(cfg, tmp, name=name, role="mepm",
                                    listen=f"{lv.ip}:{MEPM_PORT}", token=tokens[name],
                                    wrap=("ip", "netns", "exec", lv.netns.name))
            hosts[name] = {"id": host_id, "libvirtd": lv,
                           "url": f"https://{lv.ip}:{MEPM_PORT}"}
        meo_cfg = {"role": "meo", "state_dir": str(tmp / "meo"), "run_dir": str(tmp / "run/meo"),
                   "api": {"token_file": str(tmp / "meo.token")}, "hosts": [],
                   "meo": {"heartbeat_s": 1, "sync_s": 2, "request_timeout_s": 120,
                           "mepms": [{"id": h["id"], "url": h["url"], "ca_file": cert,
                                      "token_file": str(tmp / f"{n}.token")}
                                     for n, h in hosts.items()]}}
        procs["meo"] = lab.Serve(meo_cfg, tmp, name="meo", role="meo", token=tokens["meo"])
        for name in hosts:
            procs[name].start(wait=False)       # HTTPS: ready when the MEO reaches it
        procs["meo"].start()
        c = procs["meo"].client

        def reachable() -> bool:
            for name in hosts:
                assert procs[name].alive, f"{name} exited:\n{procs[name].log_tail()}"
            seen = c.get(HOSTS)
            return len(seen) == 2 and all(h["state"] == "REACHABLE" for h in seen)
        lab.wait_for(reachable, 90, "two REACHABLE hosts (over HTTPS, in their namespaces)")
        pkg = lab.onboard_variant(c, tmp, "sample-vm-app", appDId=APP,
                                  appDNSRule=[], appTrafficRule=[])
        yield {"c": c, "hosts": hosts, "procs": procs, "pkg": pkg}
        lab.clear(c, timeout_s=240)
        cleared = [f"{n}: {_held(h['libvirtd'])['domains'].keys()}" for n, h in hosts.items()
                   if _held(h["libvirtd"])["domains"]]
    finally:
        if request.session.testsfailed:         # what each process said, before it goes
            for name, p in procs.items():
                print(f"\n--- {name}'s log (tail) ---\n{p.log_tail(6000)}")
        for p in procs.values():
            p.stop()
        for lv in libvirtds:
            lv.close()
        shutil.rmtree(tmp, ignore_errors=True)
        for lv in libvirtds:
            assert not (Path("/run/netns") / lv.netns.name).exists()
            assert not lv.dir.exists()
            assert run("ip", "link", "show", lv.netns.links[0], check=False).returncode != 0
        assert all(p.proc is None or p.proc.poll() is not None for p in procs.values())
        assert not tmp.exists()
    assert cleared == [], f"domains left after the MEO's cleanup: {cleared}"


def test_a_running_vm_moves_live_through_the_meo(system):
    c, h1, h2 = system["c"], system["hosts"]["edge1"], system["hosts"]["edge2"]
    lv1, lv2 = h1["libvirtd"], h2["libvirtd"]
    iid = c.post(INST, {"appDId": APP})[0]["id"]
    op = c.wait_op(c.post(f"{INST}/{iid}/instantiate", {
        "deploymentType": "VM", "selectedMECHostInfo": [{"hostId": {"id": h1["id"]}}]})[0],
        timeout=400)
    assert op["operationState"] == "COMPLETED", op
    assert c.get(f"{INST}/{iid}")["hostId"] == h1["id"]
    [(domain, xml)] = _held(lv1)["domains"].items()
    disks = _disks(xml)
    ip = _guest_ip(lv1, domain)
    lab.wait_for(lambda: "mecorch sample vm" in _curl(lv1, f"http://{ip}/"), 120,
                 "the VM answering in host 1's namespace")
    notice = secrets.token_hex(8)
    assert "noted" in _curl(lv1, f"http://{ip}/cgi-bin/notify", "--data-binary", notice)
    assert notice in _curl(lv1, f"http://{ip}/cgi-bin/mec?notices")

    t0 = time.monotonic()
    # (hostId: its instantiate selected host 1 only, so placement has no other)
    op = c.wait_op(c.post(f"{INST}/{iid}/relocate", {"live": True, "hostId": h2["id"]})[0],
                   timeout=900)
    took = time.monotonic() - t0
    assert op["operationState"] == "COMPLETED" and op["lcmOperation"] == "RELOCATE", \
        op.get("error")

    view = c.get(f"{INST}/{iid}")
    assert view["id"] == iid and view["hostId"] == h2["id"], view
    assert view["decisionReason"].startswith("relocated live"), view["decisionReason"]
    move = view["relocatedFrom"][-1]
    assert move["hostId"] == h1["id"] and move["moveType"] == "LIVE", move
    assert move["sourceCopy"] == "REMOVED", move
    # the same guest, not rebooted (its tmpfs kept the notice), at the same
    # address, now only in host 2's namespace
    assert notice in _curl(lv2, f"http://{ip}/cgi-bin/mec?notices")
    assert _curl(lv1, f"http://{ip}/", "--max-time", "2") == ""
    # host 1 holds nothing of it: no domain, none of its disks
    held = _held(lv1)
    assert held["domains"] == {}, held
    for pool, vol in disks:
        if pool:
            assert vol not in held["volumes"].get(pool, []), (pool, vol, held)
        else:
            assert not Path(vol).exists(), vol
    # host 2's network keeps the address for the guest's MAC (its lease
    # renewed there gets the same one)
    [(_, xml2)] = _held(lv2)["domains"].items()
    assert _reservations(lv2, xml2) == [(_mac(xml), ip)]
    def at(t: dict) -> float:
        return t["seconds"] + t["nanoSeconds"] / 1e9
    print(f"\nlive relocation through the MEO (TCG guest, 256 MiB, root + 1 GiB data disk): "
          f"op {at(op['stateEnteredTime']) - at(op['startTime']):.1f} s by its times "
          f"({took:.1f} s polled by the client); outageS {move.get('outageS')} (the MEO's: "
          "migration's end to the target's instantiate COMPLETED)")
