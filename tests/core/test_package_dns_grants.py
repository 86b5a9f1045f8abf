"""DNS names a package declares, in the core (fake drivers).

- onboarding records the names an AppD's appDNSRule declares on the
  package (`dnsNames`: the API's AppPkgInfo, `mecorch package show`);
- such a name outside the host's MEC domain (`video.example.com`) is
  granted to that package's instances: accepted at instantiation and by
  an Mp1 PUT (also once the package is disabled: its running instances
  keep what they were given);
- a name outside the domain that the package does not declare is a 400
  naming the name, the host's domains and the package, at instantiation
  and by an Mp1 PUT, nothing applied; the bare domain stays refused;
- a host's `mep.dns_allowed_domains` lets every app name what lies below;
- another app claiming a granted name is a 409 naming the holder (whether
  its own package declares the name or not), and the first still holds
  and serves it; instances of the holder's app share it;
- an upgrade to a version whose package no longer grants a held name is
  refused (400), one that does grant it goes through;
- the MEO agrees: it places a granted name, refuses another app's claim
  of it before its 202, and a name the host refuses ends the op FAILED
  with the host's reason;
- a traffic rule PUT with protocol "TCP" is answered, stored and listed
  as "TCP", and applied as the same rule as "tcp".
The real dnsmasq answering such a name: tests/e2e/test_package_dns_names.py.
"""

from __future__ import annotations

from mecorch.spec.rules import TrafficRule
from support import meolab
from support.corelab import (  # noqa: F401 - env is a fixture
    deploy, env, node_env, onboard, problem)
from support.meolab import system  # noqa: F401 - the fixture

INST = "/app_lcm/v1/app_instances"
PKGS = "/app_pkgm/v1/app_packages"
MP1 = "/mec_app_support/v1/applications"
VIDEO = "video.example.com"
ON = {"selectedMECHostInfo": [{"hostId": {"id": "default"}}]}


def dns(name: str, rule_id: str = "video-dns", ip: str | None = None) -> dict:
    rule = {"dnsRuleId": rule_id, "domainName": name, "ipAddressType": "IP_V4"}
    return rule if ip is None else {**rule, "ipAddress": ip}


def video_package(e, app: str = "video-app", names=(VIDEO,), **changes) -> dict:
    """A package of the sample whose AppD declares `names`."""
    return onboard(e, appDId=app, appDNSRule=[dns(n, f"d{i}") for i, n in enumerate(names)],
                   **changes)


def put_dns(c, iid: str, rule: dict):
    return c.call("PUT", f"{MP1}/{iid}/dns_rules/{rule['dnsRuleId']}",
                  {**rule, "state": "ACTIVE"})[1]


def applied_names(e, iid: str) -> list[str]:
    return [r.domain_name for r in e.mep.applied[iid][2]]


def test_declared_names_are_recorded_shown_and_granted(env, capsys):
    e = env
    pkg = video_package(e)
    assert pkg["dnsNames"] == [VIDEO]
    assert e.c.get(f"{PKGS}/{pkg['id']}")["dnsNames"] == [VIDEO]
    assert onboard(e)["dnsNames"] == ["sample-http.mec.local"]    # the sample's own
    from mecorch import cli
    assert cli.main(["--api", e.c.base, "package", "show", pkg["id"]]) == 0
    assert f"dnsNames: {VIDEO}\n" in capsys.readouterr().out
    # granted: at instantiation (from the AppD) ...
    iid, op = deploy(e.c, "video-app", **ON)
    assert op["operationState"] == "COMPLETED", op
    (rule,) = e.c.get(f"{MP1}/{iid}/dns_rules")
    assert rule["domainName"] == VIDEO and applied_names(e, iid) == [VIDEO]
    # ... and by an Mp1 PUT
    got = put_dns(e.c, iid, dns(VIDEO, "d0", "10.90.0.77"))
    assert got["domainName"] == VIDEO and got["ipAddress"] == "10.90.0.77"
    assert [r.ip_address for r in e.mep.applied[iid][2]] == ["10.90.0.77"]
    # a disabled package's running instance keeps what it was given
    e.c.call("PATCH", f"{PKGS}/{pkg['id']}", {"operationState": "DISABLED"})
    assert put_dns(e.c, iid, dns(VIDEO, "d0", "10.90.0.78"))["ipAddress"] == "10.90.0.78"


