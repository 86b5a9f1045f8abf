"""The state store's contract (mecorch.kernel.store.StateStore), written
once and run against both engines: SQLite on a file of the test's tmp dir,
and PostgreSQL on a fresh database of the session's private cluster
(tests/support/pglab.py). The PostgreSQL-only behaviour (the server going
away and coming back, advisory locks across connections) and the schema
migrations of each engine are at the end."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import pytest

from mecorch.kernel import filters
from mecorch.kernel.errors import StoreUnavailable
from mecorch.kernel.pgstore import MIGRATIONS, PgStore, settings
from mecorch.kernel.store import (SQLITE_MIGRATIONS, TABLES, TABLES_V1, AllOf, AnyOf, ColumnIn,
                                  Has, Store, StoreTooNew, TextIn, Views)


class Db:
    """One database of an engine: `open()` gives a new store (a new
    connection) on it, `raw(sql)` runs SQL on it beside the store."""

    def __init__(self, engine: str, tmp, database: dict | None = None):
        self.engine, self.tmp, self.database = engine, tmp, database
        self.opened: list = []

    def open(self, views: Views | None = None, **kw):
        s = Store(self.tmp / "s.db", views) if self.engine == "sqlite" \
            else PgStore(settings(self.database), views, **kw)
        self.opened.append(s)
        return s

    def raw(self, sql: str, params=()) -> list:
        if self.engine == "sqlite":
            db = sqlite3.connect(self.tmp / "s.db", isolation_level=None)
            try:
                return db.execute(sql.replace("%s", "?"), params).fetchall()
            finally:
                db.close()
        import psycopg
        s = settings(self.database)
        with open(self.database["password_file"]) as f:
            password = f.readline().strip()
        with psycopg.connect(autocommit=True, password=password, **s.params) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request, tmp_path):
    made = Db("sqlite", tmp_path) if request.param == "sqlite" \
        else Db("postgres", tmp_path, request.getfixturevalue("pgdatabase"))
    yield made
    for s in made.opened:
        s.close()


@pytest.fixture
def store(db):
    return db.open()


def _shown(doc: dict) -> dict:
    return {"id": doc["id"], "state": doc.get("instantiationState", "").lower()}


def ids(docs) -> list[str]:
    return [d["id"] for d in docs]


# ---------------------------------------------------------------- rows
def test_put_get_and_an_update_keeps_its_place(store):
    assert store.get("instances", "a") is None
    store.put("instances", "a", {"id": "a", "hostId": "h1", "n": 1})
    store.put("instances", "b", {"id": "b", "hostId": "h1"})
    (seq_a, _), (seq_b, _) = store.page("instances", 0, 10)
    store.put("instances", "a", {"id": "a", "hostId": "h2", "n": 2})
    assert store.get("instances", "a") == {"id": "a", "hostId": "h2", "n": 2}
    assert [(seq, d["id"]) for seq, d in store.page("instances", 0, 10)] == \
        [(seq_a, "a"), (seq_b, "b")]
    assert ids(store.list("instances", hostId="h2")) == ["a"]      # its column follows
    assert store.list("instances", hostId="h1") == [{"id": "b", "hostId": "h1"}]


def test_a_document_comes_back_as_written_keys_in_order(store):
    doc = {"z": 1, "id": "a", "a": {"y": [1, 2.5, None, True], "b": "\u00e9\u4e2d"}, "m": ""}
    store.put("packages", "a", doc)
    got = store.get("packages", "a")
    assert got == doc and list(got) == list(doc) and list(got["a"]) == ["y", "b"]


def test_page_after_and_limit_walk_insertion_order(store):
    for i in range(7):
        store.put("op_occs", f"o{i}", {"id": f"o{i}", "operationState": "A" if i % 2 else "B"})
    first = store.page("op_occs", 0, 3)
    assert ids(d for _, d in first) == ["o0", "o1", "o2"]
    rest = store.page("op_occs", first[-1][0], 10)
    assert ids(d for _, d in rest) == ["o3", "o4", "o5", "o6"]
    assert ids(d for _, d in store.page("op_occs", 0, 2, operationState="A")) == ["o1", "o3"]
    assert store.page("op_occs", rest[-1][0], 10) == []


def test_delete_of_a_missing_row_is_fine_and_a_seq_is_never_given_twice(store):
    store.delete("outbox", "nothing")
    store.put("outbox", "a", {"id": "a", "subscriptionId": "s"})
    (seq_a, _), = store.page("outbox", 0, 10)
    store.delete("outbox", "a")
    store.put("outbox", "b", {"id": "b", "subscriptionId": "s"})
    (seq_b, _), = store.page("outbox", 0, 10)
    assert seq_b > seq_a and store.get("outbox", "a") is None


def test_an_unknown_column_is_an_error(store):
    with pytest.raises(KeyError, match="not an indexed column"):
        store.list("instances", nope="x")
    with pytest.raises(KeyError, match="not an indexed column"):
        store.list("instances", ColumnIn("nope", ("x",)))


# ---------------------------------------------------------------- conditions
DOCS = [
    {"id": "a", "appDId": "x", "n": 5, "b": True, "l": ["p", "q"], "o": {"k": "v"},
     "s": "text", "nul": None, "arr": [{"k": "v"}, {"k": "w"}], "flag": True, "_p": []},
    {"id": "b", "appDId": "y", "n": "5", "b": "true", "l": "p", "o": {"k": "w"},
     "s": "other", "arr": [{"k": "z"}], "flag": False, "_p": None},
    {"id": "c", "n": 5.0, "s": "", "nul": "", "o": "str", "a.b": "dot", "flag": 0, "_p": {}},
]


@pytest.fixture
def docs(store):
    for d in DOCS:
        store.put("packages", d["id"], d)
    return store


@pytest.mark.parametrize("cond, want", [
    (ColumnIn("appDId", ("x",)), ["a"]),
    (ColumnIn("appDId", ("x", "y")), ["a", "b"]),
    (ColumnIn("appDId", ()), []),
    (ColumnIn("appDId", ("x",), negate=True), ["b", "c"]),        # NULL is none of them
    (ColumnIn("appDId", (), negate=True), ["a", "b", "c"]),
    (TextIn(("s",), ("text", "")), ["a", "c"]),
    (TextIn(("n",), ("5",)), ["b"]),                                # a string, not the number
    (TextIn(("o", "k"), ("w",)), ["b"]),
    (TextIn(("l", "0"), ("p",)), []),                               # never into a list
    (TextIn(("a.b",), ("dot",)), ["c"]),
    (TextIn(("s",), ("text",), or_not_text=True), ["a"]),
    (TextIn(("n",), ("x",), or_not_text=True), ["a", "c"]),         # numbers pass
    (TextIn(("nul",), ("",), or_not_text=True), ["a", "b", "c"]),   # null, missing pass
    (TextIn(("o", "k"), ("v",), or_not_text=True), ["a", "c"]),     # "str" has no k
    (Has(("flag",)), ["a", "c"]),                                   # 0 is a value
    (Has(("_p",)), ["a", "c"]),                                     # null is not
    (Has(("nul",)), ["c"]),
    (Has(("o", "k")), ["a", "b"]),
    (Has(("missing",)), []),
    (AllOf((ColumnIn("appDId", ("x", "y")), TextIn(("s",), ("other",)))), ["b"]),
    (AnyOf((ColumnIn("appDId", ("x",)), Has(("a.b",)))), ["a", "c"]),
    (AllOf(()), ["a", "b", "c"]),
    (AnyOf(()), []),
    (AnyOf((ColumnIn("appDId", ("x",), negate=True), Has(("missing",)))), ["b", "c"]),
])
def test_match(docs, cond, want):
    assert ids(docs.list("packages", cond)) == want
    assert ids(d for _, d in docs.page("packages", 0, 10, cond)) == want


@pytest.mark.parametrize("expr", [
    "(eq,appDId,x)", "(in,appDId,y,z)", "(eq,n,5)", "(eq,b,true)", "(eq,l,p)", "(eq,o/k,v)",
    "(in,s,text,)", "(eq,nul,)", "(eq,arr/k,w)", "(eq,l/0,p)", "(eq,missing,)",
    "(eq,appDId,x);(eq,o/k,v)", "(eq,a.b,dot)", "(neq,appDId,x)", "(eq,o//k,v)",
])
def test_prefilter_keeps_what_the_filter_keeps(docs, expr):
    full = filters.apply(docs.list("packages"), expr)
    narrowed = docs.list("packages", filters.prefilter(expr, ("appDId",)))
    assert filters.apply(narrowed, expr) == full


def test_drop_and_keep(docs):
    assert docs.list("packages", ColumnIn("appDId", ("y",)), drop=("l", "o", "arr", "zz")) == \
        [{"id": "b", "appDId": "y", "n": "5", "b": "true", "s": "other", "flag": False,
          "_p": None}]
    assert list(docs.list("packages", drop=("n",))[0]) == \
        ["id", "appDId", "b", "l", "o", "s", "nul", "arr", "flag", "_p"]
    assert docs.list("packages", keep=("id", "o", "zz")) == [
        {"id": "a", "o": {"k": "v"}, "zz": None}, {"id": "b", "o": {"k": "w"}, "zz": None},
        {"id": "c", "o": "str", "zz": None}]
    assert docs.page("packages", 0, 1, drop=("o", "l", "arr", "n", "b", "s", "nul")) == \
        [(docs.page("packages", 0, 1)[0][0], {"id": "a", "appDId": "x", "flag": True, "_p": []})]
    with pytest.raises(ValueError, match="drop or keep"):
        docs.list("packages", drop=("o",), keep=("id",))


def test_page_views_keep_each_rows_view(db):
    views = Views(1, {"instances": _shown})
    s = db.open(views)
    s.put("instances", "a", {"id": "a", "instantiationState": "NOT_INSTANTIATED"})
    s.put("instances", "b", {"id": "b", "instantiationState": "INSTANTIATED"})
    s.put("instances", "a", {"id": "a", "instantiationState": "INSTANTIATED"})
    rows = s.page_views("instances", 0, 10)
    assert [json.loads(v) for _, v in rows] == [{"id": "a", "state": "instantiated"},
                                                {"id": "b", "state": "instantiated"}]
    assert all(isinstance(v, str) for _, v in rows)
    assert [json.loads(v)["id"] for _, v in
            s.page_views("instances", 0, 10, ColumnIn("instantiationState", ("X",)))] == []
    with pytest.raises(KeyError, match="no views of op_occs"):
        s.page_views("op_occs", 0, 10)
    plain = db.open()                       # writes rows without a view
    plain.put("instances", "c", {"id": "c", "instantiationState": "NOT_INSTANTIATED"})
    assert json.loads(s.page_views("instances", rows[-1][0], 10)[0][1]) == \
        {"id": "c", "state": "not_instantiated"}
    other = db.open(Views(2, {"instances": lambda d: {"v2": d["id"]}}))
    assert [json.loads(v) for _, v in other.page_views("instances", 0, 10)] == \
        [{"v2": "a"}, {"v2": "b"}, {"v2": "c"}]


# ---------------------------------------------------------------- transactions
def test_a_transaction_lands_whole_or_not_at_all(store):
    with store.transaction():
        store.put("hosts", "a", {"id": "a"})
        store.put("hosts", "b", {"id": "b"})
    with pytest.raises(ZeroDivisionError):
        with store.transaction():
            store.put("hosts", "c", {"id": "c"})
            store.delete("hosts", "a")
            1 / 0
    assert ids(store.list("hosts")) == ["a", "b"]
    store.put("hosts", "d", {"id": "d"})            # usable after a rollback
    assert ids(store.list("hosts")) == ["a", "b", "d"]


def test_lock_is_only_for_a_transaction(store):
    with pytest.raises(RuntimeError, match="inside a transaction"):
        store.lock("k")
    with store.transaction():
        store.lock("k")
        store.lock("k")                      # again in the same transaction: held already


def test_a_transaction_excludes_another_connections_until_it_ends(db):
    """A second store on the same database (its own connection) that locks
    the same key waits for the first transaction's end; on SQLite every
    transaction excludes the others (BEGIN IMMEDIATE), on PostgreSQL those
    locking the same key do (pg_advisory_xact_lock)."""
    one, two = db.open(), db.open()
    got = threading.Event()
    seen: list = []

    def second():
        with two.transaction():
            two.lock("host:edge1")
            seen.append(two.get("hosts", "edge1"))
            got.set()

    with one.transaction():
        one.lock("host:edge1")
        t = threading.Thread(target=second, daemon=True)
        t.start()
        assert not got.wait(0.7), "the second took the lock while the first held it"
        one.put("hosts", "edge1", {"id": "edge1", "by": "one"})
    assert got.wait(10), "the second never got the lock after the first committed"
    t.join(10)
    assert seen == [{"id": "edge1", "by": "one"}]       # it saw the first's commit


@pytest.mark.postgres
def test_other_keys_do_not_wait(pgdatabase, tmp_path):
    db = Db("postgres", tmp_path, pgdatabase)
    one, two = db.open(), db.open()
    try:
        with one.transaction():
            one.lock("a")
            done = threading.Event()

            def other():
                with two.transaction():
                    two.lock("b")
                done.set()
            threading.Thread(target=other, daemon=True).start()
            assert done.wait(5), "a lock on another key waited"
    finally:
        one.close()
        two.close()


# ---------------------------------------------------------------- PostgreSQL going away
@pytest.mark.postgres
def test_a_stopped_server_is_unavailable_and_the_same_store_recovers(pglab, pgdatabase, tmp_path):
    s = Db("postgres", tmp_path, pgdatabase).open()
    try:
        s.put("hosts", "a", {"id": "a"})
        pglab.stop()
        for call in (lambda: s.get("hosts", "a"), lambda: s.put("hosts", "b", {"id": "b"}),
                     lambda: s.list("hosts"), lambda: s.delete("hosts", "a")):
            with pytest.raises(StoreUnavailable) as e:
                call()
            assert e.value.status == 503 and e.value.retry_after
        pglab.start()
        assert s.get("hosts", "a") == {"id": "a"}           # no reopening
        s.put("hosts", "b", {"id": "b"})
        assert ids(s.list("hosts")) == ["a", "b"]
    finally:
        s.close()


@pytest.mark.postgres
def test_an_idle_connection_lost_to_a_restart_is_replaced_at_once(pglab, pgdatabase, tmp_path):
    """A restart (or fail-over) while the store was idle costs no error:
    the statement runs again on a new connection."""
    s = Db("postgres", tmp_path, pgdatabase).open()
    try:
        s.put("hosts", "a", {"id": "a"})
        pid = s._conn.info.backend_pid
        pglab.restart()
        assert s.get("hosts", "a") == {"id": "a"}
        assert s._conn.info.backend_pid != pid
        pglab.restart()
        s.put("hosts", "b", {"id": "b"})
        assert ids(s.list("hosts")) == ["a", "b"]
    finally:
        s.close()


@pytest.mark.postgres
def test_replicas_opening_a_new_database_together_make_its_schema_once(pgdatabase, tmp_path):
    db = Db("postgres", tmp_path, pgdatabase)
    errors: list = []

    def open_one():
        try:
            db.open(Views(1, {"instances": _shown}))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(db.opened) == 4
    assert db.raw("SELECT value FROM meta WHERE key='schema_version'") == [(str(len(MIGRATIONS)),)]


@pytest.mark.postgres
def test_lock_excludes_another_process(pgdatabase, tmp_path):
    """The same key locked by another OS process waits for this
    transaction's commit (CLOCK_MONOTONIC is one clock for both)."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[2]
    code = ("import json, sys, time\n"
            "from mecorch.kernel.pgstore import PgStore, settings\n"
            "s = PgStore(settings(json.loads(sys.argv[1])))\n"
            "print('open', flush=True)\n"
            "with s.transaction():\n"
            "    s.lock('host:edge1')\n"
            "    got = time.monotonic()\n"
            "    seen = s.get('hosts', 'edge1')\n"
            "print(json.dumps([got, seen]), flush=True)\n")
    s = Db("postgres", tmp_path, pgdatabase).open()
    env = {**os.environ, "PYTHONPATH": str(repo)}
    with s.transaction():
        s.lock("host:edge1")
        child = subprocess.Popen([sys.executable, "-c", code, json.dumps(pgdatabase)],
                                 stdout=subprocess.PIPE, text=True, env=env, cwd=repo)
        try:
            assert child.stdout.readline().strip() == "open"
            time.sleep(0.7)                  # it is waiting on the lock meanwhile
            s.put("hosts", "edge1", {"id": "edge1"})
        except BaseException:
            child.kill()
            raise
        committing = time.monotonic()
    out, _ = child.communicate(timeout=30)
    got, seen = json.loads(out)
    assert child.returncode == 0
    assert got >= committing and seen == {"id": "edge1"}


