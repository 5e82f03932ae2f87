"""What every front door (gRPC, HTTP, KServe) shares: the engine once loaded, whether the server is draining, and
one way to make a call through it, counted and logged once (`Gateway.generate`)."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing

from server.engine.errors import EngineError, NotReady
from server.engine.types import Event, GenerationRequest
from server.errors import status_of
from server.observability import CallRecord, Observer

_DONE = object()


async def merge(streams: list[AsyncIterator[Event]]) -> AsyncIterator[tuple[int, Event]]:
    """Events of every stream as they come, tagged with the stream's position. The first error ends it;
    closing it early (or an error) closes every stream, which cancels their requests in the engine."""
    if len(streams) == 1:  # the common case, without tasks in between
        async with aclosing(streams[0]) as only:
            async for event in only:
                yield 0, event
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, stream: AsyncIterator[Event]) -> None:
        try:
            async with aclosing(stream):
                async for event in stream:
                    queue.put_nowait((i, event))
        except Exception as exc:  # noqa: BLE001 - handed to the reader, which raises it
            queue.put_nowait((i, exc))
            return
        queue.put_nowait((i, _DONE))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    try:
        running = len(tasks)
        while running:
            i, item = await queue.get()
            if item is _DONE:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield i, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Gateway:
    """The front doors' way into the engine, and their shared state (a call in the engine is an
    output.Submission; its log line and metrics, an observability.CallRecord). app.py sets `engine` once the
    model is loaded and `draining` on SIGTERM."""

    def __init__(self, observer: Observer):
        self.observer = observer
        self.engine = None  # the AsyncEngine
        self.draining = False

    @property
    def ready(self) -> bool:
        return self.engine is not None and not self.draining

    def refused(self, rpc: str, protocol: str, code: str, detail: str) -> None:
        """Count and log a call refused before it reached the engine (a bad body, an unknown model)."""
        self.observer.start(rpc, [], protocol).finish(code, detail)

    async def generate(self, requests: Sequence[GenerationRequest], call: CallRecord,
                       describe: Callable[[EngineError], str] = str,
                       stopped: Callable[[], str] = lambda: "CANCELLED") -> AsyncIterator[tuple[int, Event]]:
        """(request's position, event) for every engine request of one call, as they come; `call` counts them
        and reports once at the end: OK, the error's status (its message by `describe`), INTERNAL, or what
        `stopped` says when the caller left (CANCELLED, DEADLINE_EXCEEDED). Leaving early cancels the requests."""
        code, detail = "OK", ""
        try:
            if self.engine is None:
                raise NotReady("the model is still loading")
            async with aclosing(merge([self.engine.generate(r) for r in requests])) as merged:
                async for position, event in merged:
                    call.on_event(event)
                    yield position, event
        except EngineError as error:
            code, detail = status_of(error).name, describe(error)
            raise
        except (asyncio.CancelledError, GeneratorExit):
            code = stopped()
            raise
        except Exception:
            code = "INTERNAL"
            raise
        finally:
            call.finish(code, detail)
