"""Re-placement when a site is lost, on the real backends: one MEO and two
MEPM processes (`mecorch serve`), each MEPM with its own host id, docker
network, service range and network namespace for its MEP (iptables and
dnsmasq live there), as tests/e2e/test_meo_e2e.py makes them.

An opted-in container app (`lostAfter`) runs on host A. A's site is lost:
its MEPM is killed (by its pid) and its containers stopped. The app must
serve again on host B within lostAfter + 10 s, by its DNS name on B's
MEP. Then A comes back (its MEPM started again): its copy must be removed,
and only B's serves; A's DNS never answers the name meanwhile (A's MEPM,
without a word from its MEO for lostAfter, starts with the app fenced:
mecorch/mepm/fence.py). Then a partition: the MEO stops, the MEPMs stay:
after lostAfter their copies serve nothing; the MEO back, each serves again.

Topology made here (addresses exist only on this machine):
    root netns  10.233.N.1 --veth-- 10.233.N.2  netns of host K's MEP
"""

from __future__ import annotations

import secrets
import shutil
import threading
import time
from pathlib import Path

import pytest

from conftest import run
from drivers.linux_mep import dnsmasq
from mecorch.kernel import config as mconfig
from mecorch.kernel.fileutil import sha256_file
from mecorch.kernel.states import LcmOperation
from mecorch.mepm.fence import STOP_GRACE_S
from mecorch.package import build_package
from support import lab

pytestmark = [pytest.mark.docker, pytest.mark.mep]

REPO = Path(__file__).resolve().parents[2]
INST = "/app_lcm/v1/app_instances"
OPS = "/app_lcm/v1/app_lcm_op_occs"
PKGS = "/app_pkgm/v1/app_packages"
HOSTS = "/mecorch/v1/hosts"
NAME = "sample-http.mec.local"
LOST_AFTER = 10
# each host its own service range (inside its own netns): what the app's
# name answers tells which host's copy it is
SERVICE_CIDRS = {1: "10.181.0.0/24", 2: "10.182.0.0/24"}


def _wait(procs: dict, pred, timeout: float, what: str, step: float = 0.2):
    """lab.wait_for, and on a timeout the log tail of every server: a wait
    on the servers' state that fails says what each of them was doing."""
    try:
        return lab.wait_for(pred, timeout, what, step)
    except AssertionError as e:
        tails = "\n".join(f"--- {name} ({'alive' if p.alive else 'not running'}):\n"
                          f"{p.log_tail(3000)}" for name, p in procs.items())
        raise AssertionError(f"{e}\n{tails}") from None


