"""A relocation's data at the host level on the real backends: a `mecorch
serve` of its own (the Docker CIM, the Linux MEP), reached as an MEO
reaches it (RemoteMepm over Mm3). A container app with a named volume
`data` (mounted at /mnt/data): a file is put in it, the app stopped, its
data exported (GET .../data), the app terminated; another instance of the
app is given the archive (PUT .../data) and instantiated: its volume holds
the file from its first start, and the host drops the archive. An archive
naming a volume the app has not fails that instantiate with the reason,
leaving nothing of the instance in Docker.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import docker
import pytest

from mecorch.kernel.errors import Conflict
from mecorch.mepm.remote import RemoteMepm
from support.lab import Lab, onboard_variant
from support.tars import tar_of

pytestmark = [pytest.mark.docker, pytest.mark.mep]
VOLUME = [{"id": "data", "typeOfStorage": "BLOCK", "sizeOfStorage": 1}]


@pytest.fixture
def lab():
    made = Lab("data", vms=False)
    made.start()
    yield made
    assert made.close() == []


def labelled(api, iid: str) -> list[str]:
    flt = {"label": [f"mecorch.instance={iid}"]}
    return ([c["Names"][0] for c in api.containers(all=True, filters=flt)]
            + [v["Name"] for v in api.volumes(filters=flt).get("Volumes") or []])


def test_a_volume_s_content_reaches_another_instance_s_first_start(lab, tmp_path):
    api = docker.APIClient(base_url=lab.host["cim"]["docker_host"], version="auto")
    mepm = RemoteMepm(lab.host_id, lab.serve.url, timeout_s=30)
    try:
        pkg = onboard_variant(lab.c, lab.dir, "sample-container-app",
                              appDId=f"carry-{lab.names.tag}", virtualStorageDescriptor=VOLUME)

        def deployed(key: str, archive: Path | None = None) -> tuple[str, dict]:
            iid = mepm.create_instance({"appDId": pkg["appDId"]}, key=f"c-{key}")["id"]
            if archive is not None:
                mepm.import_data(iid, archive)
            op = mepm.instantiate(iid, {"selectedMECHostInfo": lab.selected}, key=f"i-{key}")
            return iid, lab.c.wait_op(op, timeout=120)

        src, op = deployed("src")
        assert op["operationState"] == "COMPLETED", op
        # what the app wrote (put into its volume through Docker)
        note = f"written on {src}\n".encode()
        api.put_archive(f"mecorch-{src}-app", "/mnt/data",
                        tar_of({"note.txt": note, "sub/deep.txt": b"deep\n"}))
        archive = tmp_path / "data.tar"
        with pytest.raises(Conflict, match="STOPPED"):
            mepm.export_data(src, archive)                     # it runs
        assert not archive.exists()
        op = mepm.operate(src, {"changeStateTo": "STOPPED", "stopType": "GRACEFUL",
                                "gracefulStopTimeout": 5})
        assert lab.c.wait_op(op, timeout=60)["operationState"] == "COMPLETED"
        mepm.export_data(src, archive)
        with tarfile.open(archive) as t:
            assert [m.name for m in t] == ["data"]
        op = mepm.terminate(src, {"terminationType": "FORCEFUL"})
        assert lab.c.wait_op(op, timeout=60)["operationState"] == "COMPLETED"
        mepm.delete_instance(src)
        assert labelled(api, src) == []

        dst, op = deployed("dst", archive)
        assert op["operationState"] == "COMPLETED", op
        assert mepm.get_instance(dst)["instantiatedAppState"]["operationalState"] == "STARTED"
        stream, _ = api.get_archive(f"mecorch-{dst}-app", "/mnt/data/.")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as t:
            got = {m.name: t.extractfile(m).read() for m in t if m.isfile()}
        assert got == {"./note.txt": note, "./sub/deep.txt": b"deep\n"}
        seeds = Path(lab.cfg["state_dir"]) / "seeds"
        assert list(seeds.iterdir()) == []                     # dropped once COMPLETED

        # an archive with a volume the app has not: that instantiate fails
        # with the reason, nothing of the instance left; the archive stays
        wrong = tmp_path / "wrong.tar"
        wrong.write_bytes(tar_of({"data": tar_of({"a": b"1"}), "other": b""}))
        bad, op = deployed("bad", wrong)
        assert op["operationState"] == "FAILED"
        assert "'other', which this app does not have" in op["error"]["detail"]
        assert mepm.get_instance(bad)["instantiationState"] == "NOT_INSTANTIATED"
        assert labelled(api, bad) == []
        assert [p.name for p in seeds.iterdir()] == [f"{bad}.tar"]
        mepm.delete_instance(bad)
        assert list(seeds.iterdir()) == []
    finally:
        mepm.close()
        api.close()