@pytest.mark.postgres
def test_a_connection_lost_in_a_transaction_does_not_go_on_outside_it(pglab, pgdatabase,
                                                                       tmp_path):
    s = Db("postgres", tmp_path, pgdatabase).open()
    try:
        with pytest.raises(StoreUnavailable):
            with s.transaction():
                s.put("hosts", "a", {"id": "a"})
                pglab.restart()
                try:
                    s.put("hosts", "b", {"id": "b"})
                except StoreUnavailable:
                    pass                    # a caller that goes on regardless...
                s.put("hosts", "c", {"id": "c"})     # ...is refused again, not reconnected
        assert s.list("hosts") == []                  # the server rolled it all back
        s.put("hosts", "d", {"id": "d"})
        assert ids(s.list("hosts")) == ["d"]
    finally:
        s.close()


# ---------------------------------------------------------------- migrations
def _v1_sqlite_ddl(db: sqlite3.Connection, view_column: bool = True) -> None:
    """The tables as mecorch made them before schema versions (with
    `view_column` False: as before views were stored, and without the
    appName/appProvider columns added later)."""
    for table, cols in TABLES_V1.items():
        if not view_column and table == "packages":
            cols = tuple(c for c in cols if c not in ("appName", "appProvider"))
        extra = "".join(f', "{c}" TEXT' for c in cols)
        view = ", view TEXT" if view_column else ""
        db.execute(f"CREATE TABLE {table} (id TEXT PRIMARY KEY, seq INTEGER, "
                   f"doc TEXT NOT NULL{view}{extra})")
        for c in cols:
            db.execute(f'CREATE INDEX {table}_{c} ON {table}("{c}"{", seq" if view_column else ""})')
        db.execute(f"CREATE INDEX {table}__seq ON {table}(seq)")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")


