"""The continuous-batching engine core (vLLM's EngineCore): `step()` is a state change that returns what happened.

Each step drains the aborts that arrived since the last one, admits waiting calls as KV-cache blocks allow,
schedules the prompts (in chunks of at most `max_step_tokens`) beside one decode token of every running
prompt (a `ScheduledStep`, a plain value), runs the model once, chooses every sampled row's token in one
pass, and returns a `StepOutput`: per prompt, its new tokens and the finish reason when a token rule ended
it. No thread, no tokenizer, no text here: the engine's loop thread calls `step()` and hands the output to
the output side (output.py), which turns tokens into text.
"""
from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from server.engine.errors import QueueFull
from server.engine.grammar import Grammars
from server.engine.kv_cache import ROOT, BlockManager, block_keys, chain
from server.engine.pacing import StepCost, prompts_per_step
from server.engine.paged_model import StepInputs
from server.engine.params import Limits, SpeculationConfig
from server.engine.request import FINISH_REASON, Request, RequestStatus
from server.engine.sampler import TokenLogprob, choose_tokens, prompt_logprobs
from server.engine.speculation import adapt, propose
from server.engine.types import FinishReason

log = logging.getLogger(__name__)
ALL = None  # on the abort queue: every request (the engine is closing)


@dataclass(frozen=True)
class ScheduledSeq:
    request_id: int
    token_ids: list[int]  # the tokens this step puts in its cache
    start: int  # position of the first of them (= tokens already in its cache)
    block_table: list[int]
    sampled: bool  # its last token is its last known one: the step chooses the next
    every_row: bool = False  # the logits of every token are wanted (prompt logprobs), not only the sampled one
    proposed: int = 0  # trailing tokens that are speculation's proposals (speculation.py), checked by the step

    @property
    def rows(self) -> int:
        """Rows of logits this sequence gets: every token's, or its last known one's and each proposal's when
        sampled."""
        return len(self.token_ids) if self.every_row else (1 + self.proposed) * int(self.sampled)


@dataclass(frozen=True)
class ScheduledStep:
    """What one step runs (vLLM's SchedulerOutput)."""

    seqs: list[ScheduledSeq]

    def inputs(self) -> StepInputs:
        """The model's inputs: every sequence's tokens back to back, no padding."""
        ids, positions, tables, sampled = [], [], [], []
        begins, block_begins, past = [0], [0], []
        for s in self.seqs:
            n = len(s.token_ids)
            ids.extend(s.token_ids)
            positions.extend(range(s.start, s.start + n))
            tables.extend(s.block_table)
            past.append(s.start)
            begins.append(begins[-1] + n)
            block_begins.append(len(tables))
            sampled.extend(range(begins[-1] - s.rows, begins[-1]))
        return StepInputs(
            input_ids=np.array(ids, dtype=np.int64),
            position_ids=np.array(positions, dtype=np.int64),
            past_lens=np.array(past, dtype=np.int32),
            subsequence_begins=np.array(begins, dtype=np.int32),
            block_indices=np.array(tables, dtype=np.int32),
            block_indices_begins=np.array(block_begins, dtype=np.int32),
            max_context_len=max(s.start + len(s.token_ids) for s in self.seqs),
            sampled=np.array(sampled, dtype=np.int64),
        )


@dataclass(frozen=True)
class SeqOutput:
    """What one step did to one prompt."""

    request_id: int
    new_token_ids: tuple[int, ...] = ()
    finish_reason: FinishReason | None = None  # set: the prompt is finished in the core
    logprobs: tuple[TokenLogprob, ...] = ()
    error: str | None = None  # the model step failed for it
    cached_tokens: int | None = None  # on its first token (or cancellation): prompt tokens found in the cache
    prompt_logprobs: tuple[TokenLogprob, ...] | None = None  # on its first output, when asked: prompt tokens 1..
    admitted: float | None = None  # on its first output: when a step admitted it (time.monotonic)
    proposed: int = 0  # speculation's proposals this step checked for it
    accepted: int = 0  # of them, the ones kept (each a token of new_token_ids)


@dataclass(frozen=True)
class StepOutput:
    """What one step did (vLLM's EngineCoreOutputs)."""

    outputs: list[SeqOutput] = field(default_factory=list)
    scheduled: int = 0  # sequences the model ran
    time: float = 0.0  # when the tokens were chosen (time.monotonic)

    @property
    def proposed(self) -> int:
        """Speculation's proposals the step checked."""
        return sum(o.proposed for o in self.outputs)

    @property
    def accepted(self) -> int:
        """Of them, the ones kept."""
        return sum(o.accepted for o in self.outputs)


