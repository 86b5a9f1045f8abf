"""The CLI over the real REST API, with in-memory drivers behind it (the
CLI's own logic: id resolution, columns, JSON output, operate, events,
rules, host list, tokens, a closed pipe). The real backends are driven
through the same commands in test_status_page."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mecorch import cli
from support.corelab import env, onboard  # noqa: F401 - the fixture


def run_cli(e, capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(["--api", e.c.base, *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def columns(text: str) -> list[dict]:
    """Rows of an aligned table as dicts, cut where the header's words start."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    head = lines[0]
    starts = [i for i, ch in enumerate(head) if ch != " " and (i == 0 or head[i - 1] == " ")
              and (i < 2 or head[i - 2:i] == "  " or i == 0)]
    names = [head[s:e].strip() for s, e in zip(starts, starts[1:] + [None])]
    rows = []
    for ln in lines[1:]:
        cells = [ln[s:e].strip() for s, e in zip(starts, starts[1:] + [None])]
        rows.append(dict(zip(names, cells)))
    return rows


def deployed(e, capsys, name="one") -> str:
    rc, out, _ = run_cli(e, capsys, "app", "create", "sample-http", "--name", name)
    assert rc == 0
    iid = out.strip()
    rc, out, err = run_cli(e, capsys, "app", "instantiate", iid[:8])
    assert rc == 0, err
    return iid


def test_package_commands_take_prefix_and_appdid(env, capsys):  # noqa: F811
    pkg = onboard(env)
    rc, out, _ = run_cli(env, capsys, "package", "list")
    assert rc == 0
    (row,) = columns(out)
    assert row["ID"] == pkg["id"] and row["APPDID"] == "sample-http" and row["STATE"] == "ENABLED"
    rc, out, _ = run_cli(env, capsys, "-o", "json", "package", "show", pkg["id"][:6])
    assert json.loads(out)["id"] == pkg["id"]
    rc, out, _ = run_cli(env, capsys, "package", "disable", "sample-http")
    assert rc == 0 and "DISABLED" in out
    rc, out, _ = run_cli(env, capsys, "--output", "json", "package", "list")
    assert json.loads(out)[0]["operationalState"] == "DISABLED"
    rc, out, _ = run_cli(env, capsys, "package", "list", "--output", "json",
                         "--filter", "(eq,operationalState,ENABLED)")
    assert json.loads(out) == []


def test_unknown_and_ambiguous_ids_are_clear_errors(env, capsys):  # noqa: F811
    onboard(env)
    rc, _, err = run_cli(env, capsys, "package", "show", "zzz")
    assert rc == 2 and "no package with the id, id prefix or appDId 'zzz'" in err
    ids = []
    for name in ("alpha", "beta"):          # not hex: never an id prefix
        rc, out, _ = run_cli(env, capsys, "app", "create", "sample-http", "--name", name)
        ids.append(out.strip())
    a, b = ids
    rc, _, err = run_cli(env, capsys, "app", "show", "sample-http")     # the appDId of both
    assert rc == 2 and "matches 2 app instances" in err and a in err and b in err
    rc, out, _ = run_cli(env, capsys, "-o", "json", "app", "show", "beta")           # its appInstanceName
    assert rc == 0 and json.loads(out)["id"] == b
    n = next(i for i in range(1, 37) if not b.startswith(a[:i]))
    rc, out, _ = run_cli(env, capsys, "-o", "json", "app", "show", a[:n])            # a unique prefix
    assert rc == 0 and json.loads(out)["id"] == a
    rc, out, _ = run_cli(env, capsys, "app", "delete", b)
    rc, out, _ = run_cli(env, capsys, "-o", "json", "app", "show", "sample-http")  # one left
    assert rc == 0 and json.loads(out)["id"] == a


def test_instantiate_without_host_uses_the_only_host(env, capsys):  # noqa: F811
    onboard(env)
    iid = deployed(env, capsys)
    rc, out, _ = run_cli(env, capsys, "app", "list")
    (row,) = columns(out)
    assert row["ID"] == iid and row["HOST"] == "default" and row["MANNER"] == "CONTAINER"
    assert row["STATE"] == "INSTANTIATED" and row["OPERATIONAL"] == "STARTED"
    assert row["OBSERVED"] == "RUNNING" and row["RESTARTS"] == "0"     # from the first moment
    assert row["ADDRESSES"].startswith("10.123.0.")
    assert row["DNS"] == "sample-http.mec.local"
    assert row["NAME"] == "one"