def _sqlite_columns(path) -> dict:
    db = sqlite3.connect(path)
    try:
        return {t: [r[1] for r in db.execute(f"PRAGMA table_info({t})")] for t in TABLES}
    finally:
        db.close()


def _want_columns() -> dict:
    return {t: ["id", "seq", "doc", "view", *cols] for t, cols in TABLES.items()}


@pytest.mark.parametrize("made", ["version 1", "unversioned", "older"])
def test_a_sqlite_store_of_version_1_migrates_and_keeps_its_rows(tmp_path, made):
    """`version 1`: schema_version 1 and a views fingerprint of before the
    layout change; `unversioned`: as mecorch made stores before schema
    versions (it must open unchanged: its views are kept); `older`: before
    views were stored and appName/appProvider were indexed."""
    from mecorch.kernel import views as V
    older = made == "older"
    path = tmp_path / "s.db"
    raw = sqlite3.connect(path, isolation_level=None)
    _v1_sqlite_ddl(raw, view_column=not older)
    doc = {"id": "p", "appDId": "d", "appName": "n", "onboardingState": "ONBOARDED",
           "operationalState": "ENABLED", "usageState": "NOT_IN_USE"}
    cols = ["appDId", "onboardingState", "operationalState", "usageState"] + \
        ([] if older else ["appName"])          # an older store had no appName column
    raw.execute(f'INSERT INTO packages (id, seq, doc, {", ".join(cols)}) VALUES (?, 7, ?'
                f'{", ?" * len(cols)})', ["p", json.dumps(doc), *(doc[c] for c in cols)])
    if older:
        raw.execute("INSERT INTO hosts (id, seq, doc) VALUES ('h', 1, '{\"id\":\"h\"}')")
    else:
        raw.execute("UPDATE packages SET view='\"sentinel\"'")
    if made == "version 1":
        raw.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        # a fingerprint of before the layout change (module-qualified)
        raw.execute("INSERT INTO meta VALUES ('views', ?)", (
            f"{V.VERSION}:instances=mecorch.views.host_instance_view,"
            "packages=mecorch.views.package_view",))
    elif made == "unversioned":
        raw.execute("INSERT INTO meta VALUES ('views', ?)", (V.MEPM.fingerprint(),))
    raw.close()
    s = Store(path, V.MEPM)
    try:
        assert s.get("packages", "p") == doc
        assert s.page("packages", 0, 10) == [(7, doc)]
        assert s.list("packages", appName="n") == [doc]     # filled from the document
        want = '"sentinel"' if not older else V.MEPM.text("packages", doc)
        assert s.page_views("packages", 0, 10) == [(7, want)]   # a view kept or built
        assert s.list("hosts") == ([{"id": "h"}] if older else [])
    finally:
        s.close()
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == \
            (str(len(SQLITE_MIGRATIONS)),)
        assert raw.execute("SELECT value FROM meta WHERE key='views'").fetchone() == \
            (V.MEPM.fingerprint(),)
        assert [r[2] for r in raw.execute("PRAGMA index_info(packages_appDId)")] == \
            ["appDId", "seq"]
    finally:
        raw.close()
    assert {t: sorted(c) for t, c in _sqlite_columns(path).items()} == \
        {t: sorted(c) for t, c in _want_columns().items()}


