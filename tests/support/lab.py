"""The one lab of every real-backend test and benchmark.

What a test needs to run `mecorch serve` on the real backends of this
machine without touching anything another test, a benchmark or the
machine's own mecorch holds:

- names of its own: `Names` (host id, docker network, libvirt pool and
  network, chain prefix, service link) from one tag, and free loopback
  ports and subnets (`free_port`, `free_subnet`);
- a private config with the driver defaults filled in (`host_config`) in a
  private directory QEMU can reach (`private_dir`);
- the process (`Serve`): start, wait until it answers, stop or kill by its
  pid, restart on the same state, the tail of its log in every failure;
- the end: `clear` (terminate and delete what it runs and holds through
  the API), `leftovers` (what the backends still hold for a host id, by the
  owner marks mecorch puts on everything) and `remove_host` (the host's
  infrastructure: network, pool, dnsmasq, chains);
- network namespaces (`Netns`) for clients and edge sites.

Nothing here is killed or removed by name pattern alone: processes by the
pid this lab started, backend objects by the owner marks of a host id the
lab made up.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
INST = "/app_lcm/v1/app_instances"
OPS = "/app_lcm/v1/app_lcm_op_occs"
PKGS = "/app_pkgm/v1/app_packages"
VIRSH = ("virsh", "-q", "-c", "qemu:///system")

if str(REPO) not in sys.path:           # the benchmarks import this file as a script's sibling
    sys.path.insert(0, str(REPO))

from mecorch.kernel import config as mconfig          # noqa: E402
from mecorch.kernel.client import Client              # noqa: E402
from mecorch.kernel.fileutil import sha256_file       # noqa: E402


def run(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a command without a shell, capturing text output."""
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kw)


# ---------------------------------------------------------------- names, ports, nets
def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _networks_in_use() -> list:
    """Every IPv4 network a route, an address or a libvirt network of this
    machine holds (a libvirt network refuses a subnet already routed)."""
    used = []
    for line in run("ip", "-4", "route", "show", "table", "all").stdout.splitlines():
        first = line.split()[0] if line.strip() else ""
        if first[:1].isdigit():
            used.append(ipaddress.ip_network(first, strict=False))
    for line in run("ip", "-4", "-o", "addr", "show").stdout.splitlines():
        parts = line.split()
        if "inet" in parts:
            used.append(ipaddress.ip_interface(parts[parts.index("inet") + 1]).network)
    nets = run(*VIRSH, "net-list", "--all", "--name", check=False).stdout.split()
    for name in nets:
        xml = run(*VIRSH, "net-dumpxml", name, check=False).stdout
        for addr, mask in re.findall(r"<ip address='([0-9.]+)' (?:netmask|prefix)='([0-9.]+)'",
                                     xml):
            used.append(ipaddress.ip_interface(f"{addr}/{mask}").network)
    return used


def free_subnet(pool: str = "10.199.0.0/18", prefix: int = 24) -> str:
    """A /prefix inside `pool` that nothing on this machine uses, picked at
    random (several labs, benchmarks and engineers run at once). Pools in
    use: 10.199.0.0/18 VM networks, 10.93.0.0/16 service ranges,
    192.168.176.0/20 the benchmarks' VM networks."""
    used = _networks_in_use()
    subnets = list(ipaddress.ip_network(pool).subnets(new_prefix=prefix))
    start = secrets.randbelow(len(subnets))
    for i in range(len(subnets)):
        net = subnets[(start + i) % len(subnets)]
        if not any(net.overlaps(u) for u in used):
            return str(net)
    raise AssertionError(f"no free /{prefix} in {pool} on this machine")


