"""A host reboot, simulated on daemons of the test's own: instances that
were running come back by themselves, reachable by their DNS name and
traffic rule, with nothing made twice.

What a reboot does to the edge host, and how each part is redone here:
- dockerd stops (and its containers with it): a private `dockerd` (own
  socket, data root, exec root, bridge, pid file; no live-restore, so its
  containers really stop) is stopped with SIGTERM and started again by pid;
  the shared daemon at /var/run/docker.sock is never touched;
- mecorch stops: `mecorch serve` gets SIGTERM and is started again on the
  same state, as the systemd unit (contrib/mecorch.service) would at boot;
- iptables and the MEP's dnsmasq are gone: the lab's own chains and hooks
  (its prefix only) are removed, its dnsmasq processes stopped by their pid
  files, its DNS files deleted (only the lab's state dir).

Then: the same instance id is INSTANTIATED and RUNNING, its pause container
came back with dockerd (restart policy unless-stopped) and its app
container was started by `mecorch serve` joined to that pause container's
namespace (the same two containers, no new ones), its DNS name answers, its
traffic rule reaches it, and the lab's iptables text is what it was before.
An instance the operator stopped stays stopped, and a crashed app container
is not restarted (its crash stays visible); neither is steered to (their
rules are out of service, before the reboot and after it).

The VM part cannot reboot the shared libvirtd: it checks what libvirtd's
own boot-time start acts on, the domain's autostart flag (set at deploy,
cleared by an operator's stop, set again by start).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import run
from support.lab import PrivateDockerd, dig as lab_dig, remove_mep_chains
from support.crashlab import INST, VIRSH, Daemon, Lab, private_registry
from drivers.docker_cim.driver import REVIVE_SLACK_S
from drivers.docker_cim.pause import PAUSE_IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.mep]

BODY = "mecorch sample container"


def rules(vip: str, name: str, rule: str) -> dict:
    return {"appTrafficRule": [{
                "trafficRuleId": f"{rule}-vip", "filterType": "FLOW", "priority": 1,
                "trafficFilter": [{"dstAddress": [vip], "dstPort": ["80"], "protocol": ["TCP"]}],
                "action": "FORWARD_DECAPSULATED", "dstInterface": [{"interfaceType": "IP"}]}],
            "appDNSRule": [{"dnsRuleId": f"{rule}-dns", "domainName": name,
                            "ipAddressType": "IP_V4", "ipAddress": vip}]}


@pytest.fixture(scope="module")
def reboot_lab(sample_container):
    """A lab wired to a private dockerd and a private registry."""
    tag = f"{os.getpid()}-{int(time.time()) % 100000}"
    root = Path(f"/var/tmp/mecorch-reboot-{tag}")
    root.mkdir(mode=0o711)
    dockerd = PrivateDockerd(root, f"rb-{tag}", "10.236.0.0/16", "10.237.0.0/16")
    registry = private_registry(root)
    dockerd.start()
    registry.start()
    lab = Lab("reboot", cim={"docker_host": dockerd.host,
                                      "registry": registry.addr}, vm=False)
    try:
        lab.start()
        lab.onboard(("sample-container-app",))
        yield {"lab": lab, "dockerd": dockerd, "root": root}
    finally:
        for d in (dockerd, registry):
            if d.proc.poll() is not None:
                d.start()
        left = lab.teardown()
        ps = dockerd.containers()
        dockerd.stop()
        registry.stop()
        dockerd.remove()
        shutil.rmtree(root, ignore_errors=True)
        assert left == [] and ps == [] and not root.exists(), (left, ps)


def dig(lab: Lab, name: str) -> str:
    return lab_dig(lab.dns_port, name)


def http_body(vip: str) -> str:
    try:
        with urllib.request.urlopen(f"http://{vip}/", timeout=2) as resp:
            return resp.read().decode(errors="replace")
    except OSError as e:
        return f"error: {e}"


def lab_iptables(lab: Lab) -> list[str]:
    """The lab's chains, hooks and rules as iptables-save prints them
    (without counters), sorted: equal before and after means every rule
    came back exactly once."""
    out = []
    for line in run("iptables-save").stdout.splitlines():
        if line.startswith(f":{lab.chain}-"):
            out.append(line.split()[0])
        elif line.startswith("-A ") and lab.chain in line:
            out.append(line)
    return sorted(out)


def addressless(lines: list[str]) -> list[str]:
    """The lines with every DNAT target address replaced by one word."""
    return sorted(re.sub(r"--to-destination \S+", "--to-destination ADDR", line)
                  for line in lines)


def containers(lab: Lab, iid: str) -> dict[str, dict]:
    """role -> `docker inspect` of the instance's containers."""
    ids = run(*lab.docker, "ps", "-aq", "--filter", f"label=mecorch.instance={iid}").stdout.split()
    infos = json.loads(run(*lab.docker, "inspect", *ids).stdout) if ids else []
    out: dict[str, dict] = {}
    for info in infos:
        role = info["Config"]["Labels"]["mecorch.role"]
        assert role not in out, f"two {role} containers of {iid}"
        out[role] = info
    return out


