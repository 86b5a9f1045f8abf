"""CLI actions over the REST API (`mecorch package ...`, `mecorch app ...`,
`mecorch host ...`) and the local `mecorch config show`.

Every command that expects an id takes the full id, a unique prefix of it,
or an appDId (for an instance: when that app has exactly one instance).
`--output json` prints the API's documents instead of the columns.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

from mecorch.kernel.client import ApiError, Client, print_json
from mecorch.kernel.errors import InvalidInput, NotFound
from mecorch.kernel.fileutil import sha256_file
from mecorch.kernel.yamlsafe import load_yaml

PKGM = "/app_pkgm/v1/app_packages"
INST = "/app_lcm/v1/app_instances"
OPS = "/app_lcm/v1/app_lcm_op_occs"
MP1 = "/mec_app_support/v1/applications"
HOSTS = "/mecorch/v1/hosts"
READYZ = "/readyz"


def once() -> dict:
    """The Idempotency-Key of one create or instantiate of this command:
    sent again to another of the API's URLs (`--api` with several), the
    server answers what the first made, never a second one."""
    return {"Idempotency-Key": f"cli-{uuid.uuid4()}"}


def _q(filter_expr: str | None) -> str:
    return f"?filter={urllib.parse.quote(filter_expr)}" if filter_expr else ""


# ---------------------------------------------------------------- output
def table(headers: Iterable[str], rows: Iterable[Iterable[Any]], out=None) -> None:
    """Columns as wide as their widest cell, two spaces apart; '-' for empty."""
    out = out or sys.stdout
    headers = list(headers)
    cells = [["-" if c in (None, "") else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in [headers, *cells]) for i in range(len(headers))]
    for row in [headers, *cells]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip(), file=out)


def emit(args, doc: Any, text: Callable[[Any], None] | None = None) -> int:
    if getattr(args, "output", "text") == "json" or text is None:
        print_json(doc)
    else:
        text(doc)
    return 0


# ---------------------------------------------------------------- id resolution
def _match(kind: str, ref: str, docs: list[dict], *fields: str) -> dict:
    """The one document whose id equals `ref`, or whose id starts with it,
    or whose `fields` equal it; an error naming the candidates otherwise."""
    exact = [d for d in docs if d["id"] == ref]
    if exact:
        return exact[0]
    hits = {d["id"]: d for d in docs if d["id"].startswith(ref)}
    for f in fields:
        hits.update({d["id"]: d for d in docs if d.get(f) == ref})
    if len(hits) == 1:
        return next(iter(hits.values()))
    if not hits:
        raise NotFound(f"no {kind} with the id, id prefix or {' or '.join(fields)} {ref!r}")
    names = ", ".join(f"{i} ({d.get(fields[0]) if fields else ''})" for i, d in hits.items())
    raise InvalidInput(f"{ref!r} matches {len(hits)} {kind}s: {names}; give more of the id")


def package_id(c: Client, ref: str) -> str:
    return _match("package", ref, c.get_all(PKGM), "appDId")["id"]


def instance_id(c: Client, ref: str) -> str:
    return _match("app instance", ref, c.get_all(INST), "appDId", "appInstanceName")["id"]


# ---------------------------------------------------------------- config
def config_show(cfg: dict, sources: dict, args) -> int:
    from mecorch.kernel.config import flatten
    leaves = flatten(cfg)
    if args.output == "json":
        print_json({"config": cfg, "sources": {p: sources.get(p, "default") for p, _ in leaves}})
        return 0
    table(("KEY", "VALUE", "FROM"),
          ((p, json.dumps(v) if not isinstance(v, str) else v, sources.get(p, "default"))
           for p, v in leaves))
    return 0


# ---------------------------------------------------------------- packages
def package_onboard(c: Client, a) -> int:
    path = Path(a.zip).resolve()
    if not path.is_file():
        raise InvalidInput(f"{path} is not a file")
    print(f"onboarding {path} ...", file=sys.stderr, flush=True)
    body = {"appPkgName": a.name or path.stem, "appPkgVersion": a.pkg_version,
            "checksum": {"algorithm": "SHA-256", "hash": sha256_file(path)}}
    if getattr(a, "upload", False):
        info = c.upload_package(body, path)     # two-step: create + PUT package_content
    else:
        info, _ = c.post(PKGM, {**body, "appPkgPath": str(path)})
    return emit(a, info, _package_text)


def _package_rows(rows: list[dict]) -> None:
    # several versions of one appDId can be onboarded: both versions shown
    table(("ID", "APPDID", "NAME", "VERSION", "APPD-VERSION", "MANNER", "STATE", "USAGE",
           "ONBOARDING"),
          ((p["id"], p["appDId"], p["appName"], p.get("appSoftwareVersion"),
            p.get("appDVersion"),
            p.get("deploymentType") or "+".join(p.get("deploymentTypes") or ()),
            p["operationalState"], p["usageState"],
            p["onboardingState"]) for p in rows))


def _package_text(p: dict) -> None:
    _package_rows([p])


def package_list(c: Client, a) -> int:
    return emit(a, c.get_all(PKGM + _q(a.filter)), _package_rows)


def package_show(c: Client, a) -> int:
    doc = c.get(f"{PKGM}/{package_id(c, a.id)}")
    return emit(a, doc, _fields)


def _fields(doc: dict, prefix: str = "") -> None:
    """A document as `key: value` lines (nested keys joined by '.')."""
    for k, v in doc.items():
        if k == "_links":
            continue
        if isinstance(v, dict) and v:
            _fields(v, f"{prefix}{k}.")
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for n, x in enumerate(v):
                _fields(x, f"{prefix}{k}[{n}].")
        else:
            text = ",".join(str(x) for x in v) if isinstance(v, list) else v
            print(f"{prefix}{k}: {'-' if text in (None, '') else text}")


def _patch(c: Client, a, state: str) -> int:
    return emit(a, c.call("PATCH", f"{PKGM}/{package_id(c, a.id)}",
                          {"operationState": state})[1],
                lambda d: print(f"{a.id}: {d.get('operationState')}"))


def package_enable(c: Client, a) -> int:
    return _patch(c, a, "ENABLED")


def package_disable(c: Client, a) -> int:
    return _patch(c, a, "DISABLED")


def package_delete(c: Client, a) -> int:
    status = c.call("DELETE", f"{PKGM}/{package_id(c, a.id)}")[0]
    print("deleted" if status == 204 else "deletion pending: instances still use it")
    return 0


# ---------------------------------------------------------------- instances
def app_create(c: Client, a) -> int:
    body = {"appDId": a.app_d_id}
    if a.name:
        body["appInstanceName"] = a.name
    return emit(a, c.post(INST, body, once())[0], lambda d: print(d["id"]))


def app_instantiate(c: Client, a) -> int:
    body: dict = {}
    if a.host:
        body["selectedMECHostInfo"] = [{"hostId": {"id": a.host}}]
    if a.type:
        body["deploymentType"] = a.type
    if a.orchestration:
        text = Path(a.orchestration).read_text(encoding="utf-8")
        load_yaml(text, what=a.orchestration)          # fail early on bad YAML
        body["orchestrationInfo"] = text
    rules = _rules_file(a.rules) if getattr(a, "rules", None) else None
    # the local files are checked first: a typo there needs no server
    iid = instance_id(c, a.id)
    address = getattr(a, "service_address", None)
    if getattr(a, "replica_of", None):
        host, address = _replica_of(c, iid, a.replica_of, a.host, address)
        body["selectedMECHostInfo"] = [{"hostId": {"id": host}}]
        body["shareServiceAddress"] = True
    if address is not None:
        rules = with_service_address(rules if rules is not None else _appd_rules(c, iid),
                                     address)
    if rules is not None:
        body.update(rules)
    op, _ = c.post(f"{INST}/{iid}/instantiate", body, once())
    if a.type == "VM":
        print("  a VM is deployed once it took a DHCP lease and opened its first port "
              "(up to the host's vim.boot_timeout_s)", file=sys.stderr, flush=True)
    op = c.wait_op(op, out=sys.stderr)
    if op["operationState"] != "COMPLETED":
        print(f"instantiate failed: {op.get('error', {}).get('detail')}", file=sys.stderr)
        return 1
    return emit(a, c.get(f"{INST}/{iid}"), _fields)


app_deploy = app_instantiate          # `mecorch app deploy`: the same command


def _replica_of(c: Client, iid: str, ref: str, host: str | None,
                address: str | None) -> tuple[str, str]:
    """--replica-of INSTANCE: (its host, its service address), checked
    against the instance being deployed (same app, the instance running)
    and the other options (an error naming the option)."""
    other = c.get(f"{INST}/{instance_id(c, ref)}")
    mine = c.get(f"{INST}/{iid}")
    if other["id"] == iid:
        raise InvalidInput(f"--replica-of {ref}: names the instance being deployed")
    if other.get("appDId") != mine.get("appDId"):
        raise InvalidInput(f"--replica-of {ref}: instance {other['id']} is of app "
                           f"{other.get('appDId')}, not {mine.get('appDId')} (only instances "
                           f"of one app are replicas)")
    if other.get("instantiationState") != "INSTANTIATED":
        raise InvalidInput(f"--replica-of {ref}: instance {other['id']} is not INSTANTIATED")
    res = other.get("allocatedResources") or {}
    theirs = res.get("serviceAddress") or next(iter(res.get("serviceAddresses") or []), None)
    if theirs is None:
        raise InvalidInput(f"--replica-of {ref}: instance {other['id']} has no service address")
    if host is not None and host != other.get("hostId"):
        raise InvalidInput(f"--host {host}: a replica runs on the host of --replica-of "
                           f"{ref}, {other.get('hostId')}")
    if address is not None and address != theirs:
        raise InvalidInput(f"--service-address {address}: a replica takes the address of "
                           f"--replica-of {ref}, {theirs}")
    return other["hostId"], theirs


RULE_KEYS = ("appTrafficRule", "appDNSRule")


def _rules_file(path: str) -> dict:
    """--rules FILE: a YAML/JSON mapping of appTrafficRule and/or
    appDNSRule (MEC 010-2 rule descriptors, as in an AppD), checked here
    as the server will (InvalidInput naming the file and the field)."""
    from mecorch.spec.rules import instance_rules
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise InvalidInput(f"--rules {path}: {e.strerror}") from None
    try:
        doc = load_yaml(text, what=path)
    except InvalidInput as e:
        raise InvalidInput(f"--rules {path}: {e.detail}") from None
    if not isinstance(doc, dict) or not doc:
        raise InvalidInput(f"--rules {path}: must be a mapping with {' and/or '.join(RULE_KEYS)}")
    extra = [k for k in doc if k not in RULE_KEYS]
    if extra:
        raise InvalidInput(f"--rules {path}: unknown field {extra[0]!r} (allowed: "
                           f"{', '.join(RULE_KEYS)})")
    for key in RULE_KEYS:
        if key in doc and not isinstance(doc[key], list):
            raise InvalidInput(f"--rules {path}: {key} must be a list of rule descriptors")
    try:
        instance_rules({}, doc)
    except InvalidInput as e:
        raise InvalidInput(f"--rules {path}: {e.detail}") from None
    return {k: doc[k] for k in RULE_KEYS if k in doc}


def _appd_rules(c: Client, iid: str) -> dict:
    """The rule descriptors of the instance's AppD (its package's)."""
    inst = c.get(f"{INST}/{iid}")
    pkg = inst.get("appPkgId")
    appd = c.get(f"{PKGM}/{pkg}/appd" if pkg else
                 f"/app_pkgm/v1/onboarded_app_packages/{inst['appDId']}/appd")
    return {k: appd.get(k) or [] for k in RULE_KEYS}


def with_service_address(rules: dict, address: str) -> dict:
    """--service-address ADDR: the rules with ADDR where they ask for a
    service address (a trafficFilter without dstAddress, a DNS rule without
    ipAddress); InvalidInput naming the option when ADDR is no address or
    the rules ask for none."""
    import copy
    import ipaddress
    try:
        address = str(ipaddress.ip_address(address))
    except ValueError:
        raise InvalidInput(f"--service-address {address!r}: must be an IP address "
                           f"(e.g. 10.171.0.10)") from None
    rules = copy.deepcopy(rules)
    filled = 0
    for rule in rules.get("appTrafficRule") or []:
        for flt in (rule.get("trafficFilter") or []) if isinstance(rule, dict) else []:
            if isinstance(flt, dict) and not flt.get("dstAddress"):
                flt["dstAddress"] = [address]
                filled += 1
    for rule in rules.get("appDNSRule") or []:
        if isinstance(rule, dict) and not rule.get("ipAddress"):
            rule["ipAddress"] = address
            filled += 1
    if not filled:
        raise InvalidInput(f"--service-address {address}: the rules ask for no service "
                           f"address (every trafficFilter names a dstAddress and every DNS "
                           f"rule an ipAddress); give the rules with --rules instead")
    return rules


def app_terminate(c: Client, a) -> int:
    iid = instance_id(c, a.id)
    body = {"terminationType": "FORCEFUL" if a.forceful else "GRACEFUL"}
    if not a.forceful:
        body["gracefulTerminationTimeout"] = a.timeout
    op, _ = c.post(f"{INST}/{iid}/terminate", body)
    op = c.wait_op(op, out=sys.stderr)
    if op["operationState"] != "COMPLETED":
        print(f"terminate failed: {op.get('error', {}).get('detail')}", file=sys.stderr)
        return 1
    return 0


def app_operate(c: Client, a) -> int:
    iid = instance_id(c, a.id)
    body: dict = {"changeStateTo": "STARTED" if a.to == "start" else "STOPPED"}
    if a.to == "stop":
        body["stopType"] = "FORCEFUL" if a.forceful else "GRACEFUL"
        if not a.forceful:
            body["gracefulStopTimeout"] = a.timeout
    op, _ = c.post(f"{INST}/{iid}/operate", body)
    op = c.wait_op(op, out=sys.stderr)
    if op["operationState"] != "COMPLETED":
        print(f"operate failed: {op.get('error', {}).get('detail')}", file=sys.stderr)
        return 1
    return emit(a, c.get(f"{INST}/{iid}"), lambda d: print(
        f"{iid}: {d.get('instantiatedAppState', {}).get('operationalState')}"))


def app_relocate(c: Client, a) -> int:
    iid = instance_id(c, a.id)
    body: dict = {}
    if a.host:
        body["hostId"] = a.host
    if a.graceful_timeout is not None:
        body["gracefulStopTimeout"] = a.graceful_timeout
    if a.live is not None:
        body["live"] = a.live
    before = c.get(f"{INST}/{iid}").get("hostId")
    op, _ = c.post(f"{INST}/{iid}/relocate", body)
    print(f"relocating {iid} from {before} ...", file=sys.stderr, flush=True)
    op = c.wait_op(op, out=sys.stderr)
    if op["operationState"] != "COMPLETED":
        print(f"relocate failed: {op.get('error', {}).get('detail')}", file=sys.stderr)
        return 1
    return emit(a, c.get(f"{INST}/{iid}"), lambda d: print(
        f"{iid}: on {d.get('hostId')} (from {before}), "
        f"{d.get('instantiatedAppState', {}).get('operationalState')}"))


def app_upgrade(c: Client, a) -> int:
    """One instance, or every instance of an appDId on a host one after
    the other (each one's op waited for: at most one runtime of the app is
    being replaced at a time; the first failure stops the rest)."""
    if (a.id is None) == (a.app is None):
        raise InvalidInput("give an instance ID, or --app APPDID with --host HOST")
    if a.app is not None and not a.host:
        raise InvalidInput("--app needs --host: the instances of the app on that host")
    if a.id is not None and a.host:
        raise InvalidInput("--host goes with --app (an instance ID names its host already)")
    pkg = package_id(c, a.package)
    if a.id is not None:
        ids = [instance_id(c, a.id)]
    else:
        ids = sorted(d["id"] for d in c.get_all(INST)
                     if d.get("appDId") == a.app and d.get("hostId") == a.host
                     and d.get("instantiationState") == "INSTANTIATED"
                     and d.get("appPkgId") != pkg)
        if not ids:
            print(f"no instance of {a.app} on host {a.host} runs another version than {pkg}",
                  file=sys.stderr)
            return 0
    body: dict = {"appPkgId": pkg}
    if a.ready_timeout is not None:
        body["readyTimeoutS"] = a.ready_timeout
    done = []
    for iid in ids:
        print(f"upgrading {iid} to {pkg} ...", file=sys.stderr, flush=True)
        op, _ = c.post(f"{INST}/{iid}/change_app_pkg", body)
        op = c.wait_op(op, out=sys.stderr)
        if op["operationState"] != "COMPLETED":
            print(f"upgrade of {iid} failed: {op.get('error', {}).get('detail')}",
                  file=sys.stderr)
            if len(ids) > 1:
                print(f"stopped: {len(done)} of {len(ids)} upgraded, "
                      f"{len(ids) - len(done) - 1} not tried", file=sys.stderr)
            return 1
        done.append(c.get(f"{INST}/{iid}"))
    return emit(a, done if len(ids) > 1 else done[0], lambda d: [
        print(f"{x['id']}: {x.get('appPkgId')} ({x.get('appSoftVersion')})")
        for x in (d if isinstance(d, list) else [d])])


def _warned(headers: dict) -> None:
    """What a server answered from what it last knew (an MEO whose host is
    away says so in a Warning header): told on stderr."""
    text = headers.get("Warning") or headers.get("warning")
    if text:
        print(f"warning: {text.split(' ', 2)[-1].strip(chr(34))}", file=sys.stderr)


def _dns_names(c: Client, iid: str) -> str:
    try:
        _, rules, _ = c.call("GET", f"{MP1}/{iid}/dns_rules")
    except ApiError as e:       # a listing still lists: this cell says it is unknown
        return f"? ({e.status})"
    return ",".join(r.get("domainName") or "" for r in rules or [])


def app_list(c: Client, a) -> int:
    rows = c.get_all(INST + _q(a.filter))
    if a.output == "json":
        print_json(rows)
        return 0
    table(("ID", "NAME", "APPDID", "HOST", "MANNER", "STATE", "OPERATIONAL", "OBSERVED",
           "READY", "RESTARTS", "ADDRESSES", "DNS"),
          ((i["id"], i.get("appInstanceName"), i["appDId"], i.get("hostId"),
            i.get("deploymentType"), i["instantiationState"],
            i.get("instantiatedAppState", {}).get("operationalState"), _observed(i), _ready(i),
            _restarts(i),
            ",".join(n["ip"] for n in i.get("allocatedResources", {}).get("network", [])),
            _dns_names(c, i["id"]) if i["instantiationState"] == "INSTANTIATED" else "")
           for i in rows))
    away = sorted({i["hostId"] for i in rows if i.get("hostState")})
    for host in away:
        print(f"warning: edge host {host} does not answer: its instances show their last "
              "known state (OBSERVED UNKNOWN)", file=sys.stderr)
    return 0


def _observed(inst: dict) -> str:
    state, detail = inst.get("observedState"), inst.get("observedStateDetail")
    if state and state != "RUNNING" and detail:
        return f"{state} ({detail})"
    return state or ""


def _ready(inst: dict) -> str:
    """READY: what the health checks decided (mecorch.mepm.health); empty
    for an instance without checks, "?" until a check decided."""
    h = inst.get("health")
    if not h:
        return ""
    out = {True: "yes", False: "no (out of service)", None: "?"}[h.get("ready")]
    if "readiness" not in h.get("checks", ["readiness"]) and h.get("ready") is None:
        out = "-"           # no readiness check: in service while it runs
    if h.get("live") is False:
        out += " (not live)"
    return out


def _restarts(inst: dict) -> str:
    """The restart count, with the policy when it restarts at all and the
    last exit code: "3 (Always, last exit 137)"."""
    if "restartCount" not in inst:
        return ""
    policy = (inst.get("restartPolicy") or {}).get("policy")
    if inst["restartCount"] == 0 and policy in (None, "Never"):
        return "0"
    last = f", last exit {inst['lastExitCode']}" if inst.get("lastExitCode") is not None else ""
    return f"{inst['restartCount']} ({policy}{last})"


def app_show(c: Client, a) -> int:
    doc = c.get(f"{INST}/{instance_id(c, a.id)}")
    if doc.get("hostState"):
        print(f"warning: {doc.get('observedStateDetail')}", file=sys.stderr)

    def show(d: dict) -> None:
        usage = d.get("resourceUsage")
        _fields({k: v for k, v in d.items() if k != "resourceUsage"})
        if usage is not None:
            print(f"resourceUsage: {usage_text(usage)}")
    return emit(a, doc, show)


def _bytes(n) -> str:
    """1536 -> '1.5 KiB' (binary units, as `docker stats`); None -> '?'."""
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:g} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "?"


def usage_text(u: dict) -> str:
    """A `resourceUsage` (an instance's or a host's sum) on one line."""
    if "cpuPercent" not in u:
        return f"unavailable: {u.get('unavailable') or u.get('error') or 'not read yet'}"
    cpu = "?" if u.get("cpuPercent") is None else f"{u['cpuPercent']:g} %"
    mem = _bytes(u.get("memoryBytes"))
    if u.get("memoryLimitBytes") is not None:
        mem += f" / {_bytes(u['memoryLimitBytes'])}"
    text = (f"cpu {cpu}, memory {mem}, net rx {_bytes(u.get('networkRxBytes'))} "
            f"tx {_bytes(u.get('networkTxBytes'))}, block read {_bytes(u.get('blockReadBytes'))} "
            f"write {_bytes(u.get('blockWriteBytes'))}")
    if u.get("time"):
        text += f" (read {_time(u['time'])})"
    if u.get("error"):
        text += f"; last read failed: {u['error']}"
    return text


def app_delete(c: Client, a) -> int:
    c.call("DELETE", f"{INST}/{instance_id(c, a.id)}")
    print("deleted")
    return 0


def app_logs(c: Client, a) -> int:
    iid = instance_id(c, a.id)
    query = f"?tail={a.tail}" if a.tail is not None else ""
    _, data, headers = c.call("GET", f"{INST}/{iid}/logs{query}")
    _warned(headers)
    if headers.get("X-Mecorch-Logs-Source") == "kept":
        print(f"(output of the last run of {iid}, kept after its termination)",
              file=sys.stderr)
    out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None
    if out is not None:
        out.write(data if isinstance(data, bytes) else str(data).encode())
        out.flush()
    else:
        sys.stdout.write(data.decode(errors="replace") if isinstance(data, bytes) else data)
    return 0


def app_events(c: Client, a) -> int:
    iid = instance_id(c, a.id)
    ops = c.get(f"{OPS}{_q(f'(eq,appInstanceId,{iid})')}")
    ops.sort(key=lambda o: (o["startTime"]["seconds"], o["startTime"]["nanoSeconds"]))
    return emit(a, ops, lambda rows: table(
        ("OP", "OPERATION", "STATE", "STARTED", "ENDED", "ERROR"),
        ((o["id"], o["operationParams"], o["operationState"], _time(o["startTime"]),
          _time(o["stateEnteredTime"]) if o["operationState"] in ("COMPLETED", "FAILED")
          else "", (o.get("error") or {}).get("detail", "")) for o in rows)))


def _time(ts: dict) -> str:
    """An ETSI TimeStamp as UTC with milliseconds."""
    t = time.gmtime(ts["seconds"])
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{ts['nanoSeconds'] // 1_000_000:03d}Z"


def app_rules(c: Client, a) -> int:
    iid = instance_id(c, a.id)
    _, traffic, headers = c.call("GET", f"{MP1}/{iid}/traffic_rules")
    _warned(headers)
    dns = c.get(f"{MP1}/{iid}/dns_rules")
    if a.output == "json":
        print_json({"trafficRules": traffic, "dnsRules": dns})
        return 0
    print("traffic rules:")
    table(("ID", "STATE", "PRIORITY", "ACTION", "FILTER", "DESTINATION"),
          ((r.get("trafficRuleId"), r.get("state"), r.get("priority"), r.get("action"),
            _filters(r.get("trafficFilter") or []), _destination(r)) for r in traffic))
    print("dns rules:")
    table(("ID", "STATE", "NAME", "TYPE", "ADDRESS", "TTL"),
          ((r.get("dnsRuleId"), r.get("state"), r.get("domainName"), r.get("ipAddressType"),
            r.get("ipAddress"), r.get("ttl")) for r in dns))
    return 0


def _filters(filters: list[dict]) -> str:
    parts = []
    for f in filters:
        addrs = ",".join(f.get("dstAddress") or []) or "*"
        ports = ",".join(f.get("dstPort") or []) or "*"
        proto = ",".join(str(p) for p in f.get("protocol") or []) or "any"
        parts.append(f"{proto}:{addrs}:{ports}")
    return " ".join(parts)


def _destination(rule: dict) -> str:
    out = []
    dst = rule.get("dstInterface") or []
    for d in [dst] if isinstance(dst, dict) else dst:
        if not isinstance(d, dict):
            continue
        tun = d.get("tunnelInfo") or {}
        out.append(d.get("dstIpAddress") or tun.get("tunnelDstAddress") or d.get("interfaceType"))
    return ",".join(str(x) for x in out if x)


# ---------------------------------------------------------------- hosts
def _backends(c: Client) -> dict[str, list[dict]]:
    """host id -> its backends' last probes, from /readyz (503 when one is
    down: the same body, as ProblemDetails)."""
    try:
        checks = c.get(READYZ)["checks"]
    except ApiError as e:
        if e.status != 503:
            raise
        checks = e.body.get("checks") or []
    out: dict[str, list[dict]] = {}
    for chk in checks:
        host, _, role = chk["name"].rpartition("/")
        if host:
            out.setdefault(host, []).append({**chk, "role": role})
    return out


def service_list(c: Client, a) -> int:
    query = [("ser_name", n) for n in a.name or ()]
    if a.category:
        query.append(("ser_category_id", a.category))
    path = "/mec_service_mgmt/v1/services" + \
        ("?" + urllib.parse.urlencode(query) if query else "")
    _, rows, headers = c.call("GET", path)
    if a.output == "json":
        print_json(rows)
    else:
        table(("ID", "NAME", "CATEGORY", "VERSION", "STATE", "ENDPOINT", "HOST"),
              ((s["serInstanceId"], s["serName"], (s.get("serCategory") or {}).get("id"),
                s["version"], s["state"], _endpoint(s["transportInfo"]), s.get("hostId"))
               for s in rows))
    if headers.get("Warning"):      # an MEO: hosts left out
        print(f"warning: {headers['Warning']}", file=sys.stderr)
    return 0


def _endpoint(transport: dict) -> str:
    ep = transport.get("endpoint") or {}
    if "addresses" in ep:
        return ",".join(f"{x['host']}:{x['port']}" for x in ep["addresses"])
    if "uris" in ep:
        return ",".join(ep["uris"])
    return "(alternative)"


def host_list(c: Client, a) -> int:
    hosts = c.get(HOSTS)
    backends = _backends(c)
    for h in hosts:             # an MEO: each host's backends as its MEPM probed them
        if "backends" in h:
            backends[h["hostId"]] = [{**b, "name": f"{h['hostId']}/{b.get('role')}"}
                                     for b in h["backends"]]
    if a.output == "json":
        print_json([{**h, "backends": backends.get(h.get("hostId"), [])} for h in hosts])
        return 0
    rows = []
    for h in hosts:
        hid = h.get("hostId")
        health = " ".join(f"{b['role']}:{'up' if b['ok'] else 'DOWN'}"
                          for b in backends.get(hid, [])) or "-"
        if h.get("state"):          # an MEO: is the host answering, since when
            age = h.get("heartbeatAgeS")
            health = f"{h['state']}" + (f" ({_n(age)} s ago)" if age is not None else "") \
                + ("" if health == "-" else f" {health}")
        for manner, cap in sorted((h.get("capacity") or {"-": {}}).items()):
            vt, vu = cap.get("vcpuTotal"), cap.get("vcpuUsed")
            mt, mu = cap.get("memoryMbTotal"), cap.get("memoryMbUsed")
            rows.append((hid, manner, _n(vt), _n(vu), _n(None if vt is None else vt - vu),
                         _n(mt), _n(mu), _n(None if mt is None else mt - mu),
                         cordon_text(h.get("cordoned")), health))
    table(("HOST", "MANNER", "VCPU", "VCPU PROMISED", "VCPU FREE", "MEM MB", "MEM PROMISED",
           "MEM FREE", "CORDONED", "BACKENDS"), rows)
    for h in hosts:             # its instances' figures summed
        u = h.get("resourceUsage")
        if u and u.get("instances"):
            print(f"{h.get('hostId')}: {u['instances']} instance(s) use {usage_text(u)}")
    for hid, probes in backends.items():
        for b in probes:
            if not b["ok"]:
                print(f"{hid}/{b['role']}: {b['detail']}", file=sys.stderr)
    for h in hosts:
        if h.get("reason"):
            print(f"{h.get('hostId')}: {h['reason']}", file=sys.stderr)
    return 0


def cordon_text(cordon: dict | None) -> str | None:
    """A host's cordon as a cell: "yes (its reason)"; None (shown "-"):
    not cordoned (or a server that has no cordons)."""
    if not cordon:
        return None
    return f"yes ({cordon['reason']})" if cordon.get("reason") else "yes"


def host_cordon(c: Client, a) -> int:
    """Take the host out of placement at the MEO; what runs there stays."""
    body = {"reason": a.reason} if a.reason else None
    _, view, _ = c.call("POST", f"{HOSTS}/{urllib.parse.quote(a.host_id, safe='')}/cordon",
                        body)
    return emit(a, view, lambda v: print(
        f"edge host {v['hostId']} cordoned: it takes no new placement"
        + (f" ({v['cordoned']['reason']})" if (v.get("cordoned") or {}).get("reason") else "")))


def host_uncordon(c: Client, a) -> int:
    _, view, _ = c.call("POST", f"{HOSTS}/{urllib.parse.quote(a.host_id, safe='')}/uncordon",
                        None)
    return emit(a, view, lambda v: print(
        f"edge host {v['hostId']} uncordoned: it takes placements again"))


def host_drain(c: Client, a) -> int:
    """Cordon the host at the MEO and relocate what runs there; the
    relocations are op occurrences (`mecorch app events ID`)."""
    body = {"reason": a.reason} if a.reason else None
    _, out, _ = c.call("POST", f"{HOSTS}/{urllib.parse.quote(a.host_id, safe='')}/drain",
                       body)

    def text(d: dict) -> None:
        print(f"edge host {a.host_id} cordoned; {len(d['relocating'])} instance(s) "
              f"relocating, {len(d['cannotMove'])} cannot move")
        for r in d["relocating"]:
            print(f"relocating {r['appInstanceId']} (op {r['opId']})")
        for r in d["cannotMove"]:
            print(f"cannot move {r['appInstanceId']}: {r['reason']}")
    return emit(a, out, text)


def _n(x) -> str:
    if x is None:
        return "?"
    if isinstance(x, float):
        return f"{round(x, 3):g}"
    return str(x)
