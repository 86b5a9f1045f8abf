"""The MEO's heartbeat pacing (meo.registry): with more hosts than
meo.heartbeat_s and meo.max_heartbeats_per_s allow, each host is asked
less often (Nomad's max_heartbeats_per_second), and a round is spread over
its period instead of asked in one burst."""

from __future__ import annotations

import threading
import time

from mecorch.kernel.store import Store
from mecorch.meo.registry import HostEntry, Registry


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
    assert reg.paced(lambda e: seen.append(e.host_id), reg.entries(), per_s=100)
    took = time.monotonic() - started
    assert sorted(seen) == [e.host_id for e in reg.entries()]
    assert took >= 29 / 100 * 0.95          # the last one 29 hundredths in
    # in the caller's thread, the same
    seen.clear()
    assert reg.paced(lambda e: seen.append(e.host_id), reg.entries(), per_s=0, pool=False)
    assert len(seen) == 30


def test_a_stopped_round_ends_where_it_is():
    reg = registry(30)
    stop, seen = threading.Event(), []

    def beat(entry):
        seen.append(entry.host_id)
        if len(seen) == 3:
            stop.set()
    assert not reg.paced(beat, reg.entries(), per_s=1000, pool=False, stop=stop)
    assert len(seen) == 3
    assert not reg.paced(beat, reg.entries(), per_s=1000, stop=stop)
    assert len(seen) == 3


def test_an_error_in_a_round_is_the_rounds():
    reg = registry(3)

    def beat(entry):
        raise RuntimeError(f"broken {entry.host_id}")
    try:
        reg.paced(beat, reg.entries(), per_s=1000)
    except RuntimeError as e:
        assert "broken edge0000" in str(e)
    else:
        raise AssertionError("the round's error was lost")
