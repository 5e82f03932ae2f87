"""The waiting queue both engines share: first come, first served, bounded, thread-safe."""
from __future__ import annotations

import threading
from collections import deque

from server.engine.errors import QueueFull


class WaitingQueue:
    """Requests waiting to start. The subclass (an engine loop) takes them from `_waiting` under `_cond`."""

    def __init__(self, max_waiting: int):
        self.max_waiting = max_waiting
        self._waiting: deque = deque()  # RequestHandles
        self._cond = threading.Condition()
        self._closed = False

    def submit(self, handle) -> None:
        with self._cond:
            if self._closed:
                raise QueueFull("the engine is shutting down")
            if len(self._waiting) >= self.max_waiting:
                raise QueueFull(f"the waiting queue is full ({self.max_waiting} requests); retry later")
            self._waiting.append(handle)
            self._cond.notify()

    def discard(self, handle) -> bool:
        """Take a cancelled request out of the queue; False if it already runs (it stops within a step)."""
        with self._cond:
            try:
                self._waiting.remove(handle)
                return True
            except ValueError:
                return False
