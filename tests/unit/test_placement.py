"""Placement (spec.placement, pure) over hosts as the MEO sees them: their
reported facts less its own reservations (meo.registry.candidate)."""

from __future__ import annotations

import pytest

from mecorch.kernel.errors import CapacityExceeded, NotFound
from mecorch.spec.capacity import Need
from mecorch.meo.registry import candidate
from mecorch.spec.placement import place, why_not
from mecorch.mepm.contract import HostInfo, MannerCapacity
from mecorch.kernel.states import DeploymentType

C, V = DeploymentType.CONTAINER, DeploymentType.VM
SMALL = Need(1, 512, 1)


def cap(vcpu=8.0, used_cpu=0.0, mem=4096, used_mem=0, disk=100.0, used_disk=0.0, accel=""):
    return MannerCapacity(vcpu, used_cpu, mem, used_mem, disk, used_disk, accel)


def host(hid, manners=("CONTAINER", "VM"), reachable=True, latency=None, reserved=None, **kw):
    info = HostInfo(hid, {m: cap(**kw) for m in manners}, latency)
    return candidate(hid, reachable, info, reserved or Need(0.0, 0, 0.0))


def test_most_free_capacity_wins_then_host_id():
    hosts = [host("a", used_cpu=4), host("b", used_cpu=1), host("c", used_cpu=1)]
    assert place(C, SMALL, hosts) == "b"


def test_a_host_without_a_vim_takes_no_vm():
    hosts = [host("novim", manners=("CONTAINER",)), host("full", used_cpu=7.5)]
    with pytest.raises(CapacityExceeded) as e:
        place(V, SMALL, hosts)
    assert "novim: no VIM: takes no VM" in e.value.detail
    assert "full: vCPU 1 > 0.5 free" in e.value.detail


def test_the_409_names_every_host_and_its_reason():
    hosts = [host("down", reachable=False), host("full", used_mem=4000),
             host("far", latency=50.0), host("tiny", disk=0.5)]
    with pytest.raises(CapacityExceeded) as e:
        place(C, SMALL, hosts, max_latency_ns=10_000_000)
    d = e.value.detail
    for reason in ("down: UNREACHABLE", "full: memory 512 MB > 96 MB free",
                   "far: latency 50 ms over the app's maximum 10 ms",
                   "tiny: disk 1 GB > 0.5 GB free"):
        assert reason in d
    assert e.value.status == 409


def test_latency_is_only_checked_where_the_host_declares_it():
    hosts = [host("undeclared"), host("near", latency=1.0, used_cpu=2)]
    assert place(C, SMALL, hosts, max_latency_ns=5_000_000) == "undeclared"
    with pytest.raises(CapacityExceeded, match="near: latency 1 ms"):
        place(C, SMALL, [host("near", latency=1.0)], max_latency_ns=500_000)


def test_explicit_host_is_honoured_even_when_another_is_freer():
    hosts = [host("busy", used_cpu=6), host("idle")]
    assert place(C, SMALL, hosts, wanted=["busy"]) == "busy"
    with pytest.raises(NotFound):
        place(C, SMALL, hosts, wanted=["nope"])
    with pytest.raises(CapacityExceeded, match="busy: vCPU"):
        place(C, Need(4, 512, 1), hosts, wanted=["busy"])


def test_reservations_not_yet_reported_count():
    hosts = [host("a", reserved=Need(7.5, 0, 0.0)), host("b", used_cpu=2)]
    assert place(C, SMALL, hosts) == "b"
    assert why_not(hosts[0], C, SMALL, None) == "vCPU 1 > 0.5 free"


def test_hardware_acceleration_needs_a_kvm_vim():
    hosts = [host("tcg", accel="tcg"), host("kvm", accel="kvm", used_cpu=6)]
    assert place(V, SMALL, hosts, accel=True) == "kvm"
    with pytest.raises(CapacityExceeded, match="tcg: its VIM is TCG-only and the AppD asks for hardware acceleration"):
        place(V, SMALL, hosts[:1], accel=True)


def test_no_host_registered_says_so():
    with pytest.raises(CapacityExceeded, match="no edge host is registered"):
        place(C, SMALL, [])


def test_ties_go_to_the_smaller_host_id_and_the_longer_of_a_prefix():
    # the order a max() over each id's negated code points gave
    assert place(C, SMALL, [host("edge3"), host("edge2"), host("edge1")]) == "edge1"
    assert place(C, SMALL, [host("edge2"), host("edge10"), host("edge1")]) == "edge10"
    assert place(C, SMALL, [host("a"), host("ab"), host("b")]) == "ab"


def test_the_reason_names_a_few_tied_and_unfit_hosts_and_counts_the_rest():
    from mecorch.spec.placement import NAMED, choose
    fit = [host(f"fit{i:02d}") for i in range(NAMED + 3)]
    unfit = [host(f"full{i:02d}", used_cpu=8) for i in range(NAMED + 4)]
    best, why = choose(C, SMALL, fit + unfit)
    assert best == "fit00"
    assert f"tied with {', '.join(f'fit{i:02d}' for i in range(1, NAMED + 1))} and 2 more" in why
    assert why.count("full") == NAMED and why.endswith("; 4 more hosts that do not fit")


def test_a_cordoned_host_is_left_out_with_its_reason_first():
    roomy = candidate("roomy", True, HostInfo("roomy", {"CONTAINER": cap()}),
                      Need(0.0, 0, 0.0), cordoned="maintenance")
    quiet = candidate("quiet", False, None, Need(0.0, 0, 0.0), cordoned="")
    assert why_not(roomy, C, SMALL) == "cordoned (maintenance)"
    assert why_not(quiet, C, SMALL) == "cordoned"      # before UNREACHABLE
    assert place(C, SMALL, [roomy, host("busy", used_cpu=6)]) == "busy"
    with pytest.raises(CapacityExceeded) as e:
        place(C, SMALL, [roomy, host("busy", used_cpu=6)], wanted=["roomy"])
    assert "(roomy: cordoned (maintenance))" in e.value.detail
