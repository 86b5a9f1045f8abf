"""The MEPM contract's verbs of a relocation's data (`export_data`,
`import_data`, mecorch/mepm/contract.py; mecorch.mepm.seeds), run against
both implementations (LocalMepm in process, RemoteMepm over HTTP) with the
same host engine behind them, as test_mepm_contract.py.

The CIM is CarryingCompute: an in-memory driver that carries data (it
proves the host's logic, not a backend: tests/backends/test_docker_data.py
proves the Docker CIM). The app has one volume, `data`.
"""

from __future__ import annotations

import tarfile
import time
from pathlib import Path

import pytest

from labfixture import lab_fixture
from mecorch.kernel import errors
from mecorch.kernel.states import DeploymentType
from mepm_labs import LABS, wait_op
from support.fakes import FakeCompute
from support.tars import tar_of

lab = lab_fixture(LABS)
# the HTTP body's own cases: RemoteMepm's lab only (in process there is none)
remote_lab = lab_fixture({"remote": LABS["remote"]})

VOLUME = [{"id": "data", "typeOfStorage": "BLOCK", "sizeOfStorage": 1}]


def read_tar(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as t:
        return {m.name: t.extractfile(m).read() for m in t if m.isfile()}


def created(lab, key: str) -> str:
    """A package with a volume on the host, an instance created (not instantiated)."""
    if not hasattr(lab, "pkg"):
        pkg, zip_path = lab.package(virtualStorageDescriptor=VOLUME)
        lab.pkg = lab.mepm.ensure_package(pkg, zip_path), pkg
    host_pkg, pkg = lab.pkg
    return lab.mepm.create_instance({"appDId": pkg["appDId"], "appPkgId": host_pkg},
                                    key=f"create-{key}")["id"]


def instantiate(lab, iid: str, key: str) -> dict:
    op = lab.mepm.instantiate(iid, {"deploymentType": "CONTAINER"}, key=f"inst-{key}")
    return wait_op(lab.mepm, op["id"])


def seed_file(lab, iid: str) -> Path:
    return Path(lab.orch.cfg["state_dir"]) / "seeds" / f"{iid}.tar"


def seeds_left(lab) -> list[str]:
    d = Path(lab.orch.cfg["state_dir"]) / "seeds"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def test_data_goes_from_a_stopped_instance_into_another_s_first_start(lab, tmp_path):
    src = created(lab, "src")
    assert instantiate(lab, src, "src")["operationState"] == "COMPLETED"
    lab.cim.data[src]["data"] = b"what the app wrote"
    archive = tmp_path / "data.tar"
    with pytest.raises(errors.Conflict, match="STOPPED"):
        lab.mepm.export_data(src, archive)                 # it runs
    assert not archive.exists()
    op = lab.mepm.operate(src, {"changeStateTo": "STOPPED", "stopType": "FORCEFUL"})
    assert wait_op(lab.mepm, op["id"])["operationState"] == "COMPLETED"
    lab.mepm.export_data(src, archive)
    assert read_tar(archive) == {"data": b"what the app wrote"}

    dst = created(lab, "dst")
    lab.mepm.import_data(dst, archive)
    assert archive.exists()                                # the caller's file stays its own
    kept = seed_file(lab, dst)
    assert read_tar(kept) == {"data": b"what the app wrote"}
    assert instantiate(lab, dst, "dst")["operationState"] == "COMPLETED"
    assert lab.cim.seeds == [str(kept)]                    # handed to the driver
    assert lab.cim.data[dst] == {"data": b"what the app wrote"}
    assert seeds_left(lab) == []                           # dropped once COMPLETED
    with pytest.raises(errors.Conflict, match="NOT_INSTANTIATED"):
        lab.mepm.import_data(dst, archive)
    # an instance not instantiated has no data to export; one unknown is not there
    with pytest.raises(errors.Conflict, match="NOT_INSTANTIATED"):
        lab.mepm.export_data(created(lab, "idle"), tmp_path / "x.tar")
    with pytest.raises(errors.NotFound):
        lab.mepm.export_data(f"absent-{lab.uid}", tmp_path / "x.tar")
    assert not (tmp_path / "x.tar").exists()


@pytest.mark.parametrize("members,kind,error,says", [
    (None, None, errors.InvalidInput, "not an uncompressed tar"),
    ({"../x": b"1"}, None, errors.InvalidInput, "named '../x'"),
    ({"/etc/cron.d/x": b"1"}, None, errors.InvalidInput, "named '/etc/cron.d/x'"),
    ({"a/b/c": b"1"}, None, errors.InvalidInput, "named 'a/b/c'"),
    ({"data": b"1"}, {"link": tarfile.SYMTYPE}, errors.InvalidInput, "'link' is not a regular"),
    ({"data": b"1" * 20000}, None, errors.PayloadTooLarge, "max_data_bytes"),
])
def test_an_archive_the_host_refuses_is_not_kept(lab, tmp_path, members, kind, error, says):
    iid = created(lab, "bad")
    lab.orch.lcm.seeds.max_bytes = 16384        # tarfile pads an archive to 10240 bytes
    archive = tmp_path / "bad.tar"
    archive.write_bytes(b"\x1f\x8b not a tar" * 200 if members is None else tar_of(members, kind))
    with pytest.raises(error, match=says):
        lab.mepm.import_data(iid, archive)
    assert seeds_left(lab) == []
    with pytest.raises(errors.NotFound):
        lab.mepm.import_data(f"absent-{lab.uid}", archive)


def test_a_seed_stays_for_a_failed_instantiate_and_goes_with_its_instance(lab, tmp_path):
    iid = created(lab, "one")
    wrong = tmp_path / "wrong.tar"
    wrong.write_bytes(tar_of({"data": b"1", "other": b"2"}))     # a volume the app has not
    lab.mepm.import_data(iid, wrong)
    op = instantiate(lab, iid, "one")
    assert op["operationState"] == "FAILED" and "other" in op["error"]["detail"]
    assert lab.mepm.get_instance(iid)["instantiationState"] == "NOT_INSTANTIATED"
    assert seeds_left(lab) == [f"{iid}.tar"]                     # kept for the next try
    right = tmp_path / "right.tar"
    right.write_bytes(tar_of({"data": b"ok"}))
    lab.mepm.import_data(iid, right)                             # replaces it
    assert read_tar(seed_file(lab, iid)) == {"data": b"ok"}
    lab.mepm.delete_instance(iid)
    assert seeds_left(lab) == []                                 # gone with the instance


def test_a_driver_that_cannot_carry_data_is_refused_never_ignored(lab, tmp_path):
    plain = FakeCompute(DeploymentType.CONTAINER)
    host = lab.orch.inventory.get(lab.host_id)
    iid = created(lab, "plain")         # the package's image is in the carrying CIM
    plain.images = lab.cim.images
    host.attach("cim", plain)
    archive = tmp_path / "data.tar"
    archive.write_bytes(tar_of({"data": b"1"}))
    lab.mepm.import_data(iid, archive)                           # taken: the manner is not known yet
    with pytest.raises(errors.UnsupportedAction, match="FakeCompute.*not DataMovable"):
        lab.mepm.instantiate(iid, {"deploymentType": "CONTAINER"}, key="inst-plain")
    assert lab.mepm.get_instance(iid)["instantiationState"] == "NOT_INSTANTIATED"
    assert plain.instances == {} and seeds_left(lab) == [f"{iid}.tar"]
    # without data it deploys; stopped, its export is refused the same way
    lab.mepm.delete_instance(iid)
    other = created(lab, "plain2")
    assert instantiate(lab, other, "plain2")["operationState"] == "COMPLETED"
    op = lab.mepm.operate(other, {"changeStateTo": "STOPPED", "stopType": "FORCEFUL"})
    assert wait_op(lab.mepm, op["id"])["operationState"] == "COMPLETED"
    with pytest.raises(errors.UnsupportedAction, match="FakeCompute.*not DataMovable"):
        lab.mepm.export_data(other, tmp_path / "x.tar")
    assert not (tmp_path / "x.tar").exists()


def test_a_chunked_body_is_taken_and_bounded_as_it_arrives(remote_lab, tmp_path):
    """Over HTTP only: a PUT without Content-Length (chunked transfer
    coding) is kept when it is a good archive, and refused (413) once more
    than orchestrator.max_data_bytes has arrived, nothing kept."""
    lab = remote_lab
    import http.client
    iid = created(lab, "chunked")
    lab.orch.lcm.seeds.max_bytes = 64 << 10

    def put(data: bytes) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", int(lab.url.rsplit(":", 1)[1]),
                                          timeout=10)
        try:
            conn.request("PUT", f"/mecorch/v1/app_instances/{iid}/data",
                         body=(data[i:i + 4096] for i in range(0, len(data), 4096)),
                         headers={"Content-Type": "application/x-tar"},
                         encode_chunked=True)
            return conn.getresponse().status
        except (BrokenPipeError, ConnectionResetError):
            return 0                # cut off while sending: nothing to read
        finally:
            conn.close()
    assert put(tar_of({"data": b"ok"})) == 204
    assert read_tar(seed_file(lab, iid)) == {"data": b"ok"}
    assert put(tar_of({"data": b"x" * (128 << 10)})) in (413, 0)
    assert read_tar(seed_file(lab, iid)) == {"data": b"ok"}      # the earlier one stays
    assert seeds_left(lab) == [f"{iid}.tar"]


def test_a_data_put_after_the_server_closed_an_idle_connection(remote_lab, tmp_path):
    """Over HTTP only: the MEPM closes a kept-alive connection idle for
    `keepalive_idle`; a data PUT (its body streamed from a file, which
    cannot be sent twice) goes on a fresh connection, never on such a one
    (several relocations at once failed so: "Remote end closed connection
    without response")."""
    lab = remote_lab
    lab.server.keepalive_idle = 0.2
    iid = created(lab, "idle")
    lab.mepm.get_instance(iid)              # a kept-alive connection, then idle
    time.sleep(0.5)                         # closed by the server meanwhile
    archive = tmp_path / "a.tar"
    archive.write_bytes(tar_of({"data": tar_of({"f.txt": b"x"})}))
    lab.mepm.import_data(iid, archive)
    assert seed_file(lab, iid).is_file()