@pytest.fixture(scope="module")
def site(sample_container):
    tmp = lab.private_dir("replace")
    tag = secrets.token_hex(3)
    made: dict = {"netns": [], "docker_user": [], "hosts": []}
    procs: dict[str, lab.Serve] = {}
    edges = {}
    tokens = {who: secrets.token_hex(16) for who in ("meo", "edge1", "edge2")}
    for who, token in tokens.items():
        (tmp / f"{who}.token").write_text(token + "\n")
    try:
        for k in (1, 2):
            name = f"edge{k}"
            netns = lab.Netns(f"mr{tag}{k}")
            made["netns"].append(netns)
            veth = f"vr{tag}{k}"
            link = lab.free_subnet("10.233.0.0/16").rsplit(".", 1)[0]
            netns.link(veth, f"{link}.1/24", f"{link}.2/24")
            netns.exec("ip", "route", "add", "default", "via", f"{link}.1")
            # a client in the host's netns reaches its containers over the veth
            run("iptables", "-I", "DOCKER-USER", "-i", veth, "-j", "ACCEPT")
            made["docker_user"].append(veth)
            port = lab.free_port()
            entry = {"id": lab.Names(f"r{k}").host_id, "cim": {},
                     "mep": {"netns": netns.name, "service_cidr": SERVICE_CIDRS[k]}}
            cfg = {"role": "mepm", "state_dir": str(tmp / name),
                   "run_dir": str(tmp / "run" / name),
                   "api": {"token_file": str(tmp / f"{name}.token"),
                           "mp1_url": f"http://127.0.0.1:{port}/mec_app_support/v1"},
                   "hosts": [entry]}
            procs[name] = lab.Serve(cfg, tmp, name=name, role="mepm",
                                    listen=f"127.0.0.1:{port}", token=tokens[name])
            host = mconfig.load(procs[name].config_path)["hosts"][0]   # its derived names
            made["hosts"].append((host, cfg))
            edges[name] = {"id": host["id"], "netns": netns.name, "port": port,
                           "mep_run": Path(host["mep"]["run_dir"]),
                           "dns_port": host["mep"]["dns_port"], "name": name,
                           "vip": SERVICE_CIDRS[k].replace(".0/24", ".1")}
        meo_cfg = {"role": "meo", "state_dir": str(tmp / "meo"), "run_dir": str(tmp / "run/meo"),
                   "api": {"token_file": str(tmp / "meo.token")}, "hosts": [],
                   "meo": {"heartbeat_s": 1, "request_timeout_s": 10, "sync_s": 2,
                           "mepms": [{"id": e["id"], "url": f"http://127.0.0.1:{e['port']}",
                                      "token_file": str(tmp / f"{n}.token")}
                                     for n, e in edges.items()]}}
        procs["meo"] = lab.Serve(meo_cfg, tmp, name="meo", role="meo", token=tokens["meo"])
        procs["meo"].start()
        for name in edges:
            procs[name].start()
        c = procs["meo"].client
        _wait(procs, lambda: len(c.get(HOSTS)) == 2 and all(
            h["state"] == "REACHABLE" for h in c.get(HOSTS)), 60, "two REACHABLE hosts")
        src = tmp / "src"
        shutil.copytree(REPO / "examples" / "sample-container-app", src)
        zpath = build_package(src, tmp / "sample-http.zip")
        pkg, _ = c.post(PKGS, {"appPkgName": "sample-http", "appPkgVersion": "1.0",
                               "appPkgPath": str(zpath),
                               "checksum": {"algorithm": "SHA-256",
                                            "hash": sha256_file(zpath)}})
        yield {"c": c, "procs": procs, "edges": edges, "pkg": pkg}
    finally:
        left = lab.teardown_system(procs, made, tmp, timeout_s=120)
    assert left == [], f"left behind by the MEO's cleanup: {left}"



def _dig(edge: dict) -> str:
    return lab.dig(edge["dns_port"], NAME, netns=edge["netns"], tries=1, time_s=1)


def _http(edge: dict) -> str:
    return run("ip", "netns", "exec", edge["netns"], "curl", "-s", "-m", "2",
               f"http://{edge['vip']}/", check=False).stdout


def _serves(edge: dict) -> bool:
    """The app's name answers this host's service address on this host's
    MEP, and the address reaches the app."""
    return _dig(edge) == edge["vip"] and "mecorch sample container" in _http(edge)


def _containers(host_id: str, running_only: bool = True) -> list[str]:
    """The host's containers on this machine (mecorch's owner label): this
    lab runs one app, so they are its copy on that host (pause and app)."""
    return run("docker", "ps", *(() if running_only else ("-a",)), "-q", "--filter",
               f"label=mecorch.host={host_id}").stdout.split()


def _app_running(host_id: str) -> bool:
    return bool(run("docker", "ps", "-q", "--filter", f"label=mecorch.host={host_id}",
                    "--filter", "label=mecorch.role=app").stdout.split())


