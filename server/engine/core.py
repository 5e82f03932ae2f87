"""The engine core (vLLM v1's EngineCore): the inbox other threads write to, and the step.

Any thread may `add` a call's requests (one per prompt, and per sample of it) or `abort` requests: both only queue
(the inbox, and the aborts drained once per step). The engine's loop thread calls `step()`: it hands the inbox to
the scheduler (scheduler.py, which holds every scheduling decision and no lock), applies the aborts, runs the model
once on the scheduled step, and returns a `StepOutput`: per prompt, its new tokens and the finish reason when a
token rule ended it, and the scheduler's stats for the gauges. No tokenizer, no text here: the loop hands the
output to the output side (output.py), which turns tokens into text.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque

from server.engine.errors import QueueFull
from server.engine.grammar import Grammars
from server.engine.kv_cache import BlockManager, block_keys
from server.engine.pacing import StepCost
from server.engine.params import Limits, SpeculationConfig
from server.engine.request import Request
from server.engine.scheduler import ALL, Scheduler
from server.engine.step import SchedulerStats, SeqOutput, StepOutput

log = logging.getLogger(__name__)
__all__ = ["ALL", "EngineCore"]


class EngineCore:
    """`model` is anything with `num_blocks`, `block_size` and `forward(StepInputs) -> logits [sampled, vocab]`."""

    def __init__(self, model, eos_token_ids, limits: Limits, max_step_tokens: int, prefix_caching: bool = True,
                 grammars: Grammars | None = None, speculation: SpeculationConfig | None = None,
                 pacing: StepCost | None = None, reuse_answers: bool = True):
        self.model = model
        self.pacing = pacing
        self.limits = limits
        self.scheduler = Scheduler(BlockManager(model.num_blocks, model.block_size, prefix_caching), eos_token_ids,
                                   limits, max_step_tokens, grammars, speculation, pacing, reuse_answers)
        self.blocks = self.scheduler.blocks  # its sizes are constant; its state is the loop thread's
        self.stats = self.scheduler.stats()  # after the last step (a value, replaced whole)
        self._inbox: deque[list[Request]] = deque()  # calls added since the last step
        self._waiting = 0  # calls in the inbox or with a request in the scheduler's queue, as of the last step
        self._aborts: queue.SimpleQueue = queue.SimpleQueue()
        self._cond = threading.Condition()  # guards the inbox; wakes the loop
        self._closed = False

    # --- any thread ----------------------------------------------------------------------------------

    def add(self, requests: list[Request]) -> None:
        """Queue one call's requests, each its own request in the scheduler; raises QueueFull when the waiting
        queue is full or the core closed. The queue's limit counts calls (a call of several prompts, or of n
        samples, is one), as the client sees it."""
        if self.blocks.caching:  # hashed here, on the caller's thread, not in the loop
            for r in requests:
                r.block_keys = block_keys(r.prompt_ids, self.blocks.block_size)
        with self._cond:
            if self._closed:
                raise QueueFull("the engine is shutting down")
            if self._waiting >= self.limits.max_waiting:
                raise QueueFull(f"the waiting queue is full ({self.limits.max_waiting} calls); retry later")
            self._inbox.append(requests)
            self._waiting += 1
            self._cond.notify()

    def abort(self, request_ids) -> None:
        """Stop these prompts at the next step (ALL: every one); each finished there comes out as CANCELLED."""
        self._aborts.put(request_ids if request_ids is ALL else tuple(request_ids))
        with self._cond:
            self._cond.notify()

    def counts(self) -> tuple[int, int]:
        """(running, waiting) calls: those with a request running, and those with a request waiting."""
        with self._cond:
            return self.stats.running, self._waiting

    def wait_for_work(self, timeout: float | None = None) -> bool:
        """Block until there is something to step; False once the core is closed (the loop's thread)."""
        with self._cond:
            while not self._closed and not (self._inbox or self.scheduler.has_work() or not self._aborts.empty()):
                if not self._cond.wait(timeout):
                    break
            return not self._closed

    def close(self) -> None:
        """Refuse new calls; the loop's next wait returns False."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # --- the loop's thread ---------------------------------------------------------------------------

    def step(self) -> StepOutput:
        self._take_inbox()
        outputs = self.scheduler.abort(*self._drain_aborts())
        step = self.scheduler.schedule()
        if not step.seqs:
            return self._output(outputs, 0)
        began = time.perf_counter()
        try:
            logits = self.model.forward(step.inputs())
        except Exception as exc:  # the model failed: this step's prompts fail, the server goes on
            log.exception("model step over %d sequences failed", len(step.seqs))
            outputs.extend(self.scheduler.fail(step, f"generation failed: {type(exc).__name__}: {exc}"))
            return self._output(outputs, len(step.seqs))
        outputs.extend(self.scheduler.update(step, logits))
        if self.pacing is not None:
            self.pacing.add(sum(len(s.token_ids) for s in step.seqs), time.perf_counter() - began)
        return self._output(outputs, len(step.seqs))

    def fail_all(self, message: str) -> StepOutput:
        """After a step raised: every prompt, running or waiting, fails with `message`."""
        self._take_inbox()
        return self._output([SeqOutput(rid, error=message) for rid in self.scheduler.fail_all()], 0)

    def check(self) -> None:
        """Assert the block manager's invariants (tests call it between steps)."""
        self.scheduler.check()

    def _take_inbox(self) -> None:
        with self._cond:
            calls, self._inbox = self._inbox, deque()
        for call in calls:
            for request in call:
                self.scheduler.add(request)

    def _drain_aborts(self) -> tuple[set[int], bool]:
        ids: set[int] = set()
        every = False
        while True:
            try:
                item = self._aborts.get_nowait()
            except queue.Empty:
                return ids, every
            if item is ALL:
                every = True
            else:
                ids.update(item)

    def _output(self, outputs: list[SeqOutput], scheduled: int) -> StepOutput:
        stats: SchedulerStats = self.scheduler.stats()
        with self._cond:
            self.stats = stats
            self._waiting = len(self._inbox) + stats.waiting
        return StepOutput(outputs, scheduled, time.monotonic(), stats)
