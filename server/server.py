"""The gRPC servicer: translates wire messages to engine calls and engine events back to messages."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from proto import llm_pb2_grpc
from server import convert
from server.engine.errors import EngineError, GenerationFailed, NotReady
from server.engine.types import Event, Failed, Finished, collect
from server.interceptor import status_for
from server.observability import Observer


class LLMServicer(llm_pb2_grpc.LLMServiceServicer):
    def __init__(self, observer: Observer):
        self.engine = None  # the Engine, once the model is loaded
        self.observer = observer
        self.active = 0  # calls in progress, so shutdown can wait for them
        # Few, fixed threads to render and tokenize prompts: the thread count stays flat under load.
        self.submitter = ThreadPoolExecutor(max_workers=2, thread_name_prefix="submit")

    async def Generate(self, request, context):
        events = [e async for e in self._events(request, "Generate", context)]
        return convert.to_response(collect(events))

    async def GenerateStream(self, request, context):
        async for event in self._events(request, "GenerateStream", context):
            yield convert.to_stream_message(event)

    async def _events(self, request, rpc: str, context) -> AsyncIterator[Event]:
        """The engine's events for this call, in order. Leaving early (cancel, deadline) cancels the request."""
        call = self.observer.start(rpc, convert.prompt_texts(request))
        code, detail, handle = "OK", "", None
        self.active += 1
        try:
            if self.engine is None:
                raise NotReady("the model is still loading")
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue = asyncio.Queue()
            # Off the event loop: rendering and tokenizing a long prompt must not stall other streams.
            submitting = loop.run_in_executor(
                self.submitter, self.engine.submit, convert.to_request(request),
                lambda event: loop.call_soon_threadsafe(queue.put_nowait, event))
            try:
                handle = await asyncio.shield(submitting)
            except asyncio.CancelledError:  # the client left while its request was being queued
                submitting.add_done_callback(_cancel_once_queued)
                raise
            open_rows = len(handle.rows)
            while open_rows:
                event = await queue.get()
                if isinstance(event, Failed):
                    raise GenerationFailed(event.message)
                if isinstance(event, Finished):
                    open_rows -= 1
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
            self.active -= 1
            if handle is not None:
                handle.cancel()  # a no-op once finished
            call.finish(code, detail)


def _cancel_once_queued(submitting: asyncio.Future) -> None:
    if not submitting.cancelled() and submitting.exception() is None:
        submitting.result().cancel()