def test_operate_events_and_rules(env, capsys):  # noqa: F811
    onboard(env)
    iid = deployed(env, capsys)
    rc, out, err = run_cli(env, capsys, "app", "operate", iid[:8], "stop", "--forceful")
    assert rc == 0, err
    assert "STOPPED" in out
    assert env.cim.instances[iid]["state"].value == "STOPPED"
    rc, out, _ = run_cli(env, capsys, "app", "operate", iid[:8], "start")
    assert rc == 0 and "STARTED" in out
    rc, out, _ = run_cli(env, capsys, "app", "events", iid[:8])
    ops = columns(out)
    assert [o["OPERATION"] for o in ops] == ["INSTANTIATE", "OPERATE", "OPERATE"]
    assert all(o["STATE"] == "COMPLETED" for o in ops)
    rc, out, _ = run_cli(env, capsys, "--output", "json", "app", "events", iid)
    assert [o["operationParams"] for o in json.loads(out)] == ["INSTANTIATE", "OPERATE",
                                                                "OPERATE"]
    rc, out, _ = run_cli(env, capsys, "app", "rules", iid[:8])
    assert rc == 0 and "traffic rules:" in out and "dns rules:" in out
    rc, out, _ = run_cli(env, capsys, "--output", "json", "app", "rules", iid[:8])
    doc = json.loads(out)
    assert doc["trafficRules"] and doc["dnsRules"]
    assert doc["dnsRules"][0]["domainName"] in out


def test_service_list_shows_the_registry_with_filters(env, capsys):  # noqa: F811
    onboard(env)
    iid = deployed(env, capsys)
    for name, cat in (("video", "analytics"), ("maps", "location")):
        env.orch.mep.services.register(iid, {
            "serName": name, "version": "1", "state": "ACTIVE", "serializer": "JSON",
            "serCategory": {"href": "/c", "id": cat, "name": cat, "version": "1"},
            "transportInfo": {"id": "t", "name": "REST", "type": "REST_HTTP",
                              "protocol": "HTTP", "version": "1.1", "security": {},
                              "endpoint": {"addresses": [{"host": "10.90.0.10",
                                                          "port": 8080}]}}})
    rc, out, _ = run_cli(env, capsys, "service", "list")
    assert rc == 0
    rows = columns(out)
    assert sorted((r["NAME"], r["CATEGORY"], r["STATE"], r["ENDPOINT"]) for r in rows) == [
        ("maps", "location", "ACTIVE", "10.90.0.10:8080"),
        ("video", "analytics", "ACTIVE", "10.90.0.10:8080")]
    rc, out, _ = run_cli(env, capsys, "service", "list", "--category", "location")
    assert [r["NAME"] for r in columns(out)] == ["maps"]
    rc, out, _ = run_cli(env, capsys, "service", "list", "--name", "video", "--name", "maps",
                         "-o", "json")
    assert sorted(s["serName"] for s in json.loads(out)) == ["maps", "video"]


def test_host_list_shows_capacity_and_backends(env, capsys):  # noqa: F811
    onboard(env)
    deployed(env, capsys)
    rc, out, _ = run_cli(env, capsys, "host", "list")
    assert rc == 0
    rows = columns(out)
    cont = [r for r in rows if r["MANNER"] == "CONTAINER"][0]
    assert cont["HOST"] == "default"
    # fake: 2 CPUs x ratio 4 = 8 vCPU; the deployed sample app promised some
    assert float(cont["VCPU"]) == 8.0
    promised = float(cont["VCPU PROMISED"])
    assert promised > 0 and float(cont["VCPU FREE"]) == pytest.approx(8.0 - promised)
    assert int(cont["MEM MB"]) == 4096
    assert int(cont["MEM FREE"]) == 4096 - int(cont["MEM PROMISED"])
    assert "cim:up" in cont["BACKENDS"] and "mep:up" in cont["BACKENDS"]
    env.cim.capacity = lambda: (_ for _ in ()).throw(__import__("support.fakes", fromlist=["broken"]).broken("dockerd gone"))
    from mecorch.api import status
    status.for_orchestrator(env.orch).health.probe_all()
    rc, out, err = run_cli(env, capsys, "host", "list")
    assert "cim:DOWN" in out and "dockerd gone" in err


