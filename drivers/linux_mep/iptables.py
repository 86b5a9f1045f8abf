"""Traffic rules as iptables text: pure functions, no I/O.

Layout of what mecorch owns (PREFIX is the config's `chain_prefix`):

    raw  PREROUTING, OUTPUT -> PREFIX-RAW -> PREFIX-<hash8>   (DROP decisions)
    nat  PREROUTING, OUTPUT -> PREFIX-PRE -> PREFIX-<hash8>   (DNAT decisions)

One chain per instance in each table, named from a hash of the instance id
(chain names are limited to 28 characters; ids are up to 64). The jump to it
carries `-m comment --comment "mecorch:<instance id>"`, so the owner is found
again from the backend alone.

Why raw + nat and not a filter-table FORWARD chain: the filter table sees
addresses after DNAT and only forwarded packets, so a DROP rule on the
address a client asked for would never match, and traffic from the edge
host itself (OUTPUT) would not be seen at all. raw runs before conntrack and
NAT on both PREROUTING and OUTPUT, with the original addresses, so the one
priority-ordered rule list maps onto both tables with first-match-wins:
in raw, DROP drops and the other actions RETURN; in nat, FORWARD DNATs and
the other actions RETURN. A matching rule of higher priority therefore
shadows lower ones in both tables alike. Caveat: nat sees only the first
packet of a connection (conntrack), so a FORWARD rule steers new
connections; a DROP rule (raw) also cuts established ones.

Instances are independent: a RETURN leaves only that instance's chain.
IPv4 only (iptables, not ip6tables): IPv6 filters are UnsupportedAction.

Replicas behind one service address (`shares`: the instances whose
identical FORWARD rule steers the same destinations): each keeps its DNAT
lines in its own chain, and new connections are spread as kube-proxy
spreads a Service's endpoints: the replicas' jumps are visited in
ascending instance id, and the k-th of n takes a connection with
probability 1/(n-k) (`-m statistic --mode random`), else RETURNs to the
top chain so the next replica is tried; the last one (1/1) has no
statistic match and takes the rest. Each replica gets 1/n, and every
connection reaches exactly one. So the visiting order must be the id
order: a new jump goes before the first jump of a higher id
(`-I TOP n`), and one found out of order among its replicas is moved.

Plumbing for steered connections (when the MEP has a service range), so a
client on any app network or the UE side reaches an app on any other:

    filter FORWARD     -> PREFIX-FWD   ACCEPT what was DNATed from the range
                                       (before Docker's and libvirt's drops)
    nat    POSTROUTING -> PREFIX-POST  MASQUERADE it (a client on the same
                                       bridge as the app would otherwise get
                                       the reply from the app's own address)
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import re

from mecorch.kernel.errors import Conflict, InvalidInput, UnsupportedAction
from mecorch.spec.rules import TrafficFilter, TrafficRule

TABLES = ("raw", "nat")
HOOKS = ("PREROUTING", "OUTPUT")
MAX_LINES_PER_RULE = 256        # cartesian product of one rule's filters
_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,15}")
_PORT_PROTOCOLS = {"tcp": "tcp", "udp": "udp", "sctp": "sctp",
                   "6": "tcp", "17": "udp", "132": "sctp"}
_JUMP_COMMENT = re.compile(r'-m comment --comment "?mecorch:([A-Za-z0-9_.-]+)"? -j (\S+)$')

Saved = dict[str, dict[str, list[str]]]     # table -> chain -> its "-A ..." lines


def check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise InvalidInput("mep.chain_prefix: must be 1-16 letters, digits or '_', "
                           "starting with a letter")
    return prefix


def top_chain(prefix: str, table: str) -> str:
    return f"{prefix}-RAW" if table == "raw" else f"{prefix}-PRE"


def instance_chain(prefix: str, instance_id: str) -> str:
    """Short, stable chain name for an instance (prefix <= 16 -> <= 25 chars)."""
    return f"{prefix}-{hashlib.sha256(instance_id.encode()).hexdigest()[:8]}"


def _comment(text: str) -> str:
    # `text` is built from validated ids only (letters, digits, _ . - : /),
    # so quoting needs no escaping.
    return f'-m comment --comment "{text}"'


def jump_line(prefix: str, table: str, instance_id: str) -> str:
    return (f"-A {top_chain(prefix, table)} {_comment('mecorch:' + instance_id)} "
            f"-j {instance_chain(prefix, instance_id)}")


# -- rendering rules -----------------------------------------------------------

def _unsupported(rule: TrafficRule, why: str):
    raise UnsupportedAction(f"trafficRule {rule.traffic_rule_id}: {why}")


def _ipv4(rule: TrafficRule, value: str) -> str:
    if ipaddress.ip_network(value.split("-")[0], strict=False).version != 4:
        _unsupported(rule, f"IPv6 address {value} (this MEP programs IPv4 iptables only)")
    return value


def _addr_match(rule: TrafficRule, value: str | None, side: str) -> str:
    if value is None:
        return ""
    _ipv4(rule, value)
    if "-" in value:
        return f"-m iprange --{side}-range {value}"
    return f"-{side[0]} {value}"


def _filter_matches(rule: TrafficRule, flt: TrafficFilter) -> list[str]:
    """The match text of every iptables rule one TrafficFilter expands to."""
    for attr, what in (("token", "token"), ("src_tunnel_address", "srcTunnelAddress"),
                       ("tgt_tunnel_address", "tgtTunnelAddress"),
                       ("src_tunnel_port", "srcTunnelPort"),
                       ("dst_tunnel_port", "dstTunnelPort"), ("qci", "qCI"), ("tc", "tC")):
        if getattr(flt, attr) not in ((), None):
            _unsupported(rule, f"filters on {what} cannot be expressed with iptables")
    has_ports = bool(flt.src_port or flt.dst_port)
    # A port without a protocol means "this port, whatever carries it": tcp and udp.
    protocols = flt.protocol or (("tcp", "udp") if has_ports else (None,))
    if has_ports:
        for proto in protocols:
            if proto not in _PORT_PROTOCOLS:
                _unsupported(rule, f"ports given with protocol {proto}, which has no ports")
    if "icmpv6" in protocols:
        _unsupported(rule, "icmpv6 (this MEP programs IPv4 iptables only)")
    out = []
    for src, dst, proto, sport, dport in itertools.product(
            flt.src_address or (None,), flt.dst_address or (None,), protocols,
            flt.src_port or (None,), flt.dst_port or (None,)):
        parts = [_addr_match(rule, src, "src"), _addr_match(rule, dst, "dst")]
        if proto is not None:
            parts.append(f"-p {proto}")
            if has_ports:
                parts.append(f"-m {_PORT_PROTOCOLS[proto]}")
        if sport is not None:
            parts.append(f"--sport {sport.replace('-', ':')}")
        if dport is not None:
            parts.append(f"--dport {dport.replace('-', ':')}")
        if flt.dscp is not None:
            parts.append(f"-m dscp --dscp {flt.dscp}")
        out.append(" ".join(p for p in parts if p))
    return out


def _targets(rule: TrafficRule, target_ip: str) -> dict[str, str]:
    """The jump target of the rule in each table (first match wins in both)."""
    if rule.action == "DROP":
        return {"raw": "DROP", "nat": "RETURN"}
    if rule.action == "PASSTHROUGH":
        return {"raw": "RETURN", "nat": "RETURN"}
    if rule.action == "FORWARD_DECAPSULATED":
        dest = target_ip
        if rule.dst_interface:
            iface = rule.dst_interface[0]
            if len(rule.dst_interface) > 1 or iface.interface_type != "IP":
                _unsupported(rule, "FORWARD_DECAPSULATED can only steer to one IP "
                                   "dstInterface (MAC and TUNNEL interfaces need an "
                                   "L2/tunnel data plane)")
            dest = iface.dst_ip_address or target_ip
            # Defense in depth (the core refuses it first, mecorch.mepm.claims.
            # check_targets): the contract gives the driver the instance's
            # address, and a rule DNATs only there. Any other destination
            # would steer the service address to something the app does not
            # own, which the FWD plumbing chain would then forward.
            if target_ip is None or \
                    ipaddress.ip_address(dest) != ipaddress.ip_address(target_ip):
                raise InvalidInput(
                    f"trafficRule {rule.traffic_rule_id}: dstInterface.dstIpAddress {dest} is "
                    f"not the instance's own address {target_ip} (a rule steers only to its "
                    f"own instance)")
        _ipv4(rule, dest)
        return {"raw": "RETURN", "nat": f"DNAT --to-destination {dest}"}
    _unsupported(rule, f"action {rule.action} cannot be expressed with iptables "
                       "(no encapsulation or packet duplication here)")


# xt_statistic keeps a probability as a 31-bit fraction (round(p * 2^31))
# and iptables-save prints it back with 11 decimals
_SCALE = 0x80000000
_PROBABILITY = re.compile(r"--probability ([0-9.]+)")


def probability(position: int, count: int) -> str:
    """The part of what reaches it the replica at `position` (0-based) of
    `count` takes: 1/(count - position), written as iptables-save prints
    it back, so a rendered line and the saved one compare equal."""
    return f"{int(_SCALE / (count - position) + 0.5) / _SCALE:.11f}"


def _share(rule: TrafficRule, instance_id: str, shares) -> tuple[int, int] | None:
    """(position, count) of the instance among the replicas of a FORWARD
    rule, None when the rule is its own (or has nothing to spread: a DROP
    or PASSTHROUGH does the same whichever replica it is in)."""
    peers = (shares or {}).get(rule.traffic_rule_id)
    if not peers or len(peers) < 2 or rule.action != "FORWARD_DECAPSULATED":
        return None
    if instance_id not in peers:
        raise InvalidInput(f"shares[{rule.traffic_rule_id}]: names the replicas "
                           f"{', '.join(peers)} but not instance {instance_id} itself")
    return peers.index(instance_id), len(peers)


def render_instance(prefix: str, instance_id: str, target_ip: str,
                    rules: list[TrafficRule], shares=None) -> dict[str, list[str]]:
    """`{table: ["-A CHAIN ...", ...]}` for the instance's ACTIVE rules in
    priority order (0 first; equal priorities by rule id), or `{}` when it
    has none. Raises UnsupportedAction for what iptables cannot express.
    `shares`: {rule id: replica ids, ascending} (see the module doc): a
    shared FORWARD rule DNATs its part of the connections and RETURNs the
    others, unless the instance is the last replica."""
    chain = instance_chain(prefix, instance_id)
    active = sorted((r for r in rules if r.active),
                    key=lambda r: (r.priority, r.traffic_rule_id))
    out: dict[str, list[str]] = {t: [] for t in TABLES}
    for rule in active:
        targets = _targets(rule, target_ip)
        matches = [m for flt in rule.traffic_filter for m in _filter_matches(rule, flt)]
        if len(matches) > MAX_LINES_PER_RULE:
            raise InvalidInput(f"trafficRule {rule.traffic_rule_id}: its filters expand to "
                               f"{len(matches)} iptables rules (at most {MAX_LINES_PER_RULE})")
        note = _comment(f"mecorch:{instance_id}/{rule.traffic_rule_id}")
        share = _share(rule, instance_id, shares)
        for match in matches:
            for table in TABLES:
                line = [f"-A {chain}", match, note, f"-j {targets[table]}"]
                if table == "nat" and share and share[0] < share[1] - 1:
                    # this replica's part; the rest goes on to the next one
                    line[2:2] = [f"-m statistic --mode random --probability "
                                 f"{probability(*share)}"]
                    out[table].append(" ".join(p for p in line if p))
                    line = [f"-A {chain}", match, note, "-j RETURN"]
                out[table].append(" ".join(p for p in line if p))
    return out if active else {}


# -- reading iptables-save -------------------------------------------------------

def parse_save(text: str) -> Saved:
    """Chains and rule lines per table from `iptables-save` output."""
    saved: Saved = {}
    table = None
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            saved[table] = {}
        elif table and line.startswith(":"):
            saved[table][line[1:].split()[0]] = []
        elif table and line.startswith("-A "):
            saved[table].setdefault(line.split()[1], []).append(line)
    return saved


def owners(saved: Saved, prefix: str) -> dict[str, str]:
    """{instance id: chain} from the commented jumps in mecorch's top chains."""
    found = {}
    for table in TABLES:
        for line in saved.get(table, {}).get(top_chain(prefix, table), []):
            m = _JUMP_COMMENT.search(line)
            if m:
                found[m.group(1)] = m.group(2)
    return found