def test_a_lost_site_is_replaced_and_its_copy_removed_on_return(site):
    c, procs, edges = site["c"], site["procs"], site["edges"]
    inst = c.post(INST, {"appDId": site["pkg"]["appDId"]})[0]
    iid = inst["id"]
    op = c.wait_op(c.post(f"{INST}/{iid}/instantiate",
                          {"deploymentType": "CONTAINER", "lostAfter": LOST_AFTER})[0],
                   timeout=120)
    assert op["operationState"] == "COMPLETED", op
    view = c.get(f"{INST}/{iid}")
    assert view["lostAfter"] == LOST_AFTER
    a = next(e for e in edges.values() if e["id"] == view["hostId"])
    b = next(e for e in edges.values() if e["id"] != view["hostId"])
    _wait(procs, lambda: _serves(a), 20, f"the app serving on {a['id']}")
    assert not _serves(b)

    # the site is lost: its MEPM dies, its containers stop, and its MEP's
    # dnsmasq (which outlives a crash of the MEPM alone: edge autonomy)
    lost_at = time.monotonic()
    procs[a["name"]].kill()
    ids = _containers(a["id"])
    assert len(ids) == 2 and not _containers(b["id"])
    run("docker", "stop", "-t", "1", *ids)
    for pid_file in ("dnsmasq.pid", "dnsmasq-clients.pid"):
        dnsmasq.stop(a["mep_run"] / pid_file)      # the ones A's MEPM started, by pid
    assert _dig(a) == ""
    moved = _wait(procs, lambda: (v := c.get(f"{INST}/{iid}"))["hostId"] == b["id"]
                  and v["instantiationState"] == "INSTANTIATED" and v,
                  LOST_AFTER + 10, f"the instance re-placed on {b['id']}")
    _wait(procs, lambda: _serves(b), max(0.5, LOST_AFTER + 10 - (time.monotonic() - lost_at)),
          f"the app serving by its name on {b['id']}")
    served_after = time.monotonic() - lost_at
    print(f"lost site: serving again on the other host {served_after:.1f} s after the loss "
          f"(lostAfter {LOST_AFTER} s)")
    assert served_after <= LOST_AFTER + 10
    # not before lostAfter: the host was UNREACHABLE that long first
    assert served_after >= LOST_AFTER
    [move] = moved["replacedFrom"]
    assert move["hostId"] == a["id"] and move["staleCopy"] == "PENDING_REMOVAL"
    replaced = c.get(f"{OPS}/{move['opId']}")
    assert replaced["lcmOperation"] == LcmOperation.INSTANTIATE.value
    assert replaced["operationState"] == "COMPLETED"
    assert replaced["decisionReason"].startswith(f"re-placed: edge host {a['id']} unreachable "
                                                 f"for ")
    # the new copy is B's: its service address is from B's own range
    assert moved["allocatedResources"]["serviceAddress"] == b["vip"]

    # the site returns: its MEPM starts again; without a word from its MEO
    # for lostAfter it starts with the app fenced (not revived, no rules);
    # the MEO removes that copy as it reaches the host. A's DNS is asked
    # every 50 ms from before the MEPM starts until the copy is gone.
    answered_on_a: list = []
    asked = [0]
    polling = threading.Event()

    def poll_a() -> None:
        while not polling.is_set():
            got = _dig(a)
            asked[0] += 1
            if got:
                answered_on_a.append((round(time.monotonic() - back_at, 2), got))
            polling.wait(0.05)
    back_at = time.monotonic()
    poller = threading.Thread(target=poll_a, daemon=True)
    poller.start()
    try:
        procs[a["name"]].start()
        _wait(procs, lambda: not _containers(a["id"], running_only=False), 30,
              f"the stale copy on {a['id']} removed", step=0.05)
        gone_after = time.monotonic() - back_at
    finally:
        polling.set()
        poller.join(timeout=10)
    print(f"returning site: its stale copy removed {gone_after:.1f} s after its MEPM started "
          f"(its name answered there at {answered_on_a or 'no time'}; asked {asked[0]} times)")
    # never two serving one name: A's MEP never answered it (asked all along,
    # its dnsmasq started again by the returning MEPM)
    assert answered_on_a == [] and asked[0] >= 3
    assert dnsmasq.live_pid(a["mep_run"] / "dnsmasq.pid") is not None
    # fenced at its start, before it served (its log holds both lives)
    log = procs[a["name"]].log_tail(10 ** 7)
    second = log.rindex(" serve.start ")
    assert log.count(" serve.start ") == 2
    assert log.rfind(" serve.start ", 0, second) < log.find(" instance.fenced ") < second
    # as the host came back: within a few heartbeats (meo.heartbeat_s 1) of
    # its MEPM answering, not at some later round
    assert gone_after <= 10
    # only one serves: B's; A's MEP answers nothing for the name
    assert len(_containers(b["id"])) == 2 and not _containers(a["id"], running_only=False)
    assert _dig(a) == "" and _serves(b)
    assert procs[a["name"]].client.get(INST) == []      # its record too
    # B's copy is under an id of B's own (A's copy held the MEO's): the MEO's
    # id stays the OSS's
    [copy] = procs[b["name"]].client.get(INST)
    assert copy["instantiationState"] == "INSTANTIATED" and copy["id"] != iid
    view = c.get(f"{INST}/{iid}")
    assert view["hostId"] == b["id"] and view["replacedFrom"][0]["staleCopy"] == "REMOVED"
    removal = [o for o in c.get(OPS) if o["appInstanceId"] == iid][-1]
    assert removal["lcmOperation"] == "TERMINATE" and removal["operationState"] == "COMPLETED"
    assert removal["decisionReason"].startswith(f"stale copy on edge host {a['id']} removed")


