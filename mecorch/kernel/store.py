"""The state store: what mecorch decided, one JSON document per row.

Each table keeps a JSON document per row plus a few indexed columns copied
out of it for filtering. Writes are transactions; the op journal row of an
LCM operation is committed before any backend is touched, so a restart can
finish or undo what a crash interrupted. What the backends report
(observed state) is never stored as truth here: it is read from them.

Two engines keep it behind one interface (`StateStore`): `Store`, one
SQLite file (WAL), for the single node, every MEPM and a small MEO, with
no server to run; and `mecorch.kernel.pgstore.PgStore`, PostgreSQL, for an
MEO whose replicas share one database. Callers select rows with
equalities on indexed columns and a `match` value (ColumnIn, TextIn, Has,
AllOf, AnyOf) that each engine renders in its own SQL: no caller writes
SQL. `open_store` opens the engine the configuration names.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Union

from mecorch.kernel.errors import MecorchError

CACHE_KIB = 512
# table -> indexed columns (each also a key of the document), as schema
# version 1 made them. A table or column added later comes with a
# migration of each engine (SQLITE_MIGRATIONS, pgstore.MIGRATIONS) that
# makes it, and is added to TABLES, the current schema, with it.
TABLES_V1: dict[str, tuple[str, ...]] = {
    # appName and appProvider: what `filter=` queries ask most after appDId
    "packages": ("appDId", "onboardingState", "operationalState", "usageState",
                 "appName", "appProvider"),
    # appInstanceName: how an operator finds an instance in a listing
    "instances": ("appDId", "appPkgId", "instantiationState", "hostId", "appInstanceName"),
    "op_occs": ("appInstanceId", "operationState", "lcmOperation"),
    "subscriptions": ("appInstanceId",),
    "idempotency": ("resource",),
    "rules": ("hostId",),
    # the northbound (app_pkgm, app_lcm) subscriptions and the notifications
    # still to be delivered to them (mecorch.notifications)
    "oss_subscriptions": ("api",),
    "outbox": ("subscriptionId",),
    # MEC 011 service registry of a host's apps (mecorch.mepm.services):
    # services (their tombstones too), availability subscriptions, and
    # the notifications still to be delivered to those
    "services": ("appInstanceId",),
    "service_subscriptions": ("appInstanceId",),
    "service_outbox": ("subscriptionId",),
    "hosts": (),                # an MEO's registered edge hosts
    "host_tasks": ("hostId",),  # what an MEO still owes a host that was away
}
# An MEO's replicas (SQLite version 3, PostgreSQL version 2): the lease of
# the one that runs the background work (mecorch.meo.leader), what its
# heartbeat last learnt of each host, and the room held on a host for a
# deploy the host has not reported yet.
TABLES_REPLICAS: dict[str, tuple[str, ...]] = {
    "leases": (),
    "host_states": (),
    "reservations": ("hostId",),
}
# SQLite version 4, PostgreSQL version 3: an MEO's instance that claims a
# fixed service address or a DNS name on its host says so in an indexed
# column ("yes"; mecorch.meo.lcm._held reads only those: a scan of every
# instance was most of such a placement's time at 10,000 instances)
CLAIMING = "_claiming"
TABLES: dict[str, tuple[str, ...]] = {**TABLES_V1, **TABLES_REPLICAS,
                                      "instances": (*TABLES_V1["instances"], CLAIMING)}


class StoreTooNew(MecorchError):
    """The store was written by a newer mecorch (a schema version this code
    does not know): opening it would misread it."""
    status, title = 500, "Store schema too new"


# ---------------------------------------------------------------- conditions
# What a caller selects rows by beyond equalities on indexed columns: small
# values each engine renders in its own SQL. A path is the document's keys
# from the top, descending objects only (never into a list).
_PART = re.compile(r"[A-Za-z0-9_.\-]*")        # "": a key that is empty


def _path(path: tuple[str, ...] | list[str] | str) -> tuple[str, ...]:
    parts = (path,) if isinstance(path, str) else tuple(path)
    if not parts or not all(isinstance(p, str) and _PART.fullmatch(p) for p in parts):
        raise ValueError(f"store: {path!r} is not a document path")
    return parts


@dataclass(frozen=True)
class ColumnIn:
    """The indexed column's value is one of `values`; with `negate`, it is
    none of them (a row whose column is NULL is none of them)."""
    column: str
    values: tuple[str, ...]
    negate: bool = False

    def __post_init__(self):
        object.__setattr__(self, "values", tuple(str(v) for v in self.values))


@dataclass(frozen=True)
class TextIn:
    """The document's value at `path` is a string among `values`; with
    `or_not_text`, a value there that is no string (missing, null, a
    number, a list, an object) passes too: filters.prefilter's narrowing,
    where the filter itself decides on those."""
    path: tuple[str, ...]
    values: tuple[str, ...]
    or_not_text: bool = False

    def __post_init__(self):
        object.__setattr__(self, "path", _path(self.path))
        object.__setattr__(self, "values", tuple(str(v) for v in self.values))


@dataclass(frozen=True)
class Has:
    """The document has a value at `path` that is neither null nor false."""
    path: tuple[str, ...]

    def __post_init__(self):
        object.__setattr__(self, "path", _path(self.path))


@dataclass(frozen=True)
class AllOf:
    conds: tuple

    def __post_init__(self):
        object.__setattr__(self, "conds", tuple(self.conds))


@dataclass(frozen=True)
class AnyOf:
    conds: tuple

    def __post_init__(self):
        object.__setattr__(self, "conds", tuple(self.conds))


Match = Union[ColumnIn, TextIn, Has, AllOf, AnyOf]


def _column(table: str, column: str) -> str:
    if column not in TABLES[table]:
        raise KeyError(f"{table}.{column} is not an indexed column")
    return column


def _sqlite_sql(cond: Match, table: str) -> tuple[str, list]:
    """SQLite's SQL of a condition and its parameters."""
    if isinstance(cond, ColumnIn):
        col, marks = _column(table, cond.column), ", ".join("?" * len(cond.values))
        sql = f'("{col}" IS NULL OR "{col}" NOT IN ({marks}))' if cond.negate \
            else f'"{col}" IN ({marks})'
        return sql, list(cond.values)
    if isinstance(cond, TextIn):
        jpath = "$" + "".join(f'."{p}"' for p in cond.path)
        marks = ", ".join("?" * len(cond.values))
        how = "IS NOT 'text' OR" if cond.or_not_text else "= 'text' AND"
        return (f"(json_type(doc, ?) {how} json_extract(doc, ?) IN ({marks}))",
                [jpath, jpath, *cond.values])
    if isinstance(cond, Has):
        # json_type is NULL where the path is missing: NOT IN is then NULL
        return ("json_type(doc, ?) NOT IN ('null', 'false')",
                ["$" + "".join(f'."{p}"' for p in cond.path)])
    if isinstance(cond, (AllOf, AnyOf)):
        parts = [_sqlite_sql(c, table) for c in cond.conds]
        if not parts:
            return ("1" if isinstance(cond, AllOf) else "0"), []
        joiner = " AND " if isinstance(cond, AllOf) else " OR "
        return (joiner.join(f"({sql})" for sql, _ in parts),
                [p for _, params in parts for p in params])
    raise TypeError(f"store: {cond!r} is not a condition")