def our_chains(saved: Saved, prefix: str) -> str:
    """mecorch's chains and hooks as comparable text (for tests and doctor)."""
    out = []
    for table in TABLES + ("filter",):
        chains = saved.get(table, {})
        mine = sorted(c for c in chains if c.startswith(prefix + "-"))
        out.append(f"*{table}")
        out += [f":{c}" for c in mine]
        for hook in HOOKS + ("POSTROUTING", "FORWARD"):
            out += [l for l in chains.get(hook, []) if f"-j {prefix}-" in l]
        for c in mine:
            out += chains[c]
    return "\n".join(out) + "\n"


# -- restore text -------------------------------------------------------------------

def _base_lines(saved: Saved, prefix: str, table: str) -> list[str]:
    """Create mecorch's top chain of `table` and hook it, if missing. Never
    redeclares an existing top chain: with --noflush that would flush it."""
    chains = saved.get(table, {})
    top = top_chain(prefix, table)
    lines = [] if top in chains else [f":{top} - [0:0]"]
    for hook in HOOKS:
        if not any(l.endswith(f"-j {top}") for l in chains.get(hook, [])):
            # Inserted first so steering is decided before other rules (Docker's...).
            lines.append(f"-I {hook} 1 -j {top}")
    return lines


PLUMBING = {"filter": ("FORWARD", "FWD", "ACCEPT"), "nat": ("POSTROUTING", "POST", "MASQUERADE")}


