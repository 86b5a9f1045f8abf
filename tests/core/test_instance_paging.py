"""Instance listing paged like the package listing (NFV-SOL 013): a Link
rel="next" while more remain, the pages together are the whole listing in
creation order, filters apply across pages, a marker this server did not
give is a 400. Core logic on the store (no backend is involved)."""

from __future__ import annotations

import json
import threading
import urllib.parse

import pytest

from mecorch.kernel import config
from mecorch.api import make_server
from mecorch.kernel.client import ApiError, Client
from mecorch.mepm.orchestrator import Orchestrator

INST = "/app_lcm/v1/app_instances"


@pytest.fixture
def env(tmp_path):
    cfg = config.load()
    cfg["state_dir"] = str(tmp_path / "state")
    cfg["hosts"][0]["cim"]["state_dir"] = str(tmp_path / "state/cim")
    cfg["api"]["page_size"] = 3
    orch = Orchestrator(cfg)
    for i in range(8):
        doc = {"id": f"i{i}", "appDId": "a" if i % 2 else "b", "appName": f"n{i}",
               "appInstanceName": f"inst{i}", "instantiationState": "NOT_INSTANTIATED",
               "_links": {"self": {"href": f"{INST}/i{i}"}}, "_mp1Token": "secret"}
        orch.store.put("instances", doc["id"], doc)
    server = make_server(orch, "127.0.0.1:0")
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield orch, Client(f"http://127.0.0.1:{server.server_address[1]}", token="")
    server.shutdown()
    server.server_close()
    orch.close()


def test_list_page_walks_every_instance_once(env):
    orch, _ = env
    for expr, want in ((None, [f"i{i}" for i in range(8)]),
                       ("(eq,appDId,a)", ["i1", "i3", "i5", "i7"]),
                       ("(neq,appDId,a)", ["i0", "i2", "i4", "i6"]),
                       ("(eq,appDId,none)", [])):
        ids, marker, pages = [], None, 0
        while True:
            texts, marker = orch.lcm.list_page(expr, marker, 3)
            items = [json.loads(t) for t in texts]      # the views as stored
            assert len(items) <= 3
            assert all(k == "_links" or not k.startswith("_") for it in items for k in it)
            ids += [it["id"] for it in items]
            pages += 1
            if marker is None:
                break
        assert ids == want, expr
        assert pages <= len(want) // 3 + 1


def test_api_pages_with_link_headers(env):
    _, c = env
    status, body, headers = c.call("GET", INST)
    assert status == 200 and [i["id"] for i in body] == ["i0", "i1", "i2"]
    link = headers["Link"]
    assert link.endswith('>; rel="next"') and "nextpage_opaque_marker=" in link
    _, body2, _ = c.call("GET", link[1:link.index(">")])
    assert [i["id"] for i in body2] == ["i3", "i4", "i5"]
    assert [i["id"] for i in c.get_all(INST)] == [f"i{i}" for i in range(8)]
    # the filter is kept in the next link and applies on every page
    flt = "?filter=" + urllib.parse.quote("(eq,appDId,a)")
    _, first, h = c.call("GET", INST + flt)
    assert "filter=" in h["Link"] and [i["id"] for i in first] == ["i1", "i3", "i5"]
    assert [i["id"] for i in c.get_all(INST + flt)] == ["i1", "i3", "i5", "i7"]
    # the last page has no Link
    _, last, h = c.call("GET", INST + "?filter=" + urllib.parse.quote("(eq,appName,n7)"))
    assert [i["id"] for i in last] == ["i7"] and "Link" not in h


@pytest.mark.parametrize("marker", ["-1", "abc", "9" * 30, "1.5"])
def test_marker_not_given_by_the_server_is_a_400(env, marker):
    _, c = env
    with pytest.raises(ApiError) as e:
        c.get(INST + "?nextpage_opaque_marker=" + urllib.parse.quote(marker))
    assert e.value.status == 400 and "nextpage_opaque_marker" in e.value.body["detail"]


def test_a_listed_instance_is_what_its_own_get_shows(env):
    """The listing sends the views the store keeps: each is the single
    GET's view, kept in step with every write (observedState included)."""
    orch, c = env
    doc = orch.store.get("instances", "i2")
    doc.update(instantiationState="INSTANTIATED", hostId="h",
               _observed={"state": "MISSING", "detail": "gone", "at": 5})
    orch.store.put("instances", "i2", doc)
    listed = c.get_all(INST)
    assert [i["id"] for i in listed] == [f"i{i}" for i in range(8)]
    for item in listed:
        assert item == c.get(f"{INST}/{item['id']}")
        assert "_mp1Token" not in item
    assert listed[2]["observedState"] == "MISSING"
    # filters on an indexed column (exact in SQLite) and on a path that is
    # not (tested on each view) choose the same instances
    for flt, want in (("(eq,appInstanceName,inst2)", ["i2"]),
                      ("(eq,observedState,MISSING)", ["i2"]),
                      ("(in,appDId,a);(neq,appName,n3)", ["i1", "i5", "i7"])):
        got = c.get_all(INST + "?filter=" + urllib.parse.quote(flt))
        assert [i["id"] for i in got] == want, flt
