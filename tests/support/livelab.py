"""A second libvirtd on this machine that libvirt takes for another host:
what a live migration test needs (libvirt migrates only between two
daemons, never onto the one a domain runs on).

`SecondLibvirtd(tag)` starts `libvirtd --listen` in
- a network namespace of its own (`support.lab.Netns`), joined to the root
  one by a veth pair (`root_ip` here, `ip` inside, a /30): its NAT networks
  may use the SAME range as the first libvirtd's (a live migration keeps
  the guest's address) and it listens for libvirt's TCP protocol
  (`listen_tcp`, `auth_tcp = "none"`) on the veth address only; QEMU's
  migration stream and NBD storage copy arrive on that address too;
- a mount namespace of its own: /etc/libvirt (a copy of the machine's
  *.conf files plus the nwfilters, with `host_uuid` and the TCP listener in
  libvirtd.conf, `stdio_handler = "file"` in qemu.conf: no virtlogd of its
  own to start; QEMU's console goes to a plain file), /run/libvirt,
  /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt bind-mounted from
  a temporary directory, and a fresh sysfs for its network namespace (the
  bridges it makes) with the machine's cgroup hierarchies mounted back
  under it (libvirt puts QEMU in cgroups);
- a UTS namespace of its own: another hostname (libvirt refuses a
  migration to a host of the same hostname or host UUID).

It is started without a shell (a small Python launcher run through
`nsenter --net` + `unshare --mount --uts` does the mounts, sets the
hostname and execs libvirtd), stopped by its pid; `close()` then removes
what it holds (its domains, networks, pools: they live in its private
dirs), the namespace, the veth pair and the directories.

`peer(a, b, cidr)` joins two of them directly (two second hosts, the
one test of a relocation between two MEPMs): a veth pair between their
namespaces on a /30 of its own, and a route in each to the other's
listening address over it (its libvirtd's TCP listener and its QEMUs'
incoming migrations are on that address): libvirtd->libvirtd and
QEMU->QEMU traffic goes straight from one to the other, never through
the root namespace (whose FORWARD policy docker sets to DROP).

`in_netns(name, fn, *args)` runs `fn` in a thread that entered the
namespace (setns is per thread): what runs "on the second host" (a driver
waiting for a guest's TCP port, an HTTP client) reaches its guests there.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from support.lab import Netns, private_dir

_LAUNCHER = r"""
import os, socket, subprocess, sys
root, hostname = sys.argv[1], sys.argv[2]
# a system libvirtd's umask: the test process's may be the CLI's 077 (an
# in-process CLI test sets it), and the dirs libvirtd makes (its qemu lib
# dir, each domain's) would shut QEMU (libvirt-qemu) out
os.umask(0o022)
def mount(*a):
    subprocess.run(["mount", *a], check=True)
mount("--make-rprivate", "/")
cg = os.path.join(root, "cgroup")
mount("--rbind", "/sys/fs/cgroup", cg)
mount("-t", "sysfs", "sysfs", "/sys")           # this namespace's devices
mount("--rbind", cg, "/sys/fs/cgroup")
for d in ("etc/libvirt", "run/libvirt", "var/lib/libvirt", "var/cache/libvirt",
          "var/log/libvirt"):
    mount("--bind", os.path.join(root, d), "/" + d)
socket.sethostname(hostname)
os.execv("/usr/sbin/libvirtd", ["libvirtd", "--listen",
                               "--pid-file", os.path.join(root, "libvirtd.pid")])
"""

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(netns: str, fn: Callable, *args, **kw) -> Any:
    """fn(*args, **kw) in a thread inside network namespace `netns`; its
    result, or its exception raised here."""
    out: dict = {}

    def body() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {netns}")
            finally:
                os.close(fd)
            out["value"] = fn(*args, **kw)
        except BaseException as e:       # handed to the caller's thread
            out["error"] = e
    t = threading.Thread(target=body, name=f"in-{netns}")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out.get("value")


class OnHost:
    """`obj`'s methods called inside network namespace `netns` (a driver of
    the second host: it waits for its guests' ports there)."""

    def __init__(self, obj: Any, netns: str):
        self._obj, self._netns = obj, netns

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._obj, name)
        if not callable(attr):
            return attr
        return lambda *a, **kw: in_netns(self._netns, attr, *a, **kw)


def peer(a: "SecondLibvirtd", b: "SecondLibvirtd", cidr: str) -> str:
    """A direct link between two started labs' namespaces on `cidr` (a
    /30: its first host address on `a`'s end, the second on `b`'s), each
    reaching the other's `ip` through it. Returns the link's name (`a`'s
    end; `b`'s is it + "p"). It goes with either namespace."""
    import ipaddress
    net = ipaddress.ip_network(cidr)
    if net.prefixlen != 30:
        raise ValueError(f"peer: cidr must be a /30, not {cidr!r}")
    ea, eb = (str(h) for h in net.hosts())
    link = f"mctp{a.tag}"[:13]
    subprocess.run(["ip", "link", "add", link, "netns", a.netns.name, "type", "veth",
                    "peer", "name", link + "p", "netns", b.netns.name], check=True)
    for lab, name, mine, theirs, other in ((a, link, ea, eb, b), (b, link + "p", eb, ea, a)):
        lab.exec("ip", "addr", "add", f"{mine}/30", "dev", name)
        lab.exec("ip", "link", "set", name, "up")
        lab.exec("ip", "route", "add", f"{other.ip}/32", "via", theirs)
    return link


