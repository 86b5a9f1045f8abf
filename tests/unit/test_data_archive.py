"""A relocation's data archive, the pure parts: the host's check of an
archive it is given (mecorch.mepm.seeds.check) and the Docker CIM's
writing of one member whose size is known only at its end
(drivers/docker_cim/carry.py `_append`), read back by tarfile."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from drivers.docker_cim import carry
from mecorch.kernel.errors import InvalidInput, PayloadTooLarge
from mecorch.mepm import seeds


def archive(tmp_path, entries) -> Path:
    """A tar of (name, tarfile type, bytes) entries."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for name, typ, data in entries:
            info = tarfile.TarInfo(name)
            info.type = typ
            info.size = len(data) if typ == tarfile.REGTYPE else 0
            info.linkname = "data" if typ in (tarfile.LNKTYPE, tarfile.SYMTYPE) else ""
            t.addfile(info, io.BytesIO(data) if typ == tarfile.REGTYPE else None)
    path = tmp_path / "a.tar"
    path.write_bytes(buf.getvalue())
    return path


REG, DIR = tarfile.REGTYPE, tarfile.DIRTYPE


def test_what_drivers_write_is_taken(tmp_path):
    got = seeds.check(archive(tmp_path, [("data", REG, b"x"), ("logs", REG, b""),
                                         ("disk", DIR, b""), ("disk/root", REG, b"q"),
                                         ("disk/data-1.v2", REG, b"")]), 1 << 20)
    assert got == ["data", "logs", "disk", "disk/root", "disk/data-1.v2"]
    assert seeds.check(archive(tmp_path, []), 1 << 20) == []       # an app without data


@pytest.mark.parametrize("entries,says", [
    ([("../x", REG, b"")], "named '../x'"),
    ([("a/../../x", REG, b"")], "named 'a/../../x'"),
    ([("/abs", REG, b"")], "named '/abs'"),
    ([("a..b", REG, b"")], "named 'a..b'"),
    ([("a/b/c", REG, b"")], "named 'a/b/c'"),
    ([(".hidden", REG, b"")], "named '.hidden'"),
    ([("-rf", REG, b"")], "named '-rf'"),
    ([("x" * 65, REG, b"")], "named 'xxx"),
    ([("data", REG, b""), ("ln", tarfile.SYMTYPE, b"")], "'ln' is not a regular"),
    ([("data", REG, b""), ("hard", tarfile.LNKTYPE, b"")], "'hard' is not a regular"),
    ([("dev", tarfile.CHRTYPE, b"")], "'dev' is not a regular"),
    ([("fifo", tarfile.FIFOTYPE, b"")], "'fifo' is not a regular"),
    ([("data", REG, b"1"), ("data", REG, b"2")], "'data' twice"),
    ([(f"v{i}", REG, b"") for i in range(seeds.MAX_MEMBERS + 1)], "more than 256 members"),
])
def test_unsafe_or_odd_members_are_refused(tmp_path, entries, says):
    with pytest.raises(InvalidInput, match=says):
        seeds.check(archive(tmp_path, entries), 1 << 30)


def test_not_a_tar_or_too_large_is_refused(tmp_path):
    for junk in (b"", b"\x1f\x8b\x08" + b"\0" * 600, b"PK\x03\x04" * 300):
        (tmp_path / "j").write_bytes(junk)
        with pytest.raises(InvalidInput, match="not an uncompressed tar"):
            seeds.check(tmp_path / "j", 1 << 20)
    path = archive(tmp_path, [("data", REG, b"x" * 20000)])
    with pytest.raises(PayloadTooLarge, match="max_data_bytes"):
        seeds.check(path, 20000)


def test_copy_stops_at_the_limit():
    out = io.BytesIO()
    assert seeds.copy(io.BytesIO(b"a" * 3000).read, out, 3000) == 3000
    with pytest.raises(PayloadTooLarge):
        seeds.copy(io.BytesIO(b"a" * 3001).read, io.BytesIO(), 3000)


def test_kept_only_when_checked(tmp_path):
    s = seeds.Seeds(tmp_path, 1 << 20)
    good = archive(tmp_path, [("data", REG, b"v1")]).read_bytes()
    s.keep("inst-1", lambda out: out.write(good))
    assert s.of("inst-1").read_bytes() == good
    with pytest.raises(InvalidInput):
        s.keep("inst-1", lambda out: out.write(b"junk" * 1000))
    assert s.of("inst-1").read_bytes() == good             # the earlier one stays
    assert sorted(p.name for p in s.dir.iterdir()) == ["inst-1.tar"]
    s.forget("inst-1")
    s.forget("inst-1")                                      # gone: fine
    assert s.of("inst-1") is None
    with pytest.raises(InvalidInput, match="appInstanceId"):
        s.path("../etc")


@pytest.mark.parametrize("sizes", [[0], [1, 511, 512, 513], [(1 << 20) + 7, 3]])
def test_a_member_written_before_its_size_is_known_reads_back(tmp_path, sizes):
    path = tmp_path / "out.tar"
    chunks = [bytes([65 + i % 26]) * n for i, n in enumerate(sizes)]
    with open(path, "wb") as out:
        carry._append(out, "data", iter(chunks), 1 << 30, "read volume data")
        carry._append(out, "logs", iter([b"tail"]), 1 << 30, "read volume logs")
        out.write(b"\0" * 1024)
    with tarfile.open(path) as t:
        assert [(m.name, m.size) for m in t] == [("data", sum(sizes)), ("logs", 4)]
        assert t.extractfile("data").read() == b"".join(chunks)
        assert t.extractfile("logs").read() == b"tail"
    assert seeds.check(path, 1 << 30) == ["data", "logs"]


def test_a_volume_over_the_drivers_limit_is_refused(tmp_path):
    with open(tmp_path / "out.tar", "wb") as out, \
            pytest.raises(InvalidInput, match="data_max_bytes"):
        carry._append(out, "data", iter([b"x" * 600, b"y" * 600]), 1000, "read volume data")


def test_what_a_stopped_process_left_half_way_goes_at_the_next_start(tmp_path):
    d = tmp_path / "seeds"
    d.mkdir()
    for name in ("a.tar", "b.tar.part", "c.1x2y.export"):
        (d / name).write_bytes(b"x")
    seeds.Seeds(tmp_path)
    assert sorted(p.name for p in d.iterdir()) == ["a.tar"]     # a kept seed stays
