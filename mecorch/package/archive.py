"""Reading a zip that came from outside, safely.

A package is untrusted until its manifest (and signature) verified, and the
zip layer is checked before anything in it is read: entry count and central
directory size (peeked from the end record before `zipfile` parses the
directory, so a zip with millions of entries costs nothing), member names
(no absolute paths, no `..`, no backslashes, no duplicates), member types
(regular files only: no symlinks, devices or fifos), no encryption, only
stored/deflated data, total uncompressed size, compression ratio (zip
bombs) and overlapping members (the "non-recursive" zip bomb). Member data
is only ever streamed, and never more than its declared size.
"""

from __future__ import annotations

import hashlib
import stat
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from mecorch.kernel.errors import IntegrityError, InvalidInput, PayloadTooLarge

CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    """What open_package accepts. The ratio limit only applies to members
    larger than `ratio_min_bytes`: tiny text files compress very well
    legitimately, and a small member cannot be a bomb."""
    max_entries: int = 1000
    max_total_bytes: int = 2 << 30          # uncompressed, all members
    max_ratio: float = 100.0                # uncompressed / compressed
    ratio_min_bytes: int = 1 << 20
    max_name_len: int = 255


DEFAULT_LIMITS = ArchiveLimits()


def check_member_name(name: str, what: str = "archive member") -> str:
    """A relative POSIX path that stays inside the package tree."""
    if not name or len(name) > DEFAULT_LIMITS.max_name_len:
        raise InvalidInput(f"{what} {name!r}: name must be 1-255 characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidInput(f"{what} {name!r}: name contains control characters")
    if "\\" in name:
        raise InvalidInput(f"{what} {name!r}: backslashes are not allowed")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise InvalidInput(f"{what} {name!r}: absolute paths are not allowed")
    parts = name.rstrip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidInput(f"{what} {name!r}: empty, '.' or '..' path components are not allowed")
    return name


def _peek_end_record(f: BinaryIO, size: int) -> tuple[int, int]:
    """(entry count, central directory bytes) from the end-of-central-
    directory record (zip64 aware), before zipfile reads the directory."""
    tail_len = min(size, 22 + 65535)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    pos = tail.rfind(b"PK\x05\x06")
    if pos < 0 or len(tail) - pos < 22:
        raise InvalidInput("package is not a zip archive (no end of central directory)")
    _, _, _, _, entries, cd_size, _, _ = struct.unpack("<4s4H2LH", tail[pos:pos + 22])
    if entries == 0xFFFF or cd_size == 0xFFFFFFFF:
        loc = pos - 20
        if loc < 0 or tail[loc:loc + 4] != b"PK\x06\x07":
            raise InvalidInput("package is not a valid zip64 archive")
        _, _, z64_off, _ = struct.unpack("<4sLQL", tail[loc:loc + 20])
        f.seek(z64_off)
        rec = f.read(56)
        if len(rec) != 56 or rec[:4] != b"PK\x06\x06":
            raise InvalidInput("package is not a valid zip64 archive")
        entries, cd_size = struct.unpack("<QQ", rec[32:48])
    return entries, cd_size


def _is_dir(info: zipfile.ZipInfo) -> bool:
    return info.filename.endswith("/")


def _check_type(info: zipfile.ZipInfo) -> None:
    """Regular files and directories only. Unix zips keep the file mode in
    the high 16 bits of external_attr; a symlink there would be written as
    a link by a naive extractor."""
    mode = info.external_attr >> 16
    if info.create_system == 3 and mode:
        kind = stat.S_IFMT(mode)
        if stat.S_ISLNK(mode):
            raise InvalidInput(f"archive member {info.filename!r} is a symbolic link")
        if kind and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise InvalidInput(f"archive member {info.filename!r} is not a regular file")
    if info.flag_bits & 0x1:
        raise InvalidInput(f"archive member {info.filename!r} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise InvalidInput(f"archive member {info.filename!r} uses an unsupported "
                           f"compression method ({info.compress_type})")
    if _is_dir(info) and info.file_size:
        raise InvalidInput(f"archive member {info.filename!r} is a directory with data")


def _check_sizes(infos: list[zipfile.ZipInfo], limits: ArchiveLimits) -> None:
    total = 0
    for info in infos:
        total += info.file_size
        if (info.file_size > limits.ratio_min_bytes
                and info.file_size > limits.max_ratio * max(info.compress_size, 1)):
            raise PayloadTooLarge(
                f"archive member {info.filename!r} expands {info.file_size} bytes from "
                f"{info.compress_size}: compression ratio above {limits.max_ratio:g} (zip bomb?)")
    if total > limits.max_total_bytes:
        raise PayloadTooLarge(f"package expands to {total} bytes, more than the limit "
                              f"of {limits.max_total_bytes}")
    # Members must not share bytes: each one's local header plus data ends
    # before the next one starts (overlap is how small zips become huge).
    by_offset = sorted(infos, key=lambda i: i.header_offset)
    for a, b in zip(by_offset, by_offset[1:]):
        end = a.header_offset + 30 + len(a.filename.encode()) + a.compress_size
        if end > b.header_offset:
            raise InvalidInput(f"archive members {a.filename!r} and {b.filename!r} overlap")


def open_zip(path: Path, limits: ArchiveLimits) -> zipfile.ZipFile:
    """Open and check the zip layer; the caller closes the returned file."""
    try:
        size = path.stat().st_size
        f = open(path, "rb")
    except OSError as e:
        raise InvalidInput(f"cannot read package {path}: {e.strerror}") from None
    return open_zip_file(f, size, limits)


def open_zip_file(f: BinaryIO, size: int, limits: ArchiveLimits,
                  what: str = "package") -> zipfile.ZipFile:
    """open_zip on an open binary file of `size` bytes (a package, or a zip
    nested in one, in a temporary file or in memory), which the returned
    ZipFile owns: closing it closes `f`. `what` names the archive in errors."""
    try:
        entries, cd_size = _peek_end_record(f, size)
        if entries > limits.max_entries:
            raise PayloadTooLarge(f"{what} has {entries} entries, more than the limit "
                                  f"of {limits.max_entries}")
        if cd_size > limits.max_entries * (46 + limits.max_name_len + 1024):
            raise PayloadTooLarge(f"{what} central directory is {cd_size} bytes: too large")
        f.seek(0)
        zf = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, struct.error, ValueError) as e:
        f.close()
        raise InvalidInput(f"{what} is not a valid zip archive: {e}") from None
    except BaseException:
        f.close()
        raise
    try:
        infos = zf.infolist()
        if len(infos) > limits.max_entries:
            raise PayloadTooLarge(f"{what} has {len(infos)} entries, more than the limit "
                                  f"of {limits.max_entries}")
        seen: set[str] = set()
        for info in infos:
            check_member_name(info.filename)
            if info.filename in seen:
                raise InvalidInput(f"archive member {info.filename!r} appears more than once")
            seen.add(info.filename)
            _check_type(info)
        _check_sizes(infos, limits)
        # A file and a directory of the same name cannot both be in a tree.
        files = {i.filename for i in infos if not _is_dir(i)}
        for name in files:
            parts = name.split("/")
            for n in range(1, len(parts)):
                if "/".join(parts[:n]) in files:
                    raise InvalidInput(f"archive member {name!r} is below a file, not a directory")
    except BaseException:
        zf.close()
        f.close()
        raise
    return _Owning(zf, f)


