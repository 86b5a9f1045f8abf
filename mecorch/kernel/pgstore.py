"""The PostgreSQL engine of the state store (mecorch.kernel.store), for an
MEO whose replicas share one database (`meo.database` in the config).

Same tables, rows and behaviour as the SQLite engine: the document per
row as written (`doc`, json: both engines give documents back with their
keys in the order they were written, and an AppD shown as YAML reads as it
was onboarded), its jsonb twin (`docb`, generated from it) that conditions
and `keep` read (jsonb is parsed once, when written: a `keep` pass over
10,000 documents took ~220 ms on json, ~45 ms on jsonb), the view text,
text copies of the indexed fields with (column, seq) indexes, and seq from
an identity column: past every seq given before, also after deletes.

Seq order and commit order. Within one process every statement goes
through one connection under one lock, and a transaction holds that lock
to its end: rows commit in seq order, as in SQLite. Two replicas writing
at once may commit out of seq order (B takes seq 11 and commits while A,
holding 10, has not): a paged listing whose marker passed 10 then misses
A's row (as it misses a row made just after its page was read: the next
listing has it), and the notification sender, which starts every round at
seq 0, delivers it on its next round. Writes that must be ordered across
replicas take `lock(key)` on a shared key first: the later one waits for
the earlier to commit, so it takes the higher seq.

Why one connection and not a pool: callers rely on a transaction keeping
every other thread of the process out until it ends (a read-modify-write
inside one), as SQLite's does; a pool under READ COMMITTED would not.
Statements are sub-millisecond on a LAN, the MEO's store traffic small.

A lost connection (server stopped, restarted, failed over, network cut)
is `StoreUnavailable` (503 with Retry-After) and the next call connects
again; a statement outside a transaction that finds its idle connection
gone runs once more on a new one first, so a restart the store slept
through costs no error.
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from mecorch.kernel.errors import InvalidInput, StoreUnavailable
from mecorch.kernel.store import (CLAIMING, TABLES, TABLES_REPLICAS, TABLES_V1, AllOf, AnyOf, ColumnIn, Has, Match,
                                  StateStore, StoreTooNew, TextIn, Views, _column, _index_value)

KEY = "meo.database"
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# libpq parameters a DSN may carry; secrets and TLS files have keys of
# their own (a DSN is shown by `config show` and in logs)
_DSN_PARAMS = {"host", "hostaddr", "port", "dbname", "user", "connect_timeout",
               "application_name", "target_session_attrs"}
# a dead server or network is found within about half a minute, not hours
_LIVENESS = {"connect_timeout": "5", "keepalives": "1", "keepalives_idle": "10",
             "keepalives_interval": "5", "keepalives_count": "3", "tcp_user_timeout": "30000"}
# what a transaction waits for a lock (lock(), or a row another holds)
# before it gives up: StoreUnavailable, as SQLite's busy timeout
LOCK_TIMEOUT_MS = 30000
_SCHEMA_LOCK = "mecorch.store.schema"
_VIEWS_LOCK = "mecorch.store.views"


# ---------------------------------------------------------------- settings
@dataclass(frozen=True)
class Settings:
    params: dict[str, str]          # libpq parameters, no password
    password_file: str | None
    shown: str                      # user@host:port/dbname, for operators


def settings(database: dict, where: str = KEY) -> Settings:
    """`meo.database` checked: the DSN a postgresql:// URI with a user and
    a database and no password, only the parameters _DSN_PARAMS, and TLS
    that verifies the server off loopback. Errors name the field."""
    from psycopg import conninfo as ci
    dsn = database.get("dsn")
    if not isinstance(dsn, str) or not dsn.startswith(("postgresql://", "postgres://")):
        raise InvalidInput(f"{where}.dsn must be a postgresql://USER@HOST:PORT/DBNAME URI")
    try:
        params = ci.conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - libpq's message may echo the DSN: not shown
        raise InvalidInput(f"{where}.dsn is not a PostgreSQL URI libpq can read") from None
    if "password" in params:
        raise InvalidInput(f"{where}.dsn holds a password: put it in the file named by "
                           f"{where}.password_file instead (a DSN is shown in logs and "
                           f"`config show`)")
    for name in params:
        if name not in _DSN_PARAMS:
            hint = f"; set {where}.{name}" if name in ("sslmode", "sslrootcert") else ""
            raise InvalidInput(f"{where}.dsn: parameter {name!r} is not taken here "
                               f"(allowed: {', '.join(sorted(_DSN_PARAMS))}){hint}")
    for port in str(params.get("port") or "").split(","):
        if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise InvalidInput(f"{where}.dsn: port {port[:20]!r} is not a port number")
    for name in ("user", "dbname"):
        if not params.get(name):
            raise InvalidInput(f"{where}.dsn must name the {name} "
                               f"(postgresql://USER@HOST:PORT/DBNAME)")
    sslmode = database.get("sslmode")
    if sslmode is not None and sslmode not in SSLMODES:
        raise InvalidInput(f"{where}.sslmode must be one of {', '.join(SSLMODES)}")
    hosts = str(params.get("hostaddr") or params.get("host") or "").split(",")
    remote = [h for h in hosts if not _local(h)]
    if remote and sslmode not in ("verify-ca", "verify-full"):
        raise InvalidInput(f"{where}.sslmode must be verify-ca or verify-full for "
                           f"{remote[0]!r}, off this machine: the store holds callback "
                           f"passwords and tokens")
    for name in ("password_file", "sslrootcert"):
        value = database.get(name)
        if value is not None and (not isinstance(value, str) or not value.startswith("/")):
            raise InvalidInput(f"{where}.{name} must be an absolute path")
    if sslmode is not None:
        params["sslmode"] = sslmode
    if database.get("sslrootcert") is not None:
        params["sslrootcert"] = database["sslrootcert"]
    shown = f"{params['user']}@{params.get('host') or 'localhost'}:" \
        f"{params.get('port') or 5432}/{params['dbname']}"
    return Settings(params, database.get("password_file"), shown)


def _local(host: str) -> bool:
    """A unix socket directory or a loopback address/name (or none given,
    which libpq takes as its default socket)."""
    host = host.strip()
    if not host or host.startswith("/") or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------- conditions
def _doc_path(path: tuple[str, ...]) -> tuple[str, list]:
    # `->` with a text key descends objects only (a list gives NULL), as
    # SQLite's $."a"."b" does: `#>` would index a list with "0"
    return "docb" + " -> %s::text" * len(path), list(path)


def _pg_sql(cond: Match, table: str) -> tuple[str, list]:
    """PostgreSQL's SQL of a condition (psycopg placeholders) and its
    parameters: what store._sqlite_sql says, in PostgreSQL's words."""
    if isinstance(cond, ColumnIn):
        col = _column(table, cond.column)
        sql = f'("{col}" IS NULL OR "{col}" <> ALL(%s::text[]))' if cond.negate \
            else f'"{col}" = ANY(%s::text[])'
        return sql, [list(cond.values)]
    if isinstance(cond, TextIn):
        p, pp = _doc_path(cond.path)
        how = "IS DISTINCT FROM 'string' OR" if cond.or_not_text else "= 'string' AND"
        return (f"(jsonb_typeof({p}) {how} ({p}) #>> '{{}}' = ANY(%s::text[]))",
                [*pp, *pp, list(cond.values)])
    if isinstance(cond, Has):
        p, pp = _doc_path(cond.path)
        return (f"(CASE COALESCE(jsonb_typeof({p}), 'null') WHEN 'null' THEN false "
                f"WHEN 'boolean' THEN ({p}) #>> '{{}}' = 'true' ELSE true END)",
                [*pp, *pp])
    if isinstance(cond, (AllOf, AnyOf)):
        parts = [_pg_sql(c, table) for c in cond.conds]
        if not parts:
            return ("true" if isinstance(cond, AllOf) else "false"), []
        joiner = " AND " if isinstance(cond, AllOf) else " OR "
        return (joiner.join(f"({sql})" for sql, _ in parts),
                [p for _, params in parts for p in params])
    raise TypeError(f"store: {cond!r} is not a condition")


