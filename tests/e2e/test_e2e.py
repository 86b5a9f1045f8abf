"""End to end on the real backends: a `mecorch serve` process with its own
state, network, pool, chains and dnsmasq port, driven through the REST API.

Both manners are onboarded from real packages (the sample images built by
provision), deployed, reached by DNS name (mecorch's dnsmasq) and through
their traffic rule (the steered service address), and terminated; the
backends are then searched for anything of the instances that was left.
"""

from __future__ import annotations

import time

import pytest

from conftest import run
from mecorch.kernel.client import ApiError
from mecorch.package import build_package
from mecorch.kernel.fileutil import sha256_file
from support import lab
from support.lab import EXAMPLES, INST, PKGS, Lab, onboard_samples

pytestmark = [pytest.mark.docker, pytest.mark.libvirt, pytest.mark.mep]


@pytest.fixture(scope="module")
def mec(sample_container, sample_vm):
    """A running `mecorch serve` with names of its own (the lab's), and the
    two sample packages onboarded."""
    lab = Lab("e2e")
    try:
        lab.start()
        pkgs = onboard_samples(lab.c, lab.dir)
        yield {"c": lab.c, "dns_port": lab.host["mep"]["dns_port"], "tag": lab.names.tag,
               "pkgs": pkgs, "tmp": lab.dir, "cfg": lab.cfg, "host": lab.selected}
    finally:
        # every instance terminated and deleted, packages removed, the
        # server stopped by its pid, then the infrastructure it made
        left = lab.close()
    assert left == []


def _dig(port: int, name: str) -> str:
    return lab.dig(port, name, tries=3)


_http = lab.http_get


def _deploy(mec: dict, app_d_id: str, **body) -> tuple[dict, dict]:
    c = mec["c"]
    inst, _ = c.post(INST, {"appDId": app_d_id})
    op, _ = c.post(f"{INST}/{inst['id']}/instantiate",
                   {"selectedMECHostInfo": mec["host"], **body})
    op = c.wait_op(op, timeout=300)
    return c.get(f"{INST}/{inst['id']}"), op


def _leftovers(iid: str) -> list[str]:
    found = []
    ps = run("docker", "ps", "-aq", "--filter", f"label=mecorch.instance={iid}").stdout.split()
    vols = run("docker", "volume", "ls", "-q", "--filter",
               f"label=mecorch.instance={iid}").stdout.split()
    doms = run("virsh", "-q", "-c", "qemu:///system", "list", "--all", "--name").stdout
    if ps:
        found.append(f"containers {ps}")
    if vols:
        found.append(f"volumes {vols}")
    if iid in doms:
        found.append("domain")
    if f"mecorch:{iid}" in run("iptables-save").stdout:
        found.append("iptables rules")
    return found


@pytest.mark.parametrize("app_d_id,decide,body_text", [
    ("sample-http", {"deploymentType": "CONTAINER"}, "mecorch sample container"),
    ("sample-vm", {"orchestrationInfo": (EXAMPLES / "orchestration/vm-tosca.yaml").read_text()},
     "mecorch sample vm"),
])
def test_deploy_reach_by_dns_and_traffic_rule_then_terminate_gracefully(mec, app_d_id, decide,
                                                                          body_text,
                                                                          notification_sink):
    c = mec["c"]
    info, op = _deploy(mec, app_d_id, **decide)
    assert op["operationState"] == "COMPLETED", op.get("error")
    iid = info["id"]
    alloc = info["allocatedResources"]
    assert info["deploymentType"] == ("CONTAINER" if app_d_id == "sample-http" else "VM")
    ip = alloc["network"][0]["ip"]
    assert _http(f"http://{ip}/") == body_text                 # the instance itself
    dns = c.get(f"/mec_app_support/v1/applications/{iid}/dns_rules")[0]
    assert _dig(mec["dns_port"], dns["domainName"]) == dns["ipAddress"]
    assert _http(f"http://{dns['ipAddress']}/") == body_text   # through the traffic rule
    assert c.get(f"{PKGS}/{mec['pkgs'][app_d_id]['id']}")["usageState"] == "IN_USE"

    # graceful termination: the subscribed app gets the notice; its confirm
    # ends the wait long before the timeout
    c.post(f"/mec_app_support/v1/applications/{iid}/subscriptions", {
        "subscriptionType": "AppTerminationNotificationSubscription",
        "callbackReference": notification_sink.url,
        "appInstanceId": iid})
    t0 = time.monotonic()
    op, _ = c.post(f"{INST}/{iid}/terminate",
                   {"terminationType": "GRACEFUL", "gracefulTerminationTimeout": 60})
    got = notification_sink.wait()
    assert got and got[0]["operationAction"] == "TERMINATING"
    c.post(f"/mec_app_support/v1/applications/{iid}/confirm_termination",
           {"operationAction": "TERMINATING"})
    op = c.wait_op(op, timeout=120)
    assert op["operationState"] == "COMPLETED", op.get("error")
    assert time.monotonic() - t0 < 45
    assert _leftovers(iid) == []
    assert _dig(mec["dns_port"], dns["domainName"]) == ""        # name gone with the rules
    c.call("DELETE", f"{INST}/{iid}")


