"""Three MEO replicas on one PostgreSQL database (the test lab's own
cluster, tests/support/pglab.py) and two MEPMs, each its own process,
on the real backends: a leader killed in the middle of a container deploy
and of a VM deploy, a replica that does not lead killed, the database
restarted in the middle of a deploy.

The replicas (`mecorch serve --role meo`) share the database and the state
directory (the packages' content and the notification token: on several
machines, shared storage), each on its own port. The OSS subscribes at one
replica and deploys through another; it is told of every change once.
edgeA has a CIM only, edgeB a VIM only.
"""

from __future__ import annotations

import secrets
import time
import urllib.error
import urllib.request
from collections import Counter

import pytest

from conftest import run
from mecorch.kernel import config as mconfig
from mecorch.kernel.client import ApiError
from support import lab
from support.receiver import Receiver

pytestmark = [pytest.mark.docker, pytest.mark.libvirt, pytest.mark.mep, pytest.mark.postgres]

INST = "/app_lcm/v1/app_instances"
OPS = "/app_lcm/v1/app_lcm_op_occs"
PKGS = "/app_pkgm/v1/app_packages"
HOSTS = "/mecorch/v1/hosts"
LEADER = "/mecorch/v1/leader"
LEASE_S = 5             # the default
TAKEOVER_S = 10         # the bound


@pytest.fixture(scope="module")
def system(sample_container, sample_vm, pglab):
    tmp = lab.private_dir("meorep")     # QEMU (libvirt-qemu) reaches the pools under it
    tag = secrets.token_hex(3)
    made: dict = {"netns": [], "docker_user": [], "hosts": []}
    procs: dict[str, lab.Serve] = {}
    tokens = {who: secrets.token_hex(16) for who in ("meo", "edgeA", "edgeB")}
    for who, token in tokens.items():
        (tmp / f"{who}.token").write_text(token + "\n")
    edges = {}
    try:
        for k, name in enumerate(("edgeA", "edgeB"), 1):
            netns = lab.Netns(f"mr{tag}{k}")
            made["netns"].append(netns)
            veth = f"vr{tag}{k}"
            link = lab.free_subnet("10.233.0.0/16").rsplit(".", 1)[0]
            netns.link(veth, f"{link}.1/24", f"{link}.2/24")
            run("iptables", "-I", "DOCKER-USER", "-i", veth, "-j", "ACCEPT")
            made["docker_user"].append(veth)
            port = lab.free_port()
            entry = {"id": lab.Names(f"r{k}").host_id,
                     "mep": {"netns": netns.name, "service_cidr": f"10.18{k}.0.0/24"}}
            if name == "edgeA":
                entry["cim"] = {}
            else:
                entry["vim"] = {"network_cidr": lab.free_subnet(), "accel": "tcg"}
            cfg = {"role": "mepm", "state_dir": str(tmp / name), "run_dir": str(tmp / "run" / name),
                   "api": {"token_file": str(tmp / f"{name}.token"),
                           "mp1_url": f"http://127.0.0.1:{port}/mec_app_support/v1"},
                   "hosts": [entry]}
            procs[name] = lab.Serve(cfg, tmp, name=name, role="mepm", listen=f"127.0.0.1:{port}",
                                    token=tokens[name])
            host = mconfig.load(procs[name].config_path)["hosts"][0]
            made["hosts"].append((host, cfg))
            edges[name] = {"id": host["id"], "host": host, "proc": procs[name]}
        meo = {"heartbeat_s": 1, "sync_s": 2, "lease_s": LEASE_S,
               "mepms": [{"id": edges[n]["id"], "url": procs[n].url,
                          "token_file": str(tmp / f"{n}.token")} for n in edges]}
        meo["database"] = pglab.database()
        for i in range(3):
            cfg = {"role": "meo", "state_dir": str(tmp / "meo"), "run_dir": str(tmp / f"run/meo{i}"),
                   "api": {"token_file": str(tmp / "meo.token")}, "hosts": [], "meo": meo}
            procs[f"meo{i}"] = lab.Serve(cfg, tmp, name=f"meo{i}", role="meo",
                                         token=tokens["meo"])
        for name in edges:
            procs[name].start()
        for i in range(3):
            procs[f"meo{i}"].start()
        c = procs["meo0"].client
        lab.wait_for(lambda: all(h["state"] == "REACHABLE" for h in c.get(HOSTS))
                     and len(c.get(HOSTS)) == 2, 60, "two REACHABLE hosts")
        pkgs = lab.onboard_samples(c, tmp)
        receiver = Receiver()
        yield {"procs": procs, "edges": edges, "tmp": tmp, "pkgs": pkgs, "pglab": pglab,
               "receiver": receiver, "replicas": [f"meo{i}" for i in range(3)]}
        receiver.close()
    finally:
        # through a replica that is alive (teardown_system clears via "meo")
        alive = [p for n, p in procs.items() if n.startswith("meo") and p.alive]
        if alive:
            procs["meo"] = alive[0]
        left = lab.teardown_system({n: p for n, p in procs.items()}, made, tmp)
    assert left == [], f"left behind by the MEO's cleanup: {left}"


