"""Replicas behind one service address in the Linux MEP's pure parts:
the iptables text of a shared rule (drivers.linux_mep.iptables: each
replica's part, the jump order, what `matches` compares) and the DNS files
that share a name (drivers.linux_mep.dnsmasq). No backend needed; the same
on real iptables and dnsmasq: tests/conformance/test_platform_contract.py
and tests/backends/test_linux_mep.py."""

from __future__ import annotations

import pytest

from drivers.linux_mep import dnsmasq, iptables
from mecorch.kernel.errors import InvalidInput
from mecorch.spec.rules import TrafficRule

RULE = {"trafficRuleId": "web", "filterType": "FLOW", "priority": 1,
        "trafficFilter": [{"dstAddress": ["10.9.0.80"], "dstPort": ["80"], "protocol": ["TCP"]}],
        "action": "FORWARD_DECAPSULATED", "state": "ACTIVE"}
GROUP = {"web": ("a", "b", "c")}
SAVE = """*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:MEC-RAW - [0:0]
-A PREROUTING -j MEC-RAW
-A OUTPUT -j MEC-RAW
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:MEC-PRE - [0:0]
-A PREROUTING -j MEC-PRE
-A OUTPUT -j MEC-PRE
COMMIT
"""


def rule(**over) -> TrafficRule:
    return TrafficRule.from_etsi({**RULE, **over})


def chain(iid: str) -> str:
    return iptables.instance_chain("MEC", iid)


def test_each_replica_takes_its_part_and_passes_the_rest_on():
    """kube-proxy's scheme: the k-th of n takes 1/(n-k) of what reaches it
    (1/3, then 1/2 of the 2/3 left, then all of the last third: 1/3
    each), and RETURNs the rest to the next replica's jump; the last has no
    statistic match. raw is as for a rule of its own."""
    out = {iid: iptables.render_instance("MEC", iid, ip, [rule()], GROUP)
           for iid, ip in (("a", "10.0.1.2"), ("b", "10.0.1.3"), ("c", "10.0.1.4"))}
    match = "-d 10.9.0.80 -p tcp -m tcp --dport 80"
    note = '-m comment --comment "mecorch:{}/web"'
    assert out["a"]["nat"] == [
        f"-A {chain('a')} {match} -m statistic --mode random --probability 0.33333333349 "
        f"{note.format('a')} -j DNAT --to-destination 10.0.1.2",
        f"-A {chain('a')} {match} {note.format('a')} -j RETURN"]
    assert "--probability 0.50000000000 " in out["b"]["nat"][0]
    assert out["c"]["nat"] == [f"-A {chain('c')} {match} {note.format('c')} "
                               f"-j DNAT --to-destination 10.0.1.4"]
    alone = iptables.render_instance("MEC", "a", "10.0.1.2", [rule()])
    assert out["a"]["raw"] == alone["raw"]
    # every replica gets a third
    parts = [1 / 3, (1 - 1 / 3) * 0.5, (1 - 1 / 3) * 0.5]
    assert all(abs(p - 1 / 3) < 1e-12 for p in parts)


def test_parts_are_written_as_iptables_save_prints_them_back():
    """xt_statistic keeps round(p * 2^31); iptables-save prints %.11f of
    it: the rendered text is that, so a saved line reads back the same."""
    for count in range(2, 12):
        for pos in range(count - 1):
            text = iptables.probability(pos, count)
            kept = round(1 / (count - pos) * 0x80000000)
            assert text == f"{kept / 0x80000000:.11f}"
            assert round(float(text) * 0x80000000) == kept


def test_shares_without_the_instance_or_on_other_actions():
    with pytest.raises(InvalidInput, match=r"shares\[web\]: .* not instance z itself"):
        iptables.render_instance("MEC", "z", "10.0.1.2", [rule()], GROUP)
    # a DROP or PASSTHROUGH is the same in every replica: nothing to spread
    drop = iptables.render_instance("MEC", "a", "10.0.1.2", [rule(action="DROP")], GROUP)
    assert drop == iptables.render_instance("MEC", "a", "10.0.1.2", [rule(action="DROP")])
    # one replica alone: a rule of its own
    assert iptables.render_instance("MEC", "a", "10.0.1.2", [rule()], {"web": ("a",)}) == \
        iptables.render_instance("MEC", "a", "10.0.1.2", [rule()])


def _with_jumps(*owners: str) -> iptables.Saved:
    """SAVE with the instances' jumps in the nat top chain in this order."""
    jumps = "".join(f'-A MEC-PRE -m comment --comment "mecorch:{o}" -j {chain(o)}\n'
                    for o in owners)
    return iptables.parse_save(SAVE.replace("-A OUTPUT -j MEC-PRE\n",
                                            "-A OUTPUT -j MEC-PRE\n" + jumps))