def _v1_pg_ddl() -> list[str]:
    """The PostgreSQL schema of version 1, as written when it was made."""
    out = ["CREATE TABLE meta (key text PRIMARY KEY, value text)",
           "INSERT INTO meta VALUES ('schema_version', '1')"]
    for table, cols in TABLES_V1.items():
        extra = "".join(f', "{c}" text' for c in cols)
        out.append(f"CREATE TABLE {table} (id text PRIMARY KEY, seq bigint GENERATED ALWAYS "
                   f"AS IDENTITY, doc json NOT NULL, docb jsonb GENERATED ALWAYS AS "
                   f"(doc::jsonb) STORED, view text{extra})")
        out += [f'CREATE INDEX {table}_{c} ON {table} ("{c}", seq)' for c in cols]
        out.append(f"CREATE UNIQUE INDEX {table}__seq ON {table} (seq)")
    return out


@pytest.mark.postgres
def test_a_postgres_store_of_version_1_migrates_and_keeps_its_rows(pgdatabase, tmp_path):
    db = Db("postgres", tmp_path, pgdatabase)
    for sql in _v1_pg_ddl():
        db.raw(sql)
    doc = {"id": "i", "hostId": "h", "appDId": "d"}
    db.raw("INSERT INTO instances (id, doc, \"hostId\", \"appDId\") VALUES ('i', %s, 'h', 'd')",
           (json.dumps(doc),))

    def v2(q):                               # what a next version might do
        q('ALTER TABLE hosts ADD COLUMN note text')
    s = db.open(migrations=MIGRATIONS + [v2])
    assert s.list("instances", hostId="h") == [doc]
    s.put("instances", "j", {"id": "j", "hostId": "h"})
    assert ids(s.list("instances", hostId="h")) == ["i", "j"]
    assert db.raw("SELECT value FROM meta WHERE key='schema_version'") == \
        [(str(len(MIGRATIONS) + 1),)]
    assert ("note",) in db.raw("SELECT column_name FROM information_schema.columns "
                               "WHERE table_name='hosts'")
    s.close()
    with pytest.raises(StoreTooNew, match=f"schema version {len(MIGRATIONS) + 1}.*newer"):
        db.open()