def plumbing_chain(prefix: str, table: str) -> str:
    return f"{prefix}-{PLUMBING[table][1]}"


def _plumbing_lines(saved: Saved, prefix: str, table: str, service_cidr: str) -> list[str]:
    """Make the table's plumbing chain hold exactly its one rule, hooked
    once; nothing when it already does (so open() changes nothing).

    Why accepting (and masquerading) every connection DNATed from the
    service range is safe: only mecorch's instance chains DNAT from that
    range (it is the MEP's own), and each of their DNATs goes to the
    instance's own address: `_targets` refuses any other destination, as
    the core does before it (issue 28, finding 1). So the chain forwards
    only to app instances, on the service addresses their rules claim,
    never past Docker's or libvirt's isolation to anything else."""
    hook, _, target = PLUMBING[table]
    chain = plumbing_chain(prefix, table)
    chains = saved.get(table, {})
    want = [f"-A {chain} -m conntrack --ctstate DNAT --ctorigdst {service_cidr} "
            f"{_comment('mecorch:steered')} -j {target}"]
    lines = []
    if chains.get(chain) != want or chain not in chains:
        lines += [f":{chain} - [0:0]", *want]           # declare = create or flush
    if not any(l.endswith(f"-j {chain}") for l in chains.get(hook, [])):
        lines.append(f"-I {hook} 1 -j {chain}")
    return lines


