"""The engine's asyncio face (vLLM's AsyncLLM): one object every API server on the event loop shares.

It owns the bridge between the engine's threads and the event loop: requests are rendered and tokenized
on a few fixed threads (a long prompt never stalls other streams), events come back through the loop,
and leaving early (a cancelled call, a vanished client) cancels the request in the engine.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from server.engine.errors import GenerationFailed, NotReady
from server.engine.types import Event, Failed, Finished, GenerationRequest


class AsyncEngine:
    def __init__(self, engine):
        self.engine = engine
        self.active = 0  # generations in progress, over every protocol, so shutdown can wait for them
        # Few, fixed threads: the thread count stays flat under load.
        self._submitter = ThreadPoolExecutor(max_workers=2, thread_name_prefix="submit")

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Event]:
        """The request's events in order, until every prompt finished.

        Raises ValidationError, QueueFull or NotReady before the first event, GenerationFailed if the
        engine failed this request. Closing the iterator early cancels the request.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        self.active += 1
        handle = None
        try:
            try:
                submitting = loop.run_in_executor(
                    self._submitter, self.engine.submit, request,
                    lambda event: loop.call_soon_threadsafe(queue.put_nowait, event))
            except RuntimeError as exc:  # the submit pool was shut down: we are stopping
                raise NotReady("the server is shutting down") from exc
            try:
                handle = await asyncio.shield(submitting)
            except asyncio.CancelledError:  # the caller left while its request was being queued
                submitting.add_done_callback(_cancel_once_queued)
                raise
            open_rows = len(handle.rows)
            while open_rows:
                event = await queue.get()
                if isinstance(event, Failed):
                    raise GenerationFailed(event.message)
                if isinstance(event, Finished):
                    open_rows -= 1
                yield event
        finally:
            self.active -= 1
            if handle is not None:
                handle.cancel()  # a no-op once finished

    def counts(self) -> tuple[int, int]:
        """(running, waiting) requests."""
        return self.engine.counts()

    def stop_accepting(self) -> None:
        self.engine.stop_accepting()

    def close(self) -> None:
        """Cancel whatever still waits or runs and stop the engine."""
        self._submitter.shutdown(wait=False, cancel_futures=True)
        self.engine.close()


def _cancel_once_queued(submitting: asyncio.Future) -> None:
    if not submitting.cancelled() and submitting.exception() is None:
        submitting.result().cancel()
