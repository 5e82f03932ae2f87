"""The continuous-batching engine core: one thread runs `step()` (schedule, run the model, update) in a loop.

Each step admits waiting requests as KV-cache blocks allow, runs their prompts (in chunks of at most
`max_step_tokens`) together with one decode token of every running sequence, and retires finished or
cancelled sequences at once, freeing their blocks. A request that arrives while others generate joins
at the next step; nobody waits for a whole batch.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from server.engine.batch import Row
from server.engine.kv_cache import BlockManager
from server.engine.paged_model import PagedModel, StepInputs
from server.engine.params import Limits, SchedulerConfig
from server.engine.streamer import TokenStreamer
from server.engine.tokens import choose, choose_greedy, needs_own_choice
from server.engine.types import FinishReason
from server.engine.waiting import WaitingQueue

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Sequence:
    """One prompt inside the core: its row (what the request sees), its stream and its cache blocks."""

    row: Row
    streamer: TokenStreamer
    reserved: int  # blocks set aside for it at admission
    blocks: list[int] = field(default_factory=list)
    computed: int = 0  # tokens already in the KV cache

    def pending(self) -> list[int]:
        """Tokens not yet in the cache: the rest of the prompt, or the last chosen token."""
        prompt = self.row.prompt_ids
        if self.computed < len(prompt):
            return prompt[self.computed:]
        return self.row.token_ids[self.computed - len(prompt):]


class EngineCore(WaitingQueue):
    def __init__(self, model, paged: PagedModel, limits: Limits, config: SchedulerConfig,
                 on_batch: Callable[[int], None] | None = None):
        super().__init__(limits.max_waiting)
        self.model = model  # LoadedModel: tokenizer and end-of-sequence tokens
        self.paged = paged
        self.limits = limits
        self.max_step_tokens = config.max_step_tokens
        self.on_batch = on_batch
        self.blocks = BlockManager(paged.num_blocks, paged.block_size)
        self._eos = list(model.eos_token_ids)
        self._running: list[Sequence] = []
        self._thread = threading.Thread(target=self._loop, name="engine-core", daemon=True)
        self._thread.start()

    # --- called from other threads (submit and discard: WaitingQueue) ---------------------------------

    def counts(self) -> tuple[int, int]:
        """(running, waiting) requests."""
        with self._cond:
            return len({id(s.row.handle) for s in self._running}), len(self._waiting)

    def in_flight(self) -> list:
        with self._cond:
            running = list({id(s.row.handle): s.row.handle for s in self._running}.values())
            return [*self._waiting, *running]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    # --- the step loop (engine-core thread) ----------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._waiting and not self._running:
                    self._cond.wait()
                if self._closed:
                    break
            try:
                self.step()
            except Exception as exc:  # a bug here must not leave requests hanging forever
                log.exception("engine step failed")
                for seq in self._running:
                    seq.row.fail(exc)
                self._retire()
        for seq in self._running:  # closing: whatever still runs was cancelled
            seq.streamer.finish(FinishReason.CANCELLED)
        self._retire()

    def step(self) -> None:
        """Admit, schedule, run the model once, choose tokens, retire what finished."""
        self._admit()
        for seq in self._running:
            if seq.row.handle.cancelled:
                seq.streamer.finish(FinishReason.CANCELLED)
        self._retire()
        scheduled = self._schedule()
        if not scheduled:
            return
        if self.on_batch:
            self.on_batch(len(scheduled))
        inputs, sampled = self._inputs(scheduled)
        try:
            logits = self.paged.forward(inputs)
        except Exception as exc:  # the model failed: this step's requests fail, the server goes on
            log.exception("model step over %d sequences failed", len(scheduled))
            for seq, _ in scheduled:
                seq.row.fail(exc)
            self._retire()
            return
        for seq, n in scheduled:
            seq.computed += n
        self._update(sampled, logits)
        self._retire()

    def _admit(self) -> None:
        with self._cond:
            while self._waiting:
                handle = self._waiting[0]
                rows = [r for r in handle.rows if not r.finished]
                if len(self._running) + len(rows) > self.limits.max_batch:
                    return
                need = [self.blocks.blocks_for(len(r.prompt_ids) + r.params.max_new_tokens) for r in rows]
                if not self.blocks.reserve(sum(need)):
                    return  # first come, first served: later requests wait behind it
                self._waiting.popleft()
                for row, n in zip(rows, need):
                    streamer = TokenStreamer(row, self.model.tokenizer, self.model.eos_token_ids)
                    self._running.append(Sequence(row, streamer, n))

    def _schedule(self) -> list[tuple[Sequence, int]]:
        """Every decoding sequence gets one token; prompts share `max_step_tokens`, oldest first."""
        scheduled, budget = [], self.max_step_tokens
        for seq in self._running:
            left = len(seq.row.prompt_ids) - seq.computed
            if left <= 0:
                scheduled.append((seq, 1))
            elif budget > 0:
                n = min(left, budget)
                budget -= n
                scheduled.append((seq, n))
        return scheduled

    def _inputs(self, scheduled: list[tuple[Sequence, int]]) -> tuple[StepInputs, list[Sequence]]:
        ids, positions, tables = [], [], []
        begins, block_begins, past, sampled_rows, sampled = [0], [0], [], [], []
        for seq, n in scheduled:
            ids.extend(seq.pending()[:n])
            positions.extend(range(seq.computed, seq.computed + n))
            self.blocks.grow(seq.blocks, seq.computed + n)
            tables.extend(seq.blocks)
            past.append(seq.computed)
            begins.append(begins[-1] + n)
            block_begins.append(len(tables))
            if seq.computed + n >= len(seq.row.prompt_ids):  # its last known token: a new one follows
                sampled_rows.append(begins[-1] - 1)
                sampled.append(seq)
        inputs = StepInputs(
            input_ids=np.array(ids, dtype=np.int64),
            position_ids=np.array(positions, dtype=np.int64),
            past_lens=np.array(past, dtype=np.int32),
            subsequence_begins=np.array(begins, dtype=np.int32),
            block_indices=np.array(tables, dtype=np.int32),
            block_indices_begins=np.array(block_begins, dtype=np.int32),
            max_context_len=max(s.computed + n for s, n in scheduled),
            sampled=np.array(sampled_rows, dtype=np.int64),
        )
        return inputs, sampled

    def _update(self, sampled: list[Sequence], logits: np.ndarray) -> None:
        """Choose each sampled sequence's next token: one vectorised argmax, per-row rules where set."""
        rows = [seq.row for seq in sampled]
        greedy = choose_greedy(logits, rows, self._eos) if rows else []
        now = time.monotonic()
        for i, seq in enumerate(sampled):
            row = seq.row
            if row.finished:
                continue
            try:
                token = greedy[i]
                if needs_own_choice(row):
                    token = choose(torch.from_numpy(logits[i]), row, self._eos)
                seq.streamer.put(token, now)
            except Exception as exc:  # one row's failure fails its own request only
                row.fail(exc)

    def _retire(self) -> None:
        finished = [s for s in self._running if s.row.finished]
        if not finished:
            return
        with self._cond:
            self._running = [s for s in self._running if not s.row.finished]
        for seq in finished:
            self.blocks.release(seq.blocks, seq.reserved)