def _nat(text: str) -> list[str]:
    return text.split("*nat\n", 1)[1].split("COMMIT", 1)[0].splitlines()


def test_a_new_jump_goes_before_the_first_higher_id():
    desired = iptables.render_instance("MEC", "b", "10.0.1.3", [rule()], GROUP)
    text = iptables.transition(_with_jumps("a", "c", "x"), "MEC", "b", desired, ("a", "b", "c"))
    assert _nat(text)[-1] == f'-I MEC-PRE 2 -m comment --comment "mecorch:b" -j {chain("b")}'
    # no replica there yet: before the first higher id of all
    text = iptables.transition(_with_jumps("c"), "MEC", "b", desired)
    assert _nat(text)[-1] == f'-I MEC-PRE 1 -m comment --comment "mecorch:b" -j {chain("b")}'
    # the highest: appended, as a jump always was
    text = iptables.transition(_with_jumps("a"), "MEC", "b", desired)
    assert _nat(text)[-1] == f'-A MEC-PRE -m comment --comment "mecorch:b" -j {chain("b")}'


def test_a_jump_out_of_order_among_its_replicas_is_moved_in_one_commit():
    saved = _with_jumps("c", "x", "a")          # made before jumps were ordered
    desired = iptables.render_instance("MEC", "a", "10.0.1.2", [rule()], GROUP)
    nat = _nat(iptables.transition(saved, "MEC", "a", desired, ("a", "b", "c")))
    assert nat[-2:] == [f'-D MEC-PRE -m comment --comment "mecorch:a" -j {chain("a")}',
                        f'-I MEC-PRE 1 -m comment --comment "mecorch:a" -j {chain("a")}']
    assert not iptables.in_order(saved["nat"]["MEC-PRE"], "a", ("a", "c"))
    # x is no replica: its place does not matter; in order, nothing moves
    saved = _with_jumps("a", "x", "c")
    assert iptables.in_order(saved["nat"]["MEC-PRE"], "a", ("a", "c"))
    nat = _nat(iptables.transition(saved, "MEC", "a", desired, ("a", "b", "c")))
    assert not any("MEC-PRE" in line for line in nat)


def test_matches_sees_a_changed_part_or_order():
    """What reconciliation compares: a replica whose part is stale (the
    same number of lines, another probability) or whose jump is out of
    order is not applied; as rendered and in order, it is."""
    three = iptables.render_instance("MEC", "a", "10.0.1.2", [rule()], GROUP)
    two = iptables.render_instance("MEC", "a", "10.0.1.2", [rule()], {"web": ("a", "b")})
    saved = _with_jumps("a", "c")
    raw_jump = f'-A MEC-RAW -m comment --comment "mecorch:a" -j {chain("a")}'
    saved["raw"]["MEC-RAW"] = [raw_jump]
    saved["raw"][chain("a")] = list(three["raw"])
    # as iptables-save writes it: -d with /32, matches in its own order
    saved["nat"][chain("a")] = [line.replace("-d 10.9.0.80", "-d 10.9.0.80/32")
                                for line in three["nat"]]
    assert iptables.matches(saved, "MEC", "a", three, ("a", "b", "c"))
    assert not iptables.matches(saved, "MEC", "a", two, ("a", "b"))
    assert len(two["nat"]) == len(three["nat"])          # the count alone would not tell
    swapped = _with_jumps("c", "a")
    swapped["raw"], swapped["nat"][chain("a")] = saved["raw"], saved["nat"][chain("a")]
    assert not iptables.matches(swapped, "MEC", "a", three, ("a", "b", "c"))


def test_dns_files_sharing_a_line(tmp_path):
    for iid, text in (("a", "# mecorch: a\n# d\n10.9.0.80 web.mec.local\n"),
                      ("b", "# mecorch: b\n# d\n10.9.0.80 web.mec.local\n"),
                      ("c", "# mecorch: c\n# d\n10.9.0.81 other.mec.local\n"),
                      (".b.tmp", "10.9.0.80 web.mec.local\n")):
        (tmp_path / iid).write_text(text)
    assert dnsmasq.index(tmp_path) == {"10.9.0.80 web.mec.local": {"a", "b"},
                                       "10.9.0.81 other.mec.local": {"c"}}
    assert dnsmasq.entries(dnsmasq.read(tmp_path, "a")) == {"10.9.0.80 web.mec.local"}
    assert dnsmasq.entries("# only comments\n") == set()
    before = (tmp_path / "b").stat().st_ino
    dnsmasq.reread(tmp_path, "b")
    # renamed in anew (what dnsmasq's inotify sees), the same text
    assert (tmp_path / "b").stat().st_ino != before
    assert (tmp_path / "b").read_text() == "# mecorch: b\n# d\n10.9.0.80 web.mec.local\n"
    assert dnsmasq.read(tmp_path, "gone") == ""
