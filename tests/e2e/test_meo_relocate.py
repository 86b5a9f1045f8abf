"""Relocation on the real backends: an MEO (in process, its API served on
loopback) over two `mecorch serve --role mepm` of their own (the Docker
CIM, the Linux MEP), reached over Mm3 (RemoteMepm) as a deployed MEO
reaches its hosts. A container app with a named volume `data` holding a
file is relocated from one host to the other: it runs there under the
same MEO id with the file intact and the same DNS name, and the source's
Docker holds nothing of it. Moving it back onto a host whose Docker CIM
refuses so large a volume (`cim.data_max_bytes`) fails at that host's
deploy: rolled back, the app runs on its host again with its file, the
refusing host holds nothing of it.

The downtime a client sees (its DNS name asked from the target site's
network namespace during the move) is the lead's end-to-end test; this
one proves the flow over the real carriers."""

from __future__ import annotations

import io
import tarfile

import docker
import pytest

from mecorch.kernel import config as mconfig
from mecorch.meo.orchestrator import MeoOrchestrator
from mecorch.mepm.remote import RemoteMepm
from support.lab import Lab, Serve, onboard_variant
from support.meolab import served
from support.tars import tar_of

pytestmark = [pytest.mark.docker, pytest.mark.mep]
VOLUME = [{"id": "data", "typeOfStorage": "BLOCK", "sizeOfStorage": 1}]
INST = "/app_lcm/v1/app_instances"
LIMIT = 4096            # the first host's cim.data_max_bytes: a volume's tar over it is refused


@pytest.fixture
def system(tmp_path):
    """Two MEPM processes (the first refusing volumes over LIMIT) and an MEO
    attached to both: (the MEO's system as support.meolab serves it, the
    labs)."""
    labs = [Lab("rela", vms=False, cim={"data_max_bytes": LIMIT}), Lab("relb", vms=False)]
    started = []
    server = meo = None
    try:
        for lab in labs:
            lab.serve = Serve(lab.cfg, lab.dir, role="mepm")   # the MEO's ids are taken
            lab.c = lab.serve.client
            lab.start()
            started.append(lab)
        cfg = mconfig.load()
        cfg["state_dir"] = str(tmp_path / "meo")
        cfg["hosts"] = []
        cfg["meo"]["heartbeat_s"] = 0       # beats driven by the test
        meo = MeoOrchestrator(cfg)
        for lab in labs:
            meo.registry.attach(RemoteMepm(lab.host_id, lab.serve.url, timeout_s=30))
        s, server = served(meo, {}, tmp_path)
        yield s, labs
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        if meo is not None:
            meo.close()
        left = [x for lab in started for x in lab.close()]
        assert left == []


def test_a_container_with_its_volume_moves_and_a_refused_move_rolls_back(system, tmp_path):
    s, (a, b) = system
    api = docker.APIClient(base_url=a.host["cim"]["docker_host"], version="auto")

    def made_for(host_iid: str) -> list[str]:
        """The containers and volumes Docker holds of one host instance."""
        flt = {"label": [f"mecorch.instance={host_iid}"]}
        return ([c["Names"][0] for c in api.containers(all=True, filters=flt)]
                + [v["Name"] for v in api.volumes(filters=flt).get("Volumes") or []])

    def files(host_iid: str) -> dict[str, bytes]:
        stream, _ = api.get_archive(f"mecorch-{host_iid}-app", "/mnt/data/.")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as t:
            return {m.name: t.extractfile(m).read() for m in t if m.isfile()}

    def running(host_iid: str) -> bool:
        return api.inspect_container(f"mecorch-{host_iid}-app")["State"]["Running"]

    try:
        pkg = onboard_variant(s.c, tmp_path, "sample-container-app",
                              appDId="relocated", virtualStorageDescriptor=VOLUME)
        iid = s.c.post(INST, {"appDId": pkg["appDId"]})[0]["id"]
        op = s.c.wait_op(s.c.post(f"{INST}/{iid}/instantiate", {
            "selectedMECHostInfo": [{"hostId": {"id": a.host_id}},
                                    {"hostId": {"id": b.host_id}}]})[0], timeout=120)
        assert op["operationState"] == "COMPLETED", op
        first = s.c.get(f"{INST}/{iid}")
        assert first["hostId"] in (a.host_id, b.host_id)
        if first["hostId"] != a.host_id:        # start on the limited host a
            op = s.c.wait_op(s.c.post(f"{INST}/{iid}/relocate", {"hostId": a.host_id})[0],
                             timeout=180)
            assert op["operationState"] == "COMPLETED", op
        src = s.meo.store.get("instances", iid)["_hostInstance"]["id"]
        api.put_archive(f"mecorch-{src}-app", "/mnt/data", tar_of({"note.txt": b"hello\n"}))
        dns = s.c.get(f"/mec_app_support/v1/applications/{iid}/dns_rules")

        # a -> b (placement's pick: the only other host the request selected)
        op = s.c.wait_op(s.c.post(f"{INST}/{iid}/relocate", {"gracefulStopTimeout": 5})[0],
                         timeout=180)
        assert op["operationState"] == "COMPLETED", op
        view = s.c.get(f"{INST}/{iid}")
        assert view["id"] == iid and view["hostId"] == b.host_id
        assert view["instantiatedAppState"]["operationalState"] == "STARTED"
        assert view["relocatedFrom"][-1]["hostId"] == a.host_id
        outage = view["relocatedFrom"][-1]["outageS"]
        print(f"\nrelocation of a container with a volume: op {op['id']}, outage as the MEO "
              f"saw it {outage} s")
        assert 0 < outage < 60
        moved = s.meo.store.get("instances", iid)["_hostInstance"]["id"]
        assert moved != src and running(moved) and files(moved) == {"./note.txt": b"hello\n"}
        assert made_for(src) == []                      # the source holds nothing of it
        after = s.c.get(f"/mec_app_support/v1/applications/{iid}/dns_rules")
        assert [r["domainName"] for r in after] == [r["domainName"] for r in dns]

        # b -> a with a volume over a's limit: a's deploy refuses it, rolled back
        api.put_archive(f"mecorch-{moved}-app", "/mnt/data",
                        tar_of({"big.bin": b"x" * (2 * LIMIT)}))
        op = s.c.wait_op(s.c.post(f"{INST}/{iid}/relocate", {"hostId": a.host_id})[0],
                         timeout=180)
        assert op["operationState"] == "FAILED", op
        assert op["error"]["detail"].startswith(
            f"relocation rolled back (the app serves on edge host {b.host_id} as before, "
            f"nothing left on {a.host_id}): "), op["error"]
        assert "data_max_bytes" in op["error"]["detail"], op["error"]
        view = s.c.get(f"{INST}/{iid}")
        assert view["hostId"] == b.host_id
        assert view["instantiatedAppState"]["operationalState"] == "STARTED"
        assert s.meo.store.get("instances", iid)["_hostInstance"]["id"] == moved
        assert running(moved) and files(moved)["./note.txt"] == b"hello\n"
        assert a.c.get(INST) == []                      # nothing left on a
        op = s.c.wait_op(s.c.post(f"{INST}/{iid}/terminate",
                                  {"terminationType": "FORCEFUL"})[0], timeout=120)
        assert op["operationState"] == "COMPLETED", op
        s.c.call("DELETE", f"{INST}/{iid}")
    finally:
        api.close()
