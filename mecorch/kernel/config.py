"""Configuration: an embedded default for one edge node, overlaid by an
optional YAML file, checked against one schema. `config/mecorch.yaml`
documents the same default (a test keeps the two equal).

The schema is the table `KEYS`: one row per key, with its type, its
default and what it is for. The core's rows are below; the rows of a
driver's section are the driver's own (`SCHEMA` of its `settings` module),
found through the `mecorch.drivers` entry points (the settings module
beside each entry point's, imported alone: no backend library) and put
under `hosts[].<role>` for that driver. The whole configuration is checked
against the composed table in one pass. The default configuration
(`DEFAULT`) is made from the table (each role with its default driver's
rows), so a new key is one new row (and its line in
`config/mecorch.yaml`).

Overlay rules:
- mappings merge key by key; lists (`hosts`, `api.callback_networks`,
  `meo.mepms`) replace the default's list whole;
- each host of a `hosts` list inherits the default host's keys for the
  roles (`cim`, `vim`, `mep`) it names, as long as it names the same driver
  (or none): `{id: edge1, cim: {network: n1}}` is a container-only host
  with the default Docker settings but the network `n1`. A role left out (or
  `null`) is not on that host.
- an unknown key or a value of the wrong type is an error naming the key,
  its path and the closest valid key.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import importlib.util
from importlib import metadata
from pathlib import Path
from typing import Any

from mecorch.kernel.errors import InvalidInput
from mecorch.kernel.schema import (  # noqa: F401 - the schema's vocabulary, named here too
    ABSENT, BOOL, DRIVER_GROUP, INT, LIST, MAP, NUMBER, ONE_ITEM, OPEN_MAP, POSITIVE, PREFS,
    REQUIRED, STR, STRS, URLS, Key, key)
from mecorch.kernel.yamlsafe import load_yaml

ROLES = ("cim", "vim", "mep")

_k = key


# ---------------------------------------------------------------- the schema
# Order matters only for `config show` and DEFAULT's key order (the
# documented file's order).
KEYS: list[Key] = [
    _k("role", STR, "all", "what this process is: all (one node: MEO and MEPM), meo, mepm",
       choices=("all", "meo", "mepm")),
    _k("state_dir", STR, "/var/lib/mecorch", "SQLite store, VM image repository, rules"),
    _k("run_dir", STR, "/run/mecorch", "pid files and sockets of what mecorch starts"),

    _k("api", MAP, {}, "the northbound REST API and Mp1"),
    _k("api.listen", STR, "127.0.0.1:8080", "HOST:PORT of the REST API"),
    _k("api.token_file", STR, None, "bearer tokens, one per line", nullable=True),
    _k("api.max_body_bytes", INT, 1048576, "largest request body accepted"),
    _k("api.page_size", INT, 500, "most items in one page of the package listing"),
    _k("api.max_connections", INT, 128, "connections one listener (the API, each Mp1 "
       "gateway) holds at once; more are answered 503 at once", bounds=(1, 10000)),
    _k("api.request_deadline_s", NUMBER, 30, "a request's line, headers and body must have "
       "arrived within this long; a streaming body gets this long per api.max_body_bytes",
       bounds=(0.1, 3600)),
    _k("api.callback_networks", STRS, ["127.0.0.0/8", "::1/128"],
       "where apps' notification callbacks may point"),
    _k("api.notify_timeout_s", NUMBER, 5, "longest wait for a subscriber's callback to answer"),
    _k("api.notify_retry_s", NUMBER, 600,
       "how long a failing callback is retried before its subscription is dropped"),
    _k("api.mp1_max_subscriptions", INT, 16, "most Mp1 subscriptions of one app instance"),
    _k("api.mp1_max_services", INT, 16, "most MEC 011 services one app instance registers"),
    _k("api.mp1_url", STR, None, "the Mp1 base URL apps are given", nullable=True),
    _k("api.tls_cert", STR, None, "PEM certificate: serve HTTPS", nullable=True),
    _k("api.tls_key", STR, None, "PEM private key of api.tls_cert", nullable=True),

    _k("orchestrator", MAP, {}, "deployment and lifecycle"),
    _k("orchestrator.cpu_allocation_ratio", NUMBER, 4.0, "vCPUs promised per physical core"),
    _k("orchestrator.graceful_timeout_s", INT, 30, "default wait for confirm_termination"),
    _k("orchestrator.reconcile_interval_s", NUMBER, 30, "reconcile store and backends this often"),
    _k("orchestrator.trusted_key", STR, None, "PEM public key packages must be signed with",
       nullable=True),
    _k("orchestrator.max_package_bytes", INT, 2147483648, "largest app package accepted"),
    _k("orchestrator.max_data_bytes", INT, 17179869184, "largest data archive of a "
       "relocation a host takes for an instance (PUT /mecorch/v1/app_instances/{id}/data)"),
    _k("orchestrator.package_fetch_timeout_s", POSITIVE, 600,
       "longest download of a package from an http(s) appPkgPath, in total"),
    _k("orchestrator.health_interval_s", NUMBER, 15, "probe every backend, and read every "
       "instance's resource usage, this often"),
    _k("orchestrator.usage_interval_s", NUMBER, None, "read every instance's resource usage "
       "this often instead (null: health_interval_s; 0: never)", nullable=True,
       bounds=(0, 86400)),
    _k("orchestrator.prefer", STR, None, "manner a dual-format app gets when both fit",
       nullable=True, choices=("container", "vm")),
    _k("orchestrator.prefer_by_app", PREFS, {}, "the same, per appDId (wins over prefer)"),
    _k("orchestrator.restart_policy", MAP, {}, "what happens when an app's runtime dies "
       "(an app's own policy wins: mecorch.spec.restart)"),
    _k("orchestrator.restart_policy.policy", STR, "Never", "the policy of an app that "
       "names none", choices=("Always", "OnFailure", "Never")),
    _k("orchestrator.restart_policy.backoff_initial_s", NUMBER, 1.0,
       "wait before the first restart; doubled for each next one", bounds=(0, 3600)),
    _k("orchestrator.restart_policy.backoff_max_s", NUMBER, 60.0,
       "the longest wait between two restarts", bounds=(0, 3600)),
    _k("orchestrator.restart_policy.limit", INT, 10, "restarts with no long run in between "
       "before mecorch gives up (observed CRASH_LOOP)", bounds=(0, 1000)),
    _k("orchestrator.restart_policy.reset_after_s", NUMBER, 300.0,
       "a run this long starts the restart count again", bounds=(0, 86400)),

    _k("meo", MAP, {}, "role meo: the MEPMs this MEO places instances on"),
    _k("meo.mepms", LIST, [], "MEPMs known from the configuration"),
    _k("meo.mepms[].id", STR, REQUIRED, "the host id the MEPM serves (checked)"),
    _k("meo.mepms[].url", STR, REQUIRED, "base URL of the MEPM's API"),
    _k("meo.mepms[].token_file", STR, None, "bearer token to call it with", nullable=True),
    _k("meo.mepms[].ca_file", STR, None, "CA to check its TLS certificate", nullable=True),
    _k("meo.heartbeat_s", NUMBER, 2, "ask each MEPM this often whether it is alive"),
    _k("meo.max_heartbeats_per_s", NUMBER, 50, "ask at most this many MEPMs a second: with "
       "more hosts than heartbeat_s allows, each is asked less often"),
    _k("meo.unreachable_after", INT, 2, "missed heartbeats in a row: UNREACHABLE"),
    _k("meo.request_timeout_s", NUMBER, 10, "wait this long for an MEPM's answer"),
    _k("meo.sync_s", NUMBER, 10, "refresh the hosts' instance states this often"),
    _k("meo.op_timeout_s", NUMBER, 3600, "an operation a host has not ended by then fails"),
    _k("meo.lease_s", NUMBER, 5, "replicas on one database: the leader's lease; another "
       "replica takes the background work over this long after the leader's last renewal"),
    _k("meo.callback_url", STR, None, "the MEO's base URL as its MEPMs reach it, for their "
       "op notifications; null: the address it serves on", nullable=True),
    # absent: SQLite in state_dir (meo.db), as a single MEO needs no server
    _k("meo.database", MAP, ABSENT, "PostgreSQL for the MEO's store, which its replicas share"),
    _k("meo.database.dsn", STR, ABSENT, "postgresql://USER@HOST:PORT/DBNAME, no password"),
    _k("meo.database.password_file", STR, None, "the password, on the file's first line",
       nullable=True),
    _k("meo.database.sslmode", STR, None, "libpq's sslmode (null: prefer); off loopback "
       "verify-ca or verify-full", nullable=True,
       choices=("disable", "allow", "prefer", "require", "verify-ca", "verify-full")),
    _k("meo.database.sslrootcert", STR, None, "CA file to verify the server's certificate",
       nullable=True),

    _k("mepm", MAP, {}, "role mepm: the MEO this MEPM registers with"),
    _k("mepm.meo_url", URLS, None, "base URL of the MEO, or a list of its replicas' URLs "
       "(registered with the first that answers)", nullable=True),
    _k("mepm.meo_token_file", STR, None, "bearer token to call the MEO with", nullable=True),
    _k("mepm.meo_ca_file", STR, None, "CA to check the MEO's TLS certificate", nullable=True),
    _k("mepm.advertise_url", STR, None, "URL the MEO reaches this MEPM at (registration)",
       nullable=True),
    _k("mepm.latency_ms", NUMBER, None, "latency this host declares (AppD appLatency)",
       nullable=True),

    _k("hosts", LIST, ONE_ITEM, "the edge hosts; the default is this machine"),
    _k("hosts[].id", STR, "default", "unique host id; mecorch labels what it makes with it"),

    _k("hosts[].cim", MAP, {}, "containers", nullable=True),
    _k("hosts[].cim.driver", STR, "docker", "CIM driver (entry point mecorch.drivers)"),

    _k("hosts[].vim", MAP, {}, "virtual machines", nullable=True),
    _k("hosts[].vim.driver", STR, "libvirt", "VIM driver (entry point mecorch.drivers)"),

    _k("hosts[].mep", MAP, {}, "DNS and traffic rules", nullable=True),
    _k("hosts[].mep.driver", STR, "linux", "MEP driver (entry point mecorch.drivers)"),
]


def _settings_module(entry_point_value: str) -> str | None:
    """`drivers.libvirt_vim:LibvirtVIM` -> `drivers.libvirt_vim.settings`:
    beside the entry point's module (in it, when that is a package); None
    for a module in no package (`__main__:FakeCIM`)."""
    module = entry_point_value.split(":", 1)[0].strip()
    try:
        spec = importlib.util.find_spec(module)     # imports the parents only
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations is not None:
        return f"{module}.settings"
    parent = module.rpartition(".")[0]
    return f"{parent}.settings" if parent else None


def driver_schemas() -> list[tuple[str, str, tuple[Key, ...]]]:
    """(driver name, role, its rows) of every installed driver whose package
    declares its section (`ROLE`, `SCHEMA` in its settings module). A driver
    without one is not described: its section's other keys are its own."""
    return [(name, module.ROLE, tuple(module.SCHEMA)) for name, module in _settings_modules()]


