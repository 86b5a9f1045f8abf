"""Three replicas behind one service address, on the real backends (issue
31): a `mecorch serve` of its own (Docker containers, the Linux MEP with a
service range and a data-plane address) and a client in a network
namespace behind that address, as a UE.

The sample container app (vagrant/workloads/build-container-image.sh)
writes its hostname to /www/hostname at start: GET /hostname tells which
replica (which container) answered.

- the sample deployed once gets an address; two more deploys of the same
  app join it (`shareServiceAddress`): one with the sample's rules naming
  the address (what `app deploy --replica-of` sends), one with them as
  they are (asking for an address: it is given the app's);
- 300 new connections from the client to the address: each replica
  serves at least 20 % (a third expected);
- one replica terminated (GRACEFUL: its rules are removed before it is
  stopped) while a client sends 6,000 requests: none fails; 2 s later,
  0 failed requests of the next 300, spread over the two left; the DNS
  name still answers the address.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from mecorch.cli.commands import with_service_address
from support import lab as thelab

pytestmark = [pytest.mark.docker, pytest.mark.mep]
INST = "/app_lcm/v1/app_instances"
REQUESTS = 300

# Run inside the client namespace: one new connection per request (no
# keep-alive: conntrack DNATs a connection once), counting who answered.
CLIENT = r"""
import collections, json, socket, sys
addr, n = sys.argv[1], int(sys.argv[2])
got = collections.Counter()
for _ in range(n):
    try:
        with socket.create_connection((addr, 80), timeout=2) as s:
            s.sendall(b"GET /hostname HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        ok = head.split(b" ")[1:2] == [b"200"] and body.strip()
        got[body.decode().strip() if ok else "failed"] += 1
    except OSError:
        got["failed"] += 1
print(json.dumps(got))
"""


@pytest.fixture(scope="module")
def lab():
    lab = thelab.UeLab("rep", orchestrator={"reconcile_interval_s": 0})
    try:
        lab.start()
        thelab.onboard_samples(lab.c, lab.dir, folders=("sample-container-app",))
        yield lab
    finally:
        left = lab.close()
    assert left == [], f"left behind after the API cleanup: {left}"


def _deploy(lab, **body) -> str:
    iid = lab.c.post(INST, {"appDId": "sample-http"})[0]["id"]
    op, _ = lab.c.post(f"{INST}/{iid}/instantiate",
                       {"selectedMECHostInfo": lab.selected, **body})
    op = lab.c.wait_op(op, timeout=120)
    assert op["operationState"] == "COMPLETED", (op.get("error"), lab.serve.log_tail())
    return iid


def _spread(lab, addr: str, n: int = REQUESTS) -> dict:
    out = lab.ue.exec("python3", "-c", CLIENT, addr, str(n)).stdout
    return json.loads(out)


def _hostname(lab, iid: str) -> str:
    """What the replica answers GET /hostname with: the file its app
    container wrote at start (read from the container itself)."""
    cid = thelab.run("docker", "ps", "-q", "--filter", f"label=mecorch.instance={iid}",
                     "--filter", "label=mecorch.role=app").stdout.split()
    assert len(cid) == 1, (iid, cid)
    return thelab.run("docker", "exec", cid[0], "cat", "/www/hostname").stdout.strip()


def test_three_replicas_share_the_load_and_one_leaves_without_a_failed_request(lab):
    first = _deploy(lab)
    addr = lab.c.get(f"{INST}/{first}")["allocatedResources"]["serviceAddress"]
    appd = lab.c.get("/app_pkgm/v1/onboarded_app_packages/sample-http/appd")
    joining = with_service_address({k: appd[k] for k in ("appTrafficRule", "appDNSRule")},
                                   addr)
    # one naming the address (as --replica-of sends it), one asking for an
    # address as the sample does: it is given the app's
    ids = [first, _deploy(lab, shareServiceAddress=True, **joining),
           _deploy(lab, shareServiceAddress=True)]
    for iid in ids[1:]:
        assert lab.c.get(f"{INST}/{iid}")["allocatedResources"]["serviceAddresses"] == [addr]
    hosts = {iid: _hostname(lab, iid) for iid in ids}
    name = appd["appDNSRule"][0]["domainName"]
    assert thelab.dig(53, name, server=lab.dp, netns=lab.ue.name, tries=2) == addr

    started = time.monotonic()
    got = _spread(lab, addr)
    took = time.monotonic() - started
    assert got.get("failed", 0) == 0, got
    assert set(got) == set(hosts.values()), (got, hosts)
    assert all(count >= REQUESTS * 0.2 for count in got.values()), got
    print(f"\n300 requests to {addr} over 3 replicas in {took:.1f} s: {got}")

    # the first (its DNS file the first the MEP's dnsmasq read) terminated
    # (GRACEFUL: its rules go before it is stopped) under a client's load
    gone = first
    during = subprocess.Popen(["ip", "netns", "exec", lab.ue.name, "python3", "-c", CLIENT,
                               addr, str(REQUESTS * 20)], stdout=subprocess.PIPE, text=True)
    time.sleep(1)                   # the client under way (~1,500 requests a second)
    op, _ = lab.c.post(f"{INST}/{gone}/terminate",
                       {"terminationType": "GRACEFUL", "gracefulTerminationTimeout": 5})
    assert lab.c.wait_op(op, timeout=120)["operationState"] == "COMPLETED"
    out, _ = during.communicate(timeout=120)
    got = json.loads(out)
    print(f"during the terminate: {got}")
    # its rules went before it stopped: no connection was sent to it after
    assert got.get("failed", 0) == 0, got
    time.sleep(2)
    got = _spread(lab, addr)
    assert got.get("failed", 0) == 0, got
    left = {hosts[i] for i in ids if i != gone}
    assert set(got) == left, (got, hosts)
    assert all(count >= REQUESTS * 0.2 for count in got.values()), got
    print(f"after terminating one: {got}")
    assert thelab.dig(53, name, server=lab.dp, netns=lab.ue.name, tries=2) == addr


def test_a_killed_replica_leaves_at_once_and_no_request_fails(lab):
    """Killed, not terminated (the issue's case): Docker's die event takes
    its rules out of service (mecorch.mepm.mep follow_runtime), the others
    take its part: 2 s later, 0 failed requests of the next 300."""
    running = [i["id"] for i in lab.c.get(INST) if i["appDId"] == "sample-http"
               and i["instantiationState"] == "INSTANTIATED"]
    addr = lab.c.get(f"{INST}/{running[0]}")["allocatedResources"]["serviceAddresses"][0]
    while len(running) < 3:
        running.append(_deploy(lab, shareServiceAddress=True))
    hosts = {iid: _hostname(lab, iid) for iid in running}
    victim = running[-1]
    cid = thelab.run("docker", "ps", "-q", "--filter", f"label=mecorch.instance={victim}",
                     "--filter", "label=mecorch.role=app").stdout.split()[0]
    thelab.run("docker", "kill", cid)
    time.sleep(2)
    got = _spread(lab, addr)
    assert got.get("failed", 0) == 0, (got, lab.serve.log_tail())
    assert set(got) == {hosts[i] for i in running if i != victim}, (got, hosts)
    view = lab.c.get(f"{INST}/{victim}")
    assert view["observedState"] == "STOPPED", view
    print(f"\nafter killing one: {got}")
