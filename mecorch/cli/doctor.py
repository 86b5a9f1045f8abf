"""`mecorch doctor`: check every configured backend for real and say how to
fix what is missing, making nothing on them (no network, pool, chain,
link or process is left behind; what `serve` makes on first use is
reported as not made yet). Each driver's checks are printed as soon as they ran
(a KVM probe boots a guest: a silent minute reads as a hang), then the
table of all of them and what to fix."""

from __future__ import annotations

import shutil
import sys
import time
from typing import Callable, TextIO

from mecorch.driverapi.contracts import load_driver
from mecorch.kernel.errors import MecorchError
from mecorch.kernel.config import ROLES
from mecorch.driverapi.model import Check


Progress = Callable[[str, str, str, "list[Check] | None", float], None]


def run_checks(cfg: dict, progress: Progress | None = None) -> list[tuple[str, str, Check]]:
    """(host id, role, check) for every driver of every host. `progress`
    is called with (host, role, driver, None, 0) before a driver's checks
    and with (host, role, driver, its checks, seconds) after them."""
    rows: list[tuple[str, str, Check]] = []
    for host in cfg["hosts"]:
        for role in ROLES:
            section = host.get(role)
            if not section:
                continue
            before = len(rows)
            t0 = time.monotonic()
            if progress:
                progress(host["id"], role, str(section.get("driver")), None, 0.0)
            _check_driver(host, role, section, rows)
            if progress:
                progress(host["id"], role, str(section.get("driver")),
                         [c for _, _, c in rows[before:]], time.monotonic() - t0)
    return rows


def _check_driver(host: dict, role: str, section: dict,
                  rows: list[tuple[str, str, Check]]) -> None:
    try:
        driver = load_driver(role, section)
    except MecorchError as e:
        rows.append((host["id"], role, Check(
            f"driver {section.get('driver')}", False, e.detail,
            "install mecorch with `bash vagrant/provision.sh`")))
        return
    except ImportError as e:
        rows.append((host["id"], role, Check(
            f"driver {section.get('driver')}", False, f"cannot import: {e}",
            "install the driver's backend library (`bash vagrant/provision.sh`)")))
        return
    # Checks only: no open(). open() would make what mecorch owns on the
    # backend (network, pool, pause image, chains, service link, dnsmasq)
    # as `serve` does on first use, and the doctor would leave it all
    # behind; each driver's check() looks without making anything (a probe
    # it starts, it stops).
    try:
        checks = driver.check()
    finally:
        driver.close()
    rows.extend((host["id"], role, c) for c in checks)


def print_table(rows: list[tuple[str, str, Check]], out: TextIO = sys.stdout) -> None:
    headers = ("HOST", "ROLE", "CHECK", "STATUS", "DETAIL")
    table = [(h, r, c.name, "ok" if c.ok else "FAIL", c.detail) for h, r, c in rows]
    # Cut long details to the terminal's width; print them whole into a pipe.
    width = shutil.get_terminal_size((120, 20)).columns if out.isatty() else 10**6
    widths = [max(len(str(x[i])) for x in [headers, *table]) for i in range(4)]

    def line(cells):
        head = "  ".join(str(c).ljust(w) for c, w in zip(cells[:4], widths))
        tail = str(cells[4])
        room = max(20, width - len(head) - 2)
        return f"{head}  {tail if len(tail) <= room else tail[:room - 1] + '…'}"

    print(line(headers), file=out)
    for row in table:
        print(line(row), file=out)
    failed = [(h, r, c) for h, r, c in rows if not c.ok]
    if failed:
        print(f"\n{len(failed)} check(s) failed:", file=out)
        for h, r, c in failed:
            print(f"- [{h}/{r}] {c.name}: {c.detail}", file=out)
            if c.fix:
                print(f"  fix: {c.fix}", file=out)
    else:
        print(f"\nall {len(rows)} checks passed", file=out)


def print_progress(host: str, role: str, driver: str, checks: list[Check] | None,
                   seconds: float, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    if checks is None:
        print(f"checking {host}/{role} ({driver}) ...", file=out, flush=True)
        return
    for c in checks:
        print(f"  {'ok  ' if c.ok else 'FAIL'}  {c.name}: {c.detail}", file=out, flush=True)
    print(f"  ({len(checks)} checks, {seconds:.1f} s)", file=out, flush=True)


def main(cfg: dict) -> int:
    rows = run_checks(cfg, print_progress)
    print(file=sys.stdout)
    print_table(rows)
    return 0 if rows and all(c.ok for _, _, c in rows) else 1
