"""LinuxMEP: DNS rules in mecorch's dnsmasq, traffic rules in iptables.

Config keys (the `mep` section, declared in `settings.SCHEMA`; a section
built by hand gets the constructor's defaults, not the schema's): dns_listen,
dns_port, dns_ttl (default 0), dns_user (default root; another user gets the
hostsdir and its files, 0700/0600, and search permission only on the state
dirs above it, which are 0700 otherwise: DNS rules are no one else's to read),
chain_prefix, netns (optional: run
iptables and dnsmasq inside this existing network namespace, through
`ip netns exec NS ...`), service_cidr, dns_domain, dns_upstream (servers
for names that are no DNS rule; none: refused), data_plane_address (the
UE-side address DNS is answered on), state_dir, run_dir, host_id.

Where DNS rules are answered: dns_listen:dns_port (the control listener),
and port 53 of the data-plane address and of the addresses the core names
with `serve_dns_on` (the app networks' gateways: what containers and VMs
are given as resolver).

Files: <state_dir>/dns/hosts.d/<instance id> (one per instance with ACTIVE
DNS rules), <state_dir>/dns/servers.conf (the held names outside dns_domain,
answered only here), <run_dir>/dnsmasq.pid, <run_dir>/dnsmasq.log,
<run_dir>/dnsmasq-clients.pid, <run_dir>/dnsmasq-clients.log, <run_dir>/mep.lock.

apply_rules is all-or-nothing across both backends: everything is validated
and rendered first (nothing touched on error); the new DNS file is staged
invisibly; iptables-restore applies the instance's chains; only then is the
DNS file renamed into place. If iptables fails, the staged file is dropped
and the instance's chains are put back as they were (iptables-nft commits
each table of one restore separately, so a failure in nat can follow a
committed raw); if the rename fails, the chains are put back too.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import subprocess
import threading
from pathlib import Path
from typing import Any, Iterator

from mecorch.kernel import fileutil, validate
from mecorch.driverapi.contracts import (
    Capabilities, DnsOnAppNetworks, PlatformDriver, RuleAudit, Uninstallable)
from mecorch.kernel.errors import (
    BackendError, BackendUnavailable, InvalidInput, MecorchError, Timeout)
from mecorch.driverapi.model import Check
from mecorch.spec.rules import DnsRule, TrafficRule, unique_ids

from . import dnsmasq, iptables, settings

CMD_TIMEOUT_S = 15
# From this many instances with chains on, a change reads its chains one by
# one instead of a whole iptables-save (LinuxMEP._read; the crossover measured
# with bench/mep_rule_latency.py lies between 100 and 1,000)
READ_BY_CHAIN_AT = 250
log = logging.getLogger("mecorch.mep.linux")
# The mark on a service link: the host that made it (`ip link ... alias`)
LINK_MARK = "mecorch:host="
CLIENT_DNS_PORT = 53        # resolvers given by DHCP or Docker's dns option have no port


@contextlib.contextmanager
def _backend(what: str) -> Iterator[None]:
    """The one place where OS and subprocess failures become mecorch errors."""
    try:
        yield
    except MecorchError:
        raise
    except FileNotFoundError as e:
        raise BackendUnavailable(f"{what}: {e.filename or e} not found (is it installed?)") from None
    except subprocess.TimeoutExpired as e:
        raise Timeout(f"{what}: {e.cmd[0] if e.cmd else 'command'} timed out") from None
    except subprocess.CalledProcessError as e:
        err = (e.stderr or e.stdout or "").strip()[-800:]
        raise BackendError(f"{what}: {' '.join(e.cmd[:6])} failed (exit {e.returncode}): {err}") from None
    except OSError as e:
        raise BackendError(f"{what}: {e.strerror or e} ({e.filename or ''})") from None


class LinuxMEP(PlatformDriver, RuleAudit, DnsOnAppNetworks, Uninstallable):
    kind = "mep"

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)
        # Only validation and paths here: no files, no processes.
        self.host_id = validate.ident(config.get("host_id", "default"), "mep.host_id")
        # Names of what this MEP makes on the machine: the section's, else
        # the host's own (a section built by hand, as the configuration does)
        own = settings.per_host(self.host_id)
        self.prefix = iptables.check_prefix(config.get("chain_prefix") or own["chain_prefix"])
        self.netns = config.get("netns")
        if self.netns is not None:
            validate.ident(self.netns, "mep.netns")
        self.dns_listen = validate.ip_address(config.get("dns_listen", "127.0.0.1"), "mep.dns_listen")
        self.dns_port = validate.port(config.get("dns_port", 5353), "mep.dns_port")
        self.dns_ttl = validate.integer(config.get("dns_ttl", 0), "mep.dns_ttl", 0, 2**31 - 1)
        self.dns_user = validate.ident(config.get("dns_user", "root"), "mep.dns_user")
        upstream = config.get("dns_upstream")
        upstream = [] if upstream is None else upstream
        if not isinstance(upstream, list) or len(upstream) > 8:
            raise InvalidInput("mep.dns_upstream: must be a list of at most 8 IP addresses")
        self.dns_upstream = tuple(validate.ip_address(u, f"mep.dns_upstream[{i}]")
                                  for i, u in enumerate(upstream))
        domain = config.get("dns_domain")
        self.dns_domain = None if domain is None else validate.domain_name(domain,
                                                                          "mep.dns_domain")
        dp = config.get("data_plane_address")
        self.data_plane_address = None if dp is None else validate.ip_address(
            dp, "mep.data_plane_address")
        self._client_addresses = [self.data_plane_address] if self.data_plane_address else []
        # Opened by a serve (its dnsmasq is meant to run): a dead one is a
        # failed check, which the reconcile round answers by opening again.
        # Not opened (doctor): the check only probes that one could run.
        self._opened = False
        # Steered service addresses (the VIPs traffic rules DNAT from) get a
        # route into a port-less bridge (a sink; the `dummy` link type is not
        # in every kernel, `bridge` is wherever Docker runs): traffic to a VIP
        # whose rule is gone dies on this host instead of following the
        # default route out.
        cidr = config.get("service_cidr")
        self.service_cidr = validate.network(cidr, "mep.service_cidr") if cidr else None
        self.service_if = config.get("service_interface") or own["service_interface"]
        settings.check_section({"chain_prefix": self.prefix, "service_interface": self.service_if})
        state_dir = Path(validate.text(config.get("state_dir", "/var/lib/mecorch"), "mep.state_dir", 1024))
        run_dir = Path(validate.text(config.get("run_dir", "/run/mecorch"), "mep.run_dir", 1024))
        self.hosts_dir = state_dir / "dns" / "hosts.d"
        # the held names outside the MEC domain, kept local (dnsmasq.py)
        self.servers_file = state_dir / "dns" / "servers.conf"
        self.run_dir = run_dir
        self.pid_file = run_dir / "dnsmasq.pid"
        self.log_file = run_dir / "dnsmasq.log"
        self.clients_pid_file = run_dir / "dnsmasq-clients.pid"
        self.clients_log_file = run_dir / "dnsmasq-clients.log"
        self._lock = threading.Lock()
        self._applied: dict[str, dict] = {}     # instance -> traffic rule lines it last got
        # "address name" line -> instances whose DNS file holds it: read from
        # the hostsdir once (the first change of a file), then kept by each
        # change, so a change finds the replicas sharing a line without
        # reading every file (~12 ms at 1,000 instances)
        self._dns_index: dict[str, set[str]] | None = None
        self._held = 0                          # instances with chains, as last read

    # -- plumbing ------------------------------------------------------------------
    def _dns_owner(self) -> tuple[int, int] | None:
        """(uid, gid) of mep.dns_user when dnsmasq runs as another user than
        this process, else None."""
        if self.dns_user == "root":
            return None
        import pwd
        try:
            pw = pwd.getpwnam(self.dns_user)
        except KeyError:
            raise InvalidInput(f"mep.dns_user: no user {self.dns_user!r}") from None
        return None if pw.pw_uid == os.geteuid() else (pw.pw_uid, pw.pw_gid)

    def _share_hosts_dir(self) -> None:
        """The hostsdir 0700, its files 0600: this process's, or given to
        an unprivileged dnsmasq (which then may search the dirs above it)."""
        os.chmod(self.hosts_dir, 0o700)
        owner = self._dns_owner()
        if owner is None:
            return
        for p in [self.hosts_dir, *self.hosts_dir.iterdir()]:
            os.chown(p, *owner, follow_symlinks=False)
        fileutil.let_others_search(self.hosts_dir.parent)


    def _argv(self, *argv: str) -> list[str]:
        return (["ip", "netns", "exec", self.netns] if self.netns else []) + list(argv)

    def _run(self, *argv: str, input: str | None = None) -> str:
        return subprocess.run(self._argv(*argv), input=input, capture_output=True, text=True,
                              check=True, timeout=CMD_TIMEOUT_S).stdout

    def _save(self) -> iptables.Saved:
        # One iptables-save of every table: one fork instead of one per table.
        return iptables.parse_save(self._run("iptables-save"))

    def _read(self, instance_id: str) -> iptables.Saved:
        """What one instance's change reads. `transition`, `current` and
        `matches` of an instance look only at the hooks, mecorch's top chain
        and the instance's chain: with few instances one iptables-save is
        the cheapest way to read them (one fork); it grows with every
        instance's chains (~60 ms with 1,000 holding rules), while listing
        those chains alone costs the same at any size (~20 ms, 8 forks). The
        size is known from the last read (the jumps of the top chain)."""
        if self._held < READ_BY_CHAIN_AT:
            saved = self._save()
        else:
            saved = self._read_chains(instance_id)
        self._held = len(saved.get("nat", {}).get(iptables.top_chain(self.prefix, "nat"), []))
        return saved

    def _read_chains(self, instance_id: str) -> iptables.Saved:
        """Per table: the hooks, the top chain and the instance's chain, each
        listed alone (`iptables -S CHAIN`), in iptables-save's form."""
        chain = iptables.instance_chain(self.prefix, instance_id)
        saved: iptables.Saved = {}
        for table in iptables.TABLES:
            got = saved[table] = {}
            for name in (*iptables.HOOKS, iptables.top_chain(self.prefix, table), chain):
                lines = self._list_chain(table, name, builtin=name in iptables.HOOKS)
                if lines is not None:
                    got[name] = lines
        return saved

    def _list_chain(self, table: str, chain: str, builtin: bool) -> list[str] | None:
        """The chain's rule lines ("-A ...", as iptables-save prints them), or
        None when it does not exist (never for a built-in hook: that is an
        error, e.g. a table iptables cannot read)."""
        try:
            out = self._run("iptables", "-w", "5", "-t", table, "-S", chain)
        except subprocess.CalledProcessError as e:
            # legacy: "No chain/target/match by that name"; nf_tables: "chain
            # `X' in table `nat' is incompatible" (its words for a missing chain too)
            if e.returncode == 1 and not builtin and (
                    "No chain/target/match" in e.stderr or "is incompatible" in e.stderr):
                return None
            raise
        return [line for line in out.splitlines() if line.startswith("-A ")]

    def _restore(self, text: str) -> None:
        if text:
            self._run("iptables-restore", "-w", "5", "--noflush", input=text)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One rule change at a time, across threads and processes: each
        change reads iptables-save and then writes from what it read."""
        with self._lock:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / "mep.lock", "w") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                yield

    def capabilities(self) -> Capabilities:
        return Capabilities(manner=None)

    # -- lifecycle -------------------------------------------------------------------

    def open(self) -> None:
        """Make the top chains and hooks exist, the hostsdir, and a running
        dnsmasq (started unless our pid file names a live one)."""
        with _backend("mep open"), self._exclusive():
            self.hosts_dir.mkdir(parents=True, exist_ok=True)
            self._share_hosts_dir()
            self._restore(iptables.base_text(self._save(), self.prefix, self.service_cidr))
            if self.service_cidr:
                self._ensure_service_route()
            self._keep_local()      # before a start: dnsmasq reads it at once
            if dnsmasq.live_pid(self.pid_file) is None:
                dnsmasq.start(self._argv(*self._dnsmasq_argv(
                    self.pid_file, self.log_file, self.dns_listen, self.dns_port)), self.pid_file)
            try:
                # One already running (e.g. from before a restart of mecorch)
                # is kept as it is: serve_dns_on sets the exact addresses.
                if dnsmasq.live_pid(self.clients_pid_file) is None:
                    self._ensure_clients_dnsmasq()
            except BackendError as e:
                # The rules still work (and are answered on dns_listen); the
                # doctor check shows why the clients' listener is missing.
                log.warning("DNS for apps and UEs not served: %s", e.detail)
            self._opened = True

    def _dnsmasq_argv(self, pid_file: Path, log_file: Path, listen, port: int,
                      dynamic: bool = False) -> list[str]:
        return dnsmasq.argv(pid_file=pid_file, hosts_dir=self.hosts_dir, log_file=log_file,
                            listen=listen, port=port, local_ttl=self.dns_ttl,
                            user=self.dns_user, upstream=self.dns_upstream,
                            domain=self.dns_domain, dynamic=dynamic,
                            servers_file=self.servers_file)

    def serve_dns_on(self, addresses: list[str]) -> None:
        """Answer DNS rules on port 53 of `addresses` (the app networks'
        gateways) as well as on the data-plane address. Restarts the
        clients' dnsmasq only when the set of addresses changes."""
        wanted = [validate.ip_address(a, "address") for a in addresses]
        if self.data_plane_address:
            wanted.append(self.data_plane_address)
        wanted = sorted(set(wanted))
        with _backend("serve DNS on the app networks"), self._exclusive():
            self._client_addresses = wanted
            self._ensure_clients_dnsmasq()

    def _ensure_clients_dnsmasq(self) -> None:
        """The clients' dnsmasq runs with exactly the wanted addresses (and
        not at all without any). Called with the lock held."""
        pid = dnsmasq.live_pid(self.clients_pid_file)
        if not self._client_addresses:
            if pid is not None:
                dnsmasq.stop(self.clients_pid_file)
            return
        cmd = self._argv(*self._dnsmasq_argv(self.clients_pid_file, self.clients_log_file,
                                             self._client_addresses, CLIENT_DNS_PORT,
                                             dynamic=True))
        running = dnsmasq.cmdline(pid) if pid is not None else []
        if running and running == cmd[-len(running):]:
            return
        if pid is not None:
            dnsmasq.stop(self.clients_pid_file)
        dnsmasq.start(cmd, self.clients_pid_file)

    def client_dns_addresses(self) -> list[str]:
        """Where the clients' dnsmasq answers (port 53)."""
        return list(self._client_addresses)

    def _link_mark(self, link: str) -> str | None:
        """The host id a link is marked with ('' unmarked; None: no link)."""
        try:
            out = self._run("ip", "-o", "link", "show", "dev", link)
        except subprocess.CalledProcessError:
            return None
        m = re.search(r"\balias (\S+)", out)
        return m.group(1)[len(LINK_MARK):] if m and m.group(1).startswith(LINK_MARK) else ""

    def _ensure_service_route(self) -> None:
        """The service range routed into this host's sink link, made and
        marked as this host's when missing. A range already routed into
        another mecorch service link (another host's on this machine, one
        configured to share it, or the default node's from before links
        were marked) is left as it is: its traffic already dies there, and
        taking the route would leave it with the other's teardown."""
        route = self._run("ip", "-o", "route", "show", "exact", self.service_cidr).split()
        via = route[route.index("dev") + 1] if "dev" in route[:-1] else None
        if via and via != self.service_if and (via == "mecorch-svc" or self._link_mark(via)):
            log.warning("service range %s is routed to %s, which another mecorch host made: "
                        "not making %s (give mep.service_cidr a range of its own)",
                        self.service_cidr, via, self.service_if)
            return
        mark = self._link_mark(self.service_if)
        if mark is None:
            self._run("ip", "link", "add", self.service_if, "type", "bridge")
            mark = ""
        if mark == "":
            # ours now (made here, or an unmarked one of our name: the default
            # node's from before links were marked)
            self._run("ip", "link", "set", self.service_if, "alias", LINK_MARK + self.host_id)
        self._run("ip", "link", "set", self.service_if, "up")
        self._run("ip", "route", "replace", self.service_cidr, "dev", self.service_if)

    def close(self) -> None:
        """Nothing to release: the driver holds no connection, and dnsmasq
        is meant to outlive the process (see stop_services)."""

    def stop_services(self) -> bool:
        """Stop the dnsmasq mecorch started (the one its pid file names,
        verified by command line), for tests and shutdown. Rules and chains
        are kept. True if one was running."""
        with _backend("mep stop"):
            clients = dnsmasq.stop(self.clients_pid_file)
            return dnsmasq.stop(self.pid_file) or clients

    def uninstall(self, keep: dict[str, tuple[str, ...]] | None = None) -> list[str]:
        """Remove what this MEP made for its host: both dnsmasq processes
        (its run dir's), its hostsdir files, every hook and chain of its
        prefix (all instances' rules) and its service link (with its route),
        but only the link marked as this host's, and neither chains nor link
        while `keep` names their key (`chain_prefix`, `service_interface`:
        another configured host names them too; the value says which). For
        tests and decommissioning (`mecorch host teardown`). Says what, a
        line each; "kept ..." for what it left and why."""
        keep = keep or {}
        self.stop_services()
        done = []
        with _backend("mep uninstall"), self._exclusive():
            if "chain_prefix" in keep:
                done.append(f"kept iptables chains {self.prefix}-*: {_users(keep['chain_prefix'])}")
            else:
                self._restore(iptables.teardown_text(self._save(), self.prefix))
                done.append(f"iptables chains {self.prefix}-* and their hooks")
            if self.hosts_dir.is_dir():
                for name in os.listdir(self.hosts_dir):
                    (self.hosts_dir / name).unlink(missing_ok=True)
            self.servers_file.unlink(missing_ok=True)
            self._dns_index = None
            done.append(f"its dnsmasq and DNS files ({self.run_dir}, {self.hosts_dir})")
            mark = self._link_mark(self.service_if)
            if "service_interface" in keep and mark is not None:
                if mark in ("", self.host_id):
                    # handed over: the next host's teardown may remove it
                    self._run("ip", "link", "set", self.service_if, "alias",
                              LINK_MARK + keep["service_interface"][0])
                done.append(f"kept service link {self.service_if}: {_users(keep['service_interface'])}")
            elif mark == self.host_id:
                self._run("ip", "link", "del", self.service_if)
                done.append(f"service link {self.service_if}")
            elif mark is not None:
                done.append(f"kept service link {self.service_if}: " + (
                    f"marked as host {mark!r}'s" if mark else "not marked as this host's"))
        return done

    def dnsmasq_pid(self) -> int | None:
        return dnsmasq.live_pid(self.pid_file)

    # -- rules -------------------------------------------------------------------------

    def _validate(self, instance_id, target_ip, traffic_rules, dns_rules, shares=None):
        validate.ident(instance_id, "instance_id")
        if shares is not None:
            if not isinstance(shares, dict):
                raise InvalidInput("shares: must be a mapping of traffic rule id to replica ids")
            for rid, peers in shares.items():
                if not isinstance(peers, (list, tuple)) or \
                        list(peers) != sorted(set(peers)):
                    raise InvalidInput(f"shares[{rid}]: must list replica ids once each, "
                                       f"ascending (the order connections visit them)")
                for i, peer in enumerate(peers):
                    validate.ident(peer, f"shares[{rid}][{i}]")
        validate.ip_address(target_ip, "target_ip")
        for name, rules, cls in (("traffic_rules", traffic_rules, TrafficRule),
                                 ("dns_rules", dns_rules, DnsRule)):
            if not isinstance(rules, (list, tuple)) or not all(isinstance(r, cls) for r in rules):
                raise InvalidInput(f"{name}: must be a list of mecorch.spec.rules.{cls.__name__}")
        unique_ids(traffic_rules, "traffic_rule_id", "trafficRules")
        unique_ids(dns_rules, "dns_rule_id", "dnsRules")

    def apply_rules(self, instance_id: str, target_ip: str,
                    traffic_rules: list, dns_rules: list, shares=None) -> None:
        self._validate(instance_id, target_ip, traffic_rules, dns_rules, shares)
        # Render everything before touching anything: an unsupported or
        # malformed rule stops here with nothing changed.
        desired = iptables.render_instance(self.prefix, instance_id, target_ip,
                                           list(traffic_rules), shares)
        peers = _peers(shares)
        dnsmasq.check_ttls(list(dns_rules), self.dns_ttl)
        hosts = dnsmasq.render_hosts(instance_id, list(dns_rules))
        with _backend(f"apply rules of {instance_id}"), self._exclusive():
            self.hosts_dir.mkdir(parents=True, exist_ok=True)
            saved = self._read(instance_id)
            before = iptables.current(saved, self.prefix, instance_id)
            # A change of DNS rules only (the traffic rules this process last
            # applied, and iptables still shows that many lines in the
            # instance's chains and its jumps): no iptables-restore at all.
            unchanged = (self._applied.get(instance_id) == desired
                         and iptables.matches(saved, self.prefix, instance_id, desired, peers))
            change = "" if unchanged else iptables.transition(saved, self.prefix, instance_id,
                                                              desired, peers)
            old_hosts = dnsmasq.read(self.hosts_dir, instance_id)
            staged = dnsmasq.stage(self.hosts_dir, instance_id, hosts, self._dns_owner())
            try:
                self._restore(change)
                dnsmasq.commit(self.hosts_dir, instance_id, staged)
            except BaseException:
                self._applied.pop(instance_id, None)
                dnsmasq.discard(staged)
                self._put_back(instance_id, before)
                raise
            self._applied[instance_id] = desired
            if old_hosts != hosts:
                self._dns_changed(instance_id, old_hosts, hosts)

    def _dns_changed(self, instance_id: str, old_hosts: str, hosts: str) -> None:
        """The instance's DNS file went from `old_hosts` to `hosts` ('':
        removed). dnsmasq keeps one entry for a name and address that
        several hostsdir files hold (the first file read), and flushes it
        with that file (measured with 2.90): when replicas share a name,
        removing or changing one replica's file would leave the others'
        name unanswered. So each other file holding one of the lines the
        old file held is made to be read again (renamed onto itself, same
        text); dnsmasq re-reads a renamed-in file at once. Called with the
        lock held."""
        if self._dns_index is None:
            self._dns_index = dnsmasq.index(self.hosts_dir)
        old, new = dnsmasq.entries(old_hosts), dnsmasq.entries(hosts)
        for line in old - new:
            self._dns_index.get(line, set()).discard(instance_id)
        for line in new:
            self._dns_index.setdefault(line, set()).add(instance_id)
        others = {o for line in old for o in self._dns_index.get(line, ())} - {instance_id}
        for other in sorted(others):
            try:
                dnsmasq.reread(self.hosts_dir, other, self._dns_owner())
            except OSError as e:
                # the instance's own change is made; the other's name is
                # answered again when its file is next written
                log.warning("DNS file of %s not read again after %s's changed: %s",
                            other, instance_id, e)
        try:
            self._keep_local()
        except OSError as e:
            # the change is made; the list is written again at the next
            # change or open (until then a held name's other record types
            # may still be asked upstream)
            log.warning("DNS names outside the MEC domain not made local after %s's "
                        "change: %s", instance_id, e)

    def _keep_local(self) -> None:
        """The servers file lists the names the hostsdir holds outside the
        MEC domain (answered here only: dnsmasq.py); when the list changed,
        both dnsmasqs read it again. Called with the lock held."""
        if self._dns_index is None:
            self._dns_index = dnsmasq.index(self.hosts_dir)
        text = dnsmasq.render_servers(dnsmasq.held_names(self._dns_index, self.dns_domain))
        try:
            if self.servers_file.read_text(encoding="ascii") == text:
                return
        except FileNotFoundError:
            pass
        dnsmasq.write_file(self.servers_file, text, self._dns_owner())
        for pid_file in (self.pid_file, self.clients_pid_file):
            dnsmasq.reload(pid_file)

    def _put_back(self, instance_id: str, before: dict[str, list[str]]) -> None:
        """Best effort: return the instance's chains to `before` after a
        failed change (the original error is what the caller sees)."""
        with contextlib.suppress(Exception):
            self._restore(iptables.transition(self._read(instance_id), self.prefix, instance_id,
                                              before))

    def remove_rules(self, instance_id: str) -> None:
        validate.ident(instance_id, "instance_id")
        with _backend(f"remove rules of {instance_id}"), self._exclusive():
            # This process left the instance with no chains (it was applied
            # without traffic rules, a DNS name alone or nothing): no
            # iptables-save to find nothing. Unknown (another life of the
            # process, a failed change): read and remove what is there.
            if self._applied.pop(instance_id, None) != {}:
                self._restore(iptables.transition(self._read(instance_id), self.prefix,
                                                  instance_id, {}))
            old_hosts = dnsmasq.read(self.hosts_dir, instance_id)
            dnsmasq.commit(self.hosts_dir, instance_id, None)
            (self.hosts_dir / f".{instance_id}.tmp").unlink(missing_ok=True)
            if old_hosts:
                self._dns_changed(instance_id, old_hosts, "")

    def snapshot(self) -> iptables.Saved:
        """One iptables-save, for several `rules_applied` questions in a row
        (a reconciliation round asks for every instance: one fork per round,
        not one per instance)."""
        with _backend("read rules"):
            return self._save()

    def rules_applied(self, instance_id: str, target_ip: str,
                      traffic_rules: list, dns_rules: list,
                      saved: iptables.Saved | None = None, shares=None) -> bool:
        """The instance's rules are in place as `apply_rules` leaves them
        (its chains with that many lines, the same replica parts, and their
        jumps in order among its replicas; its DNS file with that text).
        Reconciliation asks before applying again: after a host reboot the
        chains are gone while the DNS files remain. `saved`: a `snapshot()`
        to read instead of a new iptables-save."""
        self._validate(instance_id, target_ip, traffic_rules, dns_rules, shares)
        desired = iptables.render_instance(self.prefix, instance_id, target_ip,
                                           list(traffic_rules), shares)
        hosts = dnsmasq.render_hosts(instance_id, list(dns_rules))
        with _backend(f"check rules of {instance_id}"):
            if not iptables.matches(saved if saved is not None else self._save(), self.prefix,
                                    instance_id, desired, _peers(shares)):
                return False
            try:
                return (self.hosts_dir / instance_id).read_text(encoding="ascii") == hosts
            except FileNotFoundError:
                return hosts == ""

    def rule_owners(self) -> set[str]:
        with _backend("list rule owners"):
            found = set(iptables.owners(self._save(), self.prefix))
            if self.hosts_dir.is_dir():
                for name in os.listdir(self.hosts_dir):
                    with contextlib.suppress(InvalidInput):
                        found.add(validate.ident(name, "file"))   # skips .tmp dot-files
            return found

    def chains_text(self) -> str:
        """mecorch's chains and hooks as iptables-save shows them (for
        before/after comparisons and doctor)."""
        with _backend("read chains"):
            return iptables.our_chains(self._save(), self.prefix)

    # -- doctor ------------------------------------------------------------------------

    def check(self) -> list[Check]:
        return [self._check("mep: dnsmasq", self._check_dnsmasq,
                            "apt-get install dnsmasq-base"),
                self._check("mep: iptables", self._check_iptables,
                            "apt-get install iptables; run as root"
                            + (f"; create the netns: ip netns add {self.netns}" if self.netns else "")),
                self._check("mep: dnsmasq running", self._check_running,
                            f"free {self.dns_listen}:{self.dns_port} (mep.dns_port) or give "
                            f"the host another; see " + str(self.log_file)),
                self._check("mep: DNS for apps and UEs", self._check_clients,
                            "free port 53 on those addresses; see " + str(self.clients_log_file))]

    @staticmethod
    def _check(name: str, probe, fix: str) -> Check:
        try:
            return Check(name, True, probe())
        except Exception as e:          # doctor never raises
            return Check(name, False, str(e), fix)

    def _check_dnsmasq(self) -> str:
        with _backend("dnsmasq --version"):
            out = subprocess.run(["dnsmasq", "--version"], capture_output=True, text=True,
                                 check=True, timeout=CMD_TIMEOUT_S).stdout
        return out.splitlines()[0] if out else "dnsmasq (no version)"

    def _check_iptables(self) -> str:
        with _backend("iptables"):
            version = self._run("iptables", "--version").strip()
            self._run("iptables-save", "-t", "nat")       # usable, not just installed
        m = re.search(r"\((\w+)\)", version)
        return f"{version}; backend {m.group(1) if m else 'legacy'}" + (
            f"; netns {self.netns}" if self.netns else "")

    def _check_clients(self) -> str:
        if not self._client_addresses:
            return "no app network or data-plane address to serve (yet)"
        pid = dnsmasq.live_pid(self.clients_pid_file)
        if pid is None:
            raise BackendError(f"no live dnsmasq in {self.clients_pid_file} for "
                               f"{', '.join(self._client_addresses)}:{CLIENT_DNS_PORT}")
        return f"pid {pid}, port {CLIENT_DNS_PORT} on {', '.join(self._client_addresses)}"

    def _check_running(self) -> str:
        pid = dnsmasq.live_pid(self.pid_file)
        if pid is not None:
            return f"pid {pid}, {self.dns_listen}:{self.dns_port}, ttl {self.dns_ttl}"
        if self._opened:
            raise BackendError(f"the dnsmasq of {self.dns_listen}:{self.dns_port} is not running "
                               f"(no live process in {self.pid_file})")
        # Not running (no `mecorch serve` has opened this MEP): start one
        # as serve would, on the same address and port, in a directory of
        # its own, and stop it by its pid: it can bind, and nothing is left.
        import tempfile
        with tempfile.TemporaryDirectory(prefix="mecorch-doctor-") as tmp:
            probe = Path(tmp)
            (probe / "hosts.d").mkdir()
            cmd = dnsmasq.argv(pid_file=probe / "dnsmasq.pid", hosts_dir=probe / "hosts.d",
                               log_file=probe / "dnsmasq.log", listen=self.dns_listen,
                               port=self.dns_port, local_ttl=self.dns_ttl, user="root",
                               upstream=self.dns_upstream, domain=self.dns_domain)
            with _backend("dnsmasq probe"):
                probe_pid = dnsmasq.start(self._argv(*cmd), probe / "dnsmasq.pid")
                dnsmasq.stop(probe / "dnsmasq.pid")
        return (f"not running (`mecorch serve` starts it); a probe dnsmasq (pid {probe_pid}) "
                f"started on {self.dns_listen}:{self.dns_port} and was stopped")


def _peers(shares) -> tuple[str, ...]:
    """Every replica the shares name (whose jumps this one's must follow in
    id order)."""
    return tuple(sorted({p for peers in (shares or {}).values() for p in peers}))


def _users(hosts) -> str:
    """Why an object is kept: the other configured hosts naming it."""
    return f"host(s) {', '.join(hosts)} of the configuration use it too"
