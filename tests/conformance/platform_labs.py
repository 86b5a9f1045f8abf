"""One lab per PlatformDriver backend for the platform conformance suite.

A lab makes an opened driver on its own corner of the backend and knows:

- `target(n)`          the address of instance n (0 or 1) rules steer to
- `rule_ids(iid)`      the rule ids of the instance the backend holds, read
                       from the backend: {"traffic": {...}, "dns": {...}}
- `answers(name, expect)` the address the MEP's DNS answers for name ('' for
                       none), waiting a moment for `expect`
- `reaches(address)`   the instance address a connection to `address`
                       reaches, None when it reaches none
- `spread(address, n)` a Counter of the instance addresses n new
                       connections to `address` reach (None: none)
- `unexpressible()`    a valid traffic rule the backend cannot express
- `unconnected()`      a driver built on a new corner of the backend, not
                       opened, and a probe listing what of it the backend holds
- `broken()`           a driver whose backend cannot be used
- `fresh()`            a new driver on the same config (a restart), opened
- `teardown()`         remove whatever the lab made, even after a failure

The LinuxMEP lab runs real iptables and a real dnsmasq inside network
namespaces it makes (tests/support/netns.py's topology): DNS
is observed with dig and traffic with HTTP from the client namespace. The
fake lab runs the same cases on the in-memory FakeMep the core tests use,
with a model of what its rules would do.
"""

from __future__ import annotations

from pathlib import Path

from mecorch.spec.rules import DnsRule, TrafficRule

from support import netns
from support.netns import INSTANCE_A, INSTANCE_B, SERVICE, dns, forward   # noqa: F401

TARGETS = (INSTANCE_A, INSTANCE_B)
# a second service address that exists nowhere, for a second instance
SERVICE_B = "10.231.3.81"


class Lab:
    name = ""

    def __init__(self, uid: str, tmp: Path):
        self.uid, self.tmp = uid, tmp
        self.drivers: list = []

    def _keep(self, drv):
        self.drivers.append(drv)
        return drv

    @staticmethod
    def target(n: int) -> str:
        return TARGETS[n]

    def spread(self, address: str, n: int):
        import collections
        return collections.Counter(self.reaches(address) for _ in range(n))

    @staticmethod
    def unexpressible() -> TrafficRule:
        return forward("enc", action="FORWARD_ENCAPSULATED")


# ---------------------------------------------------------------- fake
class FakeLab(Lab):
    name = "fake"

    def make(self):
        from support.fakes import FakeMep
        self.backend: dict = {}
        self.drv = self._keep(FakeMep(self.backend, frozenset({"FORWARD_ENCAPSULATED"})))
        self.drv.open()
        return self.drv

    def _active(self, iid: str) -> tuple[str, list[TrafficRule], list[DnsRule]]:
        target, traffic, dns_rules = self.backend.get(iid, (None, [], []))
        return target, [r for r in traffic if r.active], [r for r in dns_rules if r.active]

    def rule_ids(self, iid):
        _, traffic, dns_rules = self._active(iid)
        return {"traffic": {r.traffic_rule_id for r in traffic},
                "dns": {r.dns_rule_id for r in dns_rules}}

    def answers(self, name, expect=""):
        for iid in self.backend:
            for r in self._active(iid)[2]:
                if r.domain_name == name:
                    return r.ip_address
        return ""

    def reaches(self, address):
        """A model of the contract: instances visited in ascending id; a
        shared FORWARD rule takes its replica's part (1/(n-k)) and passes
        the rest on to the next instance."""
        import random
        for iid in sorted(self.backend):
            target, traffic, _ = self._active(iid)
            for r in sorted(traffic, key=lambda r: r.priority):
                if any(address in f.dst_address for f in r.traffic_filter):
                    if r.action != "FORWARD_DECAPSULATED":
                        return None
                    peers = self.drv.shares.get(iid, {}).get(r.traffic_rule_id, ())
                    if len(peers) > 1 and random.random() >= 1 / (len(peers) - peers.index(iid)):
                        break
                    return target
        return None

    def unconnected(self):
        from support.fakes import FakeMep
        backend: dict = {}
        return self._keep(FakeMep(backend)), lambda: [f"rules of {i}" for i in backend]

    def broken(self):
        from support.fakes import FakeMep
        drv = self._keep(FakeMep({}))
        drv.down = True
        return drv

    def fresh(self):
        from support.fakes import FakeMep
        drv = self._keep(FakeMep(self.backend, self.drv.cannot_express))
        drv.open()
        return drv

    def teardown(self):
        for d in self.drivers:
            d.close()


