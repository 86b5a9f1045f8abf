"""The Docker CIM carries an instance's named volumes (`DataMovable`) on
the real dockerd: `export_data` of a stopped app, and a deploy given the
archive as its seed filling the volumes before the app first starts. The
app itself writes the data and reads it back: it writes its note into its
volume only when the volume has none, and serves the note it finds; so an
instance deployed with another note serves the first one's only if the
seed put it there before it started."""

from __future__ import annotations

import io
import tarfile

import pytest

from mecorch.driverapi.model import PortSpec, VolumeSpec
from mecorch.kernel.errors import BackendError, Conflict, InvalidInput, NotFound
from support.dockerlab import (  # noqa: F401
    api, cim, config, leftovers, request, sample)
from support.lab import free_port, http_get
from support.tars import tar_of

pytestmark = pytest.mark.docker

# the note is kept if the volume has one; a nested file and a directory too
APP = ("test -f /data/note || { echo \"$NOTE\" > /data/note; mkdir -p /data/d; "
       "echo nested > /data/d/n; }; cp /data/note /www/index.html && exec /bin/serve")


def app_request(iid: str, image: str, note: str, port: int, volumes=None, seed=None):
    return request(iid, image, volumes=volumes or (VolumeSpec("data", mount_path="/data"),),
                   ports=(PortSpec(80, host_port=port),), env={"NOTE": note},
                   extra={"entrypoint": ["/bin/sh", "-c"]}, command=(APP,), seed=seed)


def read_volume(api, container: str, path: str) -> dict[str, bytes]:
    """The files under `path` of a container, read back through Docker."""
    stream, _ = api.get_archive(container, path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as t:
        return {m.name: t.extractfile(m).read() for m in t if m.isfile()}


def test_volume_moves_to_another_instance_through_the_archive(cim, api, sample, uid, tmp_path):
    src, dst = f"src-{uid}", f"dst-{uid}"
    port = free_port()
    alloc = cim.deploy(app_request(src, sample["ref"], f"from-{src}", port))
    target = None
    try:
        assert http_get(f"http://127.0.0.1:{port}/") == f"from-{src}"
        archive = tmp_path / "data.tar"
        with pytest.raises(Conflict, match="stop it first"):
            cim.export_data(alloc.handle, archive)         # running: not a consistent copy
        assert not archive.exists()
        cim.stop(alloc.handle, timeout_s=10)
        cim.export_data(alloc.handle, archive)
        with tarfile.open(archive) as t:
            assert [m.name for m in t] == ["data"]          # the descriptor's volume name
            inner = tarfile.open(fileobj=t.extractfile("data"))
            assert {m.name for m in inner} >= {".", "./note", "./d", "./d/n"}

        # another instance (its own id, volume and port), its own note
        port2 = free_port()
        target = cim.deploy(app_request(dst, sample["ref"], f"from-{dst}", port2,
                                        seed=str(archive)))
        assert http_get(f"http://127.0.0.1:{port2}/") == f"from-{src}"
        got = read_volume(api, target.handle["app"]["id"], "/data/.")
        assert got == {"./note": f"from-{src}\n".encode(), "./d/n": b"nested\n"}
        assert api.inspect_volume(f"mecorch.{dst}.data")["Labels"]["mecorch.instance"] == dst
    finally:
        cim.destroy(alloc.handle)
        if target is not None:
            cim.destroy(target.handle)
    assert leftovers(api, src) == [] and leftovers(api, dst) == []
    with pytest.raises(NotFound, match="gone"):
        cim.export_data(alloc.handle, tmp_path / "gone.tar")


@pytest.mark.parametrize("members,volumes,says", [
    ({"data": b"", "other": b""}, ("data",), "'other', which this app does not have"),
    ({"data": b""}, ("data", "logs"), "volume 'logs' is not in the archive"),
])
def test_seed_that_does_not_fit_the_app_makes_nothing(cim, api, sample, uid, tmp_path,
                                                     members, volumes, says):
    iid = f"bad-{uid}"
    seed = tmp_path / "seed.tar"
    seed.write_bytes(tar_of(members))
    vols = tuple(VolumeSpec(v, mount_path=f"/{v}") for v in volumes)
    with pytest.raises(InvalidInput, match=says):
        cim.deploy(app_request(iid, sample["ref"], "x", free_port(), vols, str(seed)))
    assert leftovers(api, iid) == []


def test_seed_the_daemon_cannot_extract_is_rolled_back(cim, api, sample, uid, tmp_path):
    """A member that is not a tar: dockerd refuses it after the containers
    and the volume were made; the deploy removes them."""
    iid = f"junk-{uid}"
    seed = tmp_path / "seed.tar"
    seed.write_bytes(tar_of({"data": b"not a tar archive at all" * 100}))
    with pytest.raises(BackendError, match="fill volume data .* invalid tar header"):
        cim.deploy(app_request(iid, sample["ref"], "x", free_port(), seed=str(seed)))
    assert leftovers(api, iid) == []


def test_not_an_archive_is_refused(cim, api, sample, uid, tmp_path):
    iid = f"nottar-{uid}"
    seed = tmp_path / "seed.tar"
    seed.write_bytes(b"\x1f\x8b gzip is not what a relocation carries")
    with pytest.raises(InvalidInput, match="not a readable uncompressed tar"):
        cim.deploy(app_request(iid, sample["ref"], "x", free_port(), seed=str(seed)))
    assert leftovers(api, iid) == []


def test_a_seed_never_fills_a_kept_reserved_volume(cim, api, sample, uid, tmp_path):
    """A reserved volume kept from an earlier life of the instance holds
    that life's data: a seed does not write over it (Conflict), and the
    failed deploy leaves the volume as it was."""
    iid = f"kept-{uid}"
    vols = (VolumeSpec("data", mount_path="/data", reserved=True),)
    alloc = cim.deploy(request(iid, sample["ref"], volumes=vols))
    cim.destroy(alloc.handle)
    kept = f"mecorch.{iid}.data"
    try:
        assert leftovers(api, iid) == [f"volume {kept}"]
        seed = tmp_path / "seed.tar"
        seed.write_bytes(tar_of({"data": tar_of({"x": b"1"})}))
        with pytest.raises(Conflict, match="'data' of instance .* exists already"):
            cim.deploy(request(iid, sample["ref"], volumes=vols, seed=str(seed)))
        assert leftovers(api, iid) == [f"volume {kept}"]
    finally:
        api.remove_volume(kept)
