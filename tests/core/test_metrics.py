"""/metrics, /healthz, /readyz through the real HTTP server (in-memory
drivers behind it), scraped with prometheus_client's own text parser; who
may read them without a token. The same endpoints on the real backends:
test_status_page."""

from __future__ import annotations

import subprocess
import threading
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.fakes import broken
from mecorch.api import make_server, status
from support.corelab import INST, env, instantiate, onboard, terminate  # noqa: F401


def get(url: str, token: str | None = None) -> tuple[int, str, dict]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token
                                 else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def scrape(base: str) -> dict[str, list]:
    """metric family name -> its samples, parsed by the real parser."""
    status_, text, headers = get(f"{base}/metrics")
    assert status_ == 200, text
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(samples, name: str, **labels) -> float:
    hits = [s.value for s in samples if s.name == name
            and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(hits) == 1, (name, labels, samples)
    return hits[0]


def test_metrics_count_operations_instances_packages_rules_and_backends(env):  # noqa: F811
    status.for_orchestrator(env.orch).start()       # as serve does: listen before the ops
    try:
        onboard(env)
        iid = env.c.post(INST, {"appDId": "sample-http"})[0]["id"]
        assert instantiate(env, iid)["operationState"] == "COMPLETED"
        m = scrape(env.c.base)
        ops = m["mecorch_lcm_operation_duration_seconds"]
        assert value(ops, "mecorch_lcm_operation_duration_seconds_count",
                     operation="INSTANTIATE", manner="CONTAINER", outcome="completed") == 1
        assert value(ops, "mecorch_lcm_operation_duration_seconds_bucket", operation="INSTANTIATE",
                     manner="CONTAINER", outcome="completed", le="+Inf") == 1
        inst = m["mecorch_instances"]
        assert value(inst, "mecorch_instances", manner="CONTAINER", state="INSTANTIATED",
                     operational="STARTED", host="default") == 1
        assert value(m["mecorch_packages"], "mecorch_packages", onboarding="ONBOARDED",
                     operational="ENABLED", usage="IN_USE") == 1
        rules = m["mecorch_rules"]
        assert value(rules, "mecorch_rules", kind="traffic", state="ACTIVE", host="default") == 1
        assert value(rules, "mecorch_rules", kind="dns", state="ACTIVE", host="default") == 1
        up = m["mecorch_backend_up"]
        for role in ("cim", "vim", "mep"):
            assert value(up, "mecorch_backend_up", host="default", role=role) == 1
        assert value(m["mecorch_events"], "mecorch_events_total", event="op.completed") == 1
        assert "process_resident_memory_bytes" in m
        assert value(m["mecorch_notifications_pending"], "mecorch_notifications_pending") == 0

        # a failed operation is timed too, under its own outcome
        assert terminate(env, iid)["operationState"] == "COMPLETED"
        env.cim.fail["deploy"] = broken("no room at the inn")
        assert instantiate(env, iid)["operationState"] == "FAILED"
        m = scrape(env.c.base)
        ops = m["mecorch_lcm_operation_duration_seconds"]
        assert value(ops, "mecorch_lcm_operation_duration_seconds_count",
                     operation="INSTANTIATE", manner="CONTAINER", outcome="failed") == 1
        assert value(ops, "mecorch_lcm_operation_duration_seconds_count",
                     operation="TERMINATE", manner="CONTAINER", outcome="completed") == 1
        assert value(m["mecorch_instances"], "mecorch_instances", manner="none",
                     state="NOT_INSTANTIATED", operational="none", host="none") == 1
    finally:
        status.for_orchestrator(env.orch).stop()


def test_healthz_and_readyz_name_the_backend_that_is_down(env):  # noqa: F811
    code, body, _ = get(f"{env.c.base}/healthz")
    assert code == 200 and '"alive"' in body
    code, body, _ = get(f"{env.c.base}/readyz")
    assert code == 200 and '"ready"' in body and "default/cim" in body
    env.vim.capacity = lambda: (_ for _ in ()).throw(broken("libvirtd is not answering"))
    status.for_orchestrator(env.orch).health.probe_all()
    code, body, headers = get(f"{env.c.base}/readyz")
    assert code == 503 and headers["Content-Type"] == "application/problem+json"
    assert "not ready: default/vim" in body and "libvirtd is not answering" in body
    m = scrape(env.c.base)
    assert value(m["mecorch_backend_up"], "mecorch_backend_up", host="default", role="vim") == 0
    assert value(m["mecorch_backend_up"], "mecorch_backend_up", host="default", role="cim") == 1


@pytest.fixture
def dummy_address(uid):
    """A non-loopback address on a port-less bridge of the test's own: a request
    to it from this machine comes from that address, not from loopback."""
    name, addr = f"mecm{uid[:6]}", f"10.216.{int(uid[:2], 16)}.1"
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", f"{addr}/32", "dev", name], check=True)
        subprocess.run(["ip", "link", "set", name, "up"], check=True)
        yield addr
    finally:
        subprocess.run(["ip", "link", "del", name], check=False)


def test_operations_endpoints_need_a_token_only_off_loopback(env, dummy_address):  # noqa: F811
    token = "s" * 24
    (env.tmp / "tokens").write_text(token + "\n")
    env.orch.cfg["api"]["token_file"] = str(env.tmp / "tokens")
    servers = [make_server(env.orch, "127.0.0.1:0"), make_server(env.orch, f"{dummy_address}:0")]
    for s in servers:
        threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
    local, remote = (f"http://{s.server_address[0]}:{s.server_address[1]}" for s in servers)
    try:
        for path in ("/metrics", "/healthz", "/readyz", "/status"):
            assert get(local + path)[0] == 200, path                # loopback: no token
            assert get(remote + path)[0] == 401, path               # elsewhere: a token
            assert get(remote + path, token)[0] == 200, path
        # the rest of the API still needs the token on loopback
        assert get(local + INST)[0] == 401
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()