def test_a_partition_fences_the_copies_and_the_meo_s_return_unfences_them(site):
    """The MEO stops, the MEPMs keep running (a partition, as each MEPM sees
    it): after lostAfter without a word from it each host stops serving its
    opted-in app; when the MEO is back (nothing was re-placed meanwhile)
    each serves again on its own host."""
    c, procs, edges = site["c"], site["procs"], site["edges"]
    serving = {}
    for inst in c.get(INST):
        if inst["instantiationState"] == "INSTANTIATED":
            serving[inst["id"]] = inst["hostId"]
    if len(serving) < 2:
        # a second opted-in app, on the host the first test left free
        iid = c.post(INST, {"appDId": site["pkg"]["appDId"]})[0]["id"]
        op = c.wait_op(c.post(f"{INST}/{iid}/instantiate",
                              {"deploymentType": "CONTAINER", "lostAfter": LOST_AFTER})[0],
                       timeout=120)
        assert op["operationState"] == "COMPLETED", op
        serving[iid] = c.get(f"{INST}/{iid}")["hostId"]
    hosts = [e for e in edges.values() if e["id"] in serving.values()]
    assert len(hosts) == 2
    _wait(procs, lambda: all(_serves(e) for e in hosts), 20, "the apps serving on both hosts")

    stopped_at = time.monotonic()
    procs["meo"].stop()
    try:
        # not fenced early: a heartbeat came within a second of the stop
        time.sleep(max(0.0, LOST_AFTER - 2 - (time.monotonic() - stopped_at)))
        assert all(_serves(e) for e in hosts)
        _wait(procs, lambda: not any(_dig(e) for e in hosts), 5,
              "both hosts' names withdrawn after lostAfter without the MEO", step=0.1)
        fenced_after = time.monotonic() - stopped_at
        # the apps stopped too (the pause container keeps the address): the
        # rules go first, the runtime's stop follows within its grace
        _wait(procs, lambda: not any(_app_running(e["id"]) for e in hosts),
              STOP_GRACE_S + 5, "both hosts' apps stopped after their names", step=0.1)
        print(f"partition: both copies fenced {fenced_after:.1f} s after the MEO stopped "
              f"(lostAfter {LOST_AFTER} s)")
        assert LOST_AFTER - 2 <= fenced_after <= LOST_AFTER + 3
        # and they stay so: nothing on the host (a restart policy, a
        # reconcile round) undoes the fence
        time.sleep(3)
        assert not any(_app_running(e["id"]) for e in hosts)
        assert not any(_dig(e) for e in hosts)
    finally:
        back_at = time.monotonic()
        procs["meo"].start()
    _wait(procs, lambda: all(_serves(e) for e in hosts), 30,
          "both apps serving again once the MEO is back", step=0.1)
    print(f"partition over: both apps serve again {time.monotonic() - back_at:.1f} s after "
          f"the MEO started")
    for iid, hid in serving.items():
        view = c.get(f"{INST}/{iid}")
        assert view["hostId"] == hid and "fenced" not in view       # not re-placed
        host = next(e for e in edges.values() if e["id"] == hid)
        [copy] = [i for i in procs[host["name"]].client.get(INST)
                  if i["instantiationState"] == "INSTANTIATED"]
        assert "fenced" not in copy and copy["observedState"] == "RUNNING"