_SETTINGS: dict[tuple[str, str], Any] = {}      # (role, driver name) -> its settings module


def settings_of(role: str, driver: str | None) -> Any:
    """The settings module of a role's driver (None if it declares none).
    Besides its rows it may say, per host: `per_host(host_id)` (the names
    of what it makes on the machine when the section sets none),
    `check_section(section)` (what a row cannot check, e.g. names reaching
    command lines), `check_hosts([(path, section)])` (hosts of one
    configuration that would fight over one object) and `OWNED` (the keys
    naming what it makes on the machine: `mecorch host teardown` leaves
    one another configured host names too)."""
    if not _SETTINGS:
        for name, module in _settings_modules():
            _SETTINGS[(module.ROLE, name)] = module
    return _SETTINGS.get((role, driver))


def _settings_modules() -> list[tuple[str, Any]]:
    out = []
    for ep in metadata.entry_points(group=DRIVER_GROUP):
        name = _settings_module(ep.value)
        if name is None:
            continue
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        if vars(module).get("SCHEMA") is not None:
            out.append((ep.name, module))
    return out


def _compose(core: list[Key]) -> list[Key]:
    """The core's rows with each driver's rows after its role's `driver` row."""
    schemas, out = driver_schemas(), []
    for row in core:
        out.append(row)
        for role in ROLES:
            if row.path == f"hosts[].{role}.driver":
                out += [Key(f"hosts[].{role}.{k.path}", k.type, k.default, k.doc, k.nullable,
                            k.choices, name)
                        for name, their_role, rows in schemas if their_role == role
                        for k in rows]
    return out


