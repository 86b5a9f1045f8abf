"""Pure tests: which DNS names an instance may hold on a host
(mecorch.spec.dns_names): below the MEC domain, granted by its own
package, or below one of the host's allowed domains; and the config key
of the allowed domains (drivers.linux_mep.settings)."""

from __future__ import annotations

import pytest

from drivers.linux_mep import settings
from mecorch.kernel.errors import InvalidInput
from mecorch.spec import dns_names as N

GRANT = ["video.example.com"]


def refusal(name, domain="mec.local", allowed=(), grant=GRANT, package="pkg1"):
    return N.refusal("d1", name, "edge1", domain, allowed, grant, package)


def test_declared_names_are_the_appd_dns_rules_normalised_once():
    appd = {"appDNSRule": [{"dnsRuleId": "a", "domainName": "Video.Example.COM."},
                           {"dnsRuleId": "b", "domainName": "app.mec.local"},
                           {"dnsRuleId": "c", "domainName": "video.example.com"}]}
    assert N.declared(appd) == ["app.mec.local", "video.example.com"]
    assert N.declared({}) == [] and N.declared({"appDNSRule": None}) == []


def test_the_grant_is_the_recorded_one_else_the_stored_appd_s():
    assert N.granted({"dnsNames": ["x.example.org"], "_appd": {"appDNSRule": [
        {"domainName": "y.example.org"}]}}) == ["x.example.org"]
    # a record onboarded before names were recorded: its AppD tells
    assert N.granted({"_appd": {"appDNSRule": [{"domainName": "y.example.org"}]}}) \
        == ["y.example.org"]
    assert N.granted({"dnsNames": []}) == [] and N.granted(None) == []


def test_below_the_mec_domain_is_allowed_the_bare_domain_never():
    assert refusal("app.mec.local") is None
    assert refusal("a.b.mec.local") is None
    why = refusal("mec.local", grant=["mec.local"])     # not even a package grants it
    assert why.startswith("dnsRule d1: domainName mec.local is the MEC domain of host edge1")


def test_a_granted_name_is_allowed_outside_the_domain_another_is_not():
    assert refusal("video.example.com") is None
    why = refusal("audio.example.com")
    assert why == (
        "dnsRule d1: domainName audio.example.com is not in the MEC domain mec.local of "
        "host edge1 (mep.dns_domain) nor in its allowed domains (none: "
        "mep.dns_allowed_domains), and its app package pkg1 does not declare it (the "
        "package's AppD appDNSRule declares video.example.com)")
    # a name below a granted one is not granted: the grant is the name
    assert refusal("x.video.example.com") is not None
    assert "declares no name" in refusal("video.example.com", grant=[])
    assert "has no app package" in refusal("video.example.com", grant=[], package=None)
    # a look-alike of the MEC domain is outside it
    assert refusal("evilmec.local", grant=[]) is not None


def test_below_an_allowed_domain_is_allowed():
    allowed = ["Example.NET.", "edge.example.org"]
    assert refusal("cdn.example.net", allowed=allowed, grant=[]) is None
    assert refusal("a.edge.example.org", allowed=allowed, grant=[]) is None
    why = refusal("example.org", allowed=allowed, grant=[])
    assert "(example.net, edge.example.org: mep.dns_allowed_domains)" in why
    assert refusal("example.net", allowed=allowed, grant=[]) is not None   # below, not it


def test_a_host_without_a_mec_domain_checks_no_name():
    assert refusal("anything.example", domain=None, grant=[]) is None


def test_allowed_domains_in_the_config_are_checked_naming_the_entry():
    base = {"chain_prefix": "MECORCH"}
    settings.check_section({**base, "dns_allowed_domains": ["example.com", "Edge.Example.ORG."]})
    with pytest.raises(InvalidInput, match=r"mep.dns_allowed_domains\[1\]: is not an RFC 1123"):
        settings.check_section({**base, "dns_allowed_domains": ["example.com", "bad_name!"]})
    with pytest.raises(InvalidInput, match="at most 32"):
        settings.check_section({**base, "dns_allowed_domains": [f"d{i}.org" for i in range(33)]})