class EngineCore:
    """`model` is anything with `num_blocks`, `block_size` and `forward(StepInputs) -> logits [sampled, vocab]`."""

    def __init__(self, model, eos_token_ids, limits: Limits, max_step_tokens: int, prefix_caching: bool = True,
                 grammars: Grammars | None = None, speculation: SpeculationConfig | None = None,
                 pacing: StepCost | None = None):
        self.model = model
        self.pacing = pacing  # None: every prompt still prefilling shares each step's budget (pacing.py)
        self.grammars = grammars  # for requests with a matcher (structured output)
        self.limits = limits
        self.max_step_tokens = max_step_tokens
        self.speculation = speculation or SpeculationConfig()
        self.blocks = BlockManager(model.num_blocks, model.block_size, prefix_caching)
        self._eos = tuple(eos_token_ids)
        self._waiting: deque[list[Request]] = deque()  # calls; the prompts of one call start together
        self._running: list[Request] = []
        self._aborts: queue.SimpleQueue = queue.SimpleQueue()
        self._copies: list[tuple[int, int]] = []  # (source, destination) blocks to copy before the forward
        self._cond = threading.Condition()  # guards _waiting; wakes the loop
        self._closed = False

    # --- any thread ----------------------------------------------------------------------------------

    def add(self, requests: list[Request]) -> None:
        """Queue one call's prompts; raises QueueFull when the waiting queue is full or the core closed."""
        if self.blocks.caching:  # hashed here, on the caller's thread, not in the loop
            for r in requests:
                r.block_keys = block_keys(r.prompt_ids, self.blocks.block_size)
        with self._cond:
            if self._closed:
                raise QueueFull("the engine is shutting down")
            if len(self._waiting) >= self.limits.max_waiting:
                raise QueueFull(f"the waiting queue is full ({self.limits.max_waiting} requests); retry later")
            self._waiting.append(requests)
            self._cond.notify()

    def abort(self, request_ids) -> None:
        """Stop these prompts at the next step (ALL: every one); each finished there comes out as CANCELLED."""
        self._aborts.put(request_ids if request_ids is ALL else tuple(request_ids))
        with self._cond:
            self._cond.notify()

    def counts(self) -> tuple[int, int]:
        """(running, waiting) calls."""
        with self._cond:
            return len({r.call for r in self._running}), len(self._waiting)

    def wait_for_work(self, timeout: float | None = None) -> bool:
        """Block until there is something to step; False once the core is closed."""
        with self._cond:
            while not self._closed and not (self._waiting or self._running or not self._aborts.empty()):
                if not self._cond.wait(timeout):
                    break
            return not self._closed

    def close(self) -> None:
        """Refuse new calls; the loop's next wait returns False."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # --- the loop's thread ---------------------------------------------------------------------------

    def fail_all(self) -> list[int]:
        """After a failed step: retire every prompt, running or waiting; returns their ids."""
        with self._cond:
            waiting = [r for call in self._waiting for r in call]
            self._waiting.clear()
        failed = [*self._running, *waiting]
        self._finish(failed, RequestStatus.FINISHED_FAILED)
        self.blocks.drop_cache()  # a precaution: nothing runs now, and a step failed for a reason we do not know
        return [r.id for r in failed]

    def check(self) -> None:
        """Assert the block manager's invariants against the running prompts (tests call it between steps)."""
        self.blocks.check([r.blocks for r in self._running], sum(r.reserved for r in self._running))

    def step(self) -> StepOutput:
        outputs = self._drain_aborts()
        self._admit()
        scheduled = self._schedule()
        copies, self._copies = self._copies, []
        if not scheduled.seqs and not copies:
            return StepOutput(outputs, 0, time.monotonic())
        began = time.perf_counter()
        try:
            if copies:  # partial blocks that prompts admitted together share: each gets its own copy
                self.model.copy_blocks(copies)
            logits = self.model.forward(scheduled.inputs()) if scheduled.seqs else None
        except Exception as exc:  # the model failed: this step's prompts fail, the server goes on
            log.exception("model step over %d sequences failed", len(scheduled.seqs))
            message = f"generation failed: {type(exc).__name__}: {exc}"
            ids, copied = {s.request_id for s in scheduled.seqs}, {d for _, d in copies}
            failed = [r for r in self._running if r.id in ids or copied.intersection(r.blocks)]
            outputs.extend(SeqOutput(r.id, error=message) for r in failed)
            self._finish(failed, RequestStatus.FINISHED_FAILED)
            return StepOutput(outputs, len(scheduled.seqs), time.monotonic())
        finally:
            self.blocks.copied(copies)
        if not scheduled.seqs:
            return StepOutput(outputs, 0, time.monotonic())
        by_id = {r.id: r for r in self._running}
        sampled, rows, row = [], [], 0
        for s in scheduled.seqs:
            request = by_id[s.request_id]
            request.computed += len(s.token_ids) - s.proposed  # proposals count once kept (_update)
            if self.blocks.caching and not s.proposed:
                self._register(request, s.start)
            if s.every_row:  # rows of prompt tokens but the last predict the next prompt token
                predicting = len(s.token_ids) - int(s.sampled)
                request.prompt_logprob_values.extend(prompt_logprobs(
                    logits[row:row + predicting], request.prompt_ids[s.start + 1:s.start + 1 + predicting],
                    request.prompt_logprobs))
            row += s.rows
            if s.sampled:
                sampled.append((request, s))
                rows.extend(range(row - 1 - s.proposed, row))
        outputs.extend(self._update(sampled, logits[rows] if len(rows) < len(logits) else logits))
        if self.pacing is not None:
            self.pacing.add(sum(len(s.token_ids) for s in scheduled.seqs), time.perf_counter() - began)
        return StepOutput(outputs, len(scheduled.seqs), time.monotonic())

    def _drain_aborts(self) -> list[SeqOutput]:
        ids: set[int] = set()
        every = False
        while True:
            try:
                item = self._aborts.get_nowait()
            except queue.Empty:
                break
            if item is ALL:
                every = True
            else:
                ids.update(item)
        if not ids and not every:
            return []
        aborted = [r for r in self._running if every or r.id in ids]
        with self._cond:
            kept: deque[list[Request]] = deque()
            for call in self._waiting:
                gone = [r for r in call if every or r.id in ids]
                aborted.extend(gone)
                if len(gone) < len(call):
                    kept.append([r for r in call if r not in gone])
            self._waiting = kept
        self._finish(aborted, RequestStatus.FINISHED_ABORTED)
        return [SeqOutput(r.id, finish_reason=FinishReason.CANCELLED, cached_tokens=r.cached_tokens, admitted=r.admitted)
                for r in aborted]

    def _admit(self) -> None:
        with self._cond:
            now = time.monotonic()  # after every prompt in the queue was queued (add holds the same lock)
            while self._waiting:
                call = self._waiting[0]
                if len(self._running) + len(call) > self.limits.max_batch:
                    return
                plans, found = [], []
                for r in call:
                    hits = self.blocks.match(r.block_keys, self._hit_limit(r))
                    partial = self._partial_hit(r, len(hits))
                    plans.append((hits, self.blocks.blocks_for(len(r.prompt_ids) + r.params.max_new_tokens) - len(hits),
                                  partial))
                    found.append(len(hits) * self.blocks.block_size + (partial[1] if partial else 0))
                copies = self.blocks.admit(plans)
                if copies is None:
                    return  # first come, first served: later calls wait behind it
                self._waiting.popleft()
                self._copies.extend(copies)
                for request, (blocks, need, partial), cached in zip(call, plans, found):
                    request.blocks = blocks  # the hits, then a partial hit's block or its copy
                    request.computed = request.cached_tokens = cached
                    request.reserved = need - (partial is not None)
                    request.speculate = 1 if request.params.speculation and self.speculation.max_tokens else 0
                    request.status = RequestStatus.RUNNING
                    request.admitted = now
                    self._running.append(request)

    def _hit_limit(self, r: Request) -> int:
        """How many of a prompt's blocks may come from the cache: never its last token, whose logits it needs."""
        return (len(r.prompt_ids) - 1) // self.blocks.block_size if r.reads_cache else 0

    def _partial_hit(self, r: Request, full: int) -> tuple[int, int] | None:
        """An idle partial block that continues a prompt's first `full` blocks: (block, tokens of the prompt it
        holds), never its last token."""
        size = self.blocks.block_size
        start, end = full * size, min((full + 1) * size, len(r.prompt_ids) - 1)
        if not (self.blocks.caching and r.reads_cache) or end <= start:
            return None
        return self.blocks.match_partial(r.block_keys[full - 1] if full else ROOT, r.prompt_ids[start:end])

    def _schedule(self) -> ScheduledStep:
        """Every decoding prompt gets one token; the prompts still prefilling that pacing lets in share
        `max_step_tokens`, oldest first."""
        seqs, budget = [], self.max_step_tokens
        size = self.blocks.block_size
        for r in self._running:
            if r.computed < len(r.prompt_ids) and r.computed == len(r.blocks) * size:
                self._top_up(r)
        prefilling = [r for r in self._running if r.computed < len(r.prompt_ids)]
        starts = len(prefilling) if self.pacing is None else prompts_per_step(
            self.pacing.fixed_tokens(), len(self._running) - len(prefilling),
            [min(len(r.prompt_ids) - r.computed, budget) for r in prefilling])
        let_in = {r.id for r in prefilling[:starts]}
        for r in self._running:
            left = len(r.prompt_ids) - r.computed
            if left <= 0:
                n = 1
            elif budget > 0 and r.id in let_in:
                n = min(left, budget)
                budget -= n
            else:
                continue
            r.reserved -= self.blocks.grow(r.blocks, r.computed + n)
            seqs.append(ScheduledSeq(r.id, r.pending(n), r.computed, list(r.blocks),
                                     r.computed + n >= len(r.prompt_ids),
                                     r.prompt_logprobs is not None and r.computed < len(r.prompt_ids)))
        if self.speculation.max_tokens:
            # Proposals get what the step has left once every prompt has its tokens, and only while the step stays
            # small (a CPU's step over a few tokens costs about what a step over one does); the prompts whose
            # proposals were kept most recently first.
            budget = min(budget, self.speculation.max_step_tokens - sum(len(s.token_ids) for s in seqs))
            by_id = {r.id: r for r in self._running}
            for i in sorted(range(len(seqs)), key=lambda i: -by_id[seqs[i].request_id].speculate):
                s, r = seqs[i], by_id[seqs[i].request_id]
                if budget > 0 and r.computed >= len(r.prompt_ids) and (proposal := self._proposal(r, budget)):
                    budget -= len(proposal)
                    r.reserved -= self.blocks.grow(r.blocks, r.computed + 1 + len(proposal))
                    seqs[i] = dataclasses.replace(s, token_ids=s.token_ids + proposal, block_table=list(r.blocks),
                                                  proposed=len(proposal))
        return ScheduledStep(seqs)

    def _top_up(self, r: Request) -> None:
        """Blocks of its prompt that other sequences computed since it was admitted."""
        size = self.blocks.block_size
        taken = self.blocks.extend_hit(r.blocks, r.block_keys, self._hit_limit(r))
        found = 0
        if (partial := self._partial_hit(r, len(r.blocks))) is not None:
            self.blocks.take_partial(r.blocks, partial[0])
            found = partial[1]
        r.computed += taken * size + found
        r.cached_tokens += taken * size + found
        r.reserved -= taken + (partial is not None)

    def _proposal(self, r: Request, budget: int) -> list[int]:
        """Speculation's proposals for a decoding prompt, within the step's budget and its own max_new_tokens
        (so within the blocks it was promised)."""
        k = min(r.speculate, budget, r.params.max_new_tokens - len(r.output_ids) - 1)
        if k <= 0:
            return []
        return propose(np.fromiter((*r.prompt_ids, *r.output_ids), dtype=np.int64), k, self.speculation)

    def _update(self, sampled: list[tuple[Request, ScheduledSeq]], logits: np.ndarray) -> list[SeqOutput]:
        """Every sampled prompt's next tokens; the token rules (end of sequence, length) end prompts.

        `logits` holds each prompt's rows in order: its last known token's, then one per proposal. Tokens are
        chosen in rounds, one row of every prompt still going per round, exactly as steps without speculation
        would choose them (the rules see the tokens kept so far); a prompt goes on to its next row while the
        token chosen equals its proposal."""
        if not sampled:
            return []
        first = {r.id: not r.output_ids for r, _ in sampled}
        new: dict[int, list[int]] = {r.id: [] for r, _ in sampled}
        logprobs: dict[int, list[TokenLogprob]] = {r.id: [] for r, _ in sampled}
        offsets = np.cumsum([0] + [1 + s.proposed for _, s in sampled[:-1]])
        going, depth = list(range(len(sampled))), 0
        done, failed, errors = [], [], {}
        while going:
            requests = [sampled[i][0] for i in going]
            constrained = [j for j, r in enumerate(requests) if r.matcher is not None]
            grammars = self.grammars.step({j: requests[j].matcher for j in constrained}, logits.shape[1]) \
                if constrained else None
            proposals = [sampled[i][1].token_ids[1 + depth] if depth < sampled[i][1].proposed else None for i in going]
            tokens, chosen_logprobs = choose_tokens(logits[offsets[going] + depth], requests, self._eos, grammars,
                                                    proposals)
            advancing = [j for j in constrained if requests[j].params.max_new_tokens]
            broken = dict(zip(advancing, self.grammars.advance([(requests[j].matcher, tokens[j]) for j in advancing],
                                                               self._eos))) if advancing else {}
            still = []
            for j, (i, request, token, logprob) in enumerate(zip(going, requests, tokens, chosen_logprobs)):
                if broken.get(j):  # its grammar failed: this request fails, the others go on
                    errors[request.id] = broken[j]
                    failed.append(request)
                    continue
                if request.params.max_new_tokens == 0:  # the prompt's logprobs were all it wanted
                    request.status = RequestStatus.FINISHED_LENGTH
                    done.append(request)
                    continue
                request.output_ids.append(token)
                new[request.id].append(token)
                if logprob is not None:
                    logprobs[request.id].append(logprob)
                if token in self._eos or token in request.params.stop_token_ids:  # never before min_new_tokens
                    request.status = RequestStatus.FINISHED_STOPPED
                elif len(request.output_ids) >= request.params.max_new_tokens:
                    request.status = RequestStatus.FINISHED_LENGTH
                if request.status.finished:
                    done.append(request)
                elif token == proposals[j]:
                    still.append(i)  # its proposal was the token chosen: its next row's logits hold
            going, depth = still, depth + 1
        kept: dict[int, int] = {}
        for r, s in sampled:
            if s.proposed and r.status is not RequestStatus.FINISHED_FAILED:
                kept[r.id] = len(new[r.id]) - 1  # proposals kept: every token chosen but the last
                r.computed += kept[r.id]
                if self.blocks.caching:
                    self._register(r, s.start)
            if r.params.speculation and self.speculation.max_tokens:
                r.speculate, r.speculation_misses = adapt(r.speculate, s.proposed, max(0, len(new[r.id]) - 1),
                                                          self.speculation.max_tokens, r.speculation_misses)
        outputs = [SeqOutput(r.id, error=errors[r.id]) if r.id in errors else
                   SeqOutput(r.id, tuple(new[r.id]), FINISH_REASON[r.status] if r.status.finished else None,
                             tuple(logprobs[r.id]), cached_tokens=r.cached_tokens if first[r.id] else None,
                             admitted=r.admitted if first[r.id] else None,
                             prompt_logprobs=tuple(r.prompt_logprob_values)
                             if first[r.id] and r.prompt_logprobs is not None else None,
                             proposed=s.proposed, accepted=kept.get(r.id, 0))
                   for r, s in sampled]
        self._finish(done, None)
        self._finish(failed, RequestStatus.FINISHED_FAILED)
        return outputs

    def _register(self, r: Request, before: int) -> None:
        """Key the blocks this step filled, now that their KV exists (blocks of generated tokens get their
        keys here, as they fill)."""
        size = self.blocks.block_size
        for k in range(before // size, r.computed // size):
            if k == len(r.block_keys):
                r.block_keys.append(chain(r.block_keys[-1] if k else ROOT, r.tokens(k * size, (k + 1) * size)))
            self.blocks.register(r.blocks[k], r.block_keys[k])

    def _tail(self, r: Request) -> tuple[int, bytes, list[int]] | None:
        """The block a prompt's KV ends inside: (block, its parent's key, the tokens it holds), for reuse (not
        after a failed step: a copy into it may have failed)."""
        k, m = divmod(r.computed, self.blocks.block_size)
        if not self.blocks.caching or not m or r.status is RequestStatus.FINISHED_FAILED:
            return None
        return r.blocks[k], r.block_keys[k - 1] if k else ROOT, r.tokens(k * self.blocks.block_size, r.computed)

    def _finish(self, requests: list[Request], status: RequestStatus | None) -> None:
        """Retire prompts (setting `status`, unless None: already set) and free their blocks."""
        if not requests:
            return
        for r in requests:
            if status is not None:
                r.status = status
            self.blocks.release(r.blocks, r.reserved, self._tail(r))
            r.reserved = 0
        with self._cond:
            self._running = [r for r in self._running if not r.status.finished]