def wait_for(pred: Callable, timeout: float, what: str, step: float = 0.1):
    """Poll `pred` until it returns something true; that value, or an
    AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


def private_dir(prefix: str) -> Path:
    """A directory of the lab's own under /var/tmp, mode 0711: QEMU runs as
    libvirt-qemu and must reach the pool under it (pytest's 0700 tmp dirs
    would shut it out)."""
    tmp = Path(tempfile.mkdtemp(prefix=f"mecorch-{prefix}-", dir="/var/tmp"))
    os.chmod(tmp, 0o711)
    return tmp


class Names:
    """Every backend name of one lab host, derived from one tag: the host
    id mecorch marks its containers, volumes and domains with, the docker
    network, the libvirt pool and network, the chain prefix (at most 14
    characters: iptables chain names are short)."""

    def __init__(self, kind: str, tag: str | None = None):
        self.tag = tag or f"{kind}{secrets.token_hex(3)}"
        self.host_id = f"h{self.tag}"
        self.network = self.pool = f"mec-{self.tag}"
        self.chain = re.sub(r"[^A-Z0-9]", "", self.tag.upper())[:14]


def host_config(names: Names, *, containers: bool = True, vms: bool = True,
                dns_port: int | None = None, cim: dict | None = None, vim: dict | None = None,
                mep: dict | None = None) -> dict:
    """One host of a lab config: the real drivers with their defaults, the
    lab's own names, and the overrides given (a list in a config overlay
    replaces the default's, so the defaults are filled in here)."""
    base = mconfig.DEFAULT["hosts"][0]
    host: dict = {"id": names.host_id}
    if containers:
        host["cim"] = {**base["cim"], "network": names.network, **(cim or {})}
    if vms:
        host["vim"] = {**base["vim"], "pool": names.pool, "network": names.network,
                       "network_cidr": free_subnet(), "accel": "tcg", **(vim or {})}
    host["mep"] = {**base["mep"], "dns_port": dns_port or free_port(),
                   "chain_prefix": names.chain, **(mep or {})}
    return host


def lab_config(workdir: Path, hosts: list[dict], **sections) -> dict:
    """A whole config: state and run dirs under the lab's directory."""
    return {"state_dir": str(workdir / "state"), "run_dir": str(workdir / "run"),
            "hosts": hosts, **sections}


