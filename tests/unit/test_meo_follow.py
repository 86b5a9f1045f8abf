"""The MEO's follower of its hosts' op notifications (mecorch.meo.follow):
its token (made once, 0600, the same after a restart), who a notification
wakes, when a host counts as followed, the callback's token check. (Over
real MEPM processes: tests/e2e/test_meo_e2e.py; the host's side of
`follow`: the MEPM conformance suite.)"""

from __future__ import annotations

import stat
import threading
import time
from types import SimpleNamespace

import pytest

from mecorch.kernel.errors import BackendUnavailable, Unauthorized
from mecorch.meo.follow import FALLBACK_POLL_S, TOKEN_FILE, OpFollower


class Host:
    def __init__(self, answer):
        self.answer, self.asked = answer, []

    def follow(self, url: str, token: str) -> bool:
        self.asked.append((url, token))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def entry(host_id: str, answer) -> SimpleNamespace:
    return SimpleNamespace(host_id=host_id, mepm=Host(answer))


def test_the_token_is_made_once_private_and_kept(tmp_path):
    first = OpFollower(str(tmp_path))
    assert len(first.token) >= 40
    assert stat.S_IMODE((tmp_path / TOKEN_FILE).stat().st_mode) == 0o600
    assert OpFollower(str(tmp_path)).token == first.token


def test_a_notification_wakes_only_the_wait_on_its_op(tmp_path):
    f = OpFollower(str(tmp_path))
    mine, other = f.waiter("h1", "op1"), f.waiter("h2", "op1")
    for garbage in (None, [], {"appLcmOpOccId": 7}, {"appLcmOpOccId": "nope"}):
        f.notified("h1", garbage)
    assert not mine.is_set() and not other.is_set()
    f.notified("h1", {"appLcmOpOccId": "op1", "notificationType": "COMPLETED"})
    assert mine.is_set() and not other.is_set()
    f.done("h1", "op1")
    assert f.waiter("h1", "op1") is not mine            # a new wait, a new event


def test_a_host_is_followed_only_when_it_said_it_will(tmp_path):
    f = OpFollower(str(tmp_path))
    quiet = entry("h0", True)
    f.subscribe(quiet)                  # no callback address known: nothing asked
    assert quiet.mepm.asked == [] and f.poll_cap("h0", 0.02) == 0.02
    f.callback_base = "http://127.0.0.1:8180"
    yes, no, away = entry("h1", True), entry("h2", False), entry("h3", BackendUnavailable("x"))
    for e in (yes, no, away):
        f.subscribe(e)
    assert yes.mepm.asked == [("http://127.0.0.1:8180/mecorch/v1/hosts/h1/notifications",
                               f.token)]
    assert f.followed == {"h1"}
    assert f.poll_cap("h1", 0.02) == FALLBACK_POLL_S and f.poll_cap("h2", 0.02) == 0.02
    yes.mepm.answer = BackendUnavailable("gone")      # asked again on its return
    f.subscribe(yes)
    assert f.followed == set()


def test_the_callback_takes_only_the_token(tmp_path):
    f = OpFollower(str(tmp_path))
    f.check(f"Bearer {f.token}")
    f.check(f"bearer   {f.token} ")
    for bad in ("", f"Basic {f.token}", "Bearer", f"Bearer {f.token}x", "Bearer " + "é" * 5):
        with pytest.raises(Unauthorized):
            f.check(bad)


def test_a_wait_woken_by_its_notification_returns_at_once(tmp_path):
    """Only an end wakes the wait (a PROCESSING would cost a read of the
    op for nothing), and the end notified is kept for the wait, even one
    that begins after it."""
    f = OpFollower(str(tmp_path))
    event = f.waiter("h", "op")
    f.notified("h", {"appLcmOpOccId": "op", "notificationType": "PROCESSING"})
    assert not event.is_set() and f.said("h", "op") is None
    threading.Timer(0.05, f.notified,
                    ("h", {"appLcmOpOccId": "op", "notificationType": "COMPLETED"})).start()
    assert event.wait(5)
    assert f.said("h", "op") == "COMPLETED"
    f.notified("h", {"appLcmOpOccId": "early", "notificationType": "FAILED"})
    assert f.said("h", "early") == "FAILED"         # before any wait on it
    f.done("h", "op")
    assert f.said("h", "op") is None


def test_a_host_whose_ops_keep_ending_unnotified_is_polled_again(tmp_path):
    f = OpFollower(str(tmp_path), "http://127.0.0.1:8180")
    host = entry("h1", True)
    f.subscribe(host)
    for notified in (False, False, True, False, False):     # a notification resets the count
        f.ended("h1", notified)
    assert f.followed == {"h1"}
    f.ended("h1", False)                                    # the third in a row
    assert f.followed == set() and f.poll_cap("h1", 0.02) == 0.02
    f.subscribe(host)                                       # asked again on its return
    assert f.followed == {"h1"}


def test_an_instance_notification_reads_that_instance_off_the_request(tmp_path):
    """An AppInstNotification (no appLcmOpOccId) has the instance read, on
    a thread of its own; notified again while it is read: read once more
    after, however many came meanwhile."""
    f = OpFollower(str(tmp_path))
    reads, first_in, go_on = [], threading.Event(), threading.Event()

    def read(host_id, iid):
        reads.append((host_id, iid, threading.current_thread().name))
        first_in.set()
        go_on.wait(5)
    f.notified("h1", {"appInstanceId": "i1", "notificationType": "STOPPED"})  # no reader yet
    f.on_instance = read
    for garbage in ({"appInstanceId": 7}, {"appInstanceId": ""}, {"appInstanceId": "x" * 129},
                    {"appLcmOpOccId": "op1", "appInstanceId": "i1"}):
        f.notified("h1", garbage)
    assert reads == []
    f.notified("h1", {"appInstanceId": "i1", "notificationType": "STOPPED"})
    assert first_in.wait(5)
    for _ in range(3):
        f.notified("h1", {"appInstanceId": "i1", "notificationType": "STARTED"})
    go_on.set()
    deadline = time.monotonic() + 5
    while len(reads) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert [r[:2] for r in reads] == [("h1", "i1")] * 2
    assert all(r[2].startswith("meo-refresh-") for r in reads)
    assert f._refreshing == {}