# ---------------------------------------------------------------- views
class Views:
    """Per table, the document as the API shows it (its view), kept as
    JSON text in the row beside the document, so a page of a listing is
    sent as stored: decoding 500 documents and encoding their views again
    was most of a listing's time (~9 of ~11 ms for 500 packages).

    `version` is bumped by whoever changes what a view function returns;
    a store opened with other views than it holds rebuilds them."""

    def __init__(self, version: int, of: dict[str, Callable[[dict], dict]]):
        self.version = version
        self.of = dict(of)

    def fingerprint(self) -> str:
        # The functions' names, not their modules: moving views to another
        # module does not change what they return, so it rebuilds nothing.
        return f"{self.version}:" + ",".join(
            f"{t}={fn.__qualname__}" for t, fn in sorted(self.of.items()))

    def text(self, table: str, doc: dict) -> str | None:
        fn = self.of.get(table)
        return None if fn is None else json.dumps(fn(doc), separators=(",", ":"))


def _unqualified(fingerprint: str) -> str:
    """A stored fingerprint in today's form: stores written before the
    layout of mecorch/ changed (mecorch 0.1 up to the reshape) named each
    function with its module (`instances=mecorch.views.host_instance_view`)."""
    version, _, entries = fingerprint.partition(":")
    return f"{version}:" + ",".join(
        f"{t}={fn.rpartition('.')[2]}" for t, _, fn in
        (e.partition("=") for e in entries.split(",") if e))


