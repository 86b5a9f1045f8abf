"""One MEO and three MEPMs on the real backends, each its own process.

Every MEPM (`mecorch serve --role mepm`) has its own host id, state dir,
docker network, libvirt pool and network, bearer token, and its own
network namespace for its MEP (iptables chains and dnsmasq live there).
edge1 has no VIM. The MEO (`--role meo`) knows edge1 and edge2 from its
config and edge3 registers itself. Everything is driven through the MEO's
REST API; the hosts' own APIs are read only to check what they hold.

Topology made here (addresses exist only on this machine):
    root netns  10.233.K.1 --veth-- 10.233.K.2  netns of edgeK's MEP
A client inside edgeK's netns reaches a container by its steered service
address: the MEP's DNAT (in that netns) sends it over the veth to the
docker bridge; a DOCKER-USER rule made here lets that veth in.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import run
from mecorch.kernel import config as mconfig
from mecorch.kernel.client import ApiError, Client
from mecorch.kernel.fileutil import sha256_file
from mecorch.package import build_package

pytestmark = [pytest.mark.docker, pytest.mark.libvirt, pytest.mark.mep]

REPO = Path(__file__).resolve().parents[1]
INST = "/app_lcm/v1/app_instances"
PKGS = "/app_pkgm/v1/app_packages"
HOSTS = "/mecorch/v1/hosts"
# each host its own service range: the sample packages name no address, the
# MEP of each host gives one of its own range (the lowest free)
SERVICE_CIDRS = {1: "10.171.0.0/24", 2: "10.172.0.0/24", 3: "10.173.0.0/24"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ns(name: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return run("ip", "netns", "exec", name, *argv, check=check)


def _wait(pred, timeout: float, what: str, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Proc:
    """A `mecorch serve` started by this test, stopped by its pid."""

    def __init__(self, name: str, cfg_path: Path, listen: str, role: str, log: Path,
                 token: str):
        self.name, self.cfg_path, self.listen, self.role, self.log = name, cfg_path, listen, \
            role, log
        self.client = Client(f"http://{listen}", token=token, timeout=30)
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> "Proc":
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mecorch.cli", "--config", str(self.cfg_path), "serve",
             "--role", self.role, "--listen", self.listen], stdout=out, stderr=subprocess.STDOUT)
        if wait:
            def up():
                assert self.proc.poll() is None, self.log.read_text()[-3000:]
                try:
                    self.client.get(HOSTS)
                    return True
                except Exception:  # noqa: BLE001 - not up yet
                    return False
            _wait(up, 60, f"{self.name} to serve")
        return self

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


def _sample(tmp: Path, folder: str, app_d_id: str | None = None, rules: bool = True) -> Path:
    """A package of a sample app, optionally as another app without rules
    (many of its instances may then share one host)."""
    src = tmp / f"src-{app_d_id or folder}"
    shutil.copytree(REPO / "examples" / folder, src)
    appd_path = src / "Definitions" / "appd.yaml"
    appd = yaml.safe_load(appd_path.read_text())
    if app_d_id:
        appd["appDId"] = appd["appName"] = app_d_id
    if not rules:
        appd.pop("appDNSRule", None)
        appd.pop("appTrafficRule", None)
    appd_path.write_text(yaml.safe_dump(appd))
    return build_package(src, tmp / f"{app_d_id or folder}.zip")


@pytest.fixture(scope="module")
def system(sample_container, sample_vm):
    tmp = Path(tempfile.mkdtemp(prefix="mecorch-meo-", dir="/var/tmp"))
    os.chmod(tmp, 0o711)            # QEMU (libvirt-qemu) reaches the pools under it
    tag = secrets.token_hex(3)
    made = {"netns": [], "veth": [], "docker_user": [], "nets": [], "pools": [], "meps": [],
            "hosts": []}
    procs: dict[str, Proc] = {}
    tokens = {}
    for who in ("meo", "edge1", "edge2", "edge3"):
        tokens[who] = secrets.token_hex(16)
        (tmp / f"{who}.token").write_text(tokens[who] + "\n")
    meo_port = _free_port()
    base = mconfig.DEFAULT["hosts"][0]
    edges = {}
    try:
        for k in (1, 2, 3):
            name = f"edge{k}"
            hid = f"m{tag}-{name}"
            netns, veth = f"mm{tag}{k}", f"vm{tag}{k}"
            run("ip", "netns", "add", netns)
            made["netns"].append(netns)
            ns(netns, "ip", "link", "set", "lo", "up")
            run("ip", "link", "add", veth, "type", "veth", "peer", "name", veth + "p",
                "netns", netns)
            made["veth"].append(veth)
            run("ip", "addr", "add", f"10.233.{k}.1/24", "dev", veth)
            run("ip", "link", "set", veth, "up")
            ns(netns, "ip", "addr", "add", f"10.233.{k}.2/24", "dev", veth + "p")
            ns(netns, "ip", "link", "set", veth + "p", "up")
            ns(netns, "ip", "route", "add", "default", "via", f"10.233.{k}.1")
            run("iptables", "-I", "DOCKER-USER", "-i", veth, "-j", "ACCEPT")
            made["docker_user"].append(veth)
            port = _free_port()
            net = f"mm-{tag}-{k}"
            host = {"id": hid,
                    "cim": {**base["cim"], "network": net},
                    "vim": ({**base["vim"], "pool": net, "network": net,
                             "network_cidr": f"192.168.{190 + k}.0/24", "accel": "tcg"}
                            if k != 1 else None),
                    "mep": {**base["mep"], "netns": netns, "dns_port": _free_port(),
                            "chain_prefix": f"MM{k}{tag}".upper(),
                            "service_cidr": SERVICE_CIDRS[k]}}
            cfg = {"role": "mepm", "state_dir": str(tmp / name), "run_dir": str(tmp / "run" / name),
                   "api": {"token_file": str(tmp / f"{name}.token"),
                           "mp1_url": f"http://127.0.0.1:{port}/mec_app_support/v1"},
                   "hosts": [host]}
            if k == 3:      # edge3 is not in the MEO's config: it registers itself
                cfg["mepm"] = {"meo_url": f"http://127.0.0.1:{meo_port}",
                               "meo_token_file": str(tmp / "meo.token")}
            cfg_path = tmp / f"{name}.yaml"
            cfg_path.write_text(yaml.safe_dump(cfg))
            made["nets"].append(net)
            made["hosts"].append(hid)
            if k != 1:
                made["pools"].append(net)
            made["meps"].append((host["mep"], str(tmp / name / "hosts" / hid),
                                 str(tmp / "run" / name / hid)))
            edges[name] = {"id": hid, "netns": netns, "cfg": cfg, "port": port,
                           "dns_port": host["mep"]["dns_port"], "cfg_path": cfg_path,
                           "service_cidr": SERVICE_CIDRS[k],
                           # what its first sample-http gets: the range's lowest
                           "vip": SERVICE_CIDRS[k].replace(".0/24", ".1")}
            procs[name] = Proc(name, cfg_path, f"127.0.0.1:{port}", "mepm",
                               tmp / f"{name}.log", tokens[name])
        meo_cfg = {"role": "meo", "state_dir": str(tmp / "meo"), "run_dir": str(tmp / "run/meo"),
                   "api": {"token_file": str(tmp / "meo.token")}, "hosts": [],
                   "meo": {"heartbeat_s": 1, "request_timeout_s": 10, "sync_s": 2,
                           "mepms": [{"id": edges[n]["id"],
                                      "url": f"http://127.0.0.1:{edges[n]['port']}",
                                      "token_file": str(tmp / f"{n}.token")}
                                     for n in ("edge1", "edge2")]}}
        # edge3 registers with the token the MEO accepts, and hands over its own
        (tmp / "meo.token").write_text(tokens["meo"] + "\n")
        meo_path = tmp / "meo.yaml"
        meo_path.write_text(yaml.safe_dump(meo_cfg))
        procs["meo"] = Proc("meo", meo_path, f"127.0.0.1:{meo_port}", "meo", tmp / "meo.log",
                            tokens["meo"])
        procs["meo"].start()
        for name in ("edge1", "edge2", "edge3"):
            procs[name].start()
        c = procs["meo"].client
        _wait(lambda: len(c.get(HOSTS)) == 3 and all(
            h["state"] == "REACHABLE" for h in c.get(HOSTS)), 60, "three REACHABLE hosts")
        pkgs = {}
        for zpath in (_sample(tmp, "sample-container-app"),
                      _sample(tmp, "sample-container-app", "meo-http", rules=False),
                      _sample(tmp, "sample-vm-app"),
                      _sample(tmp, "sample-vm-app", "meo-vm", rules=False)):
            pkg, _ = c.post(PKGS, {"appPkgName": zpath.stem, "appPkgVersion": "1.0",
                                   "appPkgPath": str(zpath),
                                   "checksum": {"algorithm": "SHA-256",
                                                "hash": sha256_file(zpath)}})
            pkgs[pkg["appDId"]] = pkg
        yield {"c": c, "procs": procs, "edges": edges, "tmp": tmp, "pkgs": pkgs,
               "tokens": tokens, "tag": tag}
    finally:
        _teardown(procs, made, tmp)


def _teardown(procs: dict, made: dict, tmp: Path) -> None:
    meo = procs.get("meo")
    if meo and meo.proc and meo.proc.poll() is None:
        try:
            for inst in meo.client.get(INST):
                if inst["instantiationState"] == "INSTANTIATED":
                    op, _ = meo.client.post(f"{INST}/{inst['id']}/terminate",
                                            {"terminationType": "FORCEFUL"})
                    meo.client.wait_op(op, timeout=180)
                meo.client.call("DELETE", f"{INST}/{inst['id']}")
        except Exception as e:  # noqa: BLE001 - teardown goes on; leftovers are removed below
            print("teardown through the MEO:", e)
    for p in procs.values():
        p.stop()
    # what a failed test left of this test's hosts' instances (the MEO may
    # be gone): by the host id each carries (an app container shares its
    # pause container's network, so a filter by network misses it)
    for hid in made["hosts"]:
        for kind in ("ps", "volume"):
            ids = run("docker", *([kind, "ls"] if kind == "volume" else [kind, "-a"]), "-q",
                      "--filter", f"label=mecorch.host={hid}", check=False).stdout.split()
            if ids:
                run("docker", *(["volume", "rm", "-f"] if kind == "volume" else ["rm", "-f"]),
                    *ids, check=False)
    for dom in run("virsh", "-c", "qemu:///system", "list", "--all", "--name",
                   check=False).stdout.split():
        xml = run("virsh", "-c", "qemu:///system", "dumpxml", dom, check=False).stdout
        if any(f"host_id>{hid}</" in xml for hid in made["hosts"]):
            run("virsh", "-c", "qemu:///system", "destroy", dom, check=False)
            run("virsh", "-c", "qemu:///system", "undefine", dom, check=False)
    # what the MEPMs made, by their names (only this test's)
    for name in made["nets"]:
        for c in run("docker", "ps", "-aq", "--filter", f"network={name}", check=False) \
                .stdout.split():
            run("docker", "rm", "-f", c, check=False)
        run("docker", "network", "rm", name, check=False)
    for name in made["pools"]:
        for cmd in (["net-destroy", name], ["net-undefine", name],
                    ["pool-destroy", name], ["pool-undefine", name]):
            run("virsh", "-c", "qemu:///system", *cmd, check=False)
    from drivers.linux_mep import LinuxMEP
    for mep_cfg, state_dir, run_dir in made["meps"]:
        try:
            LinuxMEP({**mep_cfg, "state_dir": state_dir, "run_dir": run_dir}).stop_services()
        except Exception as e:  # noqa: BLE001
            print("dnsmasq stop:", e)
    for veth in made["docker_user"]:
        run("iptables", "-D", "DOCKER-USER", "-i", veth, "-j", "ACCEPT", check=False)
    for veth in made["veth"]:
        run("ip", "link", "del", veth, check=False)
    for netns in made["netns"]:
        run("ip", "netns", "del", netns, check=False)
    shutil.rmtree(tmp, ignore_errors=True)


def _deploy(c: Client, app_d_id: str, **body) -> tuple[str, dict]:
    inst = c.post(INST, {"appDId": app_d_id})[0]
    op, _ = c.post(f"{INST}/{inst['id']}/instantiate", body)
    op = c.wait_op(op, timeout=300)
    assert op["operationState"] == "COMPLETED", op
    return inst["id"], c.get(f"{INST}/{inst['id']}")


def _http(url: str, netns: str | None = None) -> str:
    argv = ["curl", "-s", "-m", "5", url]
    res = ns(netns, *argv, check=False) if netns else run(*argv, check=False)
    return res.stdout


def _dig(edge: dict, name: str) -> str:
    return ns(edge["netns"], "dig", "+short", "-p", str(edge["dns_port"]), "@127.0.0.1",
              name, check=False).stdout.strip()


def _by_host(c: Client) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for i in c.get(INST):
        if i["instantiationState"] == "INSTANTIATED":
            out.setdefault(i["hostId"], []).append(i)
    return out


def _ip(inst: dict) -> str:
    return inst["allocatedResources"]["network"][0]["ip"]


# ---------------------------------------------------------------- the tests
def test_placement_across_three_mepms(system):
    c, edges = system["c"], system["edges"]
    hosts = {h["hostId"]: h for h in c.get(HOSTS)}
    e1, e2, e3 = (edges[n]["id"] for n in ("edge1", "edge2", "edge3"))
    assert set(hosts) == {e1, e2, e3}
    assert hosts[e3]["source"] == "registration" and hosts[e1]["source"] == "config"
    assert "VM" not in hosts[e1]["capacity"] and "VM" in hosts[e2]["capacity"]
    # one container of the app with rules on each host: most free capacity first
    placed = [_deploy(c, "sample-http", deploymentType="CONTAINER")[1]["hostId"]
              for _ in range(3)]
    assert sorted(placed) == sorted([e1, e2, e3]), placed
    # a VM never goes to the host without a VIM
    _, vm = _deploy(c, "sample-vm", deploymentType="VM")
    assert vm["hostId"] in (e2, e3)
    assert "mecorch sample vm" in _http(f"http://{_ip(vm)}/")
    # an explicit host is honoured
    _, pinned = _deploy(c, "meo-http", selectedMECHostInfo=[{"hostId": {"id": e1}}])
    assert pinned["hostId"] == e1
    # each MEPM holds exactly what the MEO placed there
    for name, proc in system["procs"].items():
        if name == "meo":
            continue
        mine = [i for i in proc.client.get(INST) if i["instantiationState"] == "INSTANTIATED"]
        assert len(mine) == len(_by_host(c).get(edges[name]["id"], []))


def test_no_host_fits_is_a_409_naming_each_host(system):
    c, edges = system["c"], system["edges"]
    inst = c.post(INST, {"appDId": "sample-vm"})[0]
    with pytest.raises(ApiError) as e:
        c.post(f"{INST}/{inst['id']}/instantiate", {
            "deploymentType": "VM",
            "virtualComputeDescriptor": {"virtualCpu": {"numVirtualCpu": 64},
                                         "virtualMemory": {"virtualMemSize": 256}}})
    assert e.value.status == 409
    detail = e.value.body["detail"]
    assert f"{edges['edge1']['id']}: no VIM: takes no VM" in detail
    assert f"{edges['edge2']['id']}: vCPU" in detail and f"{edges['edge3']['id']}: vCPU" in detail
    c.call("DELETE", f"{INST}/{inst['id']}")


def test_instances_reached_by_dns_and_traffic_rule_in_their_hosts_netns(system):
    c, edges = system["c"], system["edges"]
    by_host = _by_host(c)
    for name, edge in edges.items():
        apps = [i for i in by_host[edge["id"]] if i["appDId"] == "sample-http"]
        assert len(apps) == 1
        assert _dig(edge, "sample-http.mec.local") == edge["vip"]
        assert "mecorch sample container" in _http(f"http://{edge['vip']}/", edge["netns"])


def test_mepm_killed_keeps_serving_then_resyncs(system):
    c, procs, edges = system["c"], system["procs"], system["edges"]
    edge = edges["edge2"]
    before = {i["id"]: i for i in procs["edge2"].client.get(INST)}
    containers = _labelled(edge["id"])
    procs["edge2"].kill()
    # its apps keep running and answering, by address, DNS name and traffic rule
    for i in _by_host(c)[edge["id"]]:
        body = _http(f"http://{_ip(i)}/")
        assert "mecorch sample" in body, (i, body)
    assert _dig(edge, "sample-http.mec.local") == edge["vip"]
    assert "mecorch sample container" in _http(f"http://{edge['vip']}/", edge["netns"])
    _wait(lambda: {h["hostId"]: h for h in c.get(HOSTS)}[edge["id"]]["state"] == "UNREACHABLE",
          30, "edge2 UNREACHABLE")
    for _ in range(2):              # nothing new goes there meanwhile
        _, inst = _deploy(c, "meo-http", deploymentType="CONTAINER")
        assert inst["hostId"] != edge["id"]
    procs["edge2"].start()
    _wait(lambda: {h["hostId"]: h for h in c.get(HOSTS)}[edge["id"]]["state"] == "REACHABLE",
          30, "edge2 REACHABLE again")
    after = {i["id"]: i for i in procs["edge2"].client.get(INST)}
    assert after.keys() == before.keys()            # nothing lost, nothing duplicated
    assert _labelled(edge["id"]) == containers      # adopted, not restarted
    assert all(a["instantiationState"] == before[k]["instantiationState"]
               for k, a in after.items())


def test_mepm_killed_mid_deploy_the_op_ends_with_the_hosts_outcome(system):
    """The link breaks (the MEPM dies) while a VM boots there: the MEO's op
    stays PROCESSING while the host is away, and ends as the host ended it
    (its restart rolled the interrupted deploy back): FAILED with the
    reason, no VM left, and a retry makes exactly one."""
    c, procs, edges = system["c"], system["procs"], system["edges"]
    edge = edges["edge3"]
    inst = c.post(INST, {"appDId": "meo-vm"})[0]
    op, _ = c.post(f"{INST}/{inst['id']}/instantiate", {
        "deploymentType": "VM", "selectedMECHostInfo": [{"hostId": {"id": edge["id"]}}]})
    host_ops = lambda: [o for o in procs["edge3"].client.get("/app_lcm/v1/app_lcm_op_occs")
                        if o["operationState"] == "PROCESSING"]
    _wait(host_ops, 60, "the VM deploy running on edge3")
    time.sleep(2)
    procs["edge3"].kill()
    _wait(lambda: {h["hostId"]: h for h in c.get(HOSTS)}[edge["id"]]["state"] == "UNREACHABLE",
          30, "edge3 UNREACHABLE")
    assert c.get(f"/app_lcm/v1/app_lcm_op_occs/{op['id']}")["operationState"] == "PROCESSING"
    procs["edge3"].start()
    done = c.wait_op(op, timeout=120)
    assert done["operationState"] == "FAILED"
    assert "interrupted by a restart" in done["error"]["detail"], done["error"]
    assert c.get(f"{INST}/{inst['id']}")["instantiationState"] == "NOT_INSTANTIATED"
    assert not _domains(edge["id"], "meo-vm")
    op, _ = c.post(f"{INST}/{inst['id']}/instantiate", {
        "deploymentType": "VM", "selectedMECHostInfo": [{"hostId": {"id": edge["id"]}}]})
    assert c.wait_op(op, timeout=300)["operationState"] == "COMPLETED"
    assert len(_domains(edge["id"], "meo-vm")) == 1
    vm = c.get(f"{INST}/{inst['id']}")
    assert "mecorch sample vm" in _http(f"http://{_ip(vm)}/")


def test_meo_killed_every_mepm_keeps_serving_and_the_meo_finds_the_same_state(system):
    c, procs, edges = system["c"], system["procs"], system["edges"]
    seen = sorted((i["id"], i["hostId"], i["instantiationState"]) for i in c.get(INST))
    procs["meo"].kill()
    for name, edge in edges.items():
        assert _dig(edge, "sample-http.mec.local") == edge["vip"]
        assert "mecorch sample container" in _http(f"http://{edge['vip']}/", edge["netns"])
        # its Mp1 answers its apps: an app's own rules through the MEPM
        app = next(i for i in procs[name].client.get(INST) if i["appDId"] == "sample-http"
                   and i["instantiationState"] == "INSTANTIATED")
        rules = procs[name].client.get(
            f"/mec_app_support/v1/applications/{app['id']}/traffic_rules")
        assert rules and rules[0]["trafficRuleId"] == "sample-http-vip"
    procs["meo"].start()
    _wait(lambda: all(h["state"] == "REACHABLE" for h in c.get(HOSTS)), 30, "hosts REACHABLE")
    assert sorted((i["id"], i["hostId"], i["instantiationState"]) for i in c.get(INST)) == seen


def test_two_processes_on_one_host_id_the_second_refuses(system):
    edges, tmp = system["edges"], system["tmp"]
    edge = edges["edge1"]
    containers = _labelled(edge["id"])
    rules = ns(edge["netns"], "iptables-save").stdout
    cfg = json.loads(json.dumps(edge["cfg"]))
    cfg["state_dir"] = str(tmp / "intruder")
    cfg["run_dir"] = str(tmp / "run" / "intruder")
    path = tmp / "intruder.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = subprocess.run([sys.executable, "-m", "mecorch.cli", "--config", str(path), "serve",
                          "--role", "mepm", "--listen", f"127.0.0.1:{_free_port()}"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    assert f"edge host {edge['id']!r} is held by another mecorch" in res.stderr
    assert str(tmp / "edge1") in res.stderr and f"127.0.0.1:{edge['port']}" in res.stderr
    assert str(system["procs"]["edge1"].proc.pid) in res.stderr
    assert _labelled(edge["id"]) == containers
    assert _strip_counters(ns(edge["netns"], "iptables-save").stdout) == _strip_counters(rules)


def _labelled(host_id: str) -> dict[str, str]:
    """Containers labelled with the host id: id -> StartedAt."""
    ids = run("docker", "ps", "-q", "--filter", f"label=mecorch.host={host_id}").stdout.split()
    if not ids:
        return {}
    out = json.loads(run("docker", "inspect", *ids).stdout)
    return {c["Id"]: c["State"]["StartedAt"] for c in out}


def _domains(host_id: str, app_d_id: str) -> list[str]:
    """Running libvirt domains of that host id (mecorch's metadata names it)."""
    out = []
    names = run("virsh", "-c", "qemu:///system", "list", "--name").stdout.split()
    for name in names:
        xml = run("virsh", "-c", "qemu:///system", "dumpxml", name, check=False).stdout
        if host_id in xml and app_d_id in xml:
            out.append(name)
    return out


def _strip_counters(text: str) -> list[str]:
    return [line.split(" [")[0] for line in text.splitlines() if not line.startswith("#")]


# ---------------------------------------------------------------- service addresses per site
def test_the_sample_deployed_unchanged_answers_on_each_host_by_its_own_range(system):
    """The sample packages name no service address: each host's MEP gave
    its instance the lowest address of its own range; DNS (in the host's
    netns) answers it and HTTP goes through it; Mp1 and the MEO's view show
    it; the MEO logged the placement with its reason."""
    c, edges, procs = system["c"], system["edges"], system["procs"]
    by_host = _by_host(c)
    seen = set()
    for name, edge in edges.items():
        (inst,) = [i for i in by_host[edge["id"]] if i["appDId"] == "sample-http"]
        addr = inst["allocatedResources"]["serviceAddress"]
        assert addr == edge["vip"] and addr.startswith(edge["service_cidr"][:8]), (name, inst)
        seen.add(addr)
        assert f"; placed on {edge['id']}: " in inst["decisionReason"], inst["decisionReason"]
        assert _dig(edge, "sample-http.mec.local") == addr
        assert "mecorch sample container" in _http(f"http://{addr}/", edge["netns"])
        # the host's Mp1: the rules as applied, with the address in them
        (mine,) = [i for i in procs[name].client.get(INST) if i["appDId"] == "sample-http"
                   and i["instantiationState"] == "INSTANTIATED"]
        mp1 = f"/mec_app_support/v1/applications/{mine['id']}"
        (tr,) = procs[name].client.get(f"{mp1}/traffic_rules")
        (dns,) = procs[name].client.get(f"{mp1}/dns_rules")
        assert tr["trafficFilter"][0]["dstAddress"] == [addr] and dns["ipAddress"] == addr
    assert len(seen) == 3                   # three ranges, three addresses
    # the sample VM asked for one too: the next free of its host's range
    (vm,) = [i for h in by_host.values() for i in h if i["appDId"] == "sample-vm"]
    edge = next(e for e in edges.values() if e["id"] == vm["hostId"])
    assert vm["allocatedResources"]["serviceAddress"] == edge["vip"].rsplit(".", 1)[0] + ".2"
    assert _dig(edge, "sample-vm.mec.local") == vm["allocatedResources"]["serviceAddress"]
    log = procs["meo"].log.read_text()
    assert f"placed on {edges['edge1']['id']} as CONTAINER: " in log


def _fixed_rules(addr: str, name: str) -> dict:
    return {"appTrafficRule": [{"trafficRuleId": "fixed", "filterType": "FLOW", "priority": 1,
                                "trafficFilter": [{"dstAddress": [addr], "dstPort": ["80"],
                                                   "protocol": ["TCP"]}],
                                "action": "FORWARD_DECAPSULATED",
                                "dstInterface": [{"interfaceType": "IP"}]}],
            "appDNSRule": [{"dnsRuleId": "fixed", "domainName": name,
                            "ipAddressType": "IP_V4", "ipAddress": addr, "ttl": 5}]}


def test_a_fixed_address_lands_on_the_only_host_whose_range_holds_it(system):
    c, edges, tag = system["c"], system["edges"], system["tag"]
    edge = edges["edge2"]
    addr, name = "10.172.0.50", f"fixed-{tag}.mec.local"
    iid, inst = _deploy(c, "meo-http", deploymentType="CONTAINER", **_fixed_rules(addr, name))
    assert inst["hostId"] == edge["id"], inst
    assert inst["allocatedResources"]["serviceAddresses"] == [addr]
    why = inst["decisionReason"]
    for other in ("edge1", "edge3"):
        assert (f"{edges[other]['id']}: its service range {edges[other]['service_cidr']} "
                f"does not hold {addr}") in why, why
    assert _dig(edge, name) == addr
    assert "mecorch sample container" in _http(f"http://{addr}/", edge["netns"])
    op, _ = c.post(f"{INST}/{iid}/terminate", {"terminationType": "FORCEFUL"})
    assert c.wait_op(op, timeout=180)["operationState"] == "COMPLETED"
    assert _dig(edge, name) == ""


def test_an_address_in_no_hosts_range_is_a_409_naming_each_range(system):
    c, edges, tag = system["c"], system["edges"], system["tag"]
    inst = c.post(INST, {"appDId": "meo-http"})[0]
    with pytest.raises(ApiError) as e:
        c.post(f"{INST}/{inst['id']}/instantiate",
               {"deploymentType": "CONTAINER",
                **_fixed_rules("10.90.0.10", f"nowhere-{tag}.mec.local")})
    assert e.value.status == 409
    detail = e.value.body["detail"]
    for edge in edges.values():
        assert (f"{edge['id']}: its service range {edge['service_cidr']} does not hold "
                "10.90.0.10") in detail, detail
    assert c.get(f"{INST}/{inst['id']}")["instantiationState"] == "NOT_INSTANTIATED"
    c.call("DELETE", f"{INST}/{inst['id']}")
