"""Tar archives made in memory, for the tests of a relocation's data
(the archives an MEPM exports and imports, a volume's content)."""

from __future__ import annotations

import io
import tarfile


def tar_of(members: dict[str, bytes], kind: dict[str, bytes] | None = None) -> bytes:
    """A tar of regular files (name -> content); `kind`: {name: tarfile
    type} for members of other types (a link to /etc/passwd, a device)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        for name, typ in (kind or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = typ, "/etc/passwd"
            t.addfile(info)
    return buf.getvalue()
