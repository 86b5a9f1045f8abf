"""The PlatformDriver contract (mecorch/driverapi/contracts.py), written
once and run against every MEP backend: LinuxMEP on real iptables and
dnsmasq in network namespaces the lab makes, and the in-memory FakeMep.

What the backend holds is read from the backend (iptables-save and the
DNS files for LinuxMEP), and what the rules do is observed where the
backend can show it (a real DNS answer, a real HTTP connection DNATed to
the instance); per-backend details (hostile input, the chain-by-chain
read, the clients' listener) are in test_linux_mep.py.
"""

from __future__ import annotations

import pytest

from mecorch.driverapi.model import Check
from labfixture import lab_fixture
from mecorch.kernel import errors
from platform_labs import LABS, SERVICE, SERVICE_B, dns, forward

lab = lab_fixture(LABS, {"linux": pytest.mark.mep})


def rules_a(lab, name="a.conf.test"):
    return [forward("fa", dst=SERVICE)], [dns("da", name, lab.target(0))]


def test_apply_then_rule_owners_shows_the_instance(lab, uid):
    drv, iid = lab.drv, f"own-{uid}"
    assert iid not in drv.rule_owners()
    drv.apply_rules(iid, lab.target(0), *rules_a(lab))
    assert iid in drv.rule_owners()
    assert lab.rule_ids(iid) == {"traffic": {"fa"}, "dns": {"da"}}
    assert lab.answers("a.conf.test", lab.target(0)) == lab.target(0)
    assert lab.reaches(SERVICE) == lab.target(0)
    drv.remove_rules(iid)
    assert iid not in drv.rule_owners()


def test_apply_replaces_the_whole_set(lab, uid):
    """The second set is the instance's set: a rule of the first that is
    not in it is gone, traffic and DNS alike; an empty set leaves the
    instance owning nothing."""
    drv, iid = lab.drv, f"rep-{uid}"
    drv.apply_rules(iid, lab.target(0), [forward("old", dst=SERVICE)],
                    [dns("old", "old.conf.test", lab.target(0))])
    drv.apply_rules(iid, lab.target(0), [forward("new", dst=SERVICE_B)],
                    [dns("new", "new.conf.test", lab.target(0))])
    assert lab.rule_ids(iid) == {"traffic": {"new"}, "dns": {"new"}}
    assert lab.answers("old.conf.test") == ""
    assert lab.answers("new.conf.test", lab.target(0)) == lab.target(0)
    assert lab.reaches(SERVICE) is None and lab.reaches(SERVICE_B) == lab.target(0)
    drv.apply_rules(iid, lab.target(0), [], [])
    assert lab.rule_ids(iid) == {"traffic": set(), "dns": set()}
    assert iid not in drv.rule_owners()
    assert lab.answers("new.conf.test") == "" and lab.reaches(SERVICE_B) is None
    drv.remove_rules(iid)


def test_a_set_the_backend_cannot_express_changes_nothing(lab, uid):
    """All or nothing across traffic and DNS: a set whose one rule the
    backend cannot express (an ENCAPSULATED action) is refused as a whole,
    its good traffic rule and its DNS change included; the set applied
    before stays intact and in effect."""
    drv, iid = lab.drv, f"aon-{uid}"
    drv.apply_rules(iid, lab.target(0), *rules_a(lab))
    before = lab.rule_ids(iid)
    with pytest.raises(errors.UnsupportedAction):
        drv.apply_rules(iid, lab.target(1),
                        [forward("fb", dst=SERVICE_B), lab.unexpressible()],
                        [dns("da", "a.conf.test", lab.target(1)),
                         dns("db", "b.conf.test", lab.target(1))])
    assert lab.rule_ids(iid) == before
    assert iid in drv.rule_owners()
    assert lab.answers("a.conf.test", lab.target(0)) == lab.target(0)
    assert lab.answers("b.conf.test") == ""
    assert lab.reaches(SERVICE) == lab.target(0) and lab.reaches(SERVICE_B) is None
    drv.remove_rules(iid)


def test_removing_what_is_gone_succeeds(lab, uid):
    """Remove of an instance never applied, and remove twice, succeed."""
    drv, iid = lab.drv, f"rm-{uid}"
    drv.remove_rules(f"never-{uid}")
    drv.apply_rules(iid, lab.target(0), *rules_a(lab))
    drv.remove_rules(iid)
    assert iid not in drv.rule_owners()
    assert lab.rule_ids(iid) == {"traffic": set(), "dns": set()}
    assert lab.answers("a.conf.test") == "" and lab.reaches(SERVICE) is None
    drv.remove_rules(iid)
    assert iid not in drv.rule_owners()


