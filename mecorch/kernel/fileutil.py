"""File helpers shared by the core and the drivers."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def unlink_quietly(path: str | os.PathLike) -> None:
    """Remove a file; one that is already gone is fine."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def token_lines(text: str) -> list[str]:
    """The tokens of a token file, in order: one a line, each stripped;
    blank lines and comment lines (`#` after any indentation) are not
    tokens."""
    return [t for t in (line.strip() for line in text.splitlines())
            if t and not t.startswith("#")]


# What mecorch writes is its owner's only: a process that writes state sets
# this umask first (mecorch.cli), so every file it makes is 0600 and every
# directory 0700 (SQLite gives the WAL and SHM the database's mode).
PRIVATE_UMASK = 0o077


def make_private(*roots: str | os.PathLike) -> None:
    """Directories 0700 and files 0600 under each root (the root itself
    included), for what this user owns: what an older mecorch made under
    another umask. Symbolic links are not followed; what another user owns
    (QEMU's volumes and environment files, given to it on purpose) is left
    to that user. A driver gives back, when it opens, what another daemon
    must reach (see drivers/libvirt_vim: search permission on its path)."""
    me = os.geteuid()
    for root in roots:
        root = Path(root)
        if not root.is_dir() or root.is_symlink():
            continue
        for here, dirs, files in os.walk(root):
            for name, mode in ([(here, 0o700)] + [(os.path.join(here, f), 0o600) for f in files]):
                try:
                    st = os.lstat(name)
                except FileNotFoundError:
                    continue
                if st.st_uid == me and not stat.S_ISLNK(st.st_mode) \
                        and stat.S_IMODE(st.st_mode) != mode:
                    os.chmod(name, mode)


def let_others_search(path: str | os.PathLike) -> None:
    """Search permission (x, never r) for others on `path` and on each of
    its ancestors up to the first one that has it (from there on up, the
    system's): another user (QEMU, an unprivileged dnsmasq) can then open
    what it is given by path, and list nothing."""
    path = Path(path)
    for i, d in enumerate((path, *path.parents)):
        mode = d.stat().st_mode
        if mode & stat.S_IXOTH:
            if i:                       # `path` itself may have it already
                return
            continue
        os.chmod(d, stat.S_IMODE(mode) | stat.S_IXOTH)


def current_umask() -> int:
    """This process's umask, read without changing it (Linux 4.7+)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022