# ---------------------------------------------------------------- migrations
Run = Callable[..., Any]


def _v1(q: Run) -> None:
    """Schema version 1: the tables, indexes and seq of store.TABLES_V1."""
    _tables(q, TABLES_V1)


def _v2(q: Run) -> None:
    """Schema version 2: the tables of an MEO's replicas."""
    _tables(q, TABLES_REPLICAS)


def _tables(q: Run, tables: dict[str, tuple[str, ...]]) -> None:
    for table, cols in tables.items():
        extra = "".join(f', "{c}" text' for c in cols)
        q(f"CREATE TABLE {table} (id text PRIMARY KEY, "
          f"seq bigint GENERATED ALWAYS AS IDENTITY, doc json NOT NULL, "
          f"docb jsonb GENERATED ALWAYS AS (doc::jsonb) STORED, view text{extra})")
        for c in cols:
            q(f'CREATE INDEX {table}_{c} ON {table} ("{c}", seq)')
        q(f"CREATE UNIQUE INDEX {table}__seq ON {table} (seq)")


# Migration i brings a database at version i to i + 1 (0: no tables yet).
def _v3(q: Run) -> None:
    """Schema version 3: the instances' CLAIMING column (store.CLAIMING),
    filled in the column and the document for those that claim something."""
    q(f'ALTER TABLE instances ADD COLUMN "{CLAIMING}" text')
    q(f"""UPDATE instances SET doc = jsonb_set(doc::jsonb, '{{{CLAIMING}}}', '"yes"')::json,
          "{CLAIMING}" = 'yes'
          WHERE jsonb_array_length(COALESCE(docb #> '{{_claims,trafficRules}}', '[]')) > 0
             OR jsonb_array_length(COALESCE(docb #> '{{_claims,dnsRules}}', '[]')) > 0""")
    q(f'CREATE INDEX instances_{CLAIMING} ON instances ("{CLAIMING}", seq)')


