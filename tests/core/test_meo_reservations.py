"""The room reserved on edge hosts as placement reads it
(mecorch.meo.reservations): kept in memory, it must always hold at least
what the table holds (a placement never overcommits a host), and what
another replica removed must leave it within RELOAD_S. Both engines, two
connections on one database as two replicas."""

from __future__ import annotations

import random
import time

from mecorch.meo import reservations as mod
from mecorch.meo.reservations import Reservations
from mecorch.spec.capacity import Need


def _key(need: Need) -> tuple:
    return need.vcpu, need.memory_mb, need.disk_gb


def _table(store) -> dict[str, list[Need]]:
    out: dict[str, list[Need]] = {}
    for doc in store.list("reservations"):
        out.setdefault(doc["hostId"], []).append(Need(*doc["need"]))
    return {h: sorted(v, key=_key) for h, v in out.items()}


def _sorted(held: dict) -> dict:
    return {h: sorted(v, key=_key) for h, v in held.items() if v}


def _reserve(r: Reservations, host: str, iid: str, cpu: float) -> None:
    # as placement does: inside the store's transaction and "placement" lock
    with r.store.transaction():
        r.store.lock("placement")
        r.reserve(host, iid, Need(cpu, 64, 1.0))


def test_what_this_process_does_is_seen_at_once(replica_stores):
    r = Reservations(replica_stores[0])
    assert r.held() == {}
    _reserve(r, "h1", "i1", 1.0)
    _reserve(r, "h1", "i2", 2.0)
    _reserve(r, "h2", "i3", 0.5)
    assert _sorted(r.held()) == _table(replica_stores[0])
    r.unreserve("h1", "i1")
    assert _sorted(r.held()) == _table(replica_stores[0]) == {
        "h1": [Need(2.0, 64, 1.0)], "h2": [Need(0.5, 64, 1.0)]}
    # the host accepted i2 and i3; a report asked for after that counts them
    r.dispatched("h1", "i2")
    r.dispatched("h2", "i3")
    asked = time.time() + 1
    r.counted("h1", asked)
    assert _sorted(r.held()) == _table(replica_stores[0]) == {"h2": [Need(0.5, 64, 1.0)]}
    # a reservation made again under the same id (a retried placement) counts
    _reserve(r, "h1", "i1", 3.0)
    assert _sorted(r.held()) == _table(replica_stores[0])


def test_a_reservation_made_again_on_another_host_moves(replica_stores):
    """A re-placement reserves the instance on another host while its first
    deploy's reservation is not counted yet: the room is held on the new
    host only, in this replica's view and in another's."""
    mine, theirs = Reservations(replica_stores[0]), Reservations(replica_stores[1])
    _reserve(mine, "h1", "i1", 1.0)
    assert _sorted(mine.held()) == _sorted(theirs.held()) == {"h1": [Need(1.0, 64, 1.0)]}
    _reserve(mine, "h2", "i1", 1.0)
    assert _sorted(mine.held()) == _sorted(theirs.held()) == {"h2": [Need(1.0, 64, 1.0)]}
    mine.counted("h2", time.time() + 1)        # not dispatched: stays
    mine.dispatched("h2", "i1")
    mine.counted("h2", time.time() + 1)
    assert mine.held() == {} and _table(replica_stores[0]) == {}


def test_another_replica_s_reservation_is_seen_at_the_next_placement(replica_stores):
    mine, theirs = Reservations(replica_stores[0]), Reservations(replica_stores[1])
    mine.held()                                 # loaded once: the rest comes by seq
    _reserve(theirs, "h1", "t1", 1.0)
    assert _sorted(mine.held()) == {"h1": [Need(1.0, 64, 1.0)]}


def test_another_replica_s_removal_is_seen_within_the_reload_and_held_until(
        replica_stores, monkeypatch):
    monkeypatch.setattr(mod, "RELOAD_S", 0.5)
    mine, theirs = Reservations(replica_stores[0]), Reservations(replica_stores[1])
    _reserve(theirs, "h1", "t1", 1.0)
    assert _sorted(mine.held()) == {"h1": [Need(1.0, 64, 1.0)]}
    theirs.unreserve("h1", "t1")
    # until the reload the room may still count as held (PostgreSQL; SQLite
    # sees the other connection's commit and reads again at once)
    assert _sorted(mine.held()) in ({"h1": [Need(1.0, 64, 1.0)]}, {})
    time.sleep(0.6)
    assert mine.held() == {}


def test_never_less_than_the_table_under_two_replicas_churning(replica_stores, monkeypatch):
    """Random reserves, removals and reports on both replicas: after every
    step each one's view holds every row of the table (a missing row is an
    overcommitted host), and after a reload exactly the table."""
    monkeypatch.setattr(mod, "RELOAD_S", 0.05)
    rnd = random.Random(7)
    reps = [Reservations(s) for s in replica_stores]
    live: list[tuple[str, str]] = []
    for step in range(150):
        r = rnd.choice(reps)
        roll = rnd.random()
        if roll < 0.55 or not live:
            host, iid = f"h{rnd.randrange(4)}", f"i{step}"
            _reserve(r, host, iid, rnd.choice((0.5, 1.0, 2.0)))
            live.append((host, iid))
        elif roll < 0.8:
            host, iid = live.pop(rnd.randrange(len(live)))
            r.unreserve(host, iid)
        else:
            host, iid = rnd.choice(live)
            r.dispatched(host, iid)
            r.counted(host, time.time() + 1)
            live = [x for x in live if x != (host, iid)]
        table = _table(replica_stores[0])
        for rep in reps:
            view = _sorted(rep.held())
            for host, needs in table.items():
                for need in set(needs):
                    assert view.get(host, []).count(need) >= needs.count(need), (step, host)
    time.sleep(0.06)
    for rep in reps:
        assert _sorted(rep.held()) == _table(replica_stores[0])