# ---------------------------------------------------------------- the process
class Serve:
    """One `mecorch serve` this lab starts and stops by its pid.

    `config` is a dict (written to WORKDIR/NAME.yaml) or the path of a
    config file; `wrap` goes before the python command (e.g. `ip netns exec
    NS`); `launcher` replaces `-m mecorch.cli` with `-c CODE` (tests that
    load drivers of their own); `ready` is the GET that says it is up."""

    def __init__(self, config: dict | Path, workdir: Path, *, name: str = "serve",
                 role: str | None = None, listen: str | None = None, token: str = "",
                 wrap: tuple = (), launcher: str | None = None, env: dict | None = None,
                 preexec_fn=None, ready: str = f"{PKGS}?filter=(eq,appDId,lab-ready-probe)",
                 timeout_s: float = 60, client_timeout_s: float = 30):
        self.workdir, self.name, self.role = Path(workdir), name, role
        if isinstance(config, dict):
            self.config_path = self.workdir / f"{name}.yaml"
            self.config_path.write_text(yaml.safe_dump(config))
            self.config = config
        else:
            self.config_path = Path(config)
            self.config = yaml.safe_load(self.config_path.read_text())
        self.listen = listen or f"127.0.0.1:{free_port()}"
        self.url = f"http://{self.listen}"
        self.port = int(self.listen.rsplit(":", 1)[1])
        self.client = Client(self.url, token=token, timeout=client_timeout_s)
        self.token = token
        self.log_path = self.workdir / f"{name}.log"
        self.wrap, self.launcher, self.preexec_fn = tuple(wrap), launcher, preexec_fn
        self.env = env
        self.ready_path, self.timeout_s = ready, timeout_s
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0

    @property
    def argv(self) -> list[str]:
        program = ["-c", self.launcher] if self.launcher else ["-m", "mecorch.cli"]
        role = ["--role", self.role] if self.role else []
        return [*self.wrap, sys.executable, *program, "--config", str(self.config_path),
                "serve", *role, "--listen", self.listen]

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait: bool = True) -> float:
        """Start it; with `wait`, the seconds until it answered."""
        self.started_at = time.perf_counter()      # from the exec: start-up is measured
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=str(REPO), env=self.env, preexec_fn=self.preexec_fn)
        return self.wait_ready() if wait else 0.0

    def wait_ready(self, timeout_s: float | None = None) -> float:
        deadline = self.started_at + (timeout_s or self.timeout_s)
        while True:
            try:
                self.client.get(self.ready_path)
                return time.perf_counter() - self.started_at
            except Exception as e:  # noqa: BLE001 - not up yet, or up and refusing
                # Up and guarded, when the lab holds no token for it. With
                # one, a refusal is another process on a port free_port
                # handed out twice (ours exited "Address already in use").
                if getattr(e, "status", None) in (401, 403) and not self.token \
                        and self.proc.poll() is None:
                    return time.perf_counter() - self.started_at
                if self.proc.poll() is not None:
                    raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n"
                                         + self.log_tail()) from None
                if time.perf_counter() > deadline:
                    raise AssertionError(f"{self.name} did not answer {self.ready_path}:\n"
                                         + self.log_tail()) from None
                time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing of its own shutdown runs."""
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def stop(self, timeout_s: float = 60) -> int | None:
        """SIGTERM, then SIGKILL after `timeout_s`; its exit code."""
        if self.alive:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode if self.proc else None

    def restart(self) -> float:
        self.stop()
        return self.start()

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def __enter__(self) -> "Serve":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()



def teardown_system(procs: dict, made: dict, tmp: Path, timeout_s: float = 180) -> list[str]:
    """The end of a lab of one MEO and its MEPMs (`procs`: Serve by name,
    the MEO as "meo"; `made`: the "hosts" (host entry, config), the
    "docker_user" veths and the "netns" it made): everything through the
    MEO first, as an operator would, then what is left of each host by its
    owner marks. Returns what the backends still held after the MEO's
    cleanup."""
    meo = procs.get("meo")
    if meo and meo.alive:
        try:
            clear(meo.client, timeout_s=timeout_s)
        except Exception as e:  # noqa: BLE001 - teardown goes on; leftovers are removed below
            print("teardown through the MEO:", e)
    for p in procs.values():
        p.stop()
    left = []
    for host, cfg in made["hosts"]:
        left += leftovers(host)
        remove_host(host, cfg["state_dir"], cfg["run_dir"])
    for veth in made["docker_user"]:
        run("iptables", "-D", "DOCKER-USER", "-i", veth, "-j", "ACCEPT", check=False)
    for netns in made["netns"]:
        netns.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return left

# ---------------------------------------------------------------- through the API
def onboard_samples(client: Client, workdir: Path,
                    folders=("sample-container-app", "sample-vm-app")) -> dict:
    """The sample packages onboarded from their folders: appDId -> package."""
    from mecorch.package import build_package
    pkgs = {}
    for folder in folders:
        zpath = build_package(EXAMPLES / folder, Path(workdir) / f"{folder}.zip")
        pkg, _ = client.post(PKGS, {"appPkgName": folder, "appPkgVersion": "1.0",
                                    "appPkgPath": str(zpath),
                                    "checksum": {"algorithm": "SHA-256",
                                                 "hash": sha256_file(zpath)}})
        pkgs[pkg["appDId"]] = pkg
    return pkgs


def onboard_variant(client: Client, workdir: Path, folder: str, **appd_changes) -> dict:
    """A sample folder's package with its AppD changed (another appDId,
    other DNS rules...), built and onboarded: the package."""
    from mecorch.package import build_package
    src = Path(tempfile.mkdtemp(dir=workdir, prefix=f"{folder}-"))
    shutil.copytree(EXAMPLES / folder, src, dirs_exist_ok=True)
    appd_path = src / "Definitions" / "appd.yaml"
    appd_path.write_text(yaml.safe_dump({**yaml.safe_load(appd_path.read_text()),
                                         **appd_changes}))
    zpath = build_package(src, src.with_suffix(".zip"))
    return client.post(PKGS, {"appPkgName": appd_changes.get("appDId", folder),
                              "appPkgVersion": "1.0", "appPkgPath": str(zpath),
                              "checksum": {"algorithm": "SHA-256",
                                           "hash": sha256_file(zpath)}})[0]


def clear(client: Client, timeout_s: float = 120) -> None:
    """Terminate (forcefully) and delete every instance, then disable and
    delete every package: what a test made through the API, removed the
    way a user would."""
    for inst in client.get_all(INST):
        if inst["instantiationState"] == "INSTANTIATED":
            op, _ = client.post(f"{INST}/{inst['id']}/terminate",
                                {"terminationType": "FORCEFUL"})
            client.wait_op(op, timeout=timeout_s)
        client.call("DELETE", f"{INST}/{inst['id']}")
    for pkg in client.get_all(PKGS):
        if pkg["operationalState"] == "ENABLED":
            client.call("PATCH", f"{PKGS}/{pkg['id']}", {"operationState": "DISABLED"})
        client.call("DELETE", f"{PKGS}/{pkg['id']}")


# ---------------------------------------------------------------- clients
def dig(port: int, name: str, *, server: str = "127.0.0.1", netns: str | None = None,
        tries: int = 1, time_s: int = 1) -> str:
    """What DNS answers for `name` at `server:port` (inside `netns`), as
    `dig +short` prints it; '' when nothing answers (dig's own error lines
    are left out)."""
    pre = ("ip", "netns", "exec", netns) if netns else ()
    out = run(*pre, "dig", "+short", f"+time={time_s}", f"+tries={tries}", f"@{server}",
              "-p", str(port), name, check=False).stdout
    return "\n".join(line for line in out.splitlines() if not line.startswith(";;")).strip()


def http_get(url: str, tries: int = 50, step_s: float = 0.2) -> str:
    """The first 200 characters of a GET of `url`, retried while nothing
    answers (an app coming up); an AssertionError naming it after `tries`."""
    import urllib.request
    last = None
    for _ in range(tries):
        try:
            with urllib.request.urlopen(url, timeout=3) as r:
                return r.read(200).decode().strip()
        except OSError as e:
            last = e
            time.sleep(step_s)
    raise AssertionError(f"{url} did not answer: {last}")


# ---------------------------------------------------------------- the backends
def _docker(host_cfg: dict) -> tuple:
    cim = host_cfg.get("cim") or {}
    return ("docker", "-H", cim["docker_host"]) if cim.get("docker_host") else ("docker",)


def _domains_of(host_id: str) -> list[str]:
    """The libvirt domains mecorch made for `host_id` (its metadata)."""
    out = []
    for dom in run(*VIRSH, "list", "--all", "--name", check=False).stdout.split():
        xml = run(*VIRSH, "dumpxml", dom, check=False).stdout
        if f"host_id>{host_id}</" in xml:
            out.append(dom)
    return out


def leftovers(host_cfg: dict) -> list[str]:
    """What the backends still hold for this host id, by the owner marks
    mecorch puts on everything it makes: containers and volumes by label,
    domains by metadata, iptables rules of its chain prefix, the DNS
    files of its state. [] when the host left nothing."""
    host_id, docker = host_cfg["id"], _docker(host_cfg)
    found = []
    if host_cfg.get("cim"):
        for kind in (("ps", "-a"), ("volume", "ls")):
            ids = run(*docker, *kind, "-q", "--filter", f"label=mecorch.host={host_id}",
                      check=False).stdout.split()
            found += [f"docker {kind[0]} {i}" for i in ids]
    if host_cfg.get("vim"):
        found += [f"domain {d}" for d in _domains_of(host_id)]
    prefix = (host_cfg.get("mep") or {}).get("chain_prefix")
    if prefix:
        # an instance's rules carry its id; the host's own (mecorch:steered) stay
        found += [f"iptables {line}" for line in run("iptables-save").stdout.splitlines()
                  if line.startswith(f"-A {prefix}-")
                  and re.search(r'--comment "mecorch:[0-9a-f]{8}-', line)]
    return found


def remove_instances(host_cfg: dict) -> None:
    """Remove what a failed test left of this host's instances, by owner
    mark only (the server may be gone): containers, volumes, domains."""
    host_id, docker = host_cfg["id"], _docker(host_cfg)
    if host_cfg.get("cim"):
        for kind, rm in ((("ps", "-a"), ("rm", "-f")), (("volume", "ls"), ("volume", "rm", "-f"))):
            ids = run(*docker, *kind, "-q", "--filter", f"label=mecorch.host={host_id}",
                      check=False).stdout.split()
            if ids:
                run(*docker, *rm, *ids, check=False)
    if host_cfg.get("vim"):
        for dom in _domains_of(host_id):
            run(*VIRSH, "destroy", dom, check=False)
            run(*VIRSH, "undefine", dom, "--nvram", check=False)
            run(*VIRSH, "undefine", dom, check=False)


def remove_host(host_cfg: dict, state_dir: str | Path, run_dir: str | Path) -> None:
    """The host's infrastructure, made by mecorch under the lab's names:
    its instances' leftovers, the docker network, the libvirt network and
    pool, the MEP (both dnsmasqs, every chain of its prefix, and a service
    link marked as this host's: the default node's, or another host's, is
    never touched). Gone already is fine."""
    remove_instances(host_cfg)
    if host_cfg.get("cim"):
        run(*_docker(host_cfg), "network", "rm", host_cfg["cim"]["network"], check=False)
    if host_cfg.get("vim"):
        vim = host_cfg["vim"]
        for cmd in (("net-destroy", vim["network"]), ("net-undefine", vim["network"]),
                    ("pool-destroy", vim["pool"]), ("pool-undefine", vim["pool"])):
            run(*VIRSH, *cmd, check=False)
    mep = host_cfg.get("mep") or {}
    if mep.get("driver", "linux") == "linux" and mep.get("chain_prefix"):
        from drivers.linux_mep import LinuxMEP
        host_id = host_cfg["id"]
        LinuxMEP({**mep, "host_id": host_id,
                  "state_dir": str(Path(state_dir) / "hosts" / host_id),
                  "run_dir": str(Path(run_dir) / host_id)}).stop_services()
        remove_mep_chains(mep["chain_prefix"])
    if mep:
        for link in service_links_of(host_cfg["id"]):
            run("ip", "link", "del", link, check=False)


def service_links_of(host_id: str) -> list[str]:
    """The links marked as `host_id`'s service link (alias mecorch:host=ID)."""
    out = []
    for line in run("ip", "-o", "link", "show").stdout.splitlines():
        m = re.match(r"\d+: ([^:@]+)[:@].*\balias (\S+)", line)
        if m and m.group(2) == f"mecorch:host={host_id}":
            out.append(m.group(1))
    return out


