"""MEC 011 timing (GET /mec_app_support/v1/timing/timing_caps and
.../current_time): the answers validate against the ETSI schemas
(TimingCaps, CurrentTime) loaded from the vendored MecAppSupportApi.yaml;
the time is the host's and timeSourceStatus what the kernel says; with
tokens configured an operator token and any app's Mp1 token of the host are
accepted, no token or a garbage one refused. Not served by an MEO. Real
HTTP server, in-memory drivers."""

from __future__ import annotations

import http.client
import json
import secrets
import time

import pytest

from mecorch.mepm import timing
from support.corelab import INST, create, env, instantiate, onboard, serve
from support.etsischema import MP1_FILE, errors_of, etsi_validator
from support.meolab import system

__all__ = ["env", "system"]         # the fixtures, used by name

TIMING = "/mec_app_support/v1/timing"


def get(base: str, path: str, token: str | None = None) -> tuple[int, dict]:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    return resp.status, json.loads(raw) if raw else None


def test_answers_validate_against_the_etsi_schemas(env):
    before = time.time()
    status, caps = get(env.c.base, f"{TIMING}/timing_caps")
    assert status == 200 and errors_of(etsi_validator(MP1_FILE, "TimingCaps"), caps) == []
    status, now = get(env.c.base, f"{TIMING}/current_time")
    assert status == 200 and errors_of(etsi_validator(MP1_FILE, "CurrentTime"), now) == []
    after = time.time()
    assert int(before) <= now["seconds"] <= after and 0 <= now["nanoSeconds"] < 10**9
    # what the kernel says now (the host's clock does not change sync in a test)
    assert now["timeSourceStatus"] == timing.time_source_status(timing.clock_state())
    # NTP servers only as the host's own configuration gives them
    assert caps.get("ntpServers", []) == timing.configured_servers()
    assert "ptpMasters" not in caps


@pytest.mark.parametrize("path", ["timing_caps", "current_time"])
def test_the_etsi_schemas_can_refuse(path):
    schema = "TimingCaps" if path == "timing_caps" else "CurrentTime"
    bad = {"timeStamp": {"seconds": "now"}} if path == "timing_caps" else \
        {"seconds": 1, "nanoSeconds": 0, "timeSourceStatus": "SYNCED"}
    assert errors_of(etsi_validator(MP1_FILE, schema), bad)


def test_query_parameters_and_methods_are_refused(env):
    assert get(env.c.base, f"{TIMING}/current_time?all=1")[0] == 400
    conn = http.client.HTTPConnection(*env.c.base.removeprefix("http://").split(":"),
                                      timeout=10)
    conn.request("POST", f"{TIMING}/current_time", body=b"{}",
                 headers={"Content-Type": "application/json"})
    assert conn.getresponse().status == 405
    conn.close()


def test_any_app_of_the_host_may_ask_and_nobody_else(env, tmp_path):
    pkg = onboard(env)
    iid = create(env, pkg["appDId"])["id"]
    assert instantiate(env, iid)["operationState"] == "COMPLETED"
    app_token = env.cim.instances[iid]["request"].env["MEC_APP_TOKEN"]
    operator = secrets.token_urlsafe(24)
    token_file = tmp_path / "tokens"
    token_file.write_text(operator + "\n")
    token_file.chmod(0o600)
    env.orch.cfg["api"]["token_file"] = str(token_file)
    server, _ = serve(env.orch)                     # this listener has tokens
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for path in (f"{TIMING}/timing_caps", f"{TIMING}/current_time"):
            assert get(base, path, app_token)[0] == 200, path
            assert get(base, path, operator)[0] == 200, path
            assert get(base, path)[0] == 401, path
            assert get(base, path, "garbage-" + secrets.token_hex(8))[0] == 401, path
            assert get(base, path, app_token + "x")[0] == 401, path
        # the app token is still held to what apps may do
        assert get(base, INST, app_token)[0] == 403
        # a terminated app's token is revoked
        op, _ = env.c.post(f"{INST}/{iid}/terminate", {"terminationType": "FORCEFUL"})
        assert env.c.wait_op(op, timeout=20)["operationState"] == "COMPLETED"
        assert get(base, f"{TIMING}/current_time", app_token)[0] == 401
    finally:
        server.shutdown()
        server.server_close()


def test_an_meo_does_not_serve_timing(system):
    for path in ("timing_caps", "current_time"):
        assert get(system.c.base, f"{TIMING}/{path}")[0] == 404