def test_forceful_termination_of_a_vm_deployed_by_its_onboarded_manner(mec):
    c = mec["c"]
    info, op = _deploy(mec, "sample-vm")                          # no signal: onboarding says VM
    assert op["operationState"] == "COMPLETED", op.get("error")
    assert info["deploymentType"] == "VM"
    t0 = time.monotonic()
    op, _ = c.post(f"{INST}/{info['id']}/terminate", {"terminationType": "FORCEFUL"})
    assert c.wait_op(op, timeout=120)["operationState"] == "COMPLETED"
    assert time.monotonic() - t0 < 30
    assert _leftovers(info["id"]) == []


def test_contradiction_is_400_and_nothing_made(mec):
    c = mec["c"]
    inst, _ = c.post(INST, {"appDId": "sample-http"})
    pod = (EXAMPLES / "orchestration/container-pod.yaml").read_text()
    with pytest.raises(ApiError) as e:
        c.post(f"{INST}/{inst['id']}/instantiate",
               {"selectedMECHostInfo": mec["host"], "deploymentType": "VM", "orchestrationInfo": pod})
    assert e.value.status == 400 and "deploymentType" in e.value.detail
    assert _leftovers(inst["id"]) == []


def test_failure_in_the_rules_step_releases_the_container(mec):
    """A traffic rule iptables cannot express fails the MEP step after the
    container was made: the container, its pause container and volumes go."""
    rule = {"trafficRuleId": "enc", "filterType": "FLOW", "priority": 1,
            "trafficFilter": [{"dstAddress": ["10.90.0.10"], "dstPort": ["80"]}],
            "action": "FORWARD_ENCAPSULATED",
            "dstInterface": [{"interfaceType": "TUNNEL",
                              "tunnelInfo": {"tunnelType": "GTP_U"}}]}
    info, op = _deploy(mec, "sample-http", appTrafficRule=[rule])
    assert op["operationState"] == "FAILED"
    assert op["error"]["status"] == 400, op["error"]
    assert "FORWARD_ENCAPSULATED" in op["error"]["detail"], op["error"]
    assert info["instantiationState"] == "NOT_INSTANTIATED"
    assert _leftovers(info["id"]) == []


def test_capacity_refusal_changes_nothing(mec):
    c = mec["c"]
    inst, _ = c.post(INST, {"appDId": "sample-vm"})
    tosca = (EXAMPLES / "orchestration/vm-tosca.yaml").read_text().replace("256 MB", "200 GB")
    with pytest.raises(ApiError) as e:
        c.post(f"{INST}/{inst['id']}/instantiate",
               {"selectedMECHostInfo": mec["host"], "orchestrationInfo": tosca})
    assert e.value.status == 409, e.value.body
    assert c.get(f"{INST}/{inst['id']}")["instantiationState"] == "NOT_INSTANTIATED"
    assert _leftovers(inst["id"]) == []


def test_tampered_package_refused_nothing_kept(mec, tmp_path):
    c = mec["c"]
    zpath = build_package(EXAMPLES / "sample-container-app", tmp_path / "p.zip")
    data = bytearray(zpath.read_bytes())
    i = data.find(b"Sample HTTP server")
    data[i] = ord("X")
    zpath.write_bytes(bytes(data))
    before = c.get(PKGS)
    with pytest.raises(ApiError) as e:
        c.post(PKGS, {"appPkgName": "t", "appPkgVersion": "1", "appPkgPath": str(zpath),
                      "checksum": {"algorithm": "SHA-256", "hash": sha256_file(zpath)}})
    assert e.value.status == 422, e.value.body
    assert c.get(PKGS) == before
