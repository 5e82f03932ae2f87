"""What every front door (gRPC, HTTP, KServe) shares: the engine once loaded, whether the server is draining, and
one way to make a call through it, counted and logged once (`Gateway.generate`)."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

from server.engine.errors import EngineError, NotReady
from server.engine.types import Event, GenerationRequest
from server.errors import status_of
from server.observability import CallRecord, Observer


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

    async def generate(self, request: GenerationRequest, call: CallRecord,
                       describe: Callable[[EngineError], str] = str,
                       stopped: Callable[[], str] = lambda: "CANCELLED") -> AsyncIterator[Event]:
        """The events of one call (all its prompts and their n answers: the engine fans them out), as they come;
        `call` counts them and reports once at the end: OK, the error's status (its message by `describe`),
        INTERNAL, or what `stopped` says when the caller left (CANCELLED, DEADLINE_EXCEEDED). Leaving early
        cancels the call."""
        code, detail = "OK", ""
        try:
            if self.engine is None:
                raise NotReady("the model is still loading")
            async with aclosing(self.engine.generate(request)) as events:
                async for event in events:
                    call.on_event(event)
                    yield event
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
