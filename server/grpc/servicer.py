"""The gRPC servicer: translates wire messages to engine calls and engine events back to messages."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

from proto import llm_pb2_grpc
from server.grpc import convert
from server.engine.errors import EngineError, NotReady
from server.engine.types import Event, collect
from server.grpc.interceptor import status_for
from server.observability import Observer


class LLMServicer(llm_pb2_grpc.LLMServiceServicer):
    def __init__(self, observer: Observer):
        self.engine = None  # the AsyncEngine, once the model is loaded
        self.observer = observer

    async def Generate(self, request, context):
        events = [e async for e in self._events(request, "Generate", context)]
        return convert.to_response(collect(events))

    async def GenerateStream(self, request, context):
        async for event in self._events(request, "GenerateStream", context):
            yield convert.to_stream_message(event)

    async def _events(self, request, rpc: str, context) -> AsyncIterator[Event]:
        """The engine's events for this call, in order. Leaving early (cancel, deadline) cancels the request."""
        call = self.observer.start(rpc, convert.prompt_texts(request))
        code, detail = "OK", ""
        try:
            if self.engine is None:
                raise NotReady("the model is still loading")
            async with aclosing(self.engine.generate(convert.to_request(request))) as events:
                async for event in events:
                    call.on_event(event)
                    yield event
        except EngineError as error:
            code, detail = status_for(error).name, str(error)
            raise
        except (asyncio.CancelledError, GeneratorExit):
            remaining = context.time_remaining()
            # The cancellation can arrive a moment before the clock says the deadline passed.
            code = "DEADLINE_EXCEEDED" if remaining is not None and remaining < 0.05 else "CANCELLED"
            raise
        except Exception:
            code = "INTERNAL"
            raise
        finally:
            call.finish(code, detail)