def base_text(saved: Saved, prefix: str, service_cidr: str | None = None) -> str:
    """Restore text that makes mecorch's top chains (and, with a service
    range, the plumbing chains) exist ('' if they do)."""
    parts = []
    for table in TABLES:
        lines = _base_lines(saved, prefix, table)
        if service_cidr and table in PLUMBING:
            lines += _plumbing_lines(saved, prefix, table, service_cidr)
        if lines:
            parts += [f"*{table}", *lines, "COMMIT"]
    if service_cidr:
        lines = _plumbing_lines(saved, prefix, "filter", service_cidr)
        if lines:
            parts += ["*filter", *lines, "COMMIT"]
    return "\n".join(parts) + "\n" if parts else ""


def teardown_text(saved: Saved, prefix: str) -> str:
    """Restore text removing every hook and chain of `prefix` (all
    instances' rules too): for uninstall and tests."""
    parts = []
    for table in ("raw", "nat", "filter"):
        chains = saved.get(table, {})
        mine = sorted(c for c in chains if c.startswith(prefix + "-"))
        lines = []
        for hook in ("PREROUTING", "OUTPUT", "POSTROUTING", "FORWARD"):
            lines += ["-D" + l[2:] for l in chains.get(hook, [])
                      if l.split()[-1] in mine and l.split()[-2] == "-j"]
        lines += [f"-F {c}" for c in mine] + [f"-X {c}" for c in mine]
        if lines:
            parts += [f"*{table}", *lines, "COMMIT"]
    return "\n".join(parts) + "\n" if parts else ""


def _owner(line: str) -> str | None:
    m = _JUMP_COMMENT.search(line)
    return m.group(1) if m else None


def in_order(top_lines: list[str], instance_id: str, peers=()) -> bool:
    """The instance has one jump in its top chain, after the jumps of its
    replicas (`peers`) with lower ids and before those with higher ones:
    the order their shares were computed for."""
    owners = [_owner(l) for l in top_lines]
    if owners.count(instance_id) != 1:
        return False
    mine = owners.index(instance_id)
    return all((i < mine) == (o < instance_id)
               for i, o in enumerate(owners) if o in peers and o != instance_id)