@pytest.mark.postgres
def test_a_new_postgres_store_has_the_current_schema(pgdatabase, tmp_path):
    db = Db("postgres", tmp_path, pgdatabase)
    db.open().close()
    db.open().close()                        # a second open changes nothing
    got = {}
    for table, column in db.raw("SELECT table_name, column_name FROM information_schema.columns "
                                "WHERE table_schema='public' ORDER BY ordinal_position"):
        got.setdefault(table, []).append(column)
    assert {t: c for t, c in got.items() if t != "meta"} == \
        {t: [*c[:3], "docb", *c[3:]] for t, c in _want_columns().items()}
    assert db.raw("SELECT value FROM meta WHERE key='schema_version'") == [(str(len(MIGRATIONS)),)]


def test_a_store_newer_than_the_code_is_refused(tmp_path):
    s = Store(tmp_path / "s.db")
    s.close()
    raw = sqlite3.connect(tmp_path / "s.db")
    raw.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    raw.commit()
    raw.close()
    with pytest.raises(StoreTooNew, match="schema version 99; this mecorch knows versions up to"):
        Store(tmp_path / "s.db")


def test_a_new_sqlite_store_has_the_current_schema(tmp_path):
    Store(tmp_path / "s.db").close()
    assert _sqlite_columns(tmp_path / "s.db") == _want_columns()


