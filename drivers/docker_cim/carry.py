"""An instance's named volumes carried to another host (`DataMovable`):
the archive layout, and its reading and writing through Docker's archive
API (no helper container, no shell).

The archive is one uncompressed tar. Each member is one named volume of
the instance, named by the descriptor's volume name exactly (`data`, not
the Docker volume `mecorch.<instance>.data`, so another host's instance of
another id finds it), and holds a tar of that volume's content as Docker's
`GET /containers/{id}/archive?path=<mount path>/.` gives it: members `.`,
`./file`, `./dir/...`, relative to the volume's root. A deploy given such an
archive (`ResourceRequest.seed`) puts each member back with `PUT
/containers/{id}/archive?path=<mount path>` into the created, not yet
started app container: dockerd extracts it confined to that path (its
chrooted untar), so what a member holds cannot land outside the volume.

Sizes are bounded: one volume's tar at most `max_bytes` (the driver's
`data_max_bytes`), the archive at most that for each volume of the plan.
"""

from __future__ import annotations

import tarfile
import time
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from mecorch.kernel import validate
from mecorch.kernel.errors import InvalidInput

from .backend import backend_errors
from .plan import Plan, VolumePlan

BLOCK = 512
CHUNK = 1 << 20
MAX_MEMBERS = 64                # a container has few volumes; an archive of more is not ours


def members(seed: str, plan: Plan, max_bytes: int) -> dict[str, tarfile.TarInfo]:
    """The seed archive's member of each volume of the plan, checked
    against it before anything is made: a member the plan has no volume
    for, or a volume of the plan with no member, is InvalidInput naming
    it. Only the headers are read."""
    path = validate.text(seed, "seed", 4096)
    try:
        with tarfile.open(path, "r:") as tar:
            found = []
            for m in tar:
                found.append(m)
                if len(found) > MAX_MEMBERS:
                    raise InvalidInput(f"seed: {path} has more than {MAX_MEMBERS} members")
    except (OSError, tarfile.TarError) as e:
        raise InvalidInput(f"seed: {path} is not a readable uncompressed tar archive "
                           f"({e})") from None
    got: dict[str, tarfile.TarInfo] = {}
    for m in found:
        if m.isdir() and not m.name.strip("/").count("/"):
            continue                    # a directory entry of the layout: nothing to fill
        if not m.isfile() or m.issparse():      # (a sparse member's bytes are not its data)
            raise InvalidInput(f"seed: member {m.name!r} is not a regular file")
        if m.size > max_bytes:
            raise InvalidInput(f"seed: volume {m.name!r} is {m.size} bytes, over the "
                               f"driver's data_max_bytes ({max_bytes})")
        got[m.name] = m
    want = {v.volume for v in plan.volumes}
    extra, missing = sorted(set(got) - want), sorted(want - set(got))
    if extra:
        raise InvalidInput(f"seed: the archive has volume {extra[0]!r}, which this app does "
                           f"not have (its volumes: {', '.join(sorted(want)) or 'none'})")
    if missing:
        raise InvalidInput(f"seed: the app's volume {missing[0]!r} is not in the archive (it "
                           f"has: {', '.join(sorted(got)) or 'nothing'})")
    return got


def fill(api, container: str, plan: Plan, seed: str, found: dict[str, tarfile.TarInfo]) -> None:
    """Put each volume's member into the created app container at the
    volume's mount path (it must not have started: the app finds its data
    there from its first instant). Streamed from the file, never whole in
    memory."""
    with open(seed, "rb") as f:
        for v in plan.volumes:
            m = found[v.volume]
            with backend_errors(f"fill volume {v.volume} ({v.name}) from the seed"):
                api.put_archive(container, v.mount_path, _section(f, m.offset_data, m.size))


def _section(f: BinaryIO, offset: int, size: int) -> Iterator[bytes]:
    """`size` bytes of `f` from `offset`, in chunks (a request body that
    requests sends chunked)."""
    f.seek(offset)
    left = size
    while left:
        block = f.read(min(CHUNK, left))
        if not block:
            raise InvalidInput("seed: the archive ends inside a member")
        left -= len(block)
        yield block


def export(api, container: str, volumes: list[VolumePlan], into: Path, max_bytes: int) -> None:
    """Write the archive of `volumes` (their mount paths in the stopped
    `container`) to `into`; a failure removes the partial file."""
    try:
        with open(into, "wb") as out:
            for v in volumes:
                what = f"read volume {v.volume} ({v.name})"
                with backend_errors(what):
                    stream, _ = api.get_archive(container, f"{v.mount_path.rstrip('/')}/.",
                                                chunk_size=CHUNK)
                    _append(out, v.volume, stream, max_bytes, what)
            out.write(b"\0" * (2 * BLOCK))        # the end-of-archive marker
    except BaseException:
        into.unlink(missing_ok=True)
        raise


def _append(out: BinaryIO, name: str, chunks: Iterable[bytes], max_bytes: int,
            what: str) -> None:
    """One member of a size not known before its stream ends: a header
    block held open, the data, its padding, then the header written in its
    place (a GNU header: one block for any size, names under 100 chars)."""
    start = out.tell()
    out.write(b"\0" * BLOCK)
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise InvalidInput(f"{what}: over the driver's data_max_bytes ({max_bytes})")
        out.write(chunk)
    out.write(b"\0" * (-size % BLOCK))
    end = out.tell()
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, int(time.time())
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    assert len(header) == BLOCK, name            # volume names are idents: <= 64 chars
    out.seek(start)
    out.write(header)
    out.seek(end)