def observed(lab: Lab, iid: str) -> str:
    return lab.c.get(f"{INST}/{iid}").get("observedState", "?")


def wait_until(what: str, probe, lab: Lab, limit_s: float = 60) -> float:
    t0 = time.monotonic()
    while not probe():
        if time.monotonic() - t0 > limit_s:
            raise AssertionError(f"{what}: not within {limit_s:g} s\n{lab.log_tail()}")
        time.sleep(0.3)
    return time.monotonic() - t0


def simulated_reboot(lab: Lab, dockerd: Daemon) -> None:
    """Everything a reboot stops or wipes, of this lab only."""
    lab.stop()                                   # SIGTERM, as systemd stops it
    dockerd.stop()                               # its containers stop with it
    from drivers.linux_mep import LinuxMEP
    host = lab.cfg["hosts"][0]
    mep = LinuxMEP({**host["mep"], "state_dir": str(lab.tmp / "state/hosts" / lab.host_id),
                    "run_dir": str(lab.tmp / "run" / lab.host_id)})
    mep.stop_services()                          # both of the lab's dnsmasqs
    remove_mep_chains(lab.chain)                 # iptables is empty after a boot
    for name in os.listdir(lab.hostsdir):        # and, at worst, its DNS files are gone
        (lab.hostsdir / name).unlink()