# ---------------------------------------------------------------- the interface
class StateStore(ABC):
    """What every engine offers. Each method is atomic on its own; a
    `transaction()` groups writes so they land together or not at all, and
    within one process it excludes every other thread's use of the store
    until it ends (so a read-modify-write inside one is safe from them).
    Across processes (replicas of an MEO on one PostgreSQL), `lock(key)`
    inside a transaction serialises those that lock the same key."""

    views: Views | None
    path: str           # where the store is, for operators (no secret)

    @abstractmethod
    def put(self, table: str, id_: str, doc: dict[str, Any]) -> dict[str, Any]:
        """Insert or replace the row `id_`; a replaced row keeps its seq
        (its place in insertion order); a new row's seq is past every seq
        given before in the table, also those of rows deleted since."""

    @abstractmethod
    def get(self, table: str, id_: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def delete(self, table: str, id_: str) -> None:
        """Remove the row if there is one (none is fine)."""

    @abstractmethod
    def transaction(self) -> Iterator[None]:
        """Context manager: the writes inside land together or not at all
        (an exception rolls them back and goes on)."""

    @abstractmethod
    def lock(self, key: str) -> None:
        """Inside a transaction: hold a lock on `key`, across processes,
        until the transaction ends (another process locking the same key
        waits for it)."""

    @abstractmethod
    def seq_epoch(self) -> int:
        """A value that changes when a seq read before may have been given
        again (`page` after that seq would miss the new row): a reader that
        keeps the last seq it read starts over when it changes. 0 always
        where seqs are never given twice."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def _select(self, table: str, match: Match | None, drop: tuple, where: dict,
                after: int | None = None, limit: int | None = None,
                keep: tuple[str, ...] = (), views: bool = False) -> list:
        """(seq, document) pairs in seq order, or with `views` (seq, view
        text or None, the document (or its JSON text) when the view is
        None)."""

    def page(self, table: str, after: int, limit: int, match: Match | None = None,
             drop: tuple[str, ...] = (), **where: Any) -> list[tuple[int, dict[str, Any]]]:
        """Up to `limit` (seq, document) pairs with seq > `after`, in
        insertion order: the building block of paged listings."""
        return self._select(table, match, drop, _where(table, where), after=after, limit=limit)

    def page_views(self, table: str, after: int, limit: int, match: Match | None = None,
                   **where: Any) -> list[tuple[int, str]]:
        """As page, but each row's view as stored (JSON text, not
        decoded); a row written without one gets it built here."""
        if self.views is None or table not in self.views.of:
            raise KeyError(f"this store keeps no views of {table}")
        rows = self._select(table, match, (), _where(table, where), after=after, limit=limit,
                            views=True)
        return [(seq, view if view is not None else self.views.text(
                    table, json.loads(doc) if isinstance(doc, str) else doc))
                for seq, view, doc in rows]

    def list(self, table: str, match: Match | None = None, drop: tuple[str, ...] = (),
             keep: tuple[str, ...] = (), **where: Any) -> list[dict[str, Any]]:
        """Documents whose indexed columns equal the given values, in
        insertion order. `match`: a condition (ColumnIn, TextIn, Has,
        AllOf, AnyOf; e.g. filters.prefilter's) that selects rows before
        their documents are decoded. `drop`: top-level keys left out of the
        documents (removed by the database, so a listing does not decode
        large internal fields only to throw them away). `keep`: only these
        top-level keys, built by the database (a key a document does not
        have reads as None): a periodic pass over every instance decodes
        ~100 bytes of each instead of its whole ~2 KB document."""
        if drop and keep:
            raise ValueError("store.list: drop or keep, not both")
        return [doc for _, doc in self._select(table, match, drop, _where(table, where),
                                               keep=keep)]


def _where(table: str, where: dict) -> dict:
    for k in where:
        _column(table, k)
    return {k: _index_value(v) for k, v in where.items()}


def open_store(cfg: dict, views: Views | None, sqlite_path: str | Path) -> StateStore:
    """The MEO's store as `cfg` names it: the PostgreSQL database of
    `meo.database` (mecorch.kernel.pgstore), else the SQLite file at
    `sqlite_path`."""
    database = (cfg.get("meo") or {}).get("database")
    if database:
        from mecorch.kernel.pgstore import PgStore, settings
        return PgStore(settings(database), views)
    return Store(sqlite_path, views)


# ---------------------------------------------------------------- SQLite
def _sqlite_v1(db: sqlite3.Connection) -> None:
    """The layout mecorch made before schema versions, and what a store
    older than that lacks: the view column, indexed columns added since
    (filled from the documents, string values as put writes them), and
    (column, seq) indexes where an older store had the column alone.
    Changes nothing in a store the code of that time made."""
    _sqlite_tables(db, TABLES_V1)


def _sqlite_tables(db: sqlite3.Connection, tables: dict[str, tuple[str, ...]]) -> None:
    for table, cols in tables.items():
        extra = "".join(f', "{c}" TEXT' for c in cols)
        db.execute(f'CREATE TABLE IF NOT EXISTS {table} '
                   f'(id TEXT PRIMARY KEY, seq INTEGER, doc TEXT NOT NULL, view TEXT{extra})')
        have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
        if "view" not in have:
            db.execute(f"ALTER TABLE {table} ADD COLUMN view TEXT")
        for c in cols:
            if c not in have:
                db.execute(f'ALTER TABLE {table} ADD COLUMN "{c}" TEXT')
                db.execute(f'UPDATE {table} SET "{c}"=json_extract(doc, ?) '
                           f"WHERE json_type(doc, ?)='text'", (f'$."{c}"', f'$."{c}"'))
        for c in cols:
            # (column, seq): an equality on the column walks its rows
            # in insertion order, so a page of a query stops at the
            # page's end and a rare value is found at once (an index on
            # the column alone left SQLite to walk seq and test every
            # row, or to sort every match)
            index = f"{table}_{c}"
            have_cols = [r[2] for r in db.execute(f"PRAGMA index_info({index})")]
            if have_cols and have_cols != [c, "seq"]:
                db.execute(f"DROP INDEX {index}")       # an older store's
            db.execute(f'CREATE INDEX IF NOT EXISTS {index} ON {table}("{c}", seq)')
        # listings walk insertion order (paging reads seq ranges)
        db.execute(f"CREATE INDEX IF NOT EXISTS {table}__seq ON {table}(seq)")


def _sqlite_v2(db: sqlite3.Connection) -> None:
    """The views fingerprint in today's form (see _unqualified), once, so
    an open compares fingerprints as they are."""
    row = db.execute("SELECT value FROM meta WHERE key='views'").fetchone()
    if row is not None:
        db.execute("UPDATE meta SET value=? WHERE key='views'", (_unqualified(row[0]),))


def _sqlite_v3(db: sqlite3.Connection) -> None:
    """The tables of an MEO's replicas (TABLES_REPLICAS)."""
    _sqlite_tables(db, TABLES_REPLICAS)


def _sqlite_v4(db: sqlite3.Connection) -> None:
    """The instances' CLAIMING column, filled (in the column and in the
    document, whose key put copies to it) for those that claim something."""
    if CLAIMING not in {r[1] for r in db.execute("PRAGMA table_info(instances)")}:
        db.execute(f'ALTER TABLE instances ADD COLUMN "{CLAIMING}" TEXT')
    db.execute(f"""UPDATE instances SET doc=json_set(doc, '$.{CLAIMING}', 'yes'),
                   "{CLAIMING}"='yes'
                   WHERE json_array_length(doc, '$._claims.trafficRules') > 0
                      OR json_array_length(doc, '$._claims.dnsRules') > 0""")
    db.execute(f'CREATE INDEX IF NOT EXISTS instances_{CLAIMING} ON instances("{CLAIMING}", seq)')


# Migration i brings a store at version i to i + 1 (0: an empty file).
SQLITE_MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _sqlite_v1, _sqlite_v2, _sqlite_v3, _sqlite_v4]


