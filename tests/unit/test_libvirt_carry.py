"""The libvirt VIM's relocation carrier without a daemon: which seed
archives a deploy refuses before it makes anything, how a member is
written over a volume's file, and the names of an instance's disks. (The
real export and seeded deploy: tests/backends/test_libvirt_relocate.py.)"""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from drivers.libvirt_vim import carry as C
from drivers.libvirt_vim import xmlrender as X
from mecorch.kernel.errors import InvalidInput

MIB = 1 << 20
DISKS = {"root": 1 << 30, "data": 256 * MIB}
SHA = "ab" * 32


def _tar(path, members: dict[str, bytes], root_sha: str | None = None, **kinds) -> str:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            if name == "disk/root" and root_sha:
                ti.pax_headers = {C.IMAGE_SHA: root_sha}
            if name in kinds:
                ti.type, ti.size, ti.linkname = kinds[name], 0, "disk/data"
                tar.addfile(ti)
                continue
            tar.addfile(ti, io.BytesIO(data))
    return str(path)


def test_a_seed_with_exactly_the_disks_is_taken(tmp_path):
    seed = _tar(tmp_path / "ok.tar", {"disk/root": b"r" * 10, "disk/data": b"d" * 20}, SHA)
    got = C.open_seed(seed, DISKS, SHA)
    assert {k: m.size for k, m in got.items()} == {"root": 10, "data": 20}
    # an archive that says nothing of its image is taken too
    plain = _tar(tmp_path / "plain.tar", {"disk/root": b"r", "disk/data": b"d"})
    assert set(C.open_seed(plain, DISKS, SHA)) == {"root", "data"}


@pytest.mark.parametrize("members, kinds, sha, says", [
    ({"disk/root": b"r"}, {}, None, "no member disk/data"),
    ({"disk/root": b"r", "disk/data": b"d", "disk/logs": b"x"}, {}, None,
     "member 'disk/logs' names no disk"),
    ({"disk/root": b"r", "disk/data": b"d", "../etc/passwd": b"x"}, {}, None,
     "member '../etc/passwd' names no disk"),
    ({"disk/root": b"r", "disk/data": b"d", "disk/root2": b""}, {}, None, "'disk/root2'"),
    ({"disk/root": b"r", "disk/data": b""}, {"disk/data": tarfile.SYMTYPE}, None,
     "'disk/data' is not a regular file"),
    ({"disk/root": b"r", "disk/data": b"d"}, {}, "cd" * 32, "lies on image SHA-256 cdcd"),
])
def test_a_wrong_seed_is_refused_naming_what(tmp_path, members, kinds, sha, says):
    seed = _tar(tmp_path / "bad.tar", members, sha, **kinds)
    with pytest.raises(InvalidInput, match=says.replace("(", r"\(")) as e:
        C.open_seed(seed, DISKS, SHA)
    assert str(e.value).startswith("seed:")


def test_a_member_too_long_for_its_disk_is_refused(tmp_path):
    small = {"root": 1 << 30, "data": MIB}
    seed = tmp_path / "big.tar"
    with tarfile.open(seed, "w") as tar:
        for name, size in (("disk/root", 1), ("disk/data", C.max_member_bytes(MIB) + 1)):
            ti = tarfile.TarInfo(name)
            ti.size = size
            # the size is all the check reads: a sparse file of that length
            f = tmp_path / name.replace("/", "_")
            with open(f, "wb") as out:
                out.truncate(size)
            with open(f, "rb") as src:
                tar.addfile(ti, src)
    with pytest.raises(InvalidInput, match="'disk/data' is .* more than a disk of 1048576"):
        C.open_seed(str(seed), small, SHA)


@pytest.mark.parametrize("seed, says", [
    ("relative.tar", "absolute path"), (None, "absolute path"), ("/nonexistent/x.tar", "not a file")])
def test_a_seed_that_is_no_archive_is_refused(seed, says):
    with pytest.raises(InvalidInput, match=says):
        C.open_seed(seed, DISKS, SHA)


def test_gzip_or_junk_is_not_an_uncompressed_tar(tmp_path):
    gz = tmp_path / "x.tar.gz"
    with tarfile.open(gz, "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("disk/root"), io.BytesIO(b""))
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a tar at all" * 100)
    for bad in (gz, junk):
        with pytest.raises(InvalidInput, match="not an uncompressed tar"):
            C.open_seed(str(bad), DISKS, SHA)


def test_fill_writes_the_member_over_the_file_with_holes_for_zeros(tmp_path):
    data = os.urandom(3 * MIB) + bytes(8 * MIB) + b"tail"
    seed = _tar(tmp_path / "s.tar", {"disk/root": b"", "disk/data": data})
    target = tmp_path / "vol"
    target.write_bytes(b"old content that is longer than nothing" * 1000)
    os.chmod(target, 0o600)
    member = C.open_seed(seed, {"root": 1 << 30, "data": 1 << 30}, SHA)["data"]
    C.fill(seed, member, str(target))
    assert target.read_bytes() == data
    assert os.stat(target).st_mode & 0o777 == 0o600          # the volume's mode stays
    assert os.stat(target).st_blocks * 512 < 5 * MIB          # the zeros are holes


def test_archive_roundtrip_and_a_failed_one_leaves_nothing(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"overlay")
    b.write_bytes(b"data" * 1000)
    into = tmp_path / "out.tar"
    size = C.write_archive(into, [("root", str(a)), ("data", str(b))], SHA)
    assert size == into.stat().st_size
    got = C.open_seed(str(into), {"root": MIB, "data": MIB}, SHA)
    assert got["root"].pax_headers[C.IMAGE_SHA] == SHA
    with tarfile.open(into) as tar:
        assert tar.extractfile("disk/data").read() == b"data" * 1000
    with pytest.raises(FileNotFoundError):
        C.write_archive(into, [("root", str(a)), ("data", str(tmp_path / "gone"))], None)
    assert not into.exists()


def test_the_app_names_of_an_instances_volumes():
    assert X.disk_of_volume("i1", X.root_volume_name("i1")) == "root"
    assert X.disk_of_volume("i1", X.data_volume_name("i1", "db-data")) == "db-data"
    assert X.disk_of_volume("i1", "i2-data.qcow2") is None
    assert X.disk_of_volume("i1", "i1-.qcow2") is None
    assert X.disk_of_volume("i1", "base-sample-abc.qcow2") is None
