"""The operator's log: one structured line per operation and state change,
with the instance, package, host and op ids; text by default, JSON lines on
request; libraries kept at WARNING unless asked. Through the real HTTP API
with in-memory drivers (what the drivers log is theirs)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from support.fakes import broken
from mecorch.kernel import logs
from mecorch.api import status
from mecorch.kernel.states import LcmOperation
from support.corelab import INST, PKGS, env, instantiate, onboard, terminate  # noqa: F401


@pytest.fixture
def log_lines():
    """Everything `mecorch serve --log-format json` would print, as dicts."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("mecorch").level)
    out = io.StringIO()
    logs.setup(0, "json", stream=out)

    def lines() -> list[dict]:
        return [json.loads(ln) for ln in out.getvalue().splitlines() if ln.strip()]
    yield lines
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in saved[0]:
        root.addHandler(h)
    root.setLevel(saved[1])
    logging.getLogger("mecorch").setLevel(saved[2])


def events(lines: list[dict], name: str) -> list[dict]:
    return [ln for ln in lines if ln.get("event") == name]


def test_every_operation_and_state_change_is_one_line(env, log_lines):  # noqa: F811
    pkg = onboard(env)
    pid = pkg["id"]
    iid = env.c.post(INST, {"appDId": "sample-http"})[0]["id"]
    op = instantiate(env, iid)
    url = f"/mec_app_support/v1/applications/{iid}/dns_rules/sample-http-dns"
    _, rule, headers = env.c.call("GET", url)
    env.c.call("PUT", url, dict(rule, state="INACTIVE"), {"If-Match": headers["ETag"]})
    stop, _ = env.c.post(f"{INST}/{iid}/operate", {"changeStateTo": "STOPPED",
                                                  "stopType": "FORCEFUL"})
    env.c.wait_op(stop)
    top = terminate(env, iid)
    env.c.call("DELETE", f"{INST}/{iid}")
    env.c.call("PATCH", f"{PKGS}/{pid}", {"operationState": "DISABLED"})
    env.c.call("DELETE", f"{PKGS}/{pid}")
    lines = log_lines()

    (onb,) = events(lines, "package.onboarded")
    assert onb["package"] == pid and onb["app"] == "sample-http" and onb["level"] == "INFO"
    (created,) = events(lines, "instance.created")
    assert created["instance"] == iid and created["package"] == pid
    started = events(lines, "op.started")
    assert [s["operation"] for s in started] == ["INSTANTIATE", "OPERATE", "TERMINATE"]
    done = events(lines, "op.completed")
    assert [d["op"] for d in done][0] == op["id"] and done[-1]["op"] == top["id"]
    for d in done:
        assert d["instance"] == iid and d["package"] == pid and d["host"] == "default"
        assert d["manner"] == "CONTAINER" and d["duration_s"] >= 0
    states = events(lines, "instance.state")
    assert [(s["state"], s.get("operational")) for s in states] == [
        ("INSTANTIATED", None), ("INSTANTIATED", "STOPPED"), ("NOT_INSTANTIATED", None)]
    assert states[0]["addresses"].startswith("10.123.0.")
    (rule_line,) = events(lines, "rule.changed")
    assert rule_line["instance"] == iid and rule_line["rule"] == "sample-http-dns"
    assert rule_line["state"] == "INACTIVE" and rule_line["host"] == "default"
    assert events(lines, "instance.deleted")[0]["instance"] == iid
    assert events(lines, "package.disabled")[0]["package"] == pid
    assert events(lines, "package.deleted")[0]["package"] == pid
    # nothing but events and their ids at the default level: no request lines
    others = [ln for ln in lines if ln["logger"] != "mecorch.events"]
    assert others == [], others


def test_failed_op_recovery_and_backend_changes(env, log_lines):  # noqa: F811
    onboard(env)
    iid = env.c.post(INST, {"appDId": "sample-http"})[0]["id"]
    env.cim.fail["deploy"] = broken("the engine said no")
    instantiate(env, iid)
    env.cim.fail.clear()
    # an interrupted instantiate, as a crash leaves it: recovery rolls it back
    env.orch.lcm.journal.start(iid, LcmOperation.INSTANTIATE,
                               {"hostId": "default", "manner": "CONTAINER", "need": {}})
    env.orch.recover()
    health = status.for_orchestrator(env.orch).health
    health.probe_all()
    real = env.vim.capacity
    env.vim.capacity = lambda: (_ for _ in ()).throw(broken("libvirtd gone"))
    health.probe_all()
    health.probe_all()                    # still down: no second line
    env.vim.capacity = real
    health.probe_all()
    lines = log_lines()
    failed, interrupted = events(lines, "op.failed")
    assert failed["level"] == "WARNING" and failed["instance"] == iid
    assert "the engine said no" in failed["error"]
    assert interrupted["instance"] == iid and "interrupted" in interrupted["error"]
    rec = events(lines, "recovery")
    assert rec and rec[0]["instance"] == iid and "rolled back" in rec[0]["action"]
    (down,) = events(lines, "backend.down")
    assert down["host"] == "default" and down["role"] == "vim" and "libvirtd gone" in down["detail"]
    (up,) = events(lines, "backend.up")
    assert up["role"] == "vim"


def test_text_format_and_library_noise():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("mecorch").level)
    try:
        out = io.StringIO()
        logs.setup(0, "text", stream=out)
        logs.event("instance.created", instance="i-1", package="p 1")
        logging.getLogger("urllib3.connectionpool").debug("Starting new HTTP connection")
        logging.getLogger("docker.utils").info("library chatter")
        logging.getLogger("docker.utils").warning("library trouble")
        logging.getLogger("mecorch.api").debug("request line")
        text = out.getvalue()
        first = text.splitlines()[0]
        assert first.endswith('INFO mecorch.events instance.created instance=i-1 package="p 1"')
        assert "library chatter" not in text and "Starting new" not in text
        assert "library trouble" in text and "request line" not in text
        out = io.StringIO()
        logs.setup(1, "text", stream=out)
        logging.getLogger("mecorch.api").debug("request line")
        logging.getLogger("urllib3.connectionpool").debug("Starting new HTTP connection")
        assert "request line" in out.getvalue() and "Starting new" not in out.getvalue()
        out = io.StringIO()
        logs.setup(2, "text", stream=out)
        logging.getLogger("urllib3.connectionpool").debug("Starting new HTTP connection")
        assert "Starting new" in out.getvalue()
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        logging.getLogger("mecorch").setLevel(saved[2])