class Store(StateStore):
    """The SQLite engine: one file (WAL), one connection per process
    guarded by a lock; BEGIN IMMEDIATE makes a transaction the only
    writer of the file, across processes too."""

    def __init__(self, path: str | Path, views: Views | None = None):
        """`views`: the API views to keep beside the documents (see Views);
        a store opened without them (a command that only reads) writes
        rows with no view, which a store with views builds when read or
        next opened."""
        self.path = str(path)
        self.views = views
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            # its owner's only whatever the umask (SQLite gives the WAL and
            # SHM the database's mode): it holds callback passwords and tokens
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._db = sqlite3.connect(self.path, check_same_thread=False,
                                   isolation_level=None, timeout=30)
        self._lock = threading.RLock()
        self._depth = 0         # transactions open (nested ones join the outer)
        self._tx_thread: int | None = None
        # per table: the highest seq this store has given (see put)
        self._last_seq: dict[str, int] = {}
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # SQLite's own page cache (2 MB by default) stays allocated for the
        # process's life once a store of some hundred instances filled it;
        # the pages are in the kernel's cache anyway, a re-read is a copy.
        self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self._migrate()
        # Statistics for the query planner, from a sample of each index
        # (a few ms at 10,000 rows): without them SQLite cannot tell a rare
        # appName from an onboardingState every row has, and picks the
        # latter for (in,appName,a,b) on the package listing. The shape
        # they record (unique names, a handful of states) holds as the
        # store grows, so once per open is enough.
        self._db.execute("PRAGMA analysis_limit=400")
        self._db.execute("ANALYZE")
        if views is not None:
            self._build_views()

    def _version(self) -> int:
        try:
            row = self._db.execute(
                "SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.OperationalError:            # no meta table: an empty file
            return 0
        return int(row[0]) if row else 0

    def _migrate(self) -> None:
        """Bring the file to the newest schema version, one migration per
        transaction (BEGIN IMMEDIATE: a second process opening it waits,
        then finds it migrated). An up-to-date store is only read."""
        newest = len(SQLITE_MIGRATIONS)
        while (version := self._version()) != newest:
            if version > newest:
                raise StoreTooNew(f"store {self.path} is at schema version {version}; this "
                                  f"mecorch knows versions up to {newest}: run a newer mecorch")
            with self.transaction():
                self._db.execute("CREATE TABLE IF NOT EXISTS meta "
                                 "(key TEXT PRIMARY KEY, value TEXT)")
                if self._version() != version:
                    continue                # another process migrated it meanwhile
                SQLITE_MIGRATIONS[version](self._db)
                self._db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                                 "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                                 (str(version + 1),))

    def _build_views(self) -> None:
        """Make every row's view the one `self.views` gives: all of them
        when the store held other views (or none), else the rows written
        without one."""
        fingerprint = self.views.fingerprint()
        with self.transaction():
            row = self._db.execute("SELECT value FROM meta WHERE key='views'").fetchone()
            if row is None or row[0] != fingerprint:
                for table in TABLES:
                    self._db.execute(f"UPDATE {table} SET view=NULL WHERE view IS NOT NULL")
            for table in self.views.of:
                todo = self._db.execute(
                    f"SELECT id, doc FROM {table} WHERE view IS NULL").fetchall()
                self._db.executemany(
                    f"UPDATE {table} SET view=? WHERE id=?",
                    ((self.views.text(table, json.loads(doc)), id_) for id_, doc in todo))
            self._db.execute("INSERT INTO meta (key, value) VALUES ('views', ?) "
                             "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                             (fingerprint,))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes so they land together or not at all. A transaction
        begun inside another (same thread) is part of it."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._depth, self._tx_thread = 1, threading.get_ident()
            try:
                yield
            except BaseException:
                self._depth, self._tx_thread = 0, None
                self._db.execute("ROLLBACK")
                raise
            self._depth, self._tx_thread = 0, None
            self._db.execute("COMMIT")

    def seq_epoch(self) -> int:
        """SQLite's data_version: it changes when another connection (an
        MEO replica's process on this file) commits. Only another process
        may give a seq again (each process keeps its high-water mark of the
        seqs it gave and read, past deletes: `put`, `_select`); this
        process's own commits leave it as is."""
        with self._lock:
            return self._db.execute("PRAGMA data_version").fetchone()[0]

    def lock(self, key: str) -> None:
        """Nothing to take: BEGIN IMMEDIATE already made this transaction
        the only writer of the file, in every process, until it ends."""
        if self._tx_thread != threading.get_ident():
            raise RuntimeError("store.lock: only inside a transaction")

    def put(self, table: str, id_: str, doc: dict[str, Any]) -> dict[str, Any]:
        cols = TABLES[table]
        values = [_index_value(doc.get(c)) for c in cols]
        names = "".join(f', "{c}"' for c in cols)
        marks = ", ?" * len(cols)
        with self._lock:
            # seq keeps insertion order stable across updates. A new row's
            # seq is past every seq given before, not only past the rows
            # left: the notification sender walks the outbox upwards while it
            # deletes what it sent, and a seq given again after a delete put
            # a later notification ahead of an earlier one.
            last = self._last_seq.get(table, 0)
            view = self.views.text(table, doc) if self.views is not None else None
            seq = self._db.execute(
                f'INSERT INTO {table} (id, seq, doc, view{names}) VALUES (?, '
                f'(SELECT MAX(COALESCE(MAX(seq), 0), ?) + 1 FROM {table}), ?, ?{marks}) '
                f'ON CONFLICT(id) DO UPDATE SET doc=excluded.doc, view=excluded.view'
                + "".join(f', "{c}"=excluded."{c}"' for c in cols) + ' RETURNING seq',
                [id_, last, json.dumps(doc, separators=(",", ":")), view, *values]).fetchone()[0]
            self._last_seq[table] = max(last, seq)
        return doc

    def get(self, table: str, id_: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(f"SELECT doc FROM {table} WHERE id=?", (id_,)).fetchone()
        return json.loads(row[0]) if row else None

    def _select(self, table: str, match, drop, where: dict, after: int | None = None,
                limit: int | None = None, keep: tuple[str, ...] = (),
                views: bool = False) -> list:
        conds = [f'"{k}"=?' for k in where]
        params = list(where.values())
        if match:
            sql, more = _sqlite_sql(match, table)
            conds.append(f"({sql})")
            params += more
        if after is not None:
            conds.append("seq > ?")
            params.append(int(after))
        column = "view, CASE WHEN view IS NULL THEN doc END" if views else "doc"
        if drop:
            column = f"json_remove(doc{', ?' * len(drop)})"
            params = [f'$."{k}"' for k in drop] + params
        elif keep:
            column = f"json_object({', '.join(['?, json_extract(doc, ?)'] * len(keep))})"
            params = [x for k in keep for x in (k, f'$."{k}"')] + params
        where_sql = (" WHERE " + " AND ".join(conds)) if conds else ""
        if limit is None:
            sql = f"SELECT seq, {column} FROM {table}{where_sql} ORDER BY seq"
        else:
            # Pick the page's seqs first (from a (column, seq) index when a
            # condition is on an indexed column, else walking seq: either
            # way in insertion order, stopping at the page's end), then
            # build only their documents.
            sql = (f"SELECT seq, {column} FROM {table} WHERE seq IN "
                   f"(SELECT seq FROM {table}{where_sql} "
                   f"ORDER BY seq LIMIT ?) ORDER BY seq")
            params.append(int(limit))
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
            if rows and rows[-1][0] > self._last_seq.get(table, 0):
                # a row this process inserts next goes past every seq it
                # has read too (even one deleted since): a reader paging
                # after the last seq it saw misses none of this process's
                # (another process's commits: `seq_epoch`)
                self._last_seq[table] = rows[-1][0]
        if views:
            return rows             # as they are: a view needs no decoding
        return [(r[0], json.loads(r[1])) for r in rows]

    def delete(self, table: str, id_: str) -> None:
        with self._lock:
            self._db.execute(f"DELETE FROM {table} WHERE id=?", (id_,))


def _index_value(value: Any) -> str | None:
    if value is None:
        return None
    if hasattr(value, "value"):         # enums
        value = value.value
    return str(value)
