"""The state store: one SQLite file (WAL) holding what mecorch decided.

Each table keeps a JSON document per row plus a few indexed columns copied
out of it for filtering. Writes are transactions; the op journal row of an
LCM operation is committed before any backend is touched, so a restart can
finish or undo what a crash interrupted. What the backends report
(observed state) is never stored as truth here: it is read from them.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

CACHE_KIB = 512
# table -> indexed columns (each also a key of the document)
TABLES: dict[str, tuple[str, ...]] = {
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
    # an MEO's replicas: the lease of the one that runs the background
    # work (mecorch.meo.leader), what its heartbeat last learnt of each
    # host, and the room held on a host for a deploy it has not reported
    "leases": (),
    "host_states": (),
    "reservations": ("hostId",),
    "host_tasks": ("hostId",),  # what an MEO still owes a host that was away
}


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


class Store:
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
        # per table: the highest seq this store has given (see put)
        self._last_seq: dict[str, int] = {}
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # SQLite's own page cache (2 MB by default) stays allocated for the
        # process's life once a store of some hundred instances filled it;
        # the pages are in the kernel's cache anyway, a re-read is a copy.
        self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        for table, cols in TABLES.items():
            extra = "".join(f', "{c}" TEXT' for c in cols)
            self._db.execute(f'CREATE TABLE IF NOT EXISTS {table} '
                             f'(id TEXT PRIMARY KEY, seq INTEGER, doc TEXT NOT NULL, '
                             f'view TEXT{extra})')
            have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            if "view" not in have:          # a store made by an older mecorch
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN view TEXT")
            for c in cols:
                if c not in have:
                    # a store made by an older mecorch: add the column and
                    # fill it from the documents (string values, as put does)
                    self._db.execute(f'ALTER TABLE {table} ADD COLUMN "{c}" TEXT')
                    self._db.execute(f'UPDATE {table} SET "{c}"=json_extract(doc, ?) '
                                     f"WHERE json_type(doc, ?)='text'",
                                     (f'$."{c}"', f'$."{c}"'))
            for c in cols:
                # (column, seq): an equality on the column walks its rows
                # in insertion order, so a page of a query stops at the
                # page's end and a rare value is found at once (an index on
                # the column alone left SQLite to walk seq and test every
                # row, or to sort every match)
                index = f"{table}_{c}"
                have_cols = [r[2] for r in self._db.execute(f"PRAGMA index_info({index})")]
                if have_cols and have_cols != [c, "seq"]:
                    self._db.execute(f"DROP INDEX {index}")       # an older store's
                self._db.execute(f'CREATE INDEX IF NOT EXISTS {index} ON {table}("{c}", seq)')
            # listings walk insertion order (paging reads seq ranges)
            self._db.execute(f"CREATE INDEX IF NOT EXISTS {table}__seq ON {table}(seq)")
        # Statistics for the query planner, from a sample of each index
        # (a few ms at 10,000 rows): without them SQLite cannot tell a rare
        # appName from an onboardingState every row has, and picks the
        # latter for (in,appName,a,b) on the package listing. The shape
        # they record (unique names, a handful of states) holds as the
        # store grows, so once per open is enough.
        self._db.execute("PRAGMA analysis_limit=400")
        self._db.execute("ANALYZE")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        if views is not None:
            self._build_views()

    def _build_views(self) -> None:
        """Make every row's view the one `self.views` gives: all of them
        when the store held other views (or none), else the rows written
        without one."""
        fingerprint = self.views.fingerprint()
        with self.transaction():
            row = self._db.execute("SELECT value FROM meta WHERE key='views'").fetchone()
            if row is None or _unqualified(row[0]) != fingerprint:
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
            self._depth = 1
            try:
                yield
            except BaseException:
                self._depth = 0
                self._db.execute("ROLLBACK")
                raise
            self._depth = 0
            self._db.execute("COMMIT")

    def lock(self, key: str) -> None:
        """Inside a transaction: hold `key` against every other process
        until it ends. BEGIN IMMEDIATE already holds the file's write lock
        against every other writer, so there is nothing more to take."""

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

    def page(self, table: str, after: int, limit: int,
             match: tuple[str, list] | None = None, drop: tuple[str, ...] = (),
             **where: Any) -> list[tuple[int, dict[str, Any]]]:
        """Up to `limit` (seq, document) pairs with seq > `after`, in
        insertion order: the building block of paged listings."""
        return self._select(table, match, drop, where, after=after, limit=limit)

    def page_views(self, table: str, after: int, limit: int,
                   match: tuple[str, list] | None = None,
                   **where: Any) -> list[tuple[int, str]]:
        """As page, but each row's view as stored (JSON text, not
        decoded); a row written without one gets it built here."""
        if self.views is None or table not in self.views.of:
            raise KeyError(f"this store keeps no views of {table}")
        rows = self._select(table, match, (), where, after=after, limit=limit,
                            column="view, CASE WHEN view IS NULL THEN doc END", raw=True)
        return [(seq, view if view is not None else self.views.text(table, json.loads(doc)))
                for seq, view, doc in rows]

    def list(self, table: str, match: tuple[str, list] | None = None,
             drop: tuple[str, ...] = (), keep: tuple[str, ...] = (),
             **where: Any) -> list[dict[str, Any]]:
        """Documents whose indexed columns equal the given values, in
        insertion order. `match`: an extra SQL condition with its
        parameters, written by mecorch itself (e.g. filters.prefilter), to
        select rows before their documents are decoded. `drop`: top-level
        keys left out of the documents (removed by SQLite, so a listing does
        not decode large internal fields only to throw them away). `keep`:
        only these top-level keys, built by SQLite (a key a document does not
        have reads as None): a periodic pass over every instance decodes
        ~100 bytes of each instead of its whole ~2 KB document."""
        if drop and keep:
            raise ValueError("store.list: drop or keep, not both")
        return [doc for _, doc in self._select(table, match, drop, where, keep=keep)]

    def _select(self, table: str, match, drop, where: dict, after: int | None = None,
                limit: int | None = None, keep: tuple[str, ...] = (),
                column: str = "doc", raw: bool = False) -> list:
        cols = TABLES[table]
        for k in where:
            if k not in cols:
                raise KeyError(f"{table}.{k} is not an indexed column")
        conds = [f'"{k}"=?' for k in where]
        params = [_index_value(v) for v in where.values()]
        if match:
            conds.append(f"({match[0]})")
            params += list(match[1])
        if after is not None:
            conds.append("seq > ?")
            params.append(int(after))
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
        return rows if raw else [(r[0], json.loads(r[1])) for r in rows]

    def delete(self, table: str, id_: str) -> None:
        with self._lock:
            self._db.execute(f"DELETE FROM {table} WHERE id=?", (id_,))


def _index_value(value: Any) -> str | None:
    if value is None:
        return None
    if hasattr(value, "value"):         # enums
        value = value.value
    return str(value)
