"""Cordon and uncordon of an edge host at the MEO (mecorch/meo/registry.py,
a mecorch extension): a cordoned host takes no new placement, a deploy
naming only it is refused saying so, a re-placement does not pick it,
uncordon makes it placeable again; the cordon is the store's (a second
replica on the same SQLite file sees it, and it survives a restart); the
routes, the CLI, the status page and /metrics show it. The hosts are
in-process MEPMs on the in-memory fake drivers (support/meolab.py):
placement is the MEO's own logic, no backend is claimed to work here."""

from __future__ import annotations

import re
import time

import pytest

from mecorch.kernel.client import ApiError
from mecorch.kernel.errors import CapacityExceeded
from mecorch.meo.orchestrator import MeoOrchestrator
from mecorch.mepm.local import LocalMepm
from support.meolab import INST, deploy, onboard, system  # noqa: F401

HOSTS = "/mecorch/v1/hosts"


def _hosts(s) -> dict[str, dict]:
    return {h["hostId"]: h for h in s.c.get(HOSTS)}


def _cli(s, capsys, *argv: str) -> tuple[int, str, str]:
    from mecorch.cli import main
    capsys.readouterr()
    rc = main(["--api", s.c.base, *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _columns(out: str) -> list[dict]:
    """The rows of a CLI table by its headers' positions."""
    lines = [ln for ln in out.splitlines() if ln.strip()]
    starts = [m.start() for m in re.finditer(r"(?:(?<=  )|^)[A-Z][A-Z ]*?(?=  |$)", lines[0])]
    heads = [lines[0][a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
    return [{h: ln[a:b].strip() if b else ln[a:].strip()
             for h, a, b in zip(heads, starts, starts[1:] + [None])} for ln in lines[1:]]


def _metric(s, name: str, **labels) -> list[float]:
    from prometheus_client.parser import text_string_to_metric_families
    text = s.c.call("GET", "/metrics")[1]
    text = text.decode() if isinstance(text, bytes) else text
    return [smp.value for fam in text_string_to_metric_families(text) for smp in fam.samples
            if smp.name == name and all(smp.labels.get(k) == v for k, v in labels.items())]


def test_a_cordoned_host_takes_no_placement_until_uncordoned(system):  # noqa: F811
    s = system
    pkg = onboard(s)
    view, _ = s.c.post(f"{HOSTS}/edge3/cordon", {"reason": "kernel upgrade"})
    assert view["hostId"] == "edge3" and view["cordoned"]["reason"] == "kernel upgrade"
    at = view["cordoned"]["at"]
    assert abs(at["seconds"] - time.time()) < 60
    hosts = _hosts(s)
    assert hosts["edge3"]["cordoned"] == view["cordoned"] and hosts["edge2"]["cordoned"] is None
    # a deploy naming no host: never edge3 (without the cordon the most free
    # share puts the first of these on edge2 or edge3, the next on the other)
    placed = []
    for _ in range(3):
        iid, op = deploy(s, pkg["appDId"], deploymentType="CONTAINER")
        assert op["operationState"] == "COMPLETED", op
        placed.append(s.c.get(f"{INST}/{iid}")["hostId"])
    assert "edge3" not in placed and "edge2" in placed, placed
    # naming only edge3: refused before the 202, saying why
    with pytest.raises(ApiError) as e:
        deploy(s, pkg["appDId"], deploymentType="CONTAINER",
               selectedMECHostInfo=[{"hostId": {"id": "edge3"}}])
    assert e.value.status == 409
    assert "edge3: cordoned (kernel upgrade)" in e.value.body["detail"], e.value.body
    # naming edge3 and another: the other
    iid, op = deploy(s, pkg["appDId"], deploymentType="CONTAINER",
                     selectedMECHostInfo=[{"hostId": {"id": "edge3"}},
                                          {"hostId": {"id": "edge2"}}])
    assert s.c.get(f"{INST}/{iid}")["hostId"] == "edge2"
    assert "edge3: cordoned (kernel upgrade)" in op["decisionReason"]
    # idempotent: again, with no body, keeps its time and reason
    again, _ = s.c.post(f"{HOSTS}/edge3/cordon", None)
    assert again["cordoned"] == {"at": at, "reason": "kernel upgrade"}
    # a new reason replaces the reason, not the time
    again, _ = s.c.post(f"{HOSTS}/edge3/cordon", {"reason": "disk swap"})
    assert again["cordoned"] == {"at": at, "reason": "disk swap"}
    # uncordon: placeable again (and again: still 200)
    for _ in range(2):
        view, _ = s.c.post(f"{HOSTS}/edge3/uncordon", None)
        assert view["cordoned"] is None
    iid, op = deploy(s, pkg["appDId"], deploymentType="CONTAINER",
                     selectedMECHostInfo=[{"hostId": {"id": "edge3"}}])
    assert op["operationState"] == "COMPLETED" and s.c.get(f"{INST}/{iid}")["hostId"] == "edge3"
    # the in-process host's row held only the cordon: gone with it
    assert s.meo.store.get("hosts", "edge3") is None


def test_a_cordon_without_a_reason_says_cordoned(system):  # noqa: F811
    s = system
    pkg = onboard(s)
    view, _ = s.c.post(f"{HOSTS}/edge2/cordon", None)
    assert view["cordoned"]["reason"] == ""
    with pytest.raises(ApiError) as e:
        deploy(s, pkg["appDId"], deploymentType="CONTAINER",
               selectedMECHostInfo=[{"hostId": {"id": "edge2"}}])
    assert e.value.status == 409 and "(edge2: cordoned)" in e.value.body["detail"]


def test_cordon_routes_refuse_bad_input_by_name_and_unknown_hosts(system):  # noqa: F811
    s = system
    for action in ("cordon", "uncordon"):
        with pytest.raises(ApiError) as e:
            s.c.post(f"{HOSTS}/edge9/{action}", None)
        assert e.value.status == 404 and "edge9" in e.value.body["detail"]
    for body, named in (({"reson": "x"}, "'reson'"), ({"reason": 5}, "reason"),
                        ({"reason": ""}, "reason"), ({"reason": "a\nb"}, "reason"),
                        ({"reason": "x" * 257}, "reason"), (["x"], "object")):
        with pytest.raises(ApiError) as e:
            s.c.post(f"{HOSTS}/edge2/cordon", body)
        assert e.value.status == 400 and named in e.value.body["detail"], (body, e.value.body)
    assert _hosts(s)["edge2"]["cordoned"] is None       # nothing refused was taken
    with pytest.raises(ApiError) as e:
        s.c.call("POST", f"{HOSTS}/edge2/cordon", {"reson": "x"})
    assert "did you mean 'reason'" in e.value.body["detail"]


def test_the_cordon_is_the_store_s_another_replica_and_a_restart_see_it(system):  # noqa: F811
    s = system
    s.c.post(f"{HOSTS}/edge3/cordon", {"reason": "maintenance"})

    def replica() -> MeoOrchestrator:
        """Another MEO process on the same SQLite file, with the same
        in-process hosts."""
        meo = MeoOrchestrator(dict(s.meo.cfg))
        for hid, orch in s.hosts.items():
            meo.registry.attach(LocalMepm(orch, hid))
        return meo

    other = replica()
    try:
        assert other.registry.view("edge3")["cordoned"]["reason"] == "maintenance"
        cands = {c.host_id: c for c in other.registry.candidates()}
        assert cands["edge3"].cordoned == "maintenance" and cands["edge2"].cordoned is None
        # the replica's placement leaves it out too
        pkg = onboard(s)
        inst = other.lcm.create({"appDId": pkg["appDId"]})
        with pytest.raises(CapacityExceeded) as e:
            other.lcm.instantiate(inst["id"], {
                "deploymentType": "CONTAINER",
                "selectedMECHostInfo": [{"hostId": {"id": "edge3"}}]})
        assert "edge3: cordoned (maintenance)" in e.value.detail
        # uncordoned at the other replica: this one places there at once
        other.registry.uncordon("edge3")
        assert _hosts(s)["edge3"]["cordoned"] is None
        other.registry.cordon("edge2", "rack move")
        assert _hosts(s)["edge2"]["cordoned"]["reason"] == "rack move"
        iid, op = deploy(s, pkg["appDId"], deploymentType="CONTAINER",
                         selectedMECHostInfo=[{"hostId": {"id": "edge2"}},
                                              {"hostId": {"id": "edge3"}}])
        assert s.c.get(f"{INST}/{iid}")["hostId"] == "edge3", op
    finally:
        other.close()
    # a restart (a new process on the same store) finds the cordon
    again = replica()
    try:
        assert again.registry.view("edge2")["cordoned"]["reason"] == "rack move"
        assert again.registry.view("edge3")["cordoned"] is None
    finally:
        again.close()


def test_a_re_placement_never_picks_a_cordoned_host(system):  # noqa: F811
    from mecorch.meo import replace
    s = system
    pkg = onboard(s)
    iid, _ = deploy(s, pkg["appDId"], deploymentType="CONTAINER", lostAfter=5,
                    selectedMECHostInfo=[{"hostId": {"id": "edge2"}},
                                         {"hostId": {"id": "edge3"}}])
    lost = s.c.get(f"{INST}/{iid}")["hostId"]
    other = ({"edge2", "edge3"} - {lost}).pop()
    s.c.post(f"{HOSTS}/{other}/cordon", {"reason": "maintenance"})
    s.mepms[lost].down.set()                # lost: its link cut, beaten until UNREACHABLE
    entry = s.meo.registry.get(lost)
    for _ in range(s.meo.registry.unreachable_after):
        s.meo.registry.beat(entry)
    assert entry.state == "UNREACHABLE"
    [line] = s.meo.replacer.check(now=entry.unreachable_since + 10)
    assert line.startswith(f"instance {iid} not re-placed")
    failed = s.c.get(f"/app_lcm/v1/app_lcm_op_occs?filter=(eq,appInstanceId,{iid})")[-1]
    assert failed["operationState"] == "FAILED"
    assert f"{other}: cordoned (maintenance)" in failed["error"]["detail"]
    s.c.post(f"{HOSTS}/{other}/uncordon", None)
    t = time.time() + replace.RETRY_S + 1
    assert s.meo.replacer.check(now=t) == [f"re-placing instance {iid} from {lost} on {other}"]
    deadline = time.monotonic() + 20
    while s.c.get(f"{INST}/{iid}")["hostId"] != other:
        assert time.monotonic() < deadline, "not re-placed"
        time.sleep(0.05)


def test_cli_cordon_uncordon_and_host_list(system, capsys):  # noqa: F811
    s = system
    rc, out, err = _cli(s, capsys, "host", "cordon", "edge1", "--reason", "new PSU")
    assert rc == 0 and out == "edge host edge1 cordoned: it takes no new placement (new PSU)\n"
    rc, out, err = _cli(s, capsys, "host", "list")
    assert rc == 0, err
    rows = _columns(out)
    assert {r["CORDONED"] for r in rows if r["HOST"] == "edge1"} == {"yes (new PSU)"}
    assert {r["CORDONED"] for r in rows if r["HOST"] != "edge1"} == {"-"}
    rc, out, err = _cli(s, capsys, "-o", "json", "host", "cordon", "edge1")
    assert rc == 0 and '"reason": "new PSU"' in out
    rc, out, err = _cli(s, capsys, "host", "uncordon", "edge1")
    assert rc == 0 and out == "edge host edge1 uncordoned: it takes placements again\n"
    rc, out, err = _cli(s, capsys, "host", "list")
    assert {r["CORDONED"] for r in _columns(out)} == {"-"}
    rc, out, err = _cli(s, capsys, "host", "cordon", "edge9")
    assert rc == 2 and "unknown edge host 'edge9'" in err


def test_status_page_and_metrics_show_the_cordon(system):  # noqa: F811
    from support.page import Tables
    from mecorch.api import status
    s = system
    status.for_orchestrator(s.meo).start()
    try:
        pkg = onboard(s)
        s.c.post(f"{HOSTS}/edge2/cordon", {"reason": "maintenance"})
        with pytest.raises(ApiError):
            deploy(s, pkg["appDId"], deploymentType="CONTAINER",
                   selectedMECHostInfo=[{"hostId": {"id": "edge2"}}])
        page = s.c.call("GET", "/status")[1]
        t = Tables()
        t.feed(page.decode() if isinstance(page, bytes) else page)
        hosts = {h["host"]: h for h in t.tables["hosts"]}
        assert hosts["edge2"]["cordon"].startswith("cordoned (maintenance) since 20")
        assert hosts["edge3"]["cordon"] == "-"
        assert _metric(s, "mecorch_host_cordoned", host="edge2") == [1]
        assert _metric(s, "mecorch_host_cordoned", host="edge3") == [0]
        assert _metric(s, "mecorch_placement_refusals_total", reason="cordoned") == [1]
        s.c.post(f"{HOSTS}/edge2/uncordon", None)
        assert _metric(s, "mecorch_host_cordoned", host="edge2") == [0]
    finally:
        status.for_orchestrator(s.meo).stop()


def test_a_registered_host_keeps_its_cordon_when_its_mepm_registers_again(system, tmp_path):  # noqa: F811,E501
    """A registered MEPM (over HTTP: the host's API served on loopback)
    that registers again, as it does when it restarts, stays cordoned;
    its deregistration takes the cordon with its row."""
    import threading
    from mecorch.api import make_server
    from mecorch.kernel import config
    s = system
    server = make_server(s.hosts["edge2"], "127.0.0.1:0")
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    cfg = config.load()
    cfg["state_dir"], cfg["hosts"] = str(tmp_path / "meo-b"), []
    cfg["meo"]["heartbeat_s"] = 0
    meo = MeoOrchestrator(cfg)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        meo.registry.register({"hostId": "edge2", "url": url})
        meo.registry.cordon("edge2", "maintenance")
        assert meo.registry.view("edge2")["cordoned"]["reason"] == "maintenance"
        meo.registry.register({"hostId": "edge2", "url": url})      # its MEPM restarted
        assert meo.registry.view("edge2")["cordoned"]["reason"] == "maintenance"
        assert meo.store.get("hosts", "edge2")["url"] == url
        meo.registry.uncordon("edge2")           # a registration's row stays
        assert meo.store.get("hosts", "edge2")["url"] == url
        meo.registry.cordon("edge2")
        meo.registry.deregister("edge2")
        assert meo.store.get("hosts", "edge2") is None and meo.registry.cordons() == {}
    finally:
        meo.close()
        server.shutdown()
        server.server_close()


def test_a_dual_format_app_naming_only_a_cordoned_host_is_told_it_is_cordoned(system):  # noqa: F811,E501
    """The manner policy of a request that names no manner counts the open
    hosts; named only cordoned ones, placement's refusal says why."""
    import hashlib
    from support.duallab import dual_package
    s = system
    z = dual_package(s.tmp, appTrafficRule=[], appDNSRule=[])
    s.c.post("/app_pkgm/v1/app_packages", {
        "appPkgName": "dual", "appPkgVersion": "1", "appPkgPath": str(z),
        "checksum": {"algorithm": "SHA-256", "hash": hashlib.sha256(z.read_bytes()).hexdigest()}})
    s.c.post(f"{HOSTS}/edge3/cordon", {"reason": "maintenance"})
    with pytest.raises(ApiError) as e:
        deploy(s, "sample-dual", selectedMECHostInfo=[{"hostId": {"id": "edge3"}}])
    assert e.value.status == 409 and "edge3: cordoned (maintenance)" in e.value.body["detail"], \
        e.value.body
    # named with an open host too: placed there
    iid, op = deploy(s, "sample-dual", selectedMECHostInfo=[{"hostId": {"id": "edge3"}},
                                                            {"hostId": {"id": "edge2"}}])
    assert op["operationState"] == "COMPLETED", op
    assert s.c.get(f"{INST}/{iid}")["hostId"] == "edge2"
