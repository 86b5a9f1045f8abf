"""An MEO whose store is PostgreSQL (`meo.database`), on the session's
private cluster (tests/support/pglab.py): configured from a file, it keeps
its state there, answers 503 with Retry-After while the server is down,
and serves again once it is back, without a restart of the MEO."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest
import yaml

from mecorch.api import make_server
from mecorch.kernel import config
from mecorch.kernel.pgstore import PgStore
from mecorch.meo.orchestrator import MeoOrchestrator

pytestmark = pytest.mark.postgres
INST = "/app_lcm/v1/app_instances"


def _get(url: str) -> tuple[int, dict, object]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


@pytest.fixture
def meo(pgdatabase, tmp_path):
    path = tmp_path / "meo.yaml"
    path.write_text(yaml.safe_dump({
        "role": "meo", "state_dir": str(tmp_path / "state"), "run_dir": str(tmp_path / "run"),
        "hosts": [], "meo": {"heartbeat_s": 0, "database": pgdatabase}}))
    meo = MeoOrchestrator(config.load(path))
    server = make_server(meo, "127.0.0.1:0", "meo")
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    meo.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield meo
    server.shutdown()
    server.server_close()
    meo.close()


def test_the_meo_keeps_its_state_in_postgres(meo, tmp_path):
    assert isinstance(meo.store, PgStore)
    assert not (tmp_path / "state" / "meo.db").exists()
    meo.store.put("instances", "i-1", {"id": "i-1", "appDId": "d", "appInstanceName": "n",
                                       "instantiationState": "NOT_INSTANTIATED",
                                       "appPkgId": "p", "_links": {}})
    status, _, body = _get(meo.url + INST)
    assert status == 200 and [i["id"] for i in body] == ["i-1"]


def test_503_with_retry_after_while_postgres_is_down_then_served_again(meo, pglab):
    assert _get(meo.url + INST)[0] == 200
    pglab.stop()
    for _ in range(2):                   # the lost connection, then a refused one
        status, headers, body = _get(meo.url + INST)
        assert status == 503, body
        assert headers.get("Retry-After") == "2"
        assert body["title"] == "State store unavailable" and "PostgreSQL" in body["detail"]
    status, _, body = _get(meo.url + "/readyz")
    assert status == 503 and "store" in body["detail"]
    pglab.start()
    status, _, body = _get(meo.url + INST)
    assert status == 200 and body == []
    assert _get(meo.url + "/readyz")[0] == 200
