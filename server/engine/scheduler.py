"""The waiting queue and the workers that take batches from it."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from server.engine.params import Limits, SchedulerConfig
from server.engine.waiting import WaitingQueue

log = logging.getLogger(__name__)


class Scheduler(WaitingQueue):
    """Requests wait in one queue; each worker (one infer request) takes as many as fit in a batch.

    One padded batch costs little more per step than one prompt, so when requests have been coming
    together (the last batch held several, or the next one queued behind a running batch), a free
    worker waits up to `batch_window_ms` for the rest of them. A lone request waits only
    `first_window_ms`, for clients that start at the same moment.
    """

    def __init__(self, limits: Limits, config: SchedulerConfig,
                 run: Callable[[int, list], float]):
        super().__init__(limits.max_waiting)
        self.limits = limits
        self.config = config
        self._run = run
        self._running = 0  # requests inside a batch
        self._last_batch = 1  # requests in the most recent batch
        self._last_done = 0.0  # when the most recent batch's last prompt finished
        self._batches: dict[int, list] = {}  # worker -> the requests of its running batch
        self._threads = [
            threading.Thread(target=self._work, args=(w,), name=f"engine-worker-{w}", daemon=True)
            for w in range(config.workers)
        ]
        for t in self._threads:
            t.start()

    def counts(self) -> tuple[int, int]:
        """(running, waiting) requests."""
        with self._cond:
            return self._running, len(self._waiting)

    def in_flight(self) -> list:
        """Every request waiting or inside a running batch."""
        with self._cond:
            return [*self._waiting, *(h for batch in self._batches.values() for h in batch)]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=30)

    def _take(self) -> list | None:
        with self._cond:
            while not self._waiting and not self._closed:
                self._cond.wait()
            if not self._waiting:
                return None
            queued_behind = self._waiting[0].arrival < self._last_done
            together = self._last_batch > 1 or len(self._waiting) > 1 or queued_behind
            window = (self.config.batch_window_ms if together else self.config.first_window_ms) / 1000.0
            if window > 0:
                deadline = time.monotonic() + window
                while self._prompts_waiting() < self.limits.max_batch and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            batch, size = [], 0
            while self._waiting and size + len(self._waiting[0].rows) <= self.limits.max_batch:
                handle = self._waiting.popleft()
                batch.append(handle)
                size += len(handle.rows)
            self._running += len(batch)
            if batch:
                self._last_batch = len(batch)
                log.debug("batch of %d requests, %d prompts; %d waiting", len(batch), size, len(self._waiting))
            return batch

    def _prompts_waiting(self) -> int:
        return sum(len(h.rows) for h in self._waiting)

    def _work(self, worker: int) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            if not batch:  # everything waiting was cancelled during the window
                continue
            done = time.monotonic()
            with self._cond:
                self._batches[worker] = batch
            try:
                done = self._run(worker, batch)
            except Exception:  # never lose a worker; the runner already failed the requests
                log.exception("worker %d: batch failed", worker)
            finally:
                with self._cond:
                    del self._batches[worker]
                    self._running -= len(batch)
                    self._last_done = max(self._last_done, done)