MIGRATIONS: list[Callable[[Run], None]] = [_v1, _v2, _v3]


def _key64(key: str) -> int:
    """pg_advisory_xact_lock's bigint for a key: 64 bits of its SHA-256."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


# ---------------------------------------------------------------- the engine
class PgStore(StateStore):
    def __init__(self, settings: Settings, views: Views | None = None,
                 migrations: list[Callable[[Run], None]] | None = None):
        """`migrations`: the schema's (tests name others)."""
        self.settings = settings
        self.path = settings.shown
        self.views = views
        self._migrations = MIGRATIONS if migrations is None else migrations
        self._lock = threading.RLock()
        self._conn = None
        self._tx_thread: int | None = None
        self._password()                    # a wrong file is a config error, now
        self._migrate()
        if views is not None:
            self._build_views()

    # ------------------------------------------------------------ connection
    def _password(self) -> str | None:
        name = self.settings.password_file
        if name is None:
            return None
        try:
            with open(name, encoding="utf-8") as f:
                return f.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            raise InvalidInput(f"{KEY}.password_file {name}: cannot read it "
                               f"({getattr(e, 'strerror', None) or e})") from None

    def _connection(self):
        import psycopg
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._conn = None
        if self._tx_thread is not None:
            # never go on outside the transaction a lost connection ended
            raise StoreUnavailable(f"the connection to PostgreSQL at {self.path} was lost "
                                   f"in a transaction: it was rolled back")
        params = {**_LIVENESS, **self.settings.params}
        try:
            password = self._password()         # read again: it may have been rotated
        except InvalidInput as e:
            raise StoreUnavailable(e.detail) from None
        if password is not None:
            params["password"] = password
        try:
            self._conn = psycopg.connect(
                autocommit=True, options=f"-c lock_timeout={LOCK_TIMEOUT_MS}", **params)
        except psycopg.Error as e:
            raise StoreUnavailable(f"PostgreSQL at {self.path} cannot be reached: "
                                   f"{_first_line(e)}") from None
        return self._conn

    def _q(self, sql: str, params: Any = (), fetch: str | None = "all", many: bool = False,
           again: bool = True):
        """Run one statement on the connection (opened again if it was
        lost): its rows, its first row, or nothing. Outside a transaction,
        a statement whose connection turns out lost (the server restarted
        or failed over while it was idle) runs once more on a new one:
        every statement the store sends alone is safe to repeat (an upsert,
        a delete by id, a select)."""
        import psycopg
        with self._lock:
            reused = self._conn is not None
            conn = self._connection()
            try:
                with conn.cursor() as cur:
                    if many:
                        cur.executemany(sql, params)
                        return None
                    cur.execute(sql, params)
                    if fetch == "all":
                        return cur.fetchall()
                    if fetch == "one":
                        return cur.fetchone()
                    return None
            except psycopg.Error as e:
                state = getattr(e, "sqlstate", None) or ""
                if conn.closed or conn.broken or state.startswith("08") \
                        or state in ("57P01", "57P02", "57P03") \
                        or (isinstance(e, psycopg.OperationalError) and not state):
                    self._conn = None
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001 - it is gone either way
                        pass
                    if again and reused and self._tx_thread is None \
                            and sql not in ("COMMIT", "ROLLBACK"):
                        return self._q(sql, params, fetch, many, again=False)
                    what = "the commit's outcome is unknown" if sql == "COMMIT" \
                        else "nothing was done"
                    raise StoreUnavailable(f"lost the connection to PostgreSQL at "
                                           f"{self.path} ({_first_line(e)}): {what}") from None
                if state in ("55P03", "57014"):      # lock_timeout, statement cancelled
                    raise StoreUnavailable(f"PostgreSQL at {self.path}: {_first_line(e)}") \
                        from None
                raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # ------------------------------------------------------------ transactions
    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            if self._tx_thread == threading.get_ident():
                yield               # begun inside another: part of it
                return
            self._q("BEGIN", fetch=None)
            self._tx_thread = threading.get_ident()
            try:
                yield
            except BaseException:
                self._tx_thread = None
                if self._conn is not None:
                    try:
                        self._q("ROLLBACK", fetch=None)
                    except StoreUnavailable:
                        pass                    # gone: the server rolled it back
                raise
            self._tx_thread = None
            self._q("COMMIT", fetch=None)

    def seq_epoch(self) -> int:
        """0: seq is an identity column, never given twice."""
        return 0

    def lock(self, key: str) -> None:
        """pg_advisory_xact_lock on 64 bits of the key's SHA-256: held
        until the transaction ends (a collision of two keys only makes
        them wait for each other). While it waits, this process's other
        threads wait for the store too (the transaction holds the
        connection), at most LOCK_TIMEOUT_MS: then StoreUnavailable."""
        if self._tx_thread != threading.get_ident():
            raise RuntimeError("store.lock: only inside a transaction")
        self._q("SELECT pg_advisory_xact_lock(%s)", (_key64(key),), fetch=None)

    def _migrate(self) -> None:
        """Bring the database to the newest schema version in one
        transaction, under a lock: replicas starting together migrate it
        once."""
        with self.transaction():
            self.lock(_SCHEMA_LOCK)
            self._q("CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text)",
                    fetch=None)
            row = self._q("SELECT value FROM meta WHERE key='schema_version'", fetch="one")
            version = int(row[0]) if row else 0
            newest = len(self._migrations)
            if version > newest:
                raise StoreTooNew(f"store {self.path} is at schema version {version}; this "
                                  f"mecorch knows versions up to {newest}: run a newer mecorch")
            for migration in self._migrations[version:]:
                migration(lambda sql, params=(): self._q(sql, params, fetch=None))
            if version < newest:
                self._q("INSERT INTO meta (key, value) VALUES ('schema_version', %s) "
                        "ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                        (str(newest),), fetch=None)

    def _build_views(self) -> None:
        """As the SQLite engine's: every view rebuilt when the database
        holds other views, else those written without one."""
        fingerprint = self.views.fingerprint()
        with self.transaction():
            self.lock(_VIEWS_LOCK)
            row = self._q("SELECT value FROM meta WHERE key='views'", fetch="one")
            if row is None or row[0] != fingerprint:
                for table in TABLES:
                    self._q(f"UPDATE {table} SET view=NULL WHERE view IS NOT NULL", fetch=None)
            for table in self.views.of:
                todo = self._q(f"SELECT id, doc FROM {table} WHERE view IS NULL")
                if todo:
                    self._q(f"UPDATE {table} SET view=%s WHERE id=%s",
                            [(self.views.text(table, doc), id_) for id_, doc in todo],
                            many=True)
            self._q("INSERT INTO meta (key, value) VALUES ('views', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                    (fingerprint,), fetch=None)

    # ------------------------------------------------------------ rows
    def put(self, table: str, id_: str, doc: dict[str, Any]) -> dict[str, Any]:
        import json
        cols = TABLES[table]
        names = "".join(f', "{c}"' for c in cols)
        view = self.views.text(table, doc) if self.views is not None else None
        self._q(f"INSERT INTO {table} (id, doc, view{names}) VALUES (%s, %s::json, %s"
                + ", %s" * len(cols) + ") ON CONFLICT (id) DO UPDATE SET doc=excluded.doc, "
                "view=excluded.view" + "".join(f', "{c}"=excluded."{c}"' for c in cols),
                [id_, json.dumps(doc, separators=(",", ":")), view,
                 *(_index_value(doc.get(c)) for c in cols)], fetch=None)
        return doc

    def get(self, table: str, id_: str) -> dict[str, Any] | None:
        row = self._q(f"SELECT doc FROM {_table(table)} WHERE id=%s", (id_,), fetch="one")
        return row[0] if row else None

    def delete(self, table: str, id_: str) -> None:
        self._q(f"DELETE FROM {_table(table)} WHERE id=%s", (id_,), fetch=None)

    def _select(self, table: str, match, drop, where: dict, after: int | None = None,
                limit: int | None = None, keep: tuple[str, ...] = (),
                views: bool = False) -> list:
        _table(table)
        conds = [f'"{k}" = %s' for k in where]
        params: list = list(where.values())
        if match:
            sql, more = _pg_sql(match, table)
            conds.append(f"({sql})")
            params += more
        if after is not None:
            conds.append("seq > %s")
            params.append(int(after))
        column = "view, CASE WHEN view IS NULL THEN doc END" if views else "doc"
        if drop:
            # json_each in the document's order: the keys left keep theirs
            column = ("(SELECT COALESCE(json_object_agg(e.key, e.value ORDER BY e.n), "
                      "'{}'::json) FROM json_each(doc) WITH ORDINALITY AS e(key, value, n) "
                      "WHERE e.key <> ALL(%s::text[]))")
            params = [list(drop)] + params
        elif keep:
            column = f"json_build_object({', '.join(['%s::text, docb -> %s::text'] * len(keep))})"
            params = [x for k in keep for x in (k, k)] + params
        where_sql = (" WHERE " + " AND ".join(conds)) if conds else ""
        sql = f"SELECT seq, {column} FROM {table}{where_sql} ORDER BY seq"
        if limit is not None:
            sql += " LIMIT %s"
            params.append(int(limit))
        rows = self._q(sql, params)
        return [tuple(r) for r in rows]


def _table(name: str) -> str:
    """A table of the store (its name goes into SQL as it is)."""
    if name not in TABLES:
        raise KeyError(f"the store has no table {name!r}")
    return name


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
