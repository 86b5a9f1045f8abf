"""The store's listing projections, views and indexes (pure logic on a
SQLite file)."""

import json
import sqlite3

import pytest

from mecorch.kernel.store import Store


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "s.db")
    s.put("instances", "a", {"id": "a", "hostId": "h1", "instantiationState": "INSTANTIATED",
                             "_opId": "op-1", "_handle": {"app": {"id": "x" * 64}},
                             "deploymentType": "CONTAINER"})
    s.put("instances", "b", {"id": "b", "hostId": "h1", "instantiationState": "INSTANTIATED",
                             "_handle": {"vm": "dom-b", "volumes": [1, {"n": "v"}]}})
    s.put("instances", "c", {"id": "c", "hostId": "h2", "instantiationState": "INSTANTIATED",
                             "_opId": "op-3"})
    yield s
    s.close()


def test_keep_builds_only_the_named_keys(store):
    docs = store.list("instances", hostId="h1", keep=("id", "_opId", "deploymentType"))
    assert docs == [{"id": "a", "_opId": "op-1", "deploymentType": "CONTAINER"},
                    {"id": "b", "_opId": None, "deploymentType": None}]


def test_keep_returns_nested_values_as_json_not_text(store):
    docs = store.list("instances", hostId="h1", keep=("id", "_handle"))
    assert docs[1]["_handle"] == {"vm": "dom-b", "volumes": [1, {"n": "v"}]}
    assert docs[0]["_handle"]["app"]["id"] == "x" * 64


def test_keep_and_drop_together_is_an_error(store):
    with pytest.raises(ValueError, match="drop or keep"):
        store.list("instances", drop=("_handle",), keep=("id",))


def test_drop_leaves_the_rest_whole(store):
    docs = store.list("instances", hostId="h2", drop=("_opId",))
    assert docs == [{"id": "c", "hostId": "h2", "instantiationState": "INSTANTIATED"}]


def test_a_seq_is_never_given_twice_after_a_delete(tmp_path):
    """The outbox's sender walks seq upwards while it deletes what it sent:
    a row put after the newest was deleted must still come after it (a seq
    given again put a later notification ahead of an earlier one)."""
    store = Store(tmp_path / "m.db")
    try:
        store.put("outbox", "a", {"id": "a", "subscriptionId": "s", "body": {}})
        (seq_a, _), = store.page("outbox", 0, 10)
        store.delete("outbox", "a")
        store.put("outbox", "b", {"id": "b", "subscriptionId": "s", "body": {}})
        store.put("outbox", "b", {"id": "b", "subscriptionId": "s", "body": {"x": 1}})
        store.put("outbox", "c", {"id": "c", "subscriptionId": "s", "body": {}})
        rows = store.page("outbox", seq_a, 10)
        assert [doc["id"] for _, doc in rows] == ["b", "c"]
        assert rows[0][1]["body"] == {"x": 1}
        assert seq_a < rows[0][0] < rows[1][0]
    finally:
        store.close()


# ---------------------------------------------------------------- views
def _shown(doc: dict) -> dict:
    return {"id": doc["id"], "state": doc["instantiationState"].lower()}


def _named(doc: dict) -> dict:
    return {"id": doc["id"], "named": True}


def test_a_row_keeps_its_view_as_the_views_give_it(tmp_path):
    from mecorch.kernel.store import Views
    s = Store(tmp_path / "v.db", Views(1, {"instances": _shown}))
    try:
        s.put("instances", "a", {"id": "a", "instantiationState": "NOT_INSTANTIATED"})
        s.put("instances", "b", {"id": "b", "instantiationState": "INSTANTIATED"})
        s.put("instances", "a", {"id": "a", "instantiationState": "INSTANTIATED"})
        rows = s.page_views("instances", 0, 10)
        assert [json.loads(v) for _, v in rows] == [{"id": "a", "state": "instantiated"},
                                                    {"id": "b", "state": "instantiated"}]
        assert all(isinstance(v, str) for _, v in rows)
        with pytest.raises(KeyError, match="no views of op_occs"):
            s.page_views("op_occs", 0, 10)
    finally:
        s.close()