def remove_mep_chains(prefix: str, netns: str | None = None) -> None:
    """Remove every hook jumping to a `PREFIX-*` chain and every such chain,
    in every table (what a test's MEP made: RAW, PRE, FWD, POST...). Only
    that prefix is touched: the shared service sink and other prefixes stay."""
    pre = ("ip", "netns", "exec", netns) if netns else ()
    table = None
    hooks, chains = [], []
    for line in run(*pre, "iptables-save").stdout.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(f":{prefix}-"):
            chains.append((table, line.split()[0][1:]))
        elif line.startswith("-A ") and f" -j {prefix}-" in line:
            parts = line.split()
            if not parts[1].startswith(f"{prefix}-"):
                hooks.append((table, parts[1:]))
    for table, spec in hooks:
        run(*pre, "iptables", "-w", "-t", table, "-D", *spec, check=False)
    for op in ("-F", "-X"):
        for table, chain in chains:
            run(*pre, "iptables", "-w", "-t", table, op, chain, check=False)


# ---------------------------------------------------------------- namespaces
class Netns:
    """A network namespace this lab made, with loopback up; `link()` adds a
    veth pair to the root namespace with an address on each end;
    `exec(...)` runs a command inside. `close()` deletes what it made (a
    veth end in the root namespace goes with its peer)."""

    def __init__(self, name: str | None = None):
        self.name = name or f"mecns{secrets.token_hex(3)}"
        self.links: list[str] = []
        run("ip", "netns", "add", self.name)
        self.exec("ip", "link", "set", "lo", "up")

    @classmethod
    def existing(cls, name: str) -> "Netns":
        """One this lab made earlier, known by its name (to close it)."""
        space = cls.__new__(cls)
        space.name, space.links = name, []
        return space

    def exec(self, *argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        return run("ip", "netns", "exec", self.name, *argv, check=check, **kw)

    def link(self, root_link: str, root_cidr: str, inner_cidr: str) -> str:
        """veth `root_link` (root side, `root_cidr`) to `root_link`p inside
        (`inner_cidr`): the inner end's name."""
        inner = root_link + "p"
        run("ip", "link", "add", root_link, "type", "veth", "peer", "name", inner,
            "netns", self.name)
        self.links.append(root_link)
        run("ip", "addr", "add", root_cidr, "dev", root_link)
        run("ip", "link", "set", root_link, "up")
        self.exec("ip", "addr", "add", inner_cidr, "dev", inner)
        self.exec("ip", "link", "set", inner, "up")
        return inner

    def veth_to(self, other: "Netns", link: str, mine: str, theirs: list[str]) -> None:
        """A veth pair between two namespaces: `link` here with the address
        `mine` (CIDR), `link`p in `other` with each of `theirs`, and
        `other`'s default route through this end (a client or an instance
        behind an edge namespace). Both ends go with their namespaces."""
        run("ip", "link", "add", link, "netns", self.name, "type", "veth",
            "peer", "name", link + "p", "netns", other.name)
        self.exec("ip", "addr", "add", mine, "dev", link)
        self.exec("ip", "link", "set", link, "up")
        for cidr in theirs:
            other.exec("ip", "addr", "add", cidr, "dev", link + "p")
        other.exec("ip", "link", "set", link + "p", "up")
        other.exec("ip", "route", "add", "default", "via", mine.split("/")[0])

    def close(self) -> None:
        for link in self.links:
            run("ip", "link", "del", link, check=False)
        run("ip", "netns", "del", self.name, check=False)

    def __enter__(self) -> "Netns":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Lab:
    """One single-node `mecorch serve` on the real backends with names of
    its own: the usual shape of an end-to-end test. `Lab(kind)` writes the
    config; `start()`, the API client `c`, `close()` removes everything
    (through the API first, then by owner marks) and returns the leftovers
    it found before removing them by force ([] on a clean run)."""

    def __init__(self, kind: str, *, containers: bool = True, vms: bool = True,
                 cim: dict | None = None, vim: dict | None = None, mep: dict | None = None,
                 **sections):
        self.names = Names(kind)
        self.dir = private_dir(kind)
        self.host = host_config(self.names, containers=containers, vms=vms, cim=cim, vim=vim,
                                mep=mep)
        self.cfg = lab_config(self.dir, [self.host], **sections)
        self.serve = Serve(self.cfg, self.dir)
        self.c = self.serve.client

    @property
    def host_id(self) -> str:
        return self.host["id"]

    @property
    def selected(self) -> list:
        return [{"hostId": {"id": self.host_id}}]

    def start(self) -> float:
        return self.serve.start()

    def close(self) -> list[str]:
        try:
            if not self.serve.alive:
                self.serve.start()
            clear(self.c)
        finally:
            self.serve.stop()
            left = leftovers(self.host)
            remove_host(self.host, self.cfg["state_dir"], self.cfg["run_dir"])
            shutil.rmtree(self.dir, ignore_errors=True)
        return left


class UeLab(Lab):
    """A `Lab` of containers and the Linux MEP with a service range and a
    data-plane address (`dp`), and a UE in a network namespace behind it
    (`ue`, its default route through `dp`): an edge site and one of its
    UEs. `start()` makes the namespace first; `close()` removes it last."""

    def __init__(self, kind: str, **sections):
        names_tag = secrets.token_hex(3)
        self.service = free_subnet("10.97.0.0/16", 24)
        ue_net = ipaddress.ip_network(free_subnet("10.98.0.0/16", 30))
        self.dp, self.ue_ip = (str(a) for a in ue_net.hosts())
        super().__init__(kind, vms=False, mep={
            "service_cidr": self.service, "service_interface": f"mcs{names_tag}",
            "dns_domain": "mec.local", "dns_upstream": [], "data_plane_address": self.dp},
            **sections)
        self.ue = Netns.existing(f"mcue-{names_tag}")
        self._ue_link = f"mcue{names_tag}"

    def start(self) -> float:
        self.ue = Netns(self.ue.name)
        self.ue.link(self._ue_link, f"{self.dp}/30", f"{self.ue_ip}/30")
        self.ue.exec("ip", "route", "add", "default", "via", self.dp)
        return super().start()

    def close(self) -> list[str]:
        try:
            return super().close()
        finally:
            if self._ue_link not in self.ue.links:      # start stopped half-way
                self.ue.links.append(self._ue_link)
            self.ue.close()

    def dig(self, name: str, qtype: str = "A") -> str:
        """What the MEP answers the UE for `name` on the data-plane address
        (`dig` with its status line: `status: NOERROR` and the answers)."""
        out = self.ue.exec("dig", "+noall", "+comments", "+answer", "+time=2", "+tries=2",
                           f"@{self.dp}", name, qtype, check=False).stdout
        status = re.search(r"status: (\w+)", out)
        answers = [line.split()[-1] for line in out.splitlines()
                   if line and not line.startswith(";")]
        return " ".join([status.group(1) if status else "NO-ANSWER", *answers])


# ---------------------------------------------------------------- other daemons
class Daemon:
    """A daemon of the lab's own (a registry, a dockerd on a socket of its
    own), started and stopped by its pid."""

    def __init__(self, name: str, argv: list[str], ready: Callable[[], bool], log: Path):
        self.name, self.argv, self.ready, self.log = name, argv, ready, log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self.ready():
            assert self.proc.poll() is None, f"{self.name} exited: {self.log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"{self.name} not ready"
            time.sleep(0.1)

    def stop(self, timeout: float = 60) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


def private_registry(root: Path) -> Daemon:
    """A container registry of the test's own on a free loopback port (the
    shared one on :5000 holds the same image names for other tests: a
    package deleted there would pull an image from under them)."""
    import urllib.request
    port = free_port()
    conf = root / "registry.yml"
    conf.write_text(yaml.safe_dump({
        "version": 0.1, "log": {"level": "error"},
        "storage": {"filesystem": {"rootdirectory": str(root / "registry")}},
        "http": {"addr": f"127.0.0.1:{port}"}}))

    def up() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).read()
            return True
        except OSError:
            return False
    reg = Daemon("registry", ["docker-registry", "serve", str(conf)], up, root / "registry.log")
    reg.addr = f"127.0.0.1:{port}"
    return reg


