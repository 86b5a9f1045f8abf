"""A VM's disks as a relocation's carrier (DataMovable): one uncompressed
tar, one member per disk the instance owns, named `disk/<name>` by the
app's own name for it (`disk/root`: the system disk's qcow2 overlay on the
image; `disk/<volume name>`: each data disk, as the descriptor names it).
The members are the qcow2 files as they lie in the pool, not the guest's
view: an overlay is as small as what the guest wrote.

Import (a deploy given `ResourceRequest.seed`): the archive's member set is
checked against the request's disks before anything is made; the driver
then makes each volume as without a seed (same names, owner marks, rollback)
and writes the member over its file. The overlay's backing file still names
the source host's base copy: it is pointed at this host's base of the same
image (`qemu-img rebase -u`, no data read through the old one) and checked.
The member `disk/root` carries the image's SHA-256 (a PAX header), so an
overlay is never laid on another image's bytes.

Every qemu-img call is an argv without a shell; member names are compared
with the expected ones, never used as paths.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

from mecorch.kernel.errors import BackendError, InvalidInput

ROOT = "root"
PREFIX = "disk/"
IMAGE_SHA = "MECORCH.image_sha256"      # PAX header of disk/root
_CHUNK = 1 << 20
_ZERO = bytes(_CHUNK)
# A qcow2 file holds the written clusters plus its tables (L1/L2, refcounts:
# well under 1 % of the virtual size at 64 KiB clusters) and a header:
# a member longer than this cannot be a disk of the declared size.
_SLACK_BYTES = 64 << 20


def member(disk: str) -> str:
    return PREFIX + disk


def max_member_bytes(capacity: int) -> int:
    """The longest qcow2 file a disk of `capacity` virtual bytes can be."""
    return capacity + capacity // 64 + _SLACK_BYTES


# -- export --------------------------------------------------------------------

def write_archive(into: Path, disks: list[tuple[str, str]], image_sha256: str | None) -> int:
    """Write the tar `into`: (disk name, file path) pairs in order; returns
    its size in bytes. A failure removes the partial archive."""
    try:
        with tarfile.open(into, "w", format=tarfile.PAX_FORMAT) as tar:
            for disk, path in disks:
                with open(path, "rb") as f:
                    st = os.fstat(f.fileno())
                    ti = tarfile.TarInfo(member(disk))
                    ti.size, ti.mode, ti.mtime = st.st_size, 0o600, int(st.st_mtime)
                    if disk == ROOT and image_sha256:
                        ti.pax_headers = {IMAGE_SHA: image_sha256}
                    tar.addfile(ti, f)
        return os.path.getsize(into)
    except BaseException:
        try:
            os.unlink(into)
        except OSError:
            pass
        raise


# -- import --------------------------------------------------------------------

def open_seed(seed: object, capacities: dict[str, int], image_sha256: str) -> dict[str, tarfile.TarInfo]:
    """Check the seed archive against the disks a deploy makes ({disk name:
    capacity in bytes}) before anything is made: a readable uncompressed
    tar whose members are exactly `disk/<name>` of those disks, each a
    regular file no longer than its disk allows, `disk/root` of this image.
    Returns {disk name: its member}."""
    if not isinstance(seed, str) or not seed.startswith("/"):
        raise InvalidInput("seed: must be the absolute path of an archive")
    if not os.path.isfile(seed):
        raise InvalidInput(f"seed: {seed} is not a file")
    try:
        with tarfile.open(seed, "r:") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, OSError) as e:
        raise InvalidInput(f"seed: {seed} is not an uncompressed tar archive: {e}") from None
    got: dict[str, tarfile.TarInfo] = {}
    for m in members:
        disk = m.name[len(PREFIX):] if m.name.startswith(PREFIX) else None
        if disk not in capacities:
            raise InvalidInput(f"seed: member {m.name!r} names no disk of this instance "
                               f"(its disks: {', '.join(map(member, capacities))})")
        if disk in got:
            raise InvalidInput(f"seed: member {m.name!r} appears twice")
        if not m.isreg():
            raise InvalidInput(f"seed: member {m.name!r} is not a regular file")
        if m.size > max_member_bytes(capacities[disk]):
            raise InvalidInput(f"seed: member {m.name!r} is {m.size} bytes, more than a disk "
                               f"of {capacities[disk]} bytes can hold")
        got[disk] = m
    missing = [member(d) for d in capacities if d not in got]
    if missing:
        raise InvalidInput(f"seed: no member {', '.join(missing)} in the archive")
    theirs = got[ROOT].pax_headers.get(IMAGE_SHA)
    if theirs is not None and theirs != image_sha256:
        raise InvalidInput(f"seed: {member(ROOT)} lies on image SHA-256 {theirs}, this "
                           f"host's copy of the image is {image_sha256}")
    return got


def fill(seed: str, m: tarfile.TarInfo, path: str) -> None:
    """Write member `m` of the archive `seed` over the file at `path` (a
    volume the deploy just made: its owner and mode stay), leaving holes
    where the member has zeros."""
    with tarfile.open(seed, "r:") as tar:
        src = tar.extractfile(m)
        if src is None:
            raise InvalidInput(f"seed: member {m.name!r} is not a regular file")
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
        try:
            os.ftruncate(fd, 0)
            left = m.size
            while left > 0:
                chunk = src.read(min(_CHUNK, left))
                if not chunk:
                    raise InvalidInput(f"seed: member {m.name!r} ends early")
                if chunk == _ZERO[:len(chunk)]:
                    os.lseek(fd, len(chunk), os.SEEK_CUR)
                else:
                    os.write(fd, chunk)
                left -= len(chunk)
            os.ftruncate(fd, m.size)
            os.fsync(fd)
        finally:
            os.close(fd)


def _qemu_img(what: str, *argv: str) -> str:
    try:
        out = subprocess.run(["qemu-img", *argv], capture_output=True, text=True, timeout=300)
    except FileNotFoundError:
        raise BackendError("qemu-img is not installed (apt-get install qemu-utils)") from None
    except subprocess.TimeoutExpired:
        raise BackendError(f"qemu-img {argv[0]} timed out") from None
    if out.returncode != 0:
        raise InvalidInput(f"seed: {what}: qemu-img {argv[0]} failed: {out.stderr.strip()[:300]}")
    return out.stdout


def info(disk: str, path: str) -> dict:
    """qemu-img's view of one disk's file, its backing file not opened."""
    try:
        return json.loads(_qemu_img(member(disk), "info", "--output=json", "-f", "qcow2",
                                    "--", path))
    except ValueError:
        raise BackendError("qemu-img info returned unreadable JSON") from None


ANY = object()     # check_disk: the backing file is not checked (yet)


def check_disk(disk: str, path: str, capacity: int, backing: object) -> None:
    """What was written is a qcow2 disk of at most `capacity` bytes with no
    external data file, backed by `backing` (the overlay, once rebased; ANY
    before) or by nothing (None: a data disk, whose backing file could name
    any file of the host)."""
    got = info(disk, path)
    name = member(disk)
    if got.get("format") != "qcow2":
        raise InvalidInput(f"seed: {name} is not a qcow2 disk")
    if (got.get("format-specific") or {}).get("data", {}).get("data-file"):
        raise InvalidInput(f"seed: {name} has an external data file")
    size = got.get("virtual-size")
    if not isinstance(size, int) or size > capacity:
        raise InvalidInput(f"seed: {name} is a disk of {size} bytes, more than the "
                           f"{capacity} bytes declared")
    if backing is ANY:
        return
    theirs = got.get("backing-filename")
    if backing is None and theirs is not None:
        raise InvalidInput(f"seed: {name} is backed by {theirs!r}: a data disk has no "
                           "backing file (one could name any file of this host)")
    if theirs != backing:
        raise InvalidInput(f"seed: {name} is backed by {theirs!r} after the rebase, "
                           f"not by {backing!r}")
    if backing is not None and got.get("backing-filename-format") != "qcow2":
        raise InvalidInput(f"seed: {name}'s backing file is not read as qcow2")


def rebase(disk: str, path: str, base: str) -> None:
    """Point the overlay at this host's base copy of its image, reading
    nothing through the old backing file (unsafe mode: the bytes are the
    same image's, which open_seed checked when the archive said)."""
    _qemu_img(member(disk), "rebase", "-u", "-f", "qcow2", "-b", base, "-F", "qcow2", "--", path)


def seed_volume(archive: str, m: tarfile.TarInfo, path: str, capacity: int,
                base: str | None) -> None:
    """Fill the volume a deploy just made at `path` (`capacity` virtual
    bytes) from its member `m` and check it; the overlay (`base`: this
    host's base copy of its image) is rebased onto it first."""
    disk = m.name[len(PREFIX):]
    try:
        fill(archive, m, path)
    except OSError as e:
        raise BackendError(f"seed: writing {m.name} into {path}: {e.strerror or e}") from None
    if base is None:
        check_disk(disk, path, capacity, None)
        return
    check_disk(disk, path, capacity, ANY)
    rebase(disk, path, base)
    check_disk(disk, path, capacity, base)