def test_rows_written_without_views_get_them_when_read_and_when_next_opened(tmp_path):
    from mecorch.kernel.store import Views
    views = Views(1, {"instances": _shown})
    db = tmp_path / "v.db"
    s = Store(db, views)
    s.put("instances", "a", {"id": "a", "instantiationState": "INSTANTIATED"})
    s.close()
    plain = Store(db)                   # e.g. a command that opens the store on its own
    plain.put("instances", "a", {"id": "a", "instantiationState": "NOT_INSTANTIATED"})
    plain.put("instances", "b", {"id": "b", "instantiationState": "INSTANTIATED"})
    plain.close()
    raw = sqlite3.connect(db)
    assert raw.execute("SELECT view FROM instances ORDER BY seq").fetchall() == [(None,), (None,)]
    s = Store(db, views)
    try:
        # no stale view of "a" survives the update made without views
        stored = dict(raw.execute("SELECT id, view FROM instances").fetchall())
        assert {k: json.loads(v) for k, v in stored.items()} == {
            "a": {"id": "a", "state": "not_instantiated"}, "b": {"id": "b", "state": "instantiated"}}
        raw.execute("UPDATE instances SET view=NULL WHERE id='b'")
        raw.commit()
        assert [json.loads(v)["state"] for _, v in s.page_views("instances", 0, 10)] == \
            ["not_instantiated", "instantiated"]
    finally:
        s.close()
        raw.close()


def test_other_views_than_the_store_holds_rebuild_every_one(tmp_path):
    from mecorch.kernel.store import Views
    db = tmp_path / "v.db"
    s = Store(db, Views(1, {"instances": _shown}))
    s.put("instances", "a", {"id": "a", "instantiationState": "INSTANTIATED"})
    s.close()
    for views, want in ((Views(1, {"instances": _named}), {"id": "a", "named": True}),
                        (Views(2, {"instances": _shown}), {"id": "a", "state": "instantiated"})):
        s = Store(db, views)
        try:
            assert [json.loads(v) for _, v in s.page_views("instances", 0, 10)] == [want]
        finally:
            s.close()


def test_a_store_written_before_the_layout_change_keeps_its_views(tmp_path):
    """Before mecorch/ was cut into layers the fingerprint named each view
    function with its module (mecorch.views.*); the same functions, moved,
    rebuild nothing: a sentinel view text survives the open. Such a store
    was made before schema versions (no schema_version: migration 2 puts
    its fingerprint in today's form)."""
    from mecorch.kernel import views as V
    db = tmp_path / "old.db"
    s = Store(db, V.MEPM)
    s.put("packages", "p", {"id": "p", "onboardingState": "ONBOARDED", "operationalState": "ENABLED", "usageState": "NOT_IN_USE"})
    s.close()
    raw = sqlite3.connect(db)
    raw.execute("UPDATE meta SET value=? WHERE key='views'",
                (f"{V.VERSION}:instances=mecorch.views.host_instance_view,"
                 "packages=mecorch.views.package_view",))
    raw.execute("UPDATE packages SET view='\"sentinel\"'")
    raw.execute("DELETE FROM meta WHERE key='schema_version'")
    raw.commit()
    s = Store(db, V.MEPM)
    try:
        assert raw.execute("SELECT view FROM packages").fetchall() == [('"sentinel"',)]
    finally:
        s.close()
    # ...while another function under the same old-style name still rebuilds
    raw.execute("UPDATE meta SET value=? WHERE key='views'",
                (f"{V.VERSION}:instances=mecorch.views.system_instance_view,"
                 "packages=mecorch.views.package_view",))
    raw.execute("DELETE FROM meta WHERE key='schema_version'")
    raw.commit()
    s = Store(db, V.MEPM)
    try:
        assert raw.execute("SELECT view FROM packages").fetchall() != [('"sentinel"',)]
    finally:
        s.close()
        raw.close()


def test_an_equality_on_an_indexed_column_is_answered_from_its_index(tmp_path):
    """(column, seq) indexes: a rare value is found without walking the
    table, and a page walks insertion order without sorting (SQLite's own
    plan, read with EXPLAIN QUERY PLAN)."""
    s = Store(tmp_path / "i.db")
    try:
        for i in range(50):
            s.put("packages", f"p{i}", {"id": f"p{i}", "appName": f"n{i}",
                                        "onboardingState": "ONBOARDED"})
        s.close()
        s = Store(tmp_path / "i.db")        # statistics are read when opened
        plan = " ".join(r[3] for r in s._db.execute(
            "EXPLAIN QUERY PLAN SELECT seq FROM packages WHERE onboardingState=? AND "
            "appName IN (?, ?) AND seq > ? ORDER BY seq LIMIT 10", ["ONBOARDED", "n3", "n9", 0]))
        assert "INDEX packages_appName" in plan, plan
        plan = " ".join(r[3] for r in s._db.execute(
            "EXPLAIN QUERY PLAN SELECT seq FROM packages WHERE onboardingState=? AND seq > ? "
            "ORDER BY seq LIMIT 10", ["ONBOARDED", 0]))
        assert "packages_onboardingState (onboardingState=? AND seq>?)" in plan, plan
        assert "TEMP B-TREE" not in plan, plan
    finally:
        s.close()
