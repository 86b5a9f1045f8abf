"""The MEO replicas' lease (mecorch.meo.leader) on a store two connections
share, as two replica processes would (SQLite and PostgreSQL): one leads, the other takes over only
after the leader has been silent for the lease's length, a deposed leader
is fenced, a clean stop hands over at once."""

from __future__ import annotations

import time

import pytest

from mecorch.meo.leader import Fenced, Lease

TTL = 0.6


def _fence(lease: Lease) -> None:
    with lease.store.transaction():
        lease.fence()


def test_one_leads_and_the_other_takes_over_only_after_the_leader_is_silent(replica_stores):
    a, b = Lease(replica_stores[0], TTL, me="a"), Lease(replica_stores[1], TTL, me="b")
    assert a.tick() and not b.tick()
    # the leader renews: the other never takes it, however long it waits
    for _ in range(6):
        time.sleep(TTL / 3)
        assert a.tick() and not b.tick()
    # the leader goes silent (killed): the other takes it after TTL of its
    # own clock since it first saw the last renewal, not before
    silent_at = time.monotonic()
    while not b.tick():
        assert time.monotonic() - silent_at < 3 * TTL
        time.sleep(TTL / 10)
    waited = time.monotonic() - silent_at
    assert TTL * 0.9 <= waited < 2 * TTL, waited
    assert b.epoch == a.epoch + 1
    # the deposed leader's validity ended before the takeover: its writes
    # are fenced, and it does not lead again while the new one renews
    assert not a.leading()
    with pytest.raises(Fenced):
        _fence(a)
    _fence(b)
    assert not a.tick() and b.tick()


def test_a_leader_that_cannot_renew_stops_leading_when_its_lease_ends(replica_stores):
    a = Lease(replica_stores[0], TTL, me="a")
    assert a.tick()
    time.sleep(TTL * 1.1)
    # no round ran meanwhile (its store was away, say): no longer leading
    assert not a.leading()
    with pytest.raises(Fenced):
        _fence(a)
    # nobody took it meanwhile: its own row is renewed at once
    assert a.tick() and a.leading()
    _fence(a)


def test_a_clean_stop_hands_over_at_the_next_round(replica_stores):
    events = []
    a = Lease(replica_stores[0], TTL, me="a", on_deposed=lambda: events.append("a out"))
    b = Lease(replica_stores[1], TTL, me="b", on_elected=lambda: events.append("b in"))
    assert a.tick() and not b.tick()
    a.stop()
    assert b.tick()
    assert events == ["b in"]       # a gave it up: not deposed by anyone
    assert b.holder["holder"] == "b"


def test_only_one_of_two_racing_replicas_takes_a_free_lease(replica_stores):
    a, b = Lease(replica_stores[0], TTL, me="a"), Lease(replica_stores[1], TTL, me="b")
    import threading
    got = {}
    threads = [threading.Thread(target=lambda x=x: got.__setitem__(x.me, x.tick()))
               for x in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got.values()) == [False, True], got