def test_token_option_and_env(env, capsys, monkeypatch):  # noqa: F811
    tokens = env.tmp / "tokens"
    tokens.write_text("t" * 24 + "\n")
    env.orch.cfg["api"]["token_file"] = str(tokens)
    from mecorch.api import make_server
    import threading
    server = make_server(env.orch, "127.0.0.1:0")
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        monkeypatch.delenv("MECORCH_TOKEN", raising=False)
        assert cli.main(["--api", base, "package", "list"]) == 2
        assert "bearer token" in capsys.readouterr().err
        assert cli.main(["--api", base, "--token", "t" * 24, "package", "list"]) == 0
        monkeypatch.setenv("MECORCH_TOKEN", "t" * 24)
        assert cli.main(["--api", base, "package", "list"]) == 0
    finally:
        server.shutdown()
        server.server_close()


def test_closed_pipe_is_no_traceback(env):  # noqa: F811
    onboard(env)
    pkg = env.c.get("/app_pkgm/v1/app_packages")[0]
    # `mecorch package show ID | head -1`: head exits after one line
    cmd = [sys.executable, "-m", "mecorch.cli", "--api", env.c.base, "-o", "json", "package", "show",
           pkg["id"]]
    producer = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.run(["head", "-1"], stdin=producer.stdout, capture_output=True, text=True)
    producer.stdout.close()
    err = producer.stderr.read().decode()
    producer.wait(timeout=30)
    assert head.stdout.strip() == "{"
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_help_explains_arguments_and_filters(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "--token" in out and "MECORCH_TOKEN" in out and "(eq,appName" in out
    with pytest.raises(SystemExit):
        cli.main(["app", "list", "--help"])
    out = capsys.readouterr().out
    assert "filter syntax" in out and "neq" in out
    with pytest.raises(SystemExit):
        cli.main(["app", "operate", "--help"])
    out = capsys.readouterr().out
    assert "unique prefix" in out and "start: STARTED" in out


def test_long_wait_says_it_still_waits(env, capsys, monkeypatch):  # noqa: F811
    import threading
    from mecorch.kernel import client
    monkeypatch.setattr(client, "PROGRESS_EVERY_S", 0.3)
    onboard(env)
    env.cim.deploy_gate = threading.Event()
    threading.Timer(1.5, env.cim.deploy_gate.set).start()
    rc, out, _ = run_cli(env, capsys, "app", "create", "sample-http")
    rc, out, err = run_cli(env, capsys, "app", "instantiate", out.strip())
    assert rc == 0, err
    lines = err.splitlines()
    assert lines[0] == "  INSTANTIATE PROCESSING" or lines[0] == "  INSTANTIATE STARTING"
    assert any(ln.startswith("  INSTANTIATE PROCESSING, ") and ln.endswith(" s ...")
               for ln in lines), err
    assert lines[-1] == "  INSTANTIATE COMPLETED"


def test_a_bad_rules_file_is_refused_before_any_server_is_asked(tmp_path, capsys):
    """--rules is a local file: its mistakes are named without a server (the
    API given here has nothing listening; reaching for it would say so)."""
    from mecorch.cli import main
    bad = tmp_path / "rules.yaml"
    bad.write_text("appTrafficRule:\n  - {trafficRuleId: web, filterType: FLOW, priority: 1,"
                   "\n     trafficFilter: [{dstPort: ['80'], protocl: [TCP]}],"
                   "\n     action: FORWARD_DECAPSULATED}\n")
    rc = main(["--api", "http://127.0.0.1:1", "app", "deploy", "abc", "--rules", str(bad)])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown field 'protocl'" in err and "cannot reach" not in err, err