class _Owning:
    """A ZipFile that closes the file it was opened on (zipfile leaves a
    file object it was given open)."""

    def __init__(self, zf: zipfile.ZipFile, f: BinaryIO):
        self._zf, self._f = zf, f

    def __getattr__(self, name):
        return getattr(self._zf, name)

    def close(self) -> None:
        self._zf.close()
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def member_files(zf: zipfile.ZipFile) -> list[str]:
    """Names of the regular files in the archive, sorted."""
    return sorted(i.filename for i in zf.infolist() if not _is_dir(i))


def stream_member(zf: zipfile.ZipFile, name: str) -> Iterator[bytes]:
    """Chunks of a member, never more than its declared size; archive
    corruption (bad CRC, truncated data) is an IntegrityError naming it."""
    info = zf.getinfo(name)
    left = info.file_size
    try:
        with zf.open(info) as src:
            while True:
                chunk = src.read(CHUNK)
                if not chunk:
                    break
                left -= len(chunk)
                if left < 0:
                    raise IntegrityError(f"{name}: more data than its declared size")
                yield chunk
    except (zipfile.BadZipFile, EOFError, OSError, RuntimeError) as e:
        raise IntegrityError(f"{name}: archive data is corrupt ({e})") from None
    if left != 0:
        raise IntegrityError(f"{name}: less data than its declared size")


def read_member(zf: zipfile.ZipFile, name: str, max_bytes: int, what: str) -> bytes:
    """A small member read whole (TOSCA.meta, manifest, AppD)."""
    if zf.getinfo(name).file_size > max_bytes:
        raise PayloadTooLarge(f"{what} {name!r} is larger than {max_bytes} bytes")
    return b"".join(stream_member(zf, name))


def hash_member(zf: zipfile.ZipFile, name: str) -> str:
    h = hashlib.sha256()
    for chunk in stream_member(zf, name):
        h.update(chunk)
    return h.hexdigest()