def test_the_seq_order_holds_under_concurrent_writers_of_one_process(store):
    """Threads of one process share the store's connection under its lock:
    rows commit in seq order, so a reader walking seq upwards (the sender)
    never sees a later seq before an earlier one."""
    seen: list[int] = []
    stop = threading.Event()

    def reader():
        after = 0
        while not stop.is_set():
            for seq, _ in store.page("outbox", after, 100):
                seen.append(seq)
                after = seq

    def writer(k):
        for i in range(30):
            with store.transaction():
                store.put("outbox", f"{k}-{i}", {"id": f"{k}-{i}", "subscriptionId": k})
                time.sleep(0.0005)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    writers = [threading.Thread(target=writer, args=(k,)) for k in ("a", "b", "c")]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    time.sleep(0.1)
    stop.set()
    t.join(5)
    all_seqs = [seq for seq, _ in store.page("outbox", 0, 1000)]
    assert seen == all_seqs and len(all_seqs) == 90


def test_a_transaction_begun_inside_another_is_part_of_it(store):
    """Nested transactions join the outer one: what the inner wrote goes
    with the outer's rollback, and the inner's end commits nothing."""
    with pytest.raises(ZeroDivisionError):
        with store.transaction():
            store.put("hosts", "a", {"id": "a"})
            with store.transaction():
                store.lock("k")
                store.put("hosts", "b", {"id": "b"})
            assert store.get("hosts", "b") is not None
            1 / 0
    assert store.get("hosts", "a") is None and store.get("hosts", "b") is None
    with store.transaction():
        with store.transaction():
            store.put("hosts", "c", {"id": "c"})
    assert store.get("hosts", "c") == {"id": "c"}


