"""The engine's asyncio face (vLLM's AsyncLLM): one object every API server on the event loop shares.

It owns the bridge between the engine's threads and the event loop: requests are rendered and tokenized
on a few fixed threads (a long prompt never stalls other streams), the output side wakes the loop once
per step for every call with new events, and leaving early (a cancelled call, a vanished client) cancels
the request in the engine.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from server.engine.errors import GenerationFailed, NotReady
from server.engine.output import LoopWaker
from server.engine.types import Event, Failed, Finished, GenerationRequest


class AsyncEngine:
    def __init__(self, engine):
        self.engine = engine
        self.active = 0  # generations in progress, over every protocol, so shutdown can wait for them
        # Few, fixed threads: the thread count stays flat under load.
        self._submitter = ThreadPoolExecutor(max_workers=2, thread_name_prefix="submit")
        self._waker: LoopWaker | None = None

    @property
    def limits(self):
        """The engine's limits, max_batch resolved (from the KV cache unless the servable set it)."""
        return self.engine.limits

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Event]:
        """The request's events in order, until every answer (prompt x n) finished.

        Raises ValidationError, QueueFull or NotReady before the first event, GenerationFailed if the
        engine failed this request. Closing the iterator early cancels the request. A reader slower than
        the engine gets each prompt's waiting text as one longer TextDelta.
        """
        received = time.monotonic()  # the server-side times count from here, before the submit threads
        loop = asyncio.get_running_loop()
        if self._waker is None or self._waker.loop is not loop:
            self._waker = LoopWaker(loop)
        self.active += 1
        call = None
        try:
            try:
                submitting = loop.run_in_executor(self._submitter, self.engine.submit, request, self._waker,
                                                  received)
            except RuntimeError as exc:  # the submit pool was shut down: we are stopping
                raise NotReady("the server is shutting down") from exc
            try:
                call = await asyncio.shield(submitting)
            except asyncio.CancelledError:  # the caller left while its request was being queued
                submitting.add_done_callback(_cancel_once_queued)
                raise
            open_answers = call.answers
            collector = call.collector
            while open_answers:
                await collector.ready.wait()
                collector.ready.clear()
                for event in collector.take():
                    if isinstance(event, Failed):
                        raise GenerationFailed(event.message)
                    if isinstance(event, Finished):
                        open_answers -= 1
                    yield event
        finally:
            self.active -= 1
            if call is not None:
                call.cancel()  # a no-op once finished

    async def tokenize(self, request: GenerationRequest, add_special_tokens: bool | None = None) -> list[list[int]]:
        """Each prompt's token ids as the engine would run them (on the submit threads: a long prompt never
        stalls the loop); raises ValidationError."""
        return await asyncio.get_running_loop().run_in_executor(self._submitter, self.engine.tokenize, request,
                                                                add_special_tokens)

    async def render(self, request: GenerationRequest) -> list[str]:
        """The text each prompt of `request` runs as, its chat template applied (on the submit threads)."""
        return await asyncio.get_running_loop().run_in_executor(self._submitter, self.engine.render, request)

    @property
    def chat_template(self) -> str | None:
        return self.engine.model.tokenizer.chat_template

    async def detokenize(self, token_ids: list[int]) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._submitter, self.engine.detokenize, token_ids)

    @property
    def context_length(self) -> int:
        return self.engine.model.info.context_length

    def tokenizer_info(self) -> dict:
        return self.engine.tokenizer_info()

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