KEYS = _compose(KEYS)
# Every role section may also name where its driver keeps state (default:
# under state_dir/run_dir, per host).
for _role in ROLES:
    KEYS += [_k(f"hosts[].{_role}.state_dir", STR, ABSENT, "driver state (default: per host)"),
             _k(f"hosts[].{_role}.run_dir", STR, ABSENT, "driver runtime files (per host)")]

# A path's row (of a role section: of the first driver with that key; the
# checks pick by the section's driver)
BY_PATH: dict[str, Key] = {}
for _row in KEYS:
    BY_PATH.setdefault(_row.path, _row)


def _children(path: str, driver: str | None = None) -> list[Key]:
    """Rows one level below `path` ("" for the top level); in a role section
    with `driver` given, the core's and that driver's."""
    prefix = f"{path}." if path else ""
    return [k for k in KEYS if k.path.startswith(prefix) and "." not in k.path[len(prefix):]
            and (driver is None or k.driver in (None, driver))]


def _build_default(path: str) -> dict:
    out: dict[str, Any] = {}
    driver = BY_PATH.get(f"{path}.driver")        # a role section: its default driver's rows
    for key in _children(path, driver.default if driver is not None else None):
        name = key.path.rsplit(".", 1)[-1]
        if key.default is ABSENT or key.default is REQUIRED:
            continue
        if key.type is MAP:
            out[name] = _build_default(key.path)
        elif key.default is ONE_ITEM:
            out[name] = [_build_default(key.path + "[]")]
        else:
            out[name] = copy.deepcopy(key.default)
    return out


