"""The store's listing projections (pure logic on a SQLite file)."""

import pytest

from mecorch.store import Store


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
