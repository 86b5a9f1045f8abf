"""One owner per edge host id.

Two mecorch processes driving one host id destroy each other's apps: each
reads the other's containers, domains and rules as orphans. So a host id
is held by one process at a time, through a lease file per host id in a
directory every mecorch on this machine shares whatever its state dir
(`MECORCH_LEASE_DIR`, default /run/mecorch-leases: gone at reboot, like
the processes that held it). The lease is an exclusive `flock` the kernel
drops when the holder dies, so a crashed holder never blocks a restart;
its content names the holder (state dir, pid, API address) for the
refusal message. `mecorch serve` takes it before it reconciles anything.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from pathlib import Path

from mecorch.kernel.errors import Conflict, InvalidInput

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def lease_dir() -> Path:
    return Path(os.environ.get("MECORCH_LEASE_DIR", "/run/mecorch-leases"))


class HostLease:
    """Holds host ids for one state dir until `release` (or the process ends)."""

    def __init__(self, state_dir: str, api: str):
        self.state_dir = str(Path(state_dir).resolve())
        self.api = api
        self._fds: dict[str, tuple[int, Path]] = {}

    def acquire(self, host_ids: list[str]) -> None:
        """Hold every host id or none: Conflict naming the holder."""
        try:
            for hid in host_ids:
                self._acquire_one(hid)
        except BaseException:
            self.release()
            raise

    def _acquire_one(self, host_id: str) -> None:
        if not _SAFE.match(host_id):
            raise InvalidInput(f"host id {host_id!r} must be 1-63 of [A-Za-z0-9._-]")
        d = lease_dir()
        d.mkdir(mode=0o755, parents=True, exist_ok=True)
        path = d / f"{host_id}.lease"
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise Conflict(
                    f"edge host {host_id!r} is held by another mecorch (state dir "
                    f"{holder.get('stateDir', '?')}, pid {holder.get('pid', '?')}, API "
                    f"{holder.get('api', '?')}): stop that one, or give this one another "
                    "host id") from None
            # A holder releasing removes the file: a lock taken on the file
            # it just removed holds nothing, so take the one at the path.
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"hostId": host_id, "stateDir": self.state_dir,
                                  "pid": os.getpid(), "api": self.api}).encode(), 0)
        self._fds[host_id] = (fd, path)

    def release(self) -> None:
        for fd, path in self._fds.values():
            try:
                os.unlink(path)         # while still held: see _acquire_one
            except OSError:
                pass
            os.close(fd)                # drops the flock
        self._fds.clear()

    def holds(self, host_id: str) -> bool:
        return host_id in self._fds


def _read(fd: int) -> dict:
    try:
        data = os.pread(fd, 4096, 0)
        doc = json.loads(data) if data else {}
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}

