"""The engine's front door: validate, tokenize, queue; hand back a handle that yields events."""
from __future__ import annotations

import dataclasses
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator

from server.engine.batch import Row
from server.engine.errors import NotReady
from server.engine.model import LoadedModel
from server.engine.core import EngineCore
from server.engine.kv_cache import cache_blocks
from server.engine.paged_model import PagedModel
from server.engine.params import GenerationParams, KVCacheConfig, Limits, SchedulerConfig
from server.engine.runner import run_batch
from server.engine.scheduler import Scheduler
from server.engine.types import (
    Completion,
    Event,
    Failed,
    Finished,
    FinishReason,
    GenerationRequest,
    collect,
)
from server.engine.validation import check_cache, check_inputs, check_lengths, resolve_params

log = logging.getLogger(__name__)


class RequestHandle:
    """One request in the engine. Events go to `sink` (from the generation thread), or to an internal
    queue read by `events()` when no sink is given."""

    def __init__(self, params, sink: Callable[[Event], None] | None, on_cancel: Callable[[RequestHandle], None],
                 request_id: int = 0):
        self.id = request_id
        self.arrival = time.monotonic()
        self.params = params
        self.rows: list[Row] = []
        self._queue: queue.SimpleQueue | None = None if sink else queue.SimpleQueue()
        self._sink = sink or self._queue.put
        self._on_cancel = on_cancel
        self._cancelled = threading.Event()
        self._open = 0
        self._lock = threading.Lock()
        self.done = threading.Event()

    def attach(self, rows: list[Row]) -> None:
        """The request's prompts, one row each; the request is done when every row finished."""
        self.rows = rows
        self._open = len(rows)

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Stop generating for this request within a step; a waiting request leaves the queue at once."""
        if self.done.is_set() or self._cancelled.is_set():
            return
        self._cancelled.set()
        self._on_cancel(self)

    def emit(self, event: Event) -> None:
        with self._lock:
            if self.done.is_set():
                return
            self._sink(event)
            if isinstance(event, Finished):
                self._open -= 1
            if isinstance(event, Failed) or self._open == 0:
                self.done.set()

    def fail(self, exc: Exception) -> None:
        for row in self.rows:
            if row.finish_reason is None:
                row.finish_reason = FinishReason.UNSPECIFIED  # finished, with no reason to report
        self.emit(Failed(f"generation failed: {type(exc).__name__}: {exc}"))

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Events in order, until every prompt finished or the request failed (in-process use)."""
        if self._queue is None:
            raise RuntimeError("this handle sends its events to a sink")
        while True:
            try:
                event = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"request {self.id}: no event within {timeout} s") from None
            yield event
            if self.done.is_set() and self._queue.empty():
                return


class Engine:
    """A loaded model with the engine that runs it. Usable in-process: `generate()` and `stream()`.

    With a paged model the continuous-batching EngineCore runs it; otherwise (`engine: generate`, or a
    model the paged-attention rewrite does not support) the Scheduler runs whole batches through
    transformers' `generate`.
    """

    def __init__(self, model: LoadedModel, defaults: GenerationParams | None = None,
                 limits: Limits | None = None, scheduler: SchedulerConfig | None = None,
                 on_batch: Callable[[int], None] | None = None,
                 kv_cache: KVCacheConfig | None = None):
        self.model = model
        self.on_batch = on_batch  # called with each batch's (or step's) number of prompts, for metrics
        defaults = defaults or GenerationParams()
        self.defaults = dataclasses.replace(defaults, stop=tuple(dict.fromkeys((*defaults.stop, *model.info.stop))))
        self.limits = limits = limits or Limits()
        scheduler = scheduler or SchedulerConfig()
        self._accepting = True
        self._ids = itertools.count(1)
        self.core: EngineCore | None = None
        if model.paged is not None:
            paged = PagedModel(model.paged)
            paged.allocate(cache_blocks(kv_cache or KVCacheConfig(), paged.bytes_per_block, paged.block_size,
                                        limits.max_batch, model.info.context_length))
            log.info("paged engine: KV cache of %d blocks x %d tokens, %s (%.0f MB)", paged.num_blocks,
                     paged.block_size, paged.kv_precision, paged.num_blocks * paged.bytes_per_block / 1e6)
            self.core = EngineCore(model, paged, limits, scheduler, on_batch)
            self.backend = self.core
        else:
            self._instances = [model.model] + [model.fork() for _ in range(scheduler.workers - 1)]
            self.backend = Scheduler(limits, scheduler, self._run)

    @property
    def kind(self) -> str:
        return "paged" if self.core is not None else "generate"

    def submit(self, request: GenerationRequest, sink: Callable[[Event], None] | None = None) -> RequestHandle:
        """Validate and queue; raises ValidationError, QueueFull or NotReady before any work starts."""
        if not self._accepting:
            raise NotReady("the server is shutting down")
        check_inputs(request, self.limits)
        params = resolve_params(request, self.defaults, self.limits)
        items = request.prompts or request.conversations
        texts = [self.model.render(item, request.system_prompt, request.raw) for item in items]
        prompt_ids = [self.model.encode(t, request.raw) for t in texts]
        field = "prompts" if request.prompts else "conversations"
        lengths = [len(p) for p in prompt_ids]
        check_lengths(field, lengths, params, self.limits, self.model.info.context_length)
        if self.core is not None:
            blocks = self.core.blocks
            check_cache(field, lengths, params, blocks.num_blocks, blocks.block_size)

        handle = RequestHandle(params, sink, self._cancel, next(self._ids))
        handle.attach([Row(handle, i, ids, params) for i, ids in enumerate(prompt_ids)])
        self.backend.submit(handle)
        return handle

    def stream(self, request: GenerationRequest, timeout: float | None = None) -> Iterator[Event]:
        handle = self.submit(request)
        try:
            yield from handle.events(timeout)
        finally:
            handle.cancel()

    def generate(self, request: GenerationRequest, timeout: float | None = None) -> list[Completion]:
        """Whole completions in request order; raises RuntimeError if the engine failed the request."""
        return collect(self.stream(request, timeout))

    def counts(self) -> tuple[int, int]:
        return self.backend.counts()

    def stop_accepting(self) -> None:
        self._accepting = False

    def close(self) -> None:
        """Stop: whatever still waits or runs is cancelled (the grace period is over), then the workers end."""
        self._accepting = False
        for handle in self.backend.in_flight():
            handle.cancel()
        self.backend.close()

    def _cancel(self, handle: RequestHandle) -> None:
        if self.backend.discard(handle):  # it never started: finish its rows here
            _finish_cancelled(handle)

    def _run(self, worker: int, handles: list[RequestHandle]) -> float:
        """Run one batch through `generate`; returns when its last prompt finished (the scheduler's batching hint)."""
        for h in handles:
            if h.cancelled:  # cancelled between leaving the queue and starting
                _finish_cancelled(h)
        rows = [row for h in handles for row in h.rows if not row.finished]
        if rows:
            if self.on_batch:
                self.on_batch(len(rows))
            m = self.model
            run_batch(self._instances[worker], m.tokenizer, rows, m.eos_token_ids, m.pad_token_id)
        return max((r.finished_at for h in handles for r in h.rows), default=time.monotonic())


def _finish_cancelled(handle: RequestHandle) -> None:
    for row in handle.rows:
        row.finish(FinishReason.CANCELLED)

