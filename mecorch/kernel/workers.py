"""A pool of worker threads that do not outlive the work.

The LCM runs each operation in a worker thread, up to a limit. The
standard ThreadPoolExecutor keeps every thread it ever started until
shutdown: after one burst of eight deploys an idle edge node holds eight
idle threads with the stacks they touched. Here a worker waits `idle_s`
for the next job and then ends; a new one starts when work comes.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable

log = logging.getLogger("mecorch.workers")
IDLE_S = 10.0
_STOP = None


class Workers:
    def __init__(self, max_workers: int, name: str, idle_s: float = IDLE_S):
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = int(max_workers)
        self.name = name
        self.idle_s = float(idle_s)
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._idle = 0          # workers waiting for a job
        self._pending = 0       # jobs queued that no worker took yet
        self._started = 0
        self._closed = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run fn(*args) in a worker; its exception is logged (the callers
        record an operation's failure themselves)."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.name} workers are shut down")
            self._pending += 1
            self._jobs.put((fn, args))
            if self._pending > self._idle and len(self._threads) < self.max_workers:
                self._started += 1
                t = threading.Thread(target=self._work, name=f"{self.name}_{self._started}",
                                     daemon=True)
                self._threads.add(t)
                t.start()

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            with self._lock:
                self._idle += 1
            try:
                job = self._jobs.get(timeout=self.idle_s)
            except queue.Empty:
                with self._lock:
                    self._idle -= 1
                    if self._pending > 0:      # a job came as the wait ended
                        continue
                    self._threads.discard(me)
                    return
            with self._lock:
                self._idle -= 1
                if job is _STOP:
                    self._threads.discard(me)
                    return
                self._pending -= 1
            fn, args = job
            try:
                fn(*args)
            except Exception:       # noqa: BLE001 - a worker survives its job
                log.exception("%s worker: job %s failed", self.name,
                              getattr(fn, "__name__", fn))

    def threads(self) -> int:
        with self._lock:
            return len(self._threads)

    def shutdown(self, wait: bool = True) -> None:
        """No more jobs; the queued ones still run. wait: until they did."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
            for _ in threads:
                self._jobs.put(_STOP)
        if wait:
            for t in threads:
                t.join()