# ---------------------------------------------------------------- LinuxMEP
class LinuxLab(Lab):
    """Three namespaces (client, edge, instance) per test: the MEP's
    iptables and dnsmasq live in the edge namespace, with this test's own
    chain prefix, state and run directories."""
    name = "linux"

    def make(self):
        from drivers.linux_mep import LinuxMEP
        self.net = netns.Lab(self.tmp)
        self.net.up()
        # test_linux_mep's config (not opened: nothing made), this test's prefix
        self.cfg = {**self.net.driver.config, "chain_prefix": f"MCF{self.uid}"}
        self.drv = self.net.driver = self._keep(LinuxMEP(self.cfg))
        self.drv.open()
        return self.drv

    def _save(self) -> str:
        return netns.ns(self.net.edge, "iptables-save").stdout

    def rule_ids(self, iid):
        mark = f"mecorch:{iid}/"
        traffic = {line.split(mark, 1)[1].split('"', 1)[0].split()[0]
                   for line in self._save().splitlines() if mark in line}
        f = self.drv.hosts_dir / iid
        dns_ids = {line[2:] for line in f.read_text().splitlines()[1:]
                   if line.startswith("# ")} if f.is_file() else set()
        return {"traffic": traffic, "dns": dns_ids}

    def answers(self, name, expect=""):
        # dnsmasq reads its hostsdir on inotify: wait a moment for `expect`
        return netns.poll(lambda: self.net.dig(name), expect)

    def reaches(self, address):
        body = self.net.get(address)
        return body.split()[-1] if body else None

    def unconnected(self):
        from drivers.linux_mep import LinuxMEP
        prefix = f"MCU{self.uid}"
        state, run_dir = self.tmp / "nc-state", self.tmp / "nc-run"
        drv = self._keep(LinuxMEP({**self.cfg, "chain_prefix": prefix, "dns_port": 5399,
                                   "state_dir": str(state), "run_dir": str(run_dir)}))

        def made():
            return ([f"chain {c}" for c in self._save().split()
                     if c.startswith(f":{prefix}-")]
                    + [f"dir {p}" for p in (state, run_dir) if p.exists()]
                    + ([f"dnsmasq {drv.dnsmasq_pid()}"] if drv.dnsmasq_pid() else []))
        return drv, made

    def broken(self):
        from drivers.linux_mep import LinuxMEP
        return self._keep(LinuxMEP({**self.cfg, "netns": f"mect-absent-{self.uid}",
                                    "run_dir": str(self.tmp / "broken-run")}))

    def fresh(self):
        from drivers.linux_mep import LinuxMEP
        drv = self._keep(LinuxMEP(self.cfg))
        drv.open()
        return drv

    def teardown(self):
        # the namespaces take the chains with them; the dnsmasq processes
        # are stopped by their pid files; the files are under tmp
        pids = []
        for d in self.drivers:
            d.close()
            pids.append(d.dnsmasq_pid())
            d.stop_services()
        self.net.down()
        left = netns.run("ip", "netns", "list").stdout
        assert self.net.edge not in left, f"namespace {self.net.edge} left behind"
        assert all(p is None or not Path(f"/proc/{p}").exists() for p in pids), \
            f"dnsmasq left running: {pids}"


LABS = {"fake": FakeLab, "linux": LinuxLab}
