"""The MEO's heartbeat pacing (meo.registry): with more hosts than
meo.heartbeat_s and meo.max_heartbeats_per_s allow, each host is asked
less often (Nomad's max_heartbeats_per_second), and a round is spread over
its period instead of asked in one burst."""

from __future__ import annotations

import time

from mecorch.kernel.store import Store
from mecorch.meo.registry import PACE_S, HostEntry, Registry


def registry(hosts: int, **meo) -> Registry:
    reg = Registry(Store(":memory:"), {"meo": meo})
    for i in range(hosts):
        reg._add(HostEntry(f"edge{i:04d}", mepm=None, source="in-process"))
    return reg


def test_the_period_is_heartbeat_s_until_the_hosts_need_more():
    assert registry(10, heartbeat_s=2).period_s() == 2              # 50 a second by default
    assert registry(100, heartbeat_s=2).period_s() == 2
    assert registry(1000, heartbeat_s=2).period_s() == 20
    assert registry(1000, heartbeat_s=2, max_heartbeats_per_s=200).period_s() == 5
    assert registry(1000, heartbeat_s=30).period_s() == 30
    # no limit, or no heartbeat (tests, benchmarks): heartbeat_s as given
    assert registry(1000, heartbeat_s=2, max_heartbeats_per_s=0).period_s() == 2
    assert registry(1000, heartbeat_s=0).period_s() == 0


def test_a_paced_round_reaches_every_host_at_the_rate_it_is_given():
    reg = registry(30)
    seen = []
    started = time.monotonic()
    assert reg.paced(lambda e: seen.append(e.host_id), reg.entries(), per_s=40)
    took = time.monotonic() - started
    assert sorted(seen) == [e.host_id for e in reg.entries()]
    # 10 hosts a slice of PACE_S: the third slice starts two slices in
    assert took >= 2 * PACE_S * 0.95
    reg._stop.set()
    # stopped: the round ends after the slice it is in
    seen.clear()
    assert not reg.paced(lambda e: seen.append(e.host_id), reg.entries(), per_s=40)
    assert len(seen) == 10