DEFAULT: dict[str, Any] = _build_default("")

# ---------------------------------------------------------------- provenance
DEFAULT_SRC = "default"
HOST_SRC = "default host"        # inherited by a host entry from the default host
DERIVED_SRC = "derived"          # made by load(): driver paths and host ids


def _merge(base: dict, over: dict, src: dict, origin: str, path: str) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        here = f"{path}.{key}" if path else str(key)
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, src, origin, here)
        else:
            out[key] = copy.deepcopy(value)
            _mark(src, here, value, origin)
    return out


def _mark(src: dict, path: str, value: Any, origin: str) -> None:
    """Record `origin` for `path` and every leaf below it."""
    for k in [k for k in src if k == path or k.startswith(path + ".") or k.startswith(path + "[")]:
        del src[k]
    if isinstance(value, dict):
        for k, v in value.items():
            _mark(src, f"{path}.{k}", v, origin)
    elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
        for i, v in enumerate(value):
            _mark(src, f"{path}[{i}]", v, origin)
    else:
        src[path] = origin


# ---------------------------------------------------------------- checking
def _schema_path(path: str) -> str:
    """hosts[2].cim.network -> hosts[].cim.network"""
    out, i = [], 0
    while i < len(path):
        if path[i] == "[":
            j = path.index("]", i)
            out.append("[]")
            i = j + 1
        else:
            out.append(path[i])
            i += 1
    return "".join(out)