def test_an_instance_claiming_something_is_indexed_after_the_migration(db, monkeypatch):
    """The CLAIMING column (SQLite 4, PostgreSQL 3): a store of the version
    before it, holding an MEO instance that claims a DNS name and one that
    claims nothing, opens with the first found by the column and its
    document carrying the key (a later put keeps the column)."""
    from mecorch.kernel import store as store_mod
    claiming = {"id": "a", "_claims": {"hostId": "h", "trafficRules": [],
                                       "dnsRules": [{"domainName": "x.mec"}]}}
    plain = {"id": "b", "_claims": {"hostId": "h", "trafficRules": [], "dnsRules": []}}
    # the code of that version: its migrations, its instances' columns
    monkeypatch.setitem(store_mod.TABLES, "instances", TABLES_V1["instances"])
    if db.engine == "sqlite":
        monkeypatch.setattr(store_mod, "SQLITE_MIGRATIONS", store_mod.SQLITE_MIGRATIONS[:3])
        old = db.open()
    else:
        old = db.open(migrations=MIGRATIONS[:2])
    for doc in (claiming, plain):
        old.put("instances", doc["id"], doc)
    old.close()
    monkeypatch.undo()
    s = db.open()
    got = s.list("instances", **{store_mod.CLAIMING: "yes"})
    assert [d["id"] for d in got] == ["a"] and got[0][store_mod.CLAIMING] == "yes"
    s.put("instances", "a", s.get("instances", "a"))            # written again as read
    assert ids(s.list("instances", **{store_mod.CLAIMING: "yes"})) == ["a"]