def _place_jump(top_lines: list[str], prefix: str, table: str, instance_id: str,
                chain: str, peers=()) -> list[str]:
    """Restore lines giving the instance its one jump where connections
    visit it in id order: before the first jump of a higher id (among its
    replicas when it has some, else among all), else last. A jump already
    there is kept (no line at all); one out of order is moved (deleted and
    inserted in the same commit, so no connection misses it)."""
    jumps = [l for l in top_lines if l.split()[-1] == chain]
    if len(jumps) == 1 and in_order(top_lines, instance_id, peers):
        return []
    others = [l for l in top_lines if l.split()[-1] != chain]
    owners = [_owner(l) for l in others]
    group = set(peers) if peers else {o for o in owners if o}
    slot = next((i for i, o in enumerate(owners)
                 if o in group and o != instance_id and o > instance_id), None)
    top, jump = top_chain(prefix, table), jump_line(prefix, table, instance_id)
    lines = ["-D" + l[2:] for l in jumps]
    if slot is None:
        return lines + [jump]
    return lines + [f"-I {top} {slot + 1}" + jump[len(f"-A {top}"):]]


def transition(saved: Saved, prefix: str, instance_id: str,
               desired: dict[str, list[str]], peers=()) -> str:
    """Restore text (for `iptables-restore --noflush`) taking the instance
    from what `saved` shows to `desired` (`{}`: no rules, chains removed).
    '' when there is nothing to do. Raises Conflict if the instance's chain
    name is already used by another instance (hash collision). `peers`:
    the instance's replicas (the ids its shares name), whose jumps its own
    must follow in id order."""
    chain = instance_chain(prefix, instance_id)
    parts = []
    for table in TABLES:
        chains = saved.get(table, {})
        top = top_chain(prefix, table)
        jumps = [l for l in chains.get(top, []) if l.split()[-1] == chain]
        for line in jumps:
            m = _JUMP_COMMENT.search(line)
            if not m or m.group(1) != instance_id:
                raise Conflict(f"iptables chain {chain} ({table}) belongs to another "
                               f"owner: {line!r}")
        lines = _base_lines(saved, prefix, table)
        if desired:
            lines.append(f":{chain} - [0:0]")          # declare = create or flush
            lines += desired.get(table, [])
            lines += _place_jump(chains.get(top, []), prefix, table, instance_id, chain, peers)
        else:
            lines += ["-D" + l[2:] for l in jumps]
            if chain in chains:
                lines += [f"-F {chain}", f"-X {chain}"]
        if lines:
            parts += [f"*{table}", *lines, "COMMIT"]
    return "\n".join(parts) + "\n" if parts else ""


def _probabilities(lines: list[str]) -> list[int]:
    """The statistic parts of the lines, in order, as xt_statistic keeps them."""
    return [int(float(m.group(1)) * _SCALE + 0.5)
            for m in map(_PROBABILITY.search, lines) if m]


def matches(saved: Saved, prefix: str, instance_id: str, desired: dict[str, list[str]],
            peers=()) -> bool:
    """`saved` shows the instance with exactly as many rule lines per table
    as `desired`, the same replica parts (statistic probabilities), and its
    jumps in order among its replicas `peers` (or, for `{}`, no chain and
    no jump): the shape of what was applied, still there. (Lines are not
    compared as text: iptables-save writes matches its own way.)"""
    chain = instance_chain(prefix, instance_id)
    for table in TABLES:
        chains = saved.get(table, {})
        top = chains.get(top_chain(prefix, table), [])
        jumped = any(l.split()[-1] == chain for l in top)
        if not desired:
            if chain in chains or jumped:
                return False
        elif chain not in chains or not jumped or \
                len(chains[chain]) != len(desired.get(table, [])) or \
                _probabilities(chains[chain]) != _probabilities(desired.get(table, [])) or \
                not in_order(top, instance_id, peers):
            return False
    return True


def current(saved: Saved, prefix: str, instance_id: str) -> dict[str, list[str]]:
    """The instance's rule lines as `saved` shows them, in `desired` form
    (what `transition` needs to put them back after a failure)."""
    chain = instance_chain(prefix, instance_id)
    if not any(chain in saved.get(t, {}) for t in TABLES):
        return {}
    return {t: list(saved.get(t, {}).get(chain, [])) for t in TABLES}
