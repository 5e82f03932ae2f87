"""The output side, off the core's thread (vLLM's OutputProcessor and RequestOutputCollector).

The core's loop hands each StepOutput over once; one thread turns its tokens into text (each prompt's
TokenStreamer: incremental decoding, stop strings), and a stop string found here goes back to the core
as an abort. Events wait in their call's Collector, which merges new text into text not yet read, so a
reader slower than the engine gets one longer delta rather than an ever longer queue; readers are woken
once per step (one wake per event loop), not once per token.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Iterator

from server.engine.step import StepOutput
from server.engine.streamer import TokenStreamer
from server.engine.types import Event, Failed, Finished, FinishReason, TextDelta

log = logging.getLogger(__name__)


class ThreadWaker:
    """Wakes readers on threads (in-process use)."""

    def flag(self) -> threading.Event:
        return threading.Event()

    def wake(self, collectors: list[Collector]) -> None:
        for c in collectors:
            c.ready.set()


class LoopWaker:
    """Wakes readers on one asyncio event loop: one call into the loop per step, however many calls read."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop

    def flag(self) -> asyncio.Event:
        return asyncio.Event()

    def wake(self, collectors: list[Collector]) -> None:
        try:
            self.loop.call_soon_threadsafe(_set_ready, collectors)
        except RuntimeError:  # the loop is closed: nobody reads any more
            pass


def _set_ready(collectors: list[Collector]) -> None:
    for c in collectors:
        c.ready.set()


class Collector:
    """One call's events not yet read. A prompt's new text joins its text still waiting (its order kept)."""

    def __init__(self, waker):
        self.waker = waker
        self.ready = waker.flag()
        self._events: list[Event] = []
        self._open_text: dict[int, int] = {}  # prompt -> position of its TextDelta still waiting
        self._lock = threading.Lock()

    def put(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, TextDelta):
                at = self._open_text.get(event.index)
                if at is not None:
                    old = self._events[at]
                    prompt = old.prompt_logprobs if old.prompt_logprobs is not None else event.prompt_logprobs
                    self._events[at] = TextDelta(event.index, old.text + event.text, old.logprobs + event.logprobs,
                                                 prompt, event.prompt_tokens, event.completion_tokens)
                    return
                self._open_text[event.index] = len(self._events)
            elif isinstance(event, Finished):
                self._open_text.pop(event.index, None)
            self._events.append(event)

    def take(self) -> list[Event]:
        with self._lock:
            events, self._events = self._events, []
            self._open_text.clear()
            return events


class Submission:
    """One GenerationRequest in the engine (vLLM's ParentRequest): the streamers of its core requests, one per
    prompt and sample, and the one collector its reader drains, so the caller sees one call."""

    def __init__(self, call_id: int, arrival: float, waker, abort: Callable[[list[int]], None]):
        self.id = call_id
        self.arrival = arrival
        self.collector = Collector(waker)
        self.streamers: dict[int, TokenStreamer] = {}  # core request id -> its streamer (its answer's index)
        self.done = threading.Event()  # set once its last event is in the collector
        self._abort = abort
        self._cancelled = False

    @property
    def answers(self) -> int:
        """Its core requests: prompts x n."""
        return len(self.streamers)

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """Stop generating for this call at the core's next step; a no-op once done."""
        if self.done.is_set() or self._cancelled:
            return
        self._cancelled = True
        self._abort([rid for rid, s in self.streamers.items() if not s.finished])

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Events in order, until every answer finished or the call failed (in-process use, ThreadWaker)."""
        while True:
            finished = self.done.is_set()
            self.collector.ready.clear()
            events = self.collector.take()
            yield from events
            if finished:
                return
            if not events and not self.collector.ready.wait(timeout):
                raise TimeoutError(f"request {self.id}: no event within {timeout} s")


class OutputProcessor:
    """Its thread processes each StepOutput the core's loop hands over (`put`), in order."""

    def __init__(self, abort: Callable[[list[int]], None]):
        self._abort = abort  # the core's: stop these prompts at its next step
        self._streams: dict[int, tuple[Submission, TokenStreamer]] = {}  # core request id -> its call and streamer
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="engine-output", daemon=True)
        self._thread.start()

    def add(self, call: Submission) -> None:
        with self._lock:
            for rid, streamer in call.streamers.items():
                self._streams[rid] = (call, streamer)

    def remove(self, call: Submission) -> None:
        with self._lock:
            for rid in call.streamers:
                self._streams.pop(rid, None)

    def put(self, output: StepOutput | None) -> None:
        """The hand-over, once per step; None ends the thread once everything before it is processed."""
        self._queue.put(output)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        while (output := self._queue.get()) is not None:
            try:
                self.process(output)
            except Exception:  # never lose the output thread
                log.exception("output processing failed")

    def process(self, output: StepOutput) -> None:
        touched: dict[int, Submission] = {}
        aborts: list[int] = []
        for out in output.outputs:
            with self._lock:
                entry = self._streams.get(out.request_id)
            if entry is None:  # finished here already (a stop string, a failure): the core caught up
                continue
            call, streamer = entry
            touched[call.id] = call
            try:
                if out.error is not None:
                    aborts.extend(self._fail(call, out.error))
                    continue
                if out.cached_tokens is not None:
                    streamer.cached_tokens = out.cached_tokens
                if out.admitted is not None:
                    streamer.admitted_at = out.admitted
                streamer.proposed += out.proposed
                streamer.accepted += out.accepted
                if out.prompt_logprobs is not None:
                    streamer.prompt_logprobs(out.prompt_logprobs)
                last = len(out.new_token_ids) - 1
                for i, token in enumerate(out.new_token_ids):
                    streamer.put(token, output.time, last=i == last and out.finish_reason is not None,
                                 logprob=out.logprobs[i] if out.logprobs else None)
                if out.finish_reason is not None:
                    streamer.finish(out.finish_reason, output.time)
                elif streamer.finished:  # a stop string: the core still runs it
                    aborts.append(out.request_id)
            except Exception as exc:  # one prompt's failure fails its own call only
                log.exception("request %d: output processing failed", call.id)
                aborts.extend(self._fail(call, f"generation failed: {type(exc).__name__}: {exc}"))
                continue
            if streamer.finished:
                self._retire(call, out.request_id)
        if aborts:
            self._abort(aborts)
        by_waker: dict[int, tuple[object, list[Collector]]] = {}
        for call in touched.values():
            waker, collectors = by_waker.setdefault(id(call.collector.waker), (call.collector.waker, []))
            collectors.append(call.collector)
        for waker, collectors in by_waker.values():
            waker.wake(collectors)

    def _retire(self, call: Submission, request_id: int) -> None:
        with self._lock:
            self._streams.pop(request_id, None)
        if all(s.finished for s in call.streamers.values()):
            call.done.set()

    def _fail(self, call: Submission, message: str) -> list[int]:
        """End the whole call with one Failed event; returns its prompts the core may still run."""
        still = [rid for rid, s in call.streamers.items() if not s.finished]
        for s in call.streamers.values():
            if not s.finished:
                s.finish_reason = FinishReason.UNSPECIFIED  # finished, with no reason to report
        call.collector.put(Failed(message))
        self.remove(call)
        call.done.set()
        return still