class PrivateDockerd(Daemon):
    """A dockerd of the test's own, for tests that stop and start Docker
    under a serve: its socket, data root and exec root named from `tag`
    under `root`, and a default bridge of its own on a free /24 of
    `bridge_pool` (with --bridge=none dockerd DELETES the host's docker0),
    its networks from `address_pool` (never a subnet the system dockerd
    routes), no iptables rules of its own. `host` is its -H; `remove()`
    after `stop()` takes its mounts, exec root and bridge away."""

    def __init__(self, root: Path, tag: str, bridge_pool: str, address_pool: str,
                 *extra: str):
        self.exec_root = f"/run/mecorch-{tag}"
        self.host = f"unix://{self.exec_root}.sock"
        self.data_root = root / "docker"
        self.bridge = f"mb{secrets.token_hex(4)}"
        run("ip", "link", "add", self.bridge, "type", "bridge")
        net = ipaddress.ip_network(free_subnet(bridge_pool, 24))
        run("ip", "addr", "add", f"{net[1]}/{net.prefixlen}", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        super().__init__("dockerd", [
            "dockerd", f"--host={self.host}", f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}", f"--pidfile={self.exec_root}.pid",
            f"--bridge={self.bridge}", "--iptables=false",
            "--default-address-pool", f"base={address_pool},size=24", *extra],
            lambda: run("docker", "-H", self.host, "version", check=False).returncode == 0,
            root / "dockerd.log")

    def containers(self) -> list[str]:
        return run("docker", "-H", self.host, "ps", "-aq").stdout.split()

    def remove(self) -> None:
        # dockerd bind-mounts its data root on itself and leaves the mount
        # (same device: os.path.ismount cannot tell; umount says no if not)
        for path in (str(self.data_root), self.exec_root):
            run("umount", path, check=False)
        shutil.rmtree(self.exec_root, ignore_errors=True)
        run("ip", "link", "del", self.bridge, check=False)