def check(doc: Any, where: str = "config", path: str = "", driver: str | None = None) -> None:
    """Refuse unknown keys and wrong types in `doc` (a configuration or a
    part of one at `path`), naming the key, its path and the closest key."""
    if not isinstance(doc, dict):
        raise InvalidInput(f"{where}: {path or 'the top level'} must be a mapping")
    role_driver = driver
    if _is_role(path):      # a host's cim/vim/mep: its keys depend on its driver
        role = _schema_path(path).rsplit(".", 1)[-1]
        role_driver = doc.get("driver") or DEFAULT["hosts"][0][role]["driver"]
    every = _children(_schema_path(path))
    rows = {k.path.rsplit(".", 1)[-1]: k for k in every
            if role_driver is None or k.driver in (None, role_driver)}
    others = {k.path.rsplit(".", 1)[-1]: k for k in every
              if k.driver is not None and k.driver != role_driver}
    # a driver mecorch does not describe (no schema): its own keys
    free = role_driver is not None and _is_role(path) and not any(
        k.driver == role_driver for k in every)
    for name, value in doc.items():
        here = f"{path}.{name}" if path else str(name)
        key = rows.get(name) if isinstance(name, str) else None
        if key is None and free:
            continue
        if key is None and name in others:
            raise InvalidInput(f"{where}: {here} is a key of the {others[name].driver} "
                               f"driver, not of {role_driver!r}")
        if key is None:
            valid = sorted(rows)
            close = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else \
                f"; valid keys here: {', '.join(valid)}"
            raise InvalidInput(f"{where}: unknown key {name!r} at {here}{hint}")
        _check_value(key, value, where, here, role_driver)


def _is_role(path: str) -> bool:
    sp = _schema_path(path)
    return sp.startswith("hosts[].") and sp.count(".") == 1