# ---------------------------------------------------------------- helpers
def _leader(s) -> str:
    """The replica that leads, as every live replica agrees."""
    seen = set()
    for name in s["replicas"]:
        p = s["procs"][name]
        if p.alive:
            got = p.client.get(LEADER)
            if got["leading"]:
                seen.add(name)
    assert len(seen) <= 1, f"two replicas lead: {seen}"
    return seen.pop() if seen else ""


def _wait_leader(s, not_: str = "", timeout: float = 30) -> tuple[str, float]:
    t0 = time.monotonic()
    while True:
        try:
            who = _leader(s)
        except (ApiError, OSError):
            who = ""
        if who and who != not_:
            return who, time.monotonic() - t0
        assert time.monotonic() - t0 < timeout, "no replica took the lead"
        time.sleep(0.1)


def _follower(s, leader: str) -> str:
    return next(n for n in s["replicas"] if n != leader and s["procs"][n].alive)


def _host_busy(edge: dict) -> bool:
    """The host has an op of its own in progress (the MEO dispatched it)."""
    return any(o["operationState"] in ("STARTING", "PROCESSING")
               for o in edge["proc"].client.get(OPS))


def _subscribe(s, via: str) -> None:
    if s.get("subscribed"):
        return
    c = s["procs"][via].client
    url = s["receiver"].url
    c.post("/app_lcm/v1/subscriptions", {"subscriptionType": "AppLcmOpOccStateChange",
                                         "callbackUri": url})
    c.post("/app_lcm/v1/subscriptions", {"subscriptionType": "AppInstanceStateChange",
                                         "callbackUri": url})
    s["subscribed"] = True


def _wait_notices(s, got: dict) -> None:
    """The op's end was notified; then a while for any duplicate."""
    try:
        lab.wait_for(lambda: _op_notices(s, got["op"])["COMPLETED"]
                     + _op_notices(s, got["op"])["FAILED"] >= 1, 20, "the op's end notified")
    except AssertionError as e:
        raise AssertionError(f"{e}: got {s['receiver'].bodies()}\n" + "\n".join(
            f"--- {n}:\n{s['procs'][n].log_tail(3000)}" for n in s["replicas"])) from None
    time.sleep(2)                       # a late duplicate would have come by now


def _op_notices(s, op_id: str) -> Counter:
    # ETSI names the state of an AppLcmOpOccNotification its notificationType
    return Counter(b.get("notificationType") for b in s["receiver"].bodies()
                   if b.get("appLcmOpOccId") == op_id)


def _instance_notices(s, iid: str) -> Counter:
    return Counter(b.get("notificationType") for b in s["receiver"].bodies()
                   if b.get("appInstanceId") == iid and "appLcmOpOccId" not in b)


