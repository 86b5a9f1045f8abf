"""mecorch.kernel.workers: the LCM's worker threads, which end when idle."""

from __future__ import annotations

import threading
import time

import pytest

from mecorch.kernel.workers import Workers


def wait_for(check, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_runs_every_job_with_at_most_max_workers_at_once():
    pool = Workers(3, "t", idle_s=5)
    lock, running, peak, done = threading.Lock(), [0], [0], []

    def job(i: int) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
            done.append(i)

    for i in range(20):
        pool.submit(job, i)
    assert wait_for(lambda: len(done) == 20)
    assert sorted(done) == list(range(20))
    assert peak[0] == 3
    assert pool.threads() == 3
    pool.shutdown()
    assert pool.threads() == 0


def test_idle_workers_end_and_new_work_starts_new_ones():
    pool = Workers(4, "t", idle_s=0.2)
    gate = threading.Event()
    for _ in range(4):
        pool.submit(gate.wait)
    assert wait_for(lambda: pool.threads() == 4)
    gate.set()
    assert wait_for(lambda: pool.threads() == 0, timeout=3)
    names = {t.name for t in threading.enumerate()}
    assert not any(n.startswith("t_") for n in names), names
    ran = threading.Event()
    pool.submit(ran.set)
    assert ran.wait(3)
    pool.shutdown()


def test_a_job_queued_behind_busy_workers_runs_when_one_is_free():
    pool = Workers(1, "t", idle_s=0.05)
    gate, ran = threading.Event(), threading.Event()
    pool.submit(gate.wait)
    pool.submit(ran.set)            # no second thread: it waits for the first
    time.sleep(0.2)
    assert not ran.is_set() and pool.threads() == 1
    gate.set()
    assert ran.wait(3)
    pool.shutdown()


def test_a_failing_job_is_logged_and_the_worker_goes_on(caplog):
    pool = Workers(1, "t", idle_s=5)
    ran = threading.Event()

    def boom() -> None:
        raise RuntimeError("job failed on purpose")

    pool.submit(boom)
    pool.submit(ran.set)
    assert ran.wait(3)
    pool.shutdown()
    assert "job failed on purpose" in caplog.text


def test_shutdown_runs_what_was_queued_then_refuses_more():
    pool = Workers(2, "t", idle_s=5)
    done = []
    for i in range(6):
        pool.submit(lambda i=i: (time.sleep(0.02), done.append(i)))
    pool.shutdown(wait=True)
    assert sorted(done) == list(range(6))
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(done.append, 99)


def test_max_workers_must_be_positive():
    with pytest.raises(ValueError):
        Workers(0, "t")