def _check_value(key: Key, value: Any, where: str, here: str, driver: str | None) -> None:
    if value is None:
        if key.nullable:
            return
        raise InvalidInput(f"{where}: {here} must be {key.type[0]}, not null")
    if not key.type[1](value):
        raise InvalidInput(f"{where}: {here} must be {key.type[0]} (got {value!r:.60})")
    if key.choices and value not in key.choices:
        close = difflib.get_close_matches(str(value), key.choices, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise InvalidInput(f"{where}: {here} must be one of {', '.join(key.choices)} "
                           f"(got {value!r}){hint}")
    if key.bounds and not key.bounds[0] <= value <= key.bounds[1]:
        raise InvalidInput(f"{where}: {here} must be between {key.bounds[0]} and "
                           f"{key.bounds[1]} (got {value!r})")
    if key.type is MAP:
        check(value, where, here, driver)
    elif key.type is LIST and any(k.path.startswith(key.path + "[].") for k in KEYS):
        for i, item in enumerate(value):
            check(item, where, f"{here}[{i}]", driver)
            for row in _children(key.path + "[]"):
                name = row.path.rsplit(".", 1)[-1]
                if row.default is REQUIRED and name not in item:
                    raise InvalidInput(f"{where}: {here}[{i}] needs {name!r}")


# ---------------------------------------------------------------- loading
def load(path: str | Path | None = None, sources: dict | None = None) -> dict[str, Any]:
    """The embedded default, overlaid by the YAML file at `path` if given,
    checked against the schema.

    Each driver section gets `state_dir`, `run_dir` and `host_id` so a
    driver needs nothing but its own section. `sources`, if given, is
    filled with where each value came from (dotted path -> "default", the
    file, "default host" or "derived").
    """
    src: dict[str, str] = {}
    _mark(src, "", DEFAULT, DEFAULT_SRC)
    src = {k.lstrip("."): v for k, v in src.items()}
    cfg = copy.deepcopy(DEFAULT)
    where = "config"
    if path is not None:
        where = f"config {path}"
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise InvalidInput(f"cannot read config {path}: {e.strerror}") from None
        user = load_yaml(text, what=where)
        if user is None:
            user = {}
        if not isinstance(user, dict):
            raise InvalidInput(f"{where}: top level must be a mapping")
        check(user, where)
        cfg = _merge(cfg, user, src, str(path), "")
        if "hosts" in user:
            cfg["hosts"] = [_inherit(h, i, src) for i, h in enumerate(cfg["hosts"])]
    check(cfg, where)
    _check_token_urls(cfg, where)
    _check_database(cfg, where)
    seen = set()
    for i, host in enumerate(cfg["hosts"]):
        hid = host.get("id")
        if not isinstance(hid, str) or not hid or hid in seen:
            raise InvalidInput(f"{where}: every host needs a unique id "
                               f"(hosts[{i}].id is {hid!r})")
        seen.add(hid)
        for role in ROLES:
            section = host.get(role)
            if section is None:
                continue
            for name, value in (("state_dir", str(Path(cfg["state_dir"]) / "hosts" / hid)),
                                ("run_dir", str(Path(cfg["run_dir"]) / hid))):
                if name not in section:
                    section[name] = value
                    src[f"hosts[{i}].{role}.{name}"] = DERIVED_SRC
            section["host_id"] = hid
            src[f"hosts[{i}].{role}.host_id"] = DERIVED_SRC
            _own_names(section, role, hid, f"hosts[{i}].{role}", src, where)
    _check_hosts(cfg, where)
    _check_restart(cfg, where)
    lease = (cfg.get("meo") or {}).get("lease_s", 5)
    if not 0.5 <= lease <= 300:
        # renewed every fifth of it: shorter, and a busy store misses
        # renewals; longer, and a dead leader's work waits that long
        raise InvalidInput(f"{where}: meo.lease_s ({lease:g}) must be from 0.5 to 300")
    if sources is not None:
        sources.clear()
        sources.update(src)
    return cfg


def _own_names(section: dict, role: str, hid: str, path: str, src: dict, where: str) -> None:
    """The names of what the host's driver makes on the machine that its
    section leaves at the default: the host's own (its driver's
    `per_host`), then the driver's checks of the section."""
    module = settings_of(role, section.get("driver"))
    if module is None:
        return
    per_host = getattr(module, "per_host", None)
    for name, value in (per_host(hid) if per_host else {}).items():
        here = f"{path}.{name}"
        if name not in section or (src.get(here) in (DEFAULT_SRC, HOST_SRC)
                                   and section[name] != value):
            section[name] = value
            src[here] = DERIVED_SRC
    check_section = getattr(module, "check_section", None)
    if check_section is not None:
        try:
            check_section(section)
        except InvalidInput as e:
            raise InvalidInput(f"{where}: hosts[{path.split('[')[1].split(']')[0]}]."
                               f"{e.detail}") from None


def _check_restart(cfg: dict, where: str) -> None:
    """What the schema's rows cannot say: the first wait not above the longest
    (mecorch.spec.restart reads the section)."""
    rp = cfg["orchestrator"].get("restart_policy") or {}
    first, most = rp.get("backoff_initial_s", 0), rp.get("backoff_max_s", 0)
    if first > most:
        key = "orchestrator.restart_policy"
        raise InvalidInput(f"{where}: {key}.backoff_initial_s ({first:g}) must not be above "
                           f"{key}.backoff_max_s ({most:g})")


def _check_hosts(cfg: dict, where: str) -> None:
    """Hosts of one configuration whose drivers would fight over one object
    (one DNS port, overlapping ranges): refused, naming the key."""
    for role in ROLES:
        by_driver: dict[str, list] = {}
        for i, host in enumerate(cfg["hosts"]):
            section = host.get(role)
            if section:
                by_driver.setdefault(section.get("driver"), []).append(
                    (f"hosts[{i}].{role}", section))
        for driver, sections in by_driver.items():
            module = settings_of(role, driver)
            check_hosts = getattr(module, "check_hosts", None) if module else None
            if check_hosts is not None and len(sections) > 1:
                try:
                    check_hosts(sections)
                except InvalidInput as e:
                    raise InvalidInput(f"{where}: {e.detail}") from None


def _check_token_urls(cfg: dict, where: str) -> None:
    """The URLs mecorch sends bearer tokens to between levels (an MEPM's to
    its MEO, an MEO's to its MEPMs) must be https or loopback: refused here,
    before anything starts, naming the key."""
    from mecorch.kernel.outbound import check_token_url
    urls = meo_urls(cfg.get("mepm") or {})
    urls += [(f"meo.mepms[{i}].url", m.get("url"))
             for i, m in enumerate((cfg.get("meo") or {}).get("mepms") or [])]
    for key, url in urls:
        if url is not None:
            try:
                check_token_url(url, key)
            except InvalidInput as e:
                raise InvalidInput(f"{where}: {e.detail}") from None


def _check_database(cfg: dict, where: str) -> None:
    """`meo.database`, when given: a DSN libpq reads, without a password,
    verifying TLS off loopback (mecorch.kernel.pgstore.settings; psycopg
    is imported only for a configuration that names a database)."""
    database = (cfg.get("meo") or {}).get("database")
    if database is None:
        return
    if "dsn" not in database:
        raise InvalidInput(f"{where}: meo.database needs 'dsn'")
    from mecorch.kernel.pgstore import settings
    try:
        settings(database)
    except InvalidInput as e:
        raise InvalidInput(f"{where}: {e.detail}") from None


def meo_urls(mepm: dict) -> list[tuple[str, str]]:
    """(the key naming it, URL) of each MEO URL of an MEPM's section:
    `mepm.meo_url` is one URL or a list of them (the replicas of one MEO)."""
    value = mepm.get("meo_url")
    if value is None:
        return []
    if isinstance(value, str):
        return [("mepm.meo_url", value)]
    return [(f"mepm.meo_url[{i}]", url) for i, url in enumerate(value)]


def _inherit(host: dict, i: int, src: dict) -> dict:
    """A host entry with the default host's keys for each role it names (of
    the same driver), its own keys over them."""
    base = DEFAULT["hosts"][0]
    out = dict(host)
    for role in ROLES:
        mine = host.get(role)
        if mine is None or not isinstance(mine, dict):
            continue
        default = base[role]
        if mine.get("driver", default["driver"]) != default["driver"]:
            continue                # another driver: the default's keys are not its keys
        merged = copy.deepcopy(default)
        for k, v in default.items():
            if k not in mine:
                src[f"hosts[{i}].{role}.{k}"] = HOST_SRC
        merged.update(copy.deepcopy(mine))
        out[role] = merged
    return out


def flatten(cfg: Any, path: str = "") -> list[tuple[str, Any]]:
    """(dotted path, value) of every leaf, in document order."""
    if isinstance(cfg, dict) and cfg:
        out = []
        for k, v in cfg.items():
            out += flatten(v, f"{path}.{k}" if path else str(k))
        return out
    if isinstance(cfg, list) and cfg and all(isinstance(x, dict) for x in cfg):
        out = []
        for i, v in enumerate(cfg):
            out += flatten(v, f"{path}[{i}]")
        return out
    return [(path, cfg)]
