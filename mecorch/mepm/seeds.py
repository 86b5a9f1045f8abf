"""An instance's data carried between hosts by a relocation (issue 34):
the host's side of it (the MEO moves the bytes, mecorch.meo).

- export: the data of an instance INSTANTIATED and STOPPED, as its compute
  driver writes it (`DataMovable.export_data`: one uncompressed tar, one
  member per volume / disk, named by the app's name for it);
- import: such an archive for an instance NOT_INSTANTIATED, checked (a
  tar; member names of one or two plain segments, `data` or `disk/root`;
  regular files and directories only; no name twice; at most
  `orchestrator.max_data_bytes`) and kept at `<state_dir>/seeds/<id>.tar`
  until that instance's next instantiate hands it to its driver
  (`ResourceRequest.seed`). It goes when that instantiation COMPLETES or
  the instance resource is deleted; a failed instantiate keeps it for the
  next try. An instance whose manner's driver cannot take data
  (not DataMovable) is refused at instantiate (UnsupportedAction), never
  deployed without it.

The member names are checked here, the members' own content by the driver
(dockerd extracts a volume's tar confined to its mount path).
"""

from __future__ import annotations

import os
import re
import tarfile
from pathlib import Path
from typing import BinaryIO, Callable

from mecorch.driverapi.contracts import DataMovable
from mecorch.kernel import validate
from mecorch.kernel.errors import Conflict, InvalidInput, PayloadTooLarge
from mecorch.kernel.states import DeploymentType, InstantiationState

DEFAULT_MAX_BYTES = 16 << 30        # orchestrator.max_data_bytes's default (16 GiB)
MAX_MEMBERS = 256
CHUNK = 1 << 20
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_MEMBER = re.compile(rf"{_SEGMENT}(/{_SEGMENT})?")


class Seeds:
    """The archives kept for instances' next instantiate, by instance id."""

    def __init__(self, state_dir: Path, max_bytes: int = DEFAULT_MAX_BYTES):
        self.dir = Path(state_dir) / "seeds"
        self.max_bytes = int(max_bytes)
        # what a process that stopped half-way left: an archive being
        # received (.part), one being exported to send (.export)
        if self.dir.is_dir():
            for p in [*self.dir.glob("*.part"), *self.dir.glob("*.export")]:
                p.unlink(missing_ok=True)

    def path(self, instance_id: str) -> Path:
        return self.dir / f"{validate.ident(instance_id, 'appInstanceId')}.tar"

    def of(self, instance_id: str) -> Path | None:
        """The instance's archive, None when it has none."""
        p = self.path(instance_id)
        return p if p.is_file() else None

    def keep(self, instance_id: str, write: Callable[[BinaryIO], None]) -> None:
        """`write(out)` writes the archive; it is checked, then takes the
        place of the instance's earlier one (if any). Anything refused or
        cut short leaves the earlier one as it was and nothing else."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        dest = self.path(instance_id)
        part = dest.with_suffix(".tar.part")
        try:
            with open(part, "wb") as out:
                write(out)
            check(part, self.max_bytes)
            os.replace(part, dest)
        finally:
            part.unlink(missing_ok=True)

    def forget(self, instance_id: str) -> None:
        self.path(instance_id).unlink(missing_ok=True)


def copy(read: Callable[[int], bytes], out: BinaryIO, max_bytes: int) -> int:
    """Copy what `read(n)` gives (a file's read, an HTTP body's) to `out`,
    block by block; more than `max_bytes` is PayloadTooLarge."""
    total = 0
    while block := read(CHUNK):
        total += len(block)
        if total > max_bytes:
            raise PayloadTooLarge(f"the data archive is larger than orchestrator."
                                  f"max_data_bytes ({max_bytes} bytes)")
        out.write(block)
    return total


def check(path: Path, max_bytes: int) -> list[str]:
    """The archive's member names, once it is known to be what a driver
    writes: an uncompressed tar of at most `max_bytes` whose members are
    regular files (or directories) with safe names, each name once."""
    size = path.stat().st_size
    if size > max_bytes:
        raise PayloadTooLarge(f"the data archive is larger than orchestrator.max_data_bytes "
                              f"({max_bytes} bytes)")
    names: list[str] = []
    try:
        with tarfile.open(path, "r:") as tar:
            for m in tar:
                if len(names) >= MAX_MEMBERS:
                    raise InvalidInput(f"the data archive has more than {MAX_MEMBERS} members")
                if not _MEMBER.fullmatch(m.name) or ".." in m.name:
                    raise InvalidInput(f"the data archive has a member named {m.name[:80]!r}: "
                                       "names are one or two segments of letters, digits, "
                                       "'_', '.', '-' (a volume's name, disk/<name>)")
                if not (m.isreg() or m.isdir()) or m.issparse():
                    raise InvalidInput(f"the data archive's member {m.name!r} is not a regular "
                                       "file or a directory")
                if m.name in names:
                    raise InvalidInput(f"the data archive has {m.name!r} twice")
                names.append(m.name)
    except tarfile.TarError as e:
        raise InvalidInput(f"the data is not an uncompressed tar archive ({e})") from None
    return names


def driver_takes_data(host, manner: DeploymentType, instance_id: str) -> None:
    """UnsupportedAction, naming the driver, when the host's driver of
    `manner` cannot carry data (not DataMovable); loaded, not opened."""
    host.compute_that(manner, DataMovable, instance_id, "carry an instance's data")


def export_data(lcm, instance_id: str, into: Path) -> None:
    """Write the instance's data to `into` (its driver's archive). It must
    be INSTANTIATED and STOPPED (Conflict otherwise); no other operation
    runs on it meanwhile."""
    with lcm.hold(instance_id):
        inst = lcm.get(instance_id)
        state = inst["instantiationState"]
        operational = (inst.get("instantiatedAppState") or {}).get("operationalState")
        if state != InstantiationState.INSTANTIATED.value or operational != "STOPPED":
            raise Conflict(f"app instance {instance_id} is {state}"
                           + (f" and {operational}" if operational else "")
                           + ": its data is exported only when it is INSTANTIATED and STOPPED "
                           "(operate STOP first)")
        host = lcm.inventory.get(inst["hostId"])
        manner = DeploymentType(inst["deploymentType"])
        driver_takes_data(host, manner, instance_id)
        host.compute(manner).export_data(inst["_handle"], Path(into))


def import_data(lcm, instance_id: str, write: Callable[[BinaryIO], None]) -> None:
    """Keep the archive `write(out)` writes as the instance's seed. It must
    be NOT_INSTANTIATED (Conflict otherwise); no operation runs on it
    meanwhile (an instantiate waits for the whole archive)."""
    with lcm.hold(instance_id):
        inst = lcm.get(instance_id)
        if inst["instantiationState"] != InstantiationState.NOT_INSTANTIATED.value:
            raise Conflict(f"app instance {instance_id} is {inst['instantiationState']}: data "
                           "is imported only into an instance NOT_INSTANTIATED")
        lcm.seeds.keep(instance_id, write)