def _containers(edge: dict, host_iid: str) -> list[str]:
    return run("docker", "ps", "-a", "-q", "--filter", f"label=mecorch.host={edge['id']}",
               "--filter", f"label=mecorch.instance={host_iid}", check=False).stdout.split()


def _domains(edge: dict) -> list[str]:
    return lab._domains_of(edge["id"])


def _kill_leader_during(s, app: str, edge: str, manner: str) -> dict:
    """Deploy through a replica that does not lead; SIGKILL the leader once
    the host is deploying; the deploy ends once, under the new leader."""
    procs = s["procs"]
    leader, _ = _wait_leader(s)
    via = _follower(s, leader)
    _subscribe(s, via)
    c = procs[via].client
    inst = c.post(INST, {"appDId": app})[0]
    op, _ = c.post(f"{INST}/{inst['id']}/instantiate", {
        "deploymentType": manner, "selectedMECHostInfo": [{"hostId": {"id": s["edges"][edge]["id"]}}]})
    lab.wait_for(lambda: _host_busy(s["edges"][edge]), 60, f"{edge} deploying", step=0.02)
    procs[leader].kill()
    killed_at = time.monotonic()
    new, _ = _wait_leader(s, not_=leader, timeout=TAKEOVER_S + 20)
    took = time.monotonic() - killed_at
    survivor = procs[new].client
    done = survivor.wait_op(op, timeout=300)
    assert done["operationState"] == "COMPLETED", done
    procs[leader].start()               # back, as a replica that follows
    return {"instance": inst["id"], "op": op["id"], "took": took, "leader": leader,
            "new": new, "view": survivor.get(f"{INST}/{inst['id']}")}


# ---------------------------------------------------------------- the tests
def test_one_replica_leads_and_all_answer_alike(system):
    s = system
    leader, _ = _wait_leader(s)
    views = []
    for name in s["replicas"]:
        c = s["procs"][name].client
        got = c.get(LEADER)
        assert got["leader"] == c.get(LEADER)["leader"]
        views.append((sorted(p["id"] for p in c.get(PKGS)),
                      sorted(h["hostId"] for h in c.get(HOSTS))))
    assert all(v == views[0] for v in views), views
    assert len(views[0][0]) == len(s["pkgs"]) and len(views[0][1]) == 2


def test_leader_killed_during_a_container_deploy(system):
    s = system
    got = _kill_leader_during(s, "sample-http", "edgeA", "CONTAINER")
    print(f"container deploy: leader {got['leader']} killed, {got['new']} led "
          f"{got['took']:.1f} s later")
    assert got["took"] <= TAKEOVER_S, got
    edge = s["edges"]["edgeA"]
    # exactly once on the host: one instance resource, its containers once
    mine = [i for i in edge["proc"].client.get(INST) if i["id"] == got["instance"]]
    assert len(mine) == 1 and mine[0]["instantiationState"] == "INSTANTIATED", mine
    assert len(edge["proc"].client.get(INST)) == 1
    roles = [run("docker", "inspect", "-f", '{{index .Config.Labels "mecorch.role"}}', cid).stdout
             .strip() for cid in _containers(edge, got["instance"])]
    assert sorted(roles) == sorted(set(roles)), roles      # each role's container once
    # every notification once: the op's STARTING, PROCESSING, COMPLETED
    _wait_notices(s, got)
    assert _op_notices(s, got["op"]) == Counter(STARTING=1, PROCESSING=1, COMPLETED=1), \
        _op_notices(s, got["op"])
    assert _instance_notices(s, got["instance"]) == Counter(STARTED=1), \
        _instance_notices(s, got["instance"])