def test_a_name_outside_the_domain_not_declared_is_a_400_naming_it(env):
    e = env
    pkg = video_package(e)
    inst = e.c.post(INST, {"appDId": "video-app"})[0]
    err = problem(e.c.post, f"{INST}/{inst['id']}/instantiate",
                  {**ON, "appDNSRule": [dns("audio.example.com")]})
    assert err.status == 400
    for named in ("audio.example.com", "mec.local", "mep.dns_allowed_domains", pkg["id"],
                  VIDEO):
        assert named in err.detail, err.detail
    assert e.c.get(f"{INST}/{inst['id']}")["instantiationState"] == "NOT_INSTANTIATED"
    assert e.mep.applied == {}
    # an Mp1 PUT of the sample (which declares sample-http.mec.local only)
    sample = onboard(e)
    iid, op = deploy(e.c, "sample-http", **ON)
    assert op["operationState"] == "COMPLETED", op
    before = e.mep.applied[iid]
    for name in (VIDEO, "mec.local"):
        err = problem(put_dns, e.c, iid, dns(name, "sample-http-dns", "10.90.0.50"))
        assert err.status == 400 and name in err.detail, err.detail
    assert sample["id"] in problem(put_dns, e.c, iid, dns(VIDEO, "sample-http-dns",
                                                          "10.90.0.50")).detail
    assert e.mep.applied[iid] == before
    assert e.c.get(f"{MP1}/{iid}/dns_rules")[0]["domainName"] == "sample-http.mec.local"


def test_an_allowed_domain_lets_every_app_name_what_lies_below(tmp_path):
    nodes = node_env(tmp_path, {"dns_allowed_domains": ["Example.NET"]})
    e = next(nodes)
    try:
        onboard(e)          # declares sample-http.mec.local only
        iid, op = deploy(e.c, "sample-http", **ON,
                         appDNSRule=[dns("edge.example.net", "sample-http-dns")])
        assert op["operationState"] == "COMPLETED", op
        assert applied_names(e, iid) == ["edge.example.net"]
        assert put_dns(e.c, iid, dns("cdn.example.net", "sample-http-dns",
                                     "10.90.0.60"))["domainName"] == "cdn.example.net"
        assert applied_names(e, iid) == ["cdn.example.net"]
        for name in ("example.net", "cdn.example.org"):
            err = problem(put_dns, e.c, iid, dns(name, "sample-http-dns", "10.90.0.60"))
            assert err.status == 400 and name in err.detail and "example.net" in err.detail
        assert applied_names(e, iid) == ["cdn.example.net"]
    finally:
        nodes.close()


def test_another_app_claiming_a_granted_name_is_a_409_and_the_first_keeps_it(env):
    e = env
    video_package(e)
    first, op = deploy(e.c, "video-app", **ON)
    assert op["operationState"] == "COMPLETED", op
    address = e.c.get(f"{MP1}/{first}/dns_rules")[0]["ipAddress"]
    # another app whose package declares the name too: first come, first served
    video_package(e, "rival-app")
    inst = e.c.post(INST, {"appDId": "rival-app"})[0]
    err = problem(e.c.post, f"{INST}/{inst['id']}/instantiate", ON)
    assert err.status == 409 and f"the name {VIDEO} belongs to instance {first}" in err.detail
    # an app whose package does not declare it: the 409 of the holder too
    onboard(e)
    other, op = deploy(e.c, "sample-http", **ON)
    assert op["operationState"] == "COMPLETED", op
    err = problem(put_dns, e.c, other, dns(VIDEO, "sample-http-dns", "10.90.0.66"))
    assert err.status == 409 and first in err.detail and "video-app" in err.detail
    assert applied_names(e, other) == ["sample-http.mec.local"]
    # the first still holds and serves it; an instance of its app shares it
    assert e.c.get(f"{MP1}/{first}/dns_rules")[0] == {
        "dnsRuleId": "d0", "domainName": VIDEO, "ipAddressType": "IP_V4",
        "ipAddress": address, "state": "ACTIVE"}
    assert applied_names(e, first) == [VIDEO]
    second, op = deploy(e.c, "video-app", **ON)
    assert op["operationState"] == "COMPLETED", op
    assert applied_names(e, second) == [VIDEO]