def test_instances_come_back_after_a_reboot(reboot_lab):
    lab, dockerd = reboot_lab["lab"], reboot_lab["dockerd"]
    n = os.getpid() % 40
    vip, name = f"10.90.0.{150 + n}", f"reboot-{lab.tag}.mec.local"
    # 1. one whose app crashed (killed behind mecorch's back) well before the
    # reboot: it is not restarted, now or after the reboot
    crashed = lab.create("sample-http")
    op = lab.c.post(f"{INST}/{crashed}/instantiate",
                    {"selectedMECHostInfo": lab.selected, "deploymentType": "CONTAINER",
                     **rules(f"10.90.0.{60 + n}", f"rbcrash-{lab.tag}.mec.local", "rbc")})[0]
    assert lab.c.wait_op(op, timeout=300)["operationState"] == "COMPLETED"
    run(*lab.docker, "kill", containers(lab, crashed)["app"]["Id"])
    crashed_at = time.monotonic()
    wait_until("the crash observed", lambda: observed(lab, crashed) == "STOPPED", lab, 20)
    time.sleep(2 * lab.cfg["orchestrator"]["reconcile_interval_s"] + 1)   # two rounds
    assert observed(lab, crashed) == "STOPPED"
    # 2. the running instance, with its DNS name and traffic rule
    running = lab.create("sample-http")
    op = lab.c.post(f"{INST}/{running}/instantiate",
                    {"selectedMECHostInfo": lab.selected, "deploymentType": "CONTAINER",
                     **rules(vip, name, "rb")})[0]
    assert lab.c.wait_op(op, timeout=300)["operationState"] == "COMPLETED"
    # 3. one the operator stopped: it must stay stopped
    stopped = lab.create("sample-http")
    op = lab.c.post(f"{INST}/{stopped}/instantiate",
                    {"selectedMECHostInfo": lab.selected, "deploymentType": "CONTAINER",
                     **rules(f"10.90.0.{110 + n}", f"rbstop-{lab.tag}.mec.local", "rbs")})[0]
    assert lab.c.wait_op(op, timeout=300)["operationState"] == "COMPLETED"
    op = lab.c.post(f"{INST}/{stopped}/operate",
                    {"changeStateTo": "STOPPED", "stopType": "FORCEFUL"})[0]
    assert lab.c.wait_op(op, timeout=120)["operationState"] == "COMPLETED"

    assert dig(lab, name) == vip and BODY in http_body(vip)
    before = {i: {r: c["Id"] for r, c in containers(lab, i).items()}
              for i in (running, stopped, crashed)}
    pause = containers(lab, running)["pause"]
    assert pause["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    rules_before = lab_iptables(lab)
    assert any(vip in line for line in rules_before), rules_before
    assert lab.problems() == []

    # the crash is older than what counts as stopping with the host
    time.sleep(max(0.0, REVIVE_SLACK_S + 2 - (time.monotonic() - crashed_at)))
    simulated_reboot(lab, dockerd)
    assert lab_iptables(lab) == [] and dig(lab, name) == ""
    dockerd.start()
    assert containers(lab, running)["pause"]["State"]["Running"], "pause not restarted"
    # dockerd gives a restarted container the first free address, which need
    # not be its old one: make sure it is not, with squatters on the old one
    old_ip, squatters = move_address(lab, containers(lab, running)["pause"])
    try:
        t0 = time.monotonic()
        lab.start()
        check_back(lab, running, stopped, crashed, vip, name, before, old_ip,
                   rules_before, t0)
    finally:
        if squatters:
            run(*lab.docker, "rm", "-f", *squatters)


def move_address(lab: Lab, pause: dict) -> tuple[str, list[str]]:
    """Give the running instance's pause container another address (as a
    dockerd restart may): its old one is taken by squatter containers."""
    net = lab.cfg["hosts"][0]["cim"]["network"]
    old_ip = pause["NetworkSettings"]["Networks"][net]["IPAddress"]
    run(*lab.docker, "network", "disconnect", net, pause["Id"])
    squatters = []
    for _ in range(8):
        cid = run(*lab.docker, "run", "-d", "--network", net, "--label", "mecorch.test=squatter",
                  PAUSE_IMAGE).stdout.strip()
        squatters.append(cid)
        ip = json.loads(run(*lab.docker, "inspect", cid).stdout)[0][
            "NetworkSettings"]["Networks"][net]["IPAddress"]
        if ip == old_ip:
            break
    else:
        raise AssertionError(f"no squatter got {old_ip}")
    run(*lab.docker, "network", "connect", net, pause["Id"])
    return old_ip, squatters


def check_back(lab: Lab, running: str, stopped: str, crashed: str, vip: str, name: str,
               before: dict, old_ip: str, rules_before: list[str], t0: float) -> None:
    back = wait_until("DNS and traffic back",
                      lambda: dig(lab, name) == vip and BODY in http_body(vip), lab)
    print(f"\nreachable {back:.1f} s after `mecorch serve` started")

    # the same instances and containers, none made twice
    assert lab.instantiated() == {running, stopped, crashed}
    after = {i: {r: c["Id"] for r, c in containers(lab, i).items()}
             for i in (running, stopped, crashed)}
    assert after == before
    parts = containers(lab, running)
    assert parts["app"]["State"]["Running"] and parts["pause"]["State"]["Running"]
    assert parts["app"]["HostConfig"]["NetworkMode"] == f"container:{parts['pause']['Id']}"
    wait_until("observed RUNNING", lambda: observed(lab, running) == "RUNNING", lab, 10)
    # the operator's stop and the crash are kept as they were
    assert not containers(lab, stopped)["app"]["State"]["Running"]
    assert not containers(lab, crashed)["app"]["State"]["Running"]
    assert observed(lab, stopped) == "STOPPED" and observed(lab, crashed) == "STOPPED"
    # the running one is steered to its address now (it moved), which its
    # record shows too; the stopped and the crashed ones are steered to
    # nothing (no client is sent to an app that does not run)
    net_name = lab.cfg["hosts"][0]["cim"]["network"]
    new_ip = parts["pause"]["NetworkSettings"]["Networks"][net_name]["IPAddress"]
    assert new_ip != old_ip
    dnat = " ".join(lab_iptables(lab))
    for iid in (running, stopped, crashed):
        ip = containers(lab, iid)["pause"]["NetworkSettings"]["Networks"][net_name]["IPAddress"]
        assert (f"--to-destination {ip}" in dnat) is (iid == running), (iid, ip, dnat)
        net = lab.c.get(f"{INST}/{iid}")["allocatedResources"]["network"]
        assert [n["ip"] for n in net] == [ip], (iid, net)

    def now() -> list[str]:
        return addressless(lab_iptables(lab))
    # every rule in service back exactly once, and a later round changes nothing
    assert now() == addressless(rules_before)
    assert lab.problems() == []
    time.sleep(2 * lab.cfg["orchestrator"]["reconcile_interval_s"] + 1)
    assert now() == addressless(rules_before)
    assert sorted(os.listdir(lab.hostsdir)) == [running]
    log = lab.log_tail(20000)
    assert f"instance {running} started again" in log, log[-3000:]
    assert f"re-applied the rules of instance {running}" in log or \
        f"instance {running} has a new address" in log, log[-3000:]
    assert f"instance {stopped} started again" not in log
    assert f"instance {crashed} started again" not in log
    assert f"instance {running} has a new address {new_ip}" in log
    print(f"reboot: back in {time.monotonic() - t0:.1f} s")


@pytest.mark.libvirt
def test_vm_domain_autostart_follows_operate(reboot_lab, sample_vm):
    """libvirtd starts autostart domains when it starts (at boot): the flag
    is set at deploy, cleared by an operator's stop, set again by start."""
    lab = Lab("rbvm", cim=reboot_lab["lab"].cfg["hosts"][0]["cim"])
    try:
        lab.start()
        lab.onboard(("sample-vm-app",))
        iid = lab.deploy("sample-vm", "VM")
        dom = f"mecorch-{iid}"

        def info() -> dict[str, str]:
            out = run(*VIRSH, "dominfo", dom).stdout
            return {k.strip(): v.strip() for k, _, v in
                    (line.partition(":") for line in out.splitlines())}
        assert info()["Persistent"] == "yes" and info()["Autostart"] == "enable"
        for to, want in (("STOPPED", "disable"), ("STARTED", "enable")):
            body = {"changeStateTo": to, **({"stopType": "FORCEFUL"} if to == "STOPPED" else {})}
            op = lab.c.post(f"{INST}/{iid}/operate", body)[0]
            assert lab.c.wait_op(op, timeout=300)["operationState"] == "COMPLETED"
            assert info()["Autostart"] == want, (to, info())
    finally:
        left = lab.teardown()
    assert left == []