def test_two_instances_are_independent(lab, uid):
    drv, a, b = lab.drv, f"ind-a-{uid}", f"ind-b-{uid}"
    drv.apply_rules(a, lab.target(0), *rules_a(lab))
    drv.apply_rules(b, lab.target(1), [forward("fb", dst=SERVICE_B)],
                    [dns("db", "b.conf.test", lab.target(1))])
    assert {a, b} <= drv.rule_owners()
    drv.apply_rules(a, lab.target(0), *rules_a(lab))       # a again: b untouched
    drv.remove_rules(a)
    assert a not in drv.rule_owners() and b in drv.rule_owners()
    assert lab.rule_ids(b) == {"traffic": {"fb"}, "dns": {"db"}}
    assert lab.answers("b.conf.test", lab.target(1)) == lab.target(1)
    assert lab.reaches(SERVICE_B) == lab.target(1) and lab.reaches(SERVICE) is None
    drv.remove_rules(b)
    assert not {a, b} & drv.rule_owners()


def test_check_reports_and_never_raises(lab):
    checks = lab.drv.check()
    assert checks and all(isinstance(c, Check) for c in checks)
    assert all(c.ok for c in checks), checks
    down = lab.broken()
    checks = down.check()                                  # never raises
    assert any(not c.ok for c in checks), checks
    if lab.name != "fake":
        assert all(c.fix for c in checks if not c.ok), "a failed check must say the fix"
    with pytest.raises(errors.MecorchError):
        down.rule_owners()


def test_constructor_has_no_side_effects(lab, uid):
    """Built, asked its capabilities and closed: nothing of it exists on
    the backend; opened and given rules, the same probe sees it."""
    drv, made = lab.unconnected()
    assert drv.capabilities().manner is None and drv.kind == "mep"
    drv.close()
    assert made() == []
    drv.open()
    drv.apply_rules(f"nc-{uid}", lab.target(0), *rules_a(lab))
    assert made(), "the probe sees nothing even after open() and apply_rules"
    drv.remove_rules(f"nc-{uid}")


def test_found_again_after_a_restart(lab, uid):
    """close(), a new driver on the same config, open(): the rules applied
    before are still owned, still in effect, and the new driver replaces
    and removes them."""
    iid = f"rs-{uid}"
    lab.drv.apply_rules(iid, lab.target(0), *rules_a(lab))
    lab.drv.close()
    lab.drv.close()                                        # twice: fine
    fresh = lab.fresh()
    assert iid in fresh.rule_owners()
    assert lab.rule_ids(iid) == {"traffic": {"fa"}, "dns": {"da"}}
    assert lab.answers("a.conf.test", lab.target(0)) == lab.target(0)
    assert lab.reaches(SERVICE) == lab.target(0)
    fresh.apply_rules(iid, lab.target(0), [], [dns("da", "a.conf.test", lab.target(0))])
    assert lab.rule_ids(iid) == {"traffic": set(), "dns": {"da"}}
    assert lab.reaches(SERVICE) is None
    fresh.remove_rules(iid)
    assert iid not in fresh.rule_owners()
    assert lab.answers("a.conf.test") == ""


def test_replicas_share_one_address(lab, uid):
    """Two instances with the same rule on one service address and one DNS
    name, applied with their shares (the later id first: its jump must
    still be visited last): new connections reach both; once one is gone
    (the other applied again alone, then the leaving one removed, as the
    core does) the other takes every connection, and the name still answers
    though the file the DNS server read it from first is gone."""
    drv = lab.drv
    a, b = f"rpa-{uid}", f"rpb-{uid}"
    rule, name = [forward("web", dst=SERVICE)], [dns("dw", "web.conf.test", SERVICE)]
    drv.apply_rules(b, lab.target(1), rule, name, {"web": (a, b)})
    drv.apply_rules(a, lab.target(0), rule, name, {"web": (a, b)})
    assert lab.answers("web.conf.test", SERVICE) == SERVICE
    seen = lab.spread(SERVICE, 40)
    # each takes half: fewer than 8 of 40 for either is a chance of 3e-5
    assert set(seen) == {lab.target(0), lab.target(1)} and min(seen.values()) >= 8, seen
    drv.apply_rules(a, lab.target(0), rule, name)
    drv.remove_rules(b)                 # b's DNS file was the first one read
    assert lab.spread(SERVICE, 10) == {lab.target(0): 10}
    assert lab.answers("web.conf.test", SERVICE) == SERVICE
    drv.remove_rules(a)
    assert lab.answers("web.conf.test") == "" and lab.reaches(SERVICE) is None