def test_leader_killed_during_a_vm_deploy(system):
    s = system
    before = set(_domains(s["edges"]["edgeB"]))
    got = _kill_leader_during(s, "sample-vm", "edgeB", "VM")
    print(f"VM deploy: leader {got['leader']} killed, {got['new']} led {got['took']:.1f} s later")
    assert got["took"] <= TAKEOVER_S, got
    made = set(_domains(s["edges"]["edgeB"])) - before
    assert len(made) == 1, made                         # one domain
    _wait_notices(s, got)
    assert _op_notices(s, got["op"]) == Counter(STARTING=1, PROCESSING=1, COMPLETED=1), \
        _op_notices(s, got["op"])
    assert _instance_notices(s, got["instance"]) == Counter(STARTED=1), \
        _instance_notices(s, got["instance"])


def test_a_replica_that_does_not_lead_killed_changes_nothing(system):
    s = system
    leader, _ = _wait_leader(s)
    other = _follower(s, leader)
    s["procs"][other].kill()
    try:
        c = s["procs"][leader].client
        inst = c.post(INST, {"appDId": "sample-http"})[0]
        op, _ = c.post(f"{INST}/{inst['id']}/instantiate", {"deploymentType": "CONTAINER"})
        assert c.wait_op(op, timeout=120)["operationState"] == "COMPLETED"
        assert _leader(s) == leader
    finally:
        s["procs"][other].start()
    # and every replica lists the same instances and ops
    lists = []
    for name in s["replicas"]:
        c = s["procs"][name].client
        lists.append((sorted(i["id"] for i in c.get(INST)), sorted(o["id"] for o in c.get(OPS))))
    assert all(x == lists[0] for x in lists), lists


def test_the_database_restarted_in_the_middle_of_a_deploy(system):
    """PostgreSQL stopped for 3 s while a host deploys: meanwhile the
    replicas answer 503 with Retry-After; then the op ends
    (COMPLETED, or FAILED with a reason and nothing made), every replica
    serves again without a restart, and the OSS hears of the op's end once."""
    s = system
    procs, edge = s["procs"], s["edges"]["edgeA"]
    leader, _ = _wait_leader(s)
    _subscribe(s, leader)
    c = procs[leader].client
    inst = c.post(INST, {"appDId": "sample-http"})[0]
    op, _ = c.post(f"{INST}/{inst['id']}/instantiate", {
        "deploymentType": "CONTAINER", "selectedMECHostInfo": [{"hostId": {"id": edge["id"]}}]})
    lab.wait_for(lambda: _host_busy(edge), 60, "edgeA deploying", step=0.02)
    # down for longer than the deploy takes: the op's end is seen while
    # the database is away
    s["pglab"].stop()
    try:
        for name in s["replicas"]:
            status, retry = _raw_get(procs[name], INST)
            assert status == 503 and retry, (name, status, retry)
        time.sleep(3)
    finally:
        s["pglab"].start()
    # every replica answers again (a 503 meanwhile is the answer to retry)
    for name in s["replicas"]:
        lab.wait_for(lambda: _answers(procs[name]), 30, f"{name} serving again")
        assert procs[name].alive
    done = c.wait_op(op, timeout=120)
    host_view = [i for i in edge["proc"].client.get(INST) if i["id"] == inst["id"]]
    if done["operationState"] == "COMPLETED":
        assert host_view and host_view[0]["instantiationState"] == "INSTANTIATED"
    else:
        assert done["operationState"] == "FAILED" and done["error"]["detail"], done
        assert not _containers(edge, inst["id"]), "a failed deploy left containers"
    _wait_notices(s, {"op": op["id"]})
    notices = _op_notices(s, op["id"])
    assert notices[done["operationState"]] == 1 and max(notices.values()) == 1, notices
    _wait_leader(s)                     # one leads again


def _raw_get(proc, path: str) -> tuple[int, str | None]:
    """(status, Retry-After) of a GET, read off the wire."""
    req = urllib.request.Request(proc.url + path,
                                 headers={"Authorization": f"Bearer {proc.token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Retry-After")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Retry-After")


def _answers(proc) -> bool:
    try:
        proc.client.get(INST)
        return True
    except ApiError as e:
        assert e.status == 503, e       # the database away: nothing else
        return False
