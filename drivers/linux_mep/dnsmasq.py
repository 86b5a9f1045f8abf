"""DNS rules served by a dnsmasq that mecorch starts and owns.

Rendering is pure (`render_hosts`, `argv`); the few I/O helpers below let
OSError and subprocess errors through: the driver maps them in its one
choke point.

How rules reach dnsmasq: one hosts-format file per instance, named by the
instance id, in the `--hostsdir` directory. dnsmasq watches that directory
with inotify: a new, changed or renamed-in file is re-read and the names it
held before are flushed; a removed file's names are flushed (measured with
dnsmasq 2.90). A name and address held by several files (replicas) is
kept once, as the first file read, and flushed with it: `index` and
`reread` let the driver make the others read again. Files are replaced atomically (write `.<id>.tmp`, then
rename): dnsmasq ignores dot-files, so it never reads a half-written one.
dnsmasq is never restarted for a rule change, and signalled only
when the held names outside the MEC domain change (below).

Two dnsmasq processes read that one hostsdir: the control one on
`dns_listen:dns_port` (loopback by default), and the clients' one on port 53
of the addresses apps and UEs look at (the app networks' gateways, the
data-plane address), started with --bind-dynamic so an address that appears
later (a network made after the MEP opened) is bound when it appears.
Names that are no DNS rule go to the configured upstream servers (none by
default: REFUSED); names in the MEC domain never go upstream (--local).

A name outside the MEC domain that a rule holds (a public name an app's
package declares, `video.example.com`) is answered from the hostsdir for
its A record, but dnsmasq would still ask upstream for its other types: an
AAAA query would get the public IPv6 address and send a dual-stack UE past
the edge instance (measured with 2.90). Such names are made local too: a
`--servers-file` of `server=/NAME/` lines (`render_servers`), the held
names outside the domain, rewritten and re-read (SIGHUP, `reload`) only
when that set changes; then the other types get an empty answer (NOERROR)
here, as names of the MEC domain do, and so do names below a held one.

TTL: hostsdir entries are all served with one TTL, `--local-ttl`, which the
config sets (`dns_ttl`, default 0 = clients must not cache). A per-rule
`ttl` cannot be expressed. The driver serves a rule whose ttl is >= dns_ttl
with dns_ttl (a client never caches the answer longer than the app asked),
and refuses a rule whose ttl is below dns_ttl with UnsupportedAction
(serving it would let clients cache longer than the app allows).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from mecorch.kernel.errors import BackendError, UnsupportedAction
from mecorch.spec.rules import DnsRule


def render_hosts(instance_id: str, rules: list[DnsRule]) -> str:
    """The hostsdir file of an instance: one `address name` line per ACTIVE
    rule (INACTIVE ones are left out), sorted by rule id; '' if none."""
    active = sorted((r for r in rules if r.active), key=lambda r: r.dns_rule_id)
    if not active:
        return ""
    lines = [f"# mecorch: DNS rules of instance {instance_id} (generated, do not edit)"]
    for r in active:
        lines.append(f"# {r.dns_rule_id}")
        lines.append(f"{r.ip_address} {r.domain_name}")
    return "\n".join(lines) + "\n"


def check_ttls(rules: list[DnsRule], local_ttl: int) -> None:
    for r in rules:
        if r.ttl is not None and r.ttl < local_ttl:
            raise UnsupportedAction(
                f"dnsRule {r.dns_rule_id}: ttl {r.ttl} is below the {local_ttl} s this MEP "
                f"serves every DNS rule with (dnsmasq hostsdir entries share one "
                f"--local-ttl); omit ttl or use a value >= {local_ttl}")


def argv(*, pid_file: Path, hosts_dir: Path, log_file: Path, listen: str | list[str],
         port: int, local_ttl: int, user: str, upstream: tuple[str, ...] = (),
         domain: str | None = None, dynamic: bool = False,
         servers_file: Path | None = None) -> list[str]:
    """The dnsmasq command line: DNS only, our hostsdir only (no config
    file, no /etc/hosts, no /etc/resolv.conf, no DHCP); `upstream` servers
    for other names; `domain`, and the names `servers_file` lists, answered
    here only."""
    addrs = [listen] if isinstance(listen, str) else list(listen)
    return (["dnsmasq", "--conf-file=/dev/null", f"--pid-file={pid_file}", f"--port={port}"]
            + [f"--listen-address={a}" for a in addrs]
            + ["--bind-dynamic" if dynamic else "--bind-interfaces",
               "--no-resolv", "--no-hosts", f"--hostsdir={hosts_dir}",
               f"--local-ttl={local_ttl}", f"--user={user}", f"--log-facility={log_file}"]
            + [f"--server={u}" for u in upstream]
            + ([f"--local=/{domain}/"] if domain else [])
            + ([f"--servers-file={servers_file}"] if servers_file else []))


def held_names(index: dict[str, set[str]], domain: str | None) -> list[str]:
    """The names the hostsdir files hold (`index`: line -> files) that lie
    outside `domain` (every one when there is none): those to keep local."""
    names = {line.split()[1] for line, files in index.items() if files}
    if domain:
        names = {n for n in names if n != domain and not n.endswith("." + domain)}
    return sorted(names)


def render_servers(names: list[str]) -> str:
    """The --servers-file keeping `names` local: `server=/NAME/` (no
    address: answered here only, never upstream), one a line."""
    lines = ["# mecorch: held DNS names outside the MEC domain, answered here only "
             "(generated, do not edit)"]
    lines += [f"server=/{n}/" for n in names]
    return "\n".join(lines) + "\n"


def write_file(path: Path, text: str, owner: tuple[int, int] | None = None) -> None:
    """Replace `path` by `text` atomically (a dot-file renamed onto it),
    0600, given to `owner` (dnsmasq's user: it reads it again on SIGHUP,
    after dropping root)."""
    tmp = path.with_name(f".{path.name}.tmp")
    _write_private(tmp, text, owner)
    os.replace(tmp, path)


def _write_private(path: Path, text: str, owner: tuple[int, int] | None) -> None:
    """`text` in `path` (never through a link), 0600, given to `owner`,
    on disk before it returns."""
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600),
              "w", encoding="ascii") as f:
        os.fchmod(f.fileno(), 0o600)
        if owner is not None:
            os.fchown(f.fileno(), *owner)
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def reload(pid_file: Path) -> bool:
    """Make the dnsmasq our pid file names read its servers file again
    (SIGHUP: it also re-reads the hostsdir and clears its cache). False
    when none runs."""
    pid = live_pid(pid_file)
    if pid is None:
        return False
    os.kill(pid, signal.SIGHUP)
    return True


def cmdline(pid: int) -> list[str]:
    """The argv of a running process ([] if it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def live_pid(pid_file: Path) -> int | None:
    """The pid in `pid_file` if it is a running dnsmasq started with that
    very pid file (so a recycled pid of another process is not taken)."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if Path(cmdline[0].decode(errors="replace")).name != "dnsmasq":
        return None
    if f"--pid-file={pid_file}".encode() not in cmdline:
        return None
    return pid


def start(cmd: list[str], pid_file: Path, timeout_s: float = 5.0) -> int:
    """Start dnsmasq as a daemon (it forks and writes its pid file; the
    parent's exit status tells whether it could bind). Returns its pid.
    Its log (the names asked) and pid file are 0600 like all mecorch
    writes: dnsmasq sets its own umask (022) and makes its log 0640, so the
    log is made here first (dnsmasq appends to it, and gives it to its
    --user) and the pid file is narrowed once written."""
    for arg in cmd:
        if arg.startswith("--log-facility=/"):
            log = arg.split("=", 1)[1]
            os.close(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600))
            os.chmod(log, 0o600)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise BackendError(f"dnsmasq did not start (exit {proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip()[-500:]}")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pid = live_pid(pid_file)
        if pid:
            os.chmod(pid_file, 0o600)
            return pid
        time.sleep(0.02)
    raise BackendError(f"dnsmasq started but {pid_file} names no running dnsmasq")


def stop(pid_file: Path, timeout_s: float = 5.0) -> bool:
    """Stop the dnsmasq named by our pid file (only that one). True if one
    was running."""
    pid = live_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout_s
        time.sleep(0.02)
    pid_file.unlink(missing_ok=True)
    return True


def stage(hosts_dir: Path, instance_id: str, text: str,
          owner: tuple[int, int] | None = None) -> Path | None:
    """Write the instance's new file next to its final place, not yet
    visible to dnsmasq (dot-file), 0600 and given to `owner` (dnsmasq's
    user, when not this process's). None when the instance has no rules."""
    if not text:
        return None
    tmp = hosts_dir / f".{instance_id}.tmp"
    _write_private(tmp, text, owner)
    return tmp


def commit(hosts_dir: Path, instance_id: str, staged: Path | None) -> None:
    """Make the staged file the instance's file (atomic rename), or remove
    the instance's file when there is nothing staged."""
    final = hosts_dir / instance_id
    if staged is None:
        final.unlink(missing_ok=True)
    else:
        os.replace(staged, final)


def read(hosts_dir: Path, instance_id: str) -> str:
    """The instance's file as it is ('' when it has none)."""
    try:
        return (hosts_dir / instance_id).read_text(encoding="ascii")
    except FileNotFoundError:
        return ""


def entries(text: str) -> set[str]:
    """The `address name` lines of a file's text."""
    return {line for line in text.splitlines() if line and not line.startswith("#")}


def index(hosts_dir: Path) -> dict[str, set[str]]:
    """{`address name` line: the instances whose files hold it}, read from
    the hostsdir (dot-files, the staged ones, left out)."""
    out: dict[str, set[str]] = {}
    for name in os.listdir(hosts_dir):
        if not name.startswith("."):
            for line in entries(read(hosts_dir, name)):
                out.setdefault(line, set()).add(name)
    return out


def reread(hosts_dir: Path, instance_id: str, owner: tuple[int, int] | None = None) -> None:
    """Make dnsmasq read the instance's file again (the same text, renamed
    onto itself): it then holds that file's entries again, whichever file
    it had first read them from."""
    text = read(hosts_dir, instance_id)
    if text:
        commit(hosts_dir, instance_id, stage(hosts_dir, instance_id, text, owner))


def discard(staged: Path | None) -> None:
    if staged is not None:
        staged.unlink(missing_ok=True)