class SecondLibvirtd:
    """See the module docstring. `uri` is what clients (and the first
    libvirtd, peer to peer) connect to; `migrate_uri` where QEMU sends."""

    def __init__(self, tag: str, *, subnet: str | None = None):
        self.tag = tag
        # a /30 of 10.213.0.0/16 from the tag: parallel labs rarely meet
        n = int.from_bytes(tag.encode(), "big") % 16000 if subnet is None else 0
        base = f"10.213.{n // 64}.{(n % 64) * 4}" if subnet is None else subnet
        a, b, c, d = (int(x) for x in base.split("."))
        self.root_ip, self.ip = f"{a}.{b}.{c}.{d + 1}", f"{a}.{b}.{c}.{d + 2}"
        self.hostname = f"mct-live-{tag}"
        self.host_uuid = str(uuid.uuid4())
        self.uri = f"qemu+tcp://{self.ip}/system"
        self.migrate_uri = f"tcp://{self.ip}"
        self.dir = private_dir(f"live-{tag}")
        self.netns: Netns | None = None
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "libvirtd.out"

    # -- start ------------------------------------------------------------
    def _write_config(self) -> None:
        for d in ("etc/libvirt", "run/libvirt", "var/lib/libvirt", "var/cache/libvirt",
                  "var/log/libvirt", "cgroup"):
            (self.dir / d).mkdir(parents=True, exist_ok=True)
            for part in Path(d).parents[::-1][1:] + (Path(d),):   # whatever the umask
                os.chmod(self.dir / part, 0o755)
        etc = self.dir / "etc/libvirt"
        for f in Path("/etc/libvirt").glob("*.conf"):
            shutil.copy2(f, etc / f.name)
        shutil.copytree("/etc/libvirt/nwfilter", etc / "nwfilter", dirs_exist_ok=True)
        with open(etc / "libvirtd.conf", "a") as f:
            f.write(f'\n# mecorch live lab {self.tag}\nlisten_tls = 0\nlisten_tcp = 1\n'
                    f'listen_addr = "{self.ip}"\nauth_tcp = "none"\n'
                    f'host_uuid = "{self.host_uuid}"\n'
                    'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n')
        with open(etc / "qemu.conf", "a") as f:
            f.write('\n# no virtlogd in this namespace: QEMU writes its logs itself\n'
                    'stdio_handler = "file"\n')

    def start(self, timeout_s: float = 30) -> "SecondLibvirtd":
        self._write_config()
        self.netns = Netns(f"mctlive{self.tag}"[:15])
        self.netns.link(f"mctl{self.tag}"[:13], f"{self.root_ip}/30", f"{self.ip}/30")
        argv = ["nsenter", f"--net=/run/netns/{self.netns.name}", "--",
                "unshare", "--mount", "--uts", "--propagation", "private", "--",
                sys.executable, "-c", _LAUNCHER, str(self.dir), self.hostname]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"second libvirtd ended ({self.proc.returncode}): "
                                   f"{self.log_tail()}")
            try:
                in_netns(self.netns.name, socket.create_connection, (self.ip, 16509), 1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"second libvirtd not listening: {self.log_tail()}")
                time.sleep(0.2)

    def log_tail(self, n: int = 3000) -> str:
        text = ""
        for p in (self.log, self.dir / "var/log/libvirt/libvirtd.log"):
            try:
                text += f"[{p.name}] " + p.read_text(errors="replace")[-n:]
            except OSError:
                pass
        return text

    # -- inside -------------------------------------------------------------
    def exec(self, *argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        """A command in its network namespace (an HTTP client of its guests)."""
        return self.netns.exec(*argv, check=check, **kw)

    def http_get(self, url: str, timeout_s: float = 5) -> str:
        """GET `url` from inside its network namespace."""
        return self.exec("curl", "-sS", "--max-time", f"{timeout_s:g}", url).stdout

    # -- end ----------------------------------------------------------------
    def _remove_objects(self) -> None:
        """Its domains, networks and pools (all made in this lab's daemon)."""
        import libvirt

        def clear() -> None:
            conn = libvirt.open(self.uri)
            try:
                for dom in conn.listAllDomains(0):
                    if dom.isActive():
                        dom.destroy()
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
                for net in conn.listAllNetworks(0):
                    if net.isActive():
                        net.destroy()
                    net.undefine()
                for pool in conn.listAllStoragePools(0):
                    if pool.isActive():
                        pool.destroy()
                    pool.undefine()
            finally:
                conn.close()
        in_netns(self.netns.name, clear)

    def close(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                try:
                    self._remove_objects()
                except Exception as e:     # still stop it and remove the rest
                    print(f"livelab {self.tag}: removing its objects: {e}", file=sys.stderr)
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
        finally:
            if self.netns is not None:
                self.netns.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "SecondLibvirtd":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

