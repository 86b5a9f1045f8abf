"""`mecorch host teardown` on the real backends: refused while an instance
is deployed (nothing removed); once every instance and package is gone and
`mecorch serve` is stopped, it removes the lab's docker network, libvirt
network and pool, iptables chains and hooks, service link and dnsmasq, so
that `docker network ls`, `virsh net-list --all`, `virsh pool-list --all`,
`iptables-save` and `ip link` are as they were before the lab first started
(compared on every name of the lab's own: other tests run beside it)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from conftest import run
from support.crashlab import VIRSH, Lab

pytestmark = [pytest.mark.docker, pytest.mark.libvirt, pytest.mark.mep]
NO_RULES = {"appTrafficRule": [], "appDNSRule": []}


def snapshot(lab) -> dict[str, set[str]]:
    """What the backends hold under the lab's names."""
    mine = (lab.tag, lab.chain, lab.cfg["hosts"][0]["mep"]["service_interface"])

    def ours(lines):
        return {ln.strip() for ln in lines if any(m in ln for m in mine)}
    iptables = [ln for ln in run("iptables-save").stdout.splitlines() if not ln.startswith("#")]
    return {
        "docker networks": ours(run(*lab.docker, "network", "ls", "--format", "{{.Name}}")
                                .stdout.splitlines()),
        "libvirt networks": ours(run(*VIRSH, "net-list", "--all", "--name").stdout.splitlines()),
        "libvirt pools": ours(run(*VIRSH, "pool-list", "--all", "--name").stdout.splitlines()),
        "iptables": ours(iptables),
        "links": ours(ln.split(":")[1] for ln in run("ip", "-o", "link").stdout.splitlines()),
    }


def teardown_cli(lab) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mecorch.cli", "--config", str(lab.cfg_path),
                           "host", "teardown", lab.host_id],
                          capture_output=True, text=True, timeout=300)


def test_teardown_refuses_in_use_then_leaves_nothing():
    lab = Lab("td", interval_s=60)
    mep = lab.cfg["hosts"][0]["mep"]
    # a service link and range of its own: teardown removes the link
    mep["service_interface"] = f"mtd{lab.tag[-8:]}"[:15]
    mep["service_cidr"] = "10.219.7.0/24"
    lab.cfg_path.write_text(yaml.safe_dump(lab.cfg))
    before = snapshot(lab)
    try:
        lab.start()
        lab.onboard()
        ids = []
        for app, manner in (("sample-http", "CONTAINER"), ("sample-vm", "VM")):
            iid = lab.create(app)
            op, _ = lab.c.post(f"/app_lcm/v1/app_instances/{iid}/instantiate",
                               {"selectedMECHostInfo": lab.selected, "deploymentType": manner,
                                **NO_RULES})
            assert lab.c.wait_op(op, timeout=400)["operationState"] == "COMPLETED"
            ids.append(iid)
        during = snapshot(lab)
        assert during["docker networks"] and during["libvirt pools"] and during["iptables"]

        # while serve runs: its lease holds the host
        r = teardown_cli(lab)
        assert r.returncode == 2 and "held by another mecorch" in r.stderr, r.stderr
        lab.stop()
        # serve stopped, instances still deployed: refused, nothing touched
        r = teardown_cli(lab)
        assert r.returncode == 2 and "INSTANTIATED" in r.stderr and "terminate" in r.stderr
        assert snapshot(lab) == during

        lab.start()
        for iid in ids:
            assert lab.c.wait_op(lab.terminate(iid), timeout=120)["operationState"] == "COMPLETED"
            lab.c.call("DELETE", f"/app_lcm/v1/app_instances/{iid}")
        for pkg in lab.c.get("/app_pkgm/v1/app_packages"):
            lab.c.call("PATCH", f"/app_pkgm/v1/app_packages/{pkg['id']}",
                       {"operationState": "DISABLED"})
            lab.c.call("DELETE", f"/app_pkgm/v1/app_packages/{pkg['id']}")
        lab.stop()
        dnsmasq_pid = (lab.tmp / "run" / lab.host_id / "dnsmasq.pid")
        pid = int(dnsmasq_pid.read_text().split()[0]) if dnsmasq_pid.exists() else None

        r = teardown_cli(lab)
        assert r.returncode == 0, r.stderr
        out = r.stdout
        assert f"removed cim: docker network mec-{lab.tag}" in out
        assert f"removed vim: libvirt network mec-{lab.tag}" in out
        assert f"removed vim: libvirt pool mec-{lab.tag}" in out
        assert f"removed mep: iptables chains {lab.chain}-" in out
        assert snapshot(lab) == before
        if pid is not None:             # its dnsmasq is stopped
            assert subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode != 0
        # again: nothing left to remove, still success
        r = teardown_cli(lab)
        assert r.returncode == 0, r.stderr
        assert "docker network" not in r.stdout and "libvirt" not in r.stdout
    finally:
        lab.teardown()
