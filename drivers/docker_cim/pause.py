"""The pause image: a tiny local image whose only job is to hold an
instance's network namespace (and its published ports) while the app
container comes and goes inside it.

It is built once per daemon from the host's static busybox with
`docker import` (no registry, no internet) and is never pushed. Its
command is a shell that waits forever and exits 0 on SIGTERM, so stopping
it never needs the kill: PID 1 ignores TERM unless it traps it.
"""

from __future__ import annotations

import io
import json
import tarfile

from mecorch.kernel.errors import BackendError

PAUSE_REPO = "mecorch/pause"
PAUSE_TAG = "1"
PAUSE_IMAGE = f"{PAUSE_REPO}:{PAUSE_TAG}"
_SCRIPT = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"
PAUSE_CMD = ["/bin/sh", "-c", _SCRIPT]


def rootfs_tar(busybox: str) -> bytes:
    """A rootfs holding busybox and the two applets the pause shell uses."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "tmp"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        try:
            # Follow a symlinked busybox: the image needs the binary itself.
            with open(busybox, "rb") as f:
                info = tar.gettarinfo(arcname="bin/busybox", fileobj=f)
                info.mode, info.uid, info.gid, info.uname, info.gname = 0o755, 0, 0, "", ""
                tar.addfile(info, f)
        except OSError as e:
            raise BackendError(f"pause image: cannot read {busybox} "
                               f"({e.strerror}); install busybox-static") from None
        for applet in ("sh", "sleep"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(info)
    return buf.getvalue()


def import_changes() -> list[str]:
    """Dockerfile-style changes given to `docker import`."""
    return [f"CMD {json.dumps(PAUSE_CMD)}",
            "ENV PATH=/bin",
            "LABEL mecorch.role=pause-image"]


def is_static_elf(path: str) -> bool:
    """True when `path` is an ELF executable without an interpreter
    (PT_INTERP), i.e. it runs in an empty rootfs. For `mecorch doctor`."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2:     # 64-bit only
                return False
            order = "little" if head[5] == 1 else "big"
            phoff = int.from_bytes(head[32:40], order)
            phentsize = int.from_bytes(head[54:56], order)
            phnum = int.from_bytes(head[56:58], order)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    types = (int.from_bytes(table[i:i + 4], order) for i in range(0, len(table), phentsize))
    return 3 not in types                                   # 3 = PT_INTERP