def test_an_upgrade_must_keep_granting_the_names_held(env):
    e = env
    one = video_package(e)["id"]
    bare = video_package(e, names=(), appDVersion="2.0", appSoftVersion="2.0")["id"]
    same = video_package(e, appDVersion="3.0", appSoftVersion="3.0")["id"]
    iid = e.c.post(INST, {"appDId": "video-app", "appPkgId": one})[0]["id"]
    op, _ = e.c.post(f"{INST}/{iid}/instantiate", ON)
    assert e.c.wait_op(op, timeout=20)["operationState"] == "COMPLETED"
    err = problem(e.c.post, f"{INST}/{iid}/change_app_pkg", {"appPkgId": bare})
    assert err.status == 400 and VIDEO in err.detail and bare in err.detail
    assert e.c.get(f"{INST}/{iid}")["appPkgId"] == one
    e.orch.lcm.upgrader.connect = lambda ip, port: True     # the new runtime is ready
    op, _ = e.c.post(f"{INST}/{iid}/change_app_pkg", {"appPkgId": same})
    assert e.c.wait_op(op, timeout=20)["operationState"] == "COMPLETED"
    assert e.c.get(f"{INST}/{iid}")["appPkgId"] == same
    # its grant is the new version's now
    assert put_dns(e.c, iid, dns(VIDEO, "d0", "10.90.0.90"))["ipAddress"] == "10.90.0.90"


def test_the_meo_places_a_granted_name_and_refuses_what_the_host_refuses(system):  # noqa: F811
    s = system
    on = {"selectedMECHostInfo": [{"hostId": {"id": "edge2"}}]}
    pkg = meolab.onboard(s, appDId="video-app", appDNSRule=[dns(VIDEO)])
    assert pkg["dnsNames"] == [VIDEO]
    first, op = meolab.deploy(s, "video-app", **on)
    assert op["operationState"] == "COMPLETED", op
    held = [d for d in s.hosts["edge2"].store.list("rules") if d.get("claimHost") == "edge2"]
    assert [r["domainName"] for d in held for r in d["dnsRules"]] == [VIDEO]
    # another app declaring the name, on the host that holds it: the MEO's 409
    meolab.onboard(s, appDId="rival-app", appDNSRule=[dns(VIDEO)])
    inst = s.c.post(INST, {"appDId": "rival-app"})[0]
    err = problem(s.c.post, f"{INST}/{inst['id']}/instantiate", on)
    assert err.status == 409 and err.detail.startswith("edge host 'edge2': dnsRule video-dns: ")
    assert "belongs to instance" in err.detail
    # a name the app's package does not declare: the host's 400, in the op
    iid, op = meolab.deploy(s, "video-app", selectedMECHostInfo=[{"hostId": {"id": "edge3"}}],
                            appDNSRule=[dns("audio.example.com")])
    assert op["operationState"] in ("FAILED", "FAILED_TEMP"), op
    assert "audio.example.com" in op["error"]["detail"], op["error"]


def test_a_protocol_is_answered_as_sent_and_applied_as_normalised(env):
    e = env
    onboard(e)
    iid, op = deploy(e.c, "sample-http", **ON)
    assert op["operationState"] == "COMPLETED", op
    path = f"{MP1}/{iid}/traffic_rules/sample-http-vip"
    (rule,) = e.c.get(f"{MP1}/{iid}/traffic_rules")
    assert rule["trafficFilter"][0]["protocol"] == ["TCP"]        # as the AppD has it
    applied = {}
    for spelling in ("TCP", "tcp"):
        body = {**rule, "trafficFilter": [{**rule["trafficFilter"][0], "dstPort": ["8080"],
                                           "protocol": [spelling]}]}
        got = e.c.call("PUT", path, body)[1]
        assert got["trafficFilter"][0]["protocol"] == [spelling]
        assert e.c.get(path)["trafficFilter"][0]["protocol"] == [spelling]
        assert e.c.get(f"{MP1}/{iid}/traffic_rules")[0]["trafficFilter"][0]["protocol"] \
            == [spelling]
        (applied[spelling],) = e.mep.applied[iid][1]
        assert applied[spelling].traffic_filter[0].protocol == ("tcp",)
    assert applied["TCP"] == applied["tcp"]
    assert applied["TCP"] == TrafficRule.from_etsi(got)
