"""The gRPC servicer: translates wire messages to engine calls and engine events back to messages."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from proto import llm_pb2_grpc
from server.calls import Gateway
from server.engine.types import Event, collect
from server.grpc import convert


class LLMServicer(llm_pb2_grpc.LLMServiceServicer):
    def __init__(self, calls: Gateway):
        self.calls = calls

    async def Generate(self, request, context):
        events = [e async for e in self._events(request, "Generate", context)]
        return convert.to_response(collect(events))

    async def GenerateStream(self, request, context):
        async for event in self._events(request, "GenerateStream", context):
            yield convert.to_stream_message(event)

    async def _events(self, request, rpc: str, context) -> AsyncIterator[Event]:
        """The engine's events for this call, in order. Leaving early (cancel, deadline) cancels the request."""
        call = self.calls.observer.start(rpc, convert.prompt_texts(request))
        generation = self.calls.generate(convert.to_request(request), call, convert.error_message,
                                         stopped=lambda: stop_code(context))
        async with aclosing(generation) as events:
            async for event in events:
                yield event


def stop_code(context) -> str:
    """Why a call ended early: its deadline passed, or the client cancelled it."""
    remaining = context.time_remaining()
    # The cancellation can arrive a moment before the clock says the deadline passed.
    return "DEADLINE_EXCEEDED" if remaining is not None and remaining < 0.05 else "CANCELLED"
