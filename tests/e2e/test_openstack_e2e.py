"""End to end through mecorch's REST API with an edge host whose VIM is the
all-in-one OpenStack test cloud (tests/openstack/cloud.sh).

Where the MEP can steer: the VM lives on a Neutron network inside the
cloud (here: inside the cloud container's network namespace, behind the
flat network's bridge). mecorch's MEP applies iptables and dnsmasq rules
where it runs; it can steer traffic to the VM only from a namespace that
routes to the Neutron network. This test therefore gives the edge host's
MEP the cloud's network namespace (`mep.netns`, named with
`ip netns attach`): there the DNS rule answers the steering address, the
traffic rule DNATs it to the VM's fixed address, and both are reached. From
the host's own namespace the fixed address is not routable, so an edge host
whose VMs sit behind Neutron needs the MEP on a node of that network (a
network node, or the provider network's gateway), or a floating IP.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from conformance.compute_labs import (CLOUDS_YAML, OS_CLOUD, OS_CONTAINER, OS_NETWORK,
                                      os_admin, os_owned)
from conftest import run
from mecorch.kernel.client import ApiError
from mecorch.kernel.fileutil import sha256_file
from mecorch.package import build_package
from support.lab import (EXAMPLES, INST, PKGS, Names, Serve, clear, host_config, lab_config,
                         leftovers, private_dir, remove_host, remove_mep_chains)

pytestmark = [pytest.mark.openstack, pytest.mark.mep]


@pytest.fixture(scope="module")
def mec(sample_vm):
    admin = os_admin()
    names = Names("ose")
    host_id = names.host_id
    netns = f"mec-{names.tag}"
    pid = run("docker", "inspect", "-f", "{{.State.Pid}}", OS_CONTAINER).stdout.strip()
    run("ip", "netns", "attach", netns, pid)        # a name for the cloud's namespace
    tmp = private_dir("ose2e")
    host = {**host_config(names, containers=False, vms=False, mep={"netns": netns}),
            "cim": None,
            "vim": {"driver": "openstack", "cloud": OS_CLOUD, "clouds_yaml": CLOUDS_YAML,
                    "network": OS_NETWORK, "boot_timeout_s": 300}}
    # what the lab removes and searches of this host on this machine: its
    # MEP (the VMs are the cloud's: os_owned searches them)
    local = {**host, "vim": None}
    cfg = lab_config(tmp, [host])
    serve = Serve(cfg, tmp)
    client = serve.client
    try:
        serve.start()
        zpath = build_package(EXAMPLES / "sample-vm-app", tmp / "sample-vm-app.zip")
        pkg, _ = client.post(PKGS, {"appPkgName": "sample-vm-app", "appPkgVersion": "1.0",
                                    "appPkgPath": str(zpath),
                                    "checksum": {"algorithm": "SHA-256",
                                                 "hash": sha256_file(zpath)}})
        env = {"c": client, "admin": admin, "host": host_id, "netns": netns, "pkg": pkg,
               "dns_port": host["mep"]["dns_port"], "tmp": tmp}
        yield env
    finally:
        try:
            if not serve.alive:
                serve.start()
            clear(client, timeout_s=300)
            left = os_owned(admin, host_id)          # the package's Glance image went with it
        finally:
            serve.stop()
            left_here = leftovers(local)
            remove_host(local, cfg["state_dir"], cfg["run_dir"])       # both dnsmasqs
            remove_mep_chains(names.chain, netns=netns)     # the MEP's chains in the cloud
            run("ip", "netns", "delete", netns, check=False)
            shutil.rmtree(tmp, ignore_errors=True)
    assert left == [], f"left on the cloud: {left}"
    assert left_here == []


def in_cloud(netns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return run("ip", "netns", "exec", netns, *argv, check=check)


def http(netns: str, url: str, wait_s: float = 120) -> str:
    deadline = time.monotonic() + wait_s
    while True:
        r = in_cloud(netns, "curl", "-s", "--max-time", "3", url, check=False)
        if r.returncode == 0 and r.stdout:
            return r.stdout.strip()
        assert time.monotonic() < deadline, f"{url} did not answer: {r.stderr}"
        time.sleep(2)


def deploy(mec) -> dict:
    c = mec["c"]
    inst, _ = c.post(INST, {"appDId": mec["pkg"]["appDId"]})
    op, _ = c.post(f"{INST}/{inst['id']}/instantiate",
                   {"selectedMECHostInfo": [{"hostId": {"id": mec["host"]}}],
                    "deploymentType": "VM"})
    op = c.wait_op(op, timeout=420)
    assert op["operationState"] == "COMPLETED", op.get("error")
    return c.get(f"{INST}/{inst['id']}")


def nothing_of(mec, iid: str) -> list[str]:
    name = f"mecorch-{iid}"
    return ([f"server {s.name}" for s in mec["admin"].compute.servers(name=f"^{name}$")]
            + [f"port {p.name}" for p in mec["admin"].network.ports(name=name)]
            + (["iptables rules"] if f"mecorch:{iid}" in in_cloud(mec["netns"], "iptables-save").stdout
               else []))


def test_onboard_deploy_reach_rules_and_terminate_gracefully(mec, sample_vm, notification_sink):
    c = mec["c"]
    info = deploy(mec)
    iid = info["id"]
    assert info["deploymentType"] == "VM" and info["hostId"] == mec["host"]
    ip = info["allocatedResources"]["network"][0]["ip"]
    assert http(mec["netns"], f"http://{ip}/") == sample_vm["body"]          # the VM itself
    dns = c.get(f"/mec_app_support/v1/applications/{iid}/dns_rules")[0]
    answer = in_cloud(mec["netns"], "dig", "+short", "+time=1", "+tries=3", "@127.0.0.1",
                      "-p", str(mec["dns_port"]), dns["domainName"]).stdout.strip()
    assert answer == dns["ipAddress"]
    assert http(mec["netns"], f"http://{dns['ipAddress']}/") == sample_vm["body"]  # traffic rule

    c.post(f"/mec_app_support/v1/applications/{iid}/subscriptions", {
        "subscriptionType": "AppTerminationNotificationSubscription",
        "callbackReference": notification_sink.url, "appInstanceId": iid})
    op, _ = c.post(f"{INST}/{iid}/terminate",
                   {"terminationType": "GRACEFUL", "gracefulTerminationTimeout": 60})
    got = notification_sink.wait(30)
    assert got and got[0]["operationAction"] == "TERMINATING"
    c.post(f"/mec_app_support/v1/applications/{iid}/confirm_termination",
           {"operationAction": "TERMINATING"})
    op = c.wait_op(op, timeout=300)
    assert op["operationState"] == "COMPLETED", op.get("error")
    assert nothing_of(mec, iid) == []
    c.call("DELETE", f"{INST}/{iid}")


def test_forceful_termination(mec):
    c = mec["c"]
    info = deploy(mec)
    op, _ = c.post(f"{INST}/{info['id']}/terminate", {"terminationType": "FORCEFUL"})
    op = c.wait_op(op, timeout=300)
    assert op["operationState"] == "COMPLETED", op.get("error")
    assert nothing_of(mec, info["id"]) == []
    c.call("DELETE", f"{INST}/{info['id']}")


def test_a_retain_volume_is_refused_before_the_202_with_one_message(mec):
    """This cloud's VIM keeps no data disk beyond its server (no Cinder), as
    its capabilities declare: a RETAIN volume is a 409 before the 202, with
    nothing made on the cloud and no op occurrence."""
    c = mec["c"]
    inst, _ = c.post(INST, {"appDId": mec["pkg"]["appDId"]})
    with pytest.raises(ApiError) as refused:
        c.post(f"{INST}/{inst['id']}/instantiate", {
            "selectedMECHostInfo": [{"hostId": {"id": mec["host"]}}],
            "deploymentType": "VM",
            "virtualStorageDescriptor": [{"id": "sample-vm-data", "sizeOfStorage": 1,
                                          "deletionPolicy": "RETAIN"}]})
    detail = refused.value.body["detail"]
    assert refused.value.status == 409, refused.value.body
    assert (f"{mec['host']}: volume sample-vm-data is to be retained (RETAIN), but its VIM "
            "keeps no volume beyond its instance") in detail and detail.count("RETAIN") == 1
    assert [o for o in c.get("/app_lcm/v1/app_lcm_op_occs")
            if o["appInstanceId"] == inst["id"]] == []
    assert nothing_of(mec, inst["id"]) == []
    c.call("DELETE", f"{INST}/{inst['id']}")
