"""The scheduler (vLLM v1's Scheduler): single-threaded state, no lock, no queue, no model.

`schedule()` admits waiting prompts, first come first served, as KV-cache blocks allow, and returns what the
next step runs, a `ScheduledStep` (a value): the prompts, in chunks of at most `max_step_tokens`, beside one
decode token of every running prompt, plus speculation's proposals. `update(step, logits)` takes the model's
logits for that step, chooses every sampled row's token in one pass (the sampler's rounds, with the grammars and
the token rules in between, so it is given logits, not tokens) and returns per prompt its new tokens and the
finish reason when a token rule ended it. `stats()` is what the gauges show. The core (core.py) owns the
thread-facing inbox and the model, and calls these in turn.

A request is one prompt (or one of a prompt's n samples): a call's requests are queued and admitted each on its
own, and only the output side (output.py) groups them again. Siblings share their prompt's full blocks through
the prefix cache once one of them computed them (`_top_up`).
"""
from __future__ import annotations

import dataclasses
import time
from collections import deque

import numpy as np

from server.engine.grammar import Grammars
from server.engine.kv_cache import ROOT, BlockManager, chain
from server.engine.pacing import StepCost, prompts_per_step
from server.engine.params import Limits, SpeculationConfig
from server.engine.request import FINISH_REASON, Request, RequestStatus
from server.engine.sampler import TokenLogprob, choose_tokens, prompt_logprobs
from server.engine.speculation import adapt, propose
from server.engine.step import ScheduledSeq, ScheduledStep, SchedulerStats, SeqOutput
from server.engine.types import FinishReason

ALL = None  # to abort: every request (the engine is closing)
# A prompt's last tokens are always computed, at least two of them, and no prompt chunk is one token: OpenVINO's CPU
# plugin computes a sequence's single new token on other kernels than several (INT8 weights: the first answer
# token's logprob moved by 4e-2 with dynamic quantization, 7e-4 without, when a prompt was read from the cache all
# but its last token), so the same prompt would not compute alike fresh and cached. Two or more compute alike.
RECOMPUTED = 2


class Scheduler:
    def __init__(self, blocks: BlockManager, eos_token_ids, limits: Limits, max_step_tokens: int,
                 grammars: Grammars | None = None, speculation: SpeculationConfig | None = None,
                 pacing: StepCost | None = None, reuse_answers: bool = True):
        self.blocks = blocks
        self.reuse_answers = reuse_answers  # blocks of generated tokens join the prefix cache (KVCacheConfig)
        self.pacing = pacing  # None: every prompt still prefilling shares each step's budget (pacing.py)
        self.grammars = grammars  # for requests with a matcher (structured output)
        self.limits = limits
        self.max_step_tokens = max_step_tokens
        self.speculation = speculation or SpeculationConfig()
        self._eos = tuple(eos_token_ids)
        # One request per prompt (and per sample of it): a call's requests wait and start each on its own. The
        # gauges and the queue's limit count calls, so the calls waiting are counted as prompts come and go.
        self._waiting: deque[Request] = deque()
        self._waiting_calls: dict[int, int] = {}  # call -> its requests still waiting
        self._running: list[Request] = []

    def add(self, request: Request) -> None:
        """Queue one prompt (the core checked the queue's limit)."""
        self._waiting.append(request)
        self._waiting_calls[request.call] = self._waiting_calls.get(request.call, 0) + 1

    def has_work(self) -> bool:
        return bool(self._waiting or self._running)

    def stats(self) -> SchedulerStats:
        b = self.blocks
        return SchedulerStats(len({r.call for r in self._running}), len(self._waiting_calls), b.num_blocks, b.used(),
                              b.reserved(), b.cached(), b.caching)

    def check(self) -> None:
        """Assert the block manager's invariants against the running prompts (tests call it between steps)."""
        self.blocks.check([r.blocks for r in self._running], sum(r.promised for r in self._running))

    # --- aborts and failures -------------------------------------------------------------------------

    def abort(self, ids: set[int], every: bool = False) -> list[SeqOutput]:
        """Stop these prompts (every: all of them), running or waiting; each comes out as CANCELLED."""
        if not ids and not every:
            return []
        aborted = [r for r in self._running if every or r.id in ids]
        waiting = [r for r in self._waiting if every or r.id in ids]
        if waiting:
            self._waiting = deque(r for r in self._waiting if not (every or r.id in ids))
            for r in waiting:
                self._left_queue(r)
        aborted.extend(waiting)
        self._finish(aborted, RequestStatus.FINISHED_ABORTED)
        return [SeqOutput(r.id, finish_reason=FinishReason.CANCELLED, cached_tokens=r.cached_tokens, admitted=r.admitted)
                for r in aborted]

    def fail(self, step: ScheduledStep, message: str) -> list[SeqOutput]:
        """The model failed this step: the prompts it ran fail."""
        ids = {s.request_id for s in step.seqs}
        failed = [r for r in self._running if r.id in ids]
        self._finish(failed, RequestStatus.FINISHED_FAILED)
        return [SeqOutput(r.id, error=message) for r in failed]

    def fail_all(self) -> list[int]:
        """After a failed step: retire every prompt, running or waiting; returns their ids."""
        failed = [*self._running, *self._waiting]
        self._waiting.clear()
        self._waiting_calls.clear()
        self._finish(failed, RequestStatus.FINISHED_FAILED)
        self.blocks.drop_cache()  # a precaution: nothing runs now, and a step failed for a reason we do not know
        return [r.id for r in failed]

    # --- schedule ------------------------------------------------------------------------------------

    def schedule(self) -> ScheduledStep:
        """Admit what fits, then: every decoding prompt gets one token; the prompts still prefilling that pacing
        lets in share `max_step_tokens`, oldest first; speculation's proposals get what is left."""
        self._admit()
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
                if left - n == 1 and n > 1:  # no chunk of one token (RECOMPUTED)
                    n -= 1
                if n == 1 < left and self.max_step_tokens > 1:
                    continue
                budget -= n
            else:
                continue
            r.promised -= self.blocks.grow(r.blocks, r.computed + n)
            seqs.append(ScheduledSeq(r.id, r.pending(n), r.computed, list(r.blocks),
                                     r.computed + n >= len(r.prompt_ids),
                                     r.prompt_logprobs is not None and r.computed < len(r.prompt_ids)))
        if self.speculation.max_tokens:
            self._speculate(seqs, min(budget, self.speculation.max_step_tokens - sum(len(s.token_ids) for s in seqs)))
        return ScheduledStep(seqs)

    def _admit(self) -> None:
        """Admit waiting prompts, first come first served, while their blocks fit (a prompt that does not fit
        holds back the ones behind it)."""
        now = time.monotonic()
        while self._waiting and len(self._running) < self.limits.max_batch:
            request = self._waiting[0]
            hits = self.blocks.match(request.block_keys, self._hit_limit(request))
            partial = self._partial_hit(request, len(hits))
            need = self.blocks.blocks_for(len(request.prompt_ids) + request.params.max_new_tokens) - len(hits)
            cached = len(hits) * self.blocks.block_size + (partial[1] if partial else 0)
            if not self.blocks.admit(hits, need, partial):
                break
            self._waiting.popleft()
            self._left_queue(request)
            request.blocks = hits  # the hits, then a partial hit's block
            request.computed = request.cached_tokens = cached
            request.promised = need - (partial is not None)
            request.speculate = 1 if request.params.speculation and self.speculation.max_tokens else 0
            request.status = RequestStatus.RUNNING
            request.admitted = now
            self._running.append(request)

    def _left_queue(self, request: Request) -> None:
        left = self._waiting_calls[request.call] - 1
        if left:
            self._waiting_calls[request.call] = left
        else:
            del self._waiting_calls[request.call]

    def _hit_limit(self, r: Request) -> int:
        """How many of a prompt's blocks may come from the cache: never its last RECOMPUTED tokens."""
        return max(len(r.prompt_ids) - RECOMPUTED, 0) // self.blocks.block_size if r.reads_cache else 0

    def _partial_hit(self, r: Request, full: int) -> tuple[int, int] | None:
        """An idle partial block that continues a prompt's first `full` blocks: (block, tokens of the prompt it
        holds), never its last RECOMPUTED tokens."""
        size = self.blocks.block_size
        start, end = full * size, min((full + 1) * size, len(r.prompt_ids) - RECOMPUTED)
        if not (self.blocks.caching and r.reads_cache) or end <= start:
            return None
        return self.blocks.match_partial(r.block_keys[full - 1] if full else ROOT, r.prompt_ids[start:end])

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
        r.promised -= taken + (partial is not None)

    def _speculate(self, seqs: list[ScheduledSeq], budget: int) -> None:
        """Proposals get what the step has left once every prompt has its tokens, and only while the step stays
        small (a CPU's step over a few tokens costs about what a step over one does); the prompts whose proposals
        were kept most recently first."""
        by_id = {r.id: r for r in self._running}
        for i in sorted(range(len(seqs)), key=lambda i: -by_id[seqs[i].request_id].speculate):
            s, r = seqs[i], by_id[seqs[i].request_id]
            if budget > 0 and r.computed >= len(r.prompt_ids) and (proposal := self._proposal(r, budget)):
                budget -= len(proposal)
                r.promised -= self.blocks.grow(r.blocks, r.computed + 1 + len(proposal))
                seqs[i] = dataclasses.replace(s, token_ids=s.token_ids + proposal, block_table=list(r.blocks),
                                              proposed=len(proposal))

    def _proposal(self, r: Request, budget: int) -> list[int]:
        """Speculation's proposals for a decoding prompt, within the step's budget and its own max_new_tokens
        (so within the blocks it was promised)."""
        k = min(r.speculate, budget, r.params.max_new_tokens - len(r.output_ids) - 1)
        if k <= 0:
            return []
        return propose(np.fromiter((*r.prompt_ids, *r.output_ids), dtype=np.int64), k, self.speculation)

    # --- update --------------------------------------------------------------------------------------

    def update(self, step: ScheduledStep, logits: np.ndarray) -> list[SeqOutput]:
        """The step ran: its tokens are in the cache; `logits` holds the rows `step.inputs().sampled` named.
        Prompt logprobs are gathered, and every sampled prompt's next tokens chosen."""
        by_id = {r.id: r for r in self._running}
        sampled, rows, row = [], [], 0
        for s in step.seqs:
            request = by_id[s.request_id]
            request.computed += len(s.token_ids) - s.proposed  # proposals count once kept (_choose)
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
        return self._choose(sampled, logits[rows] if len(rows) < len(logits) else logits)

    def _choose(self, sampled: list[tuple[Request, ScheduledSeq]], logits: np.ndarray) -> list[SeqOutput]:
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
        kept = self._keep_proposals(sampled, new)
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

    def _keep_proposals(self, sampled: list[tuple[Request, ScheduledSeq]], new: dict[int, list[int]]) -> dict[int, int]:
        """The proposals kept (every token chosen but the last) join the cache; speculation adapts its next
        proposal's length. Returns the count kept per prompt that had proposals."""
        kept: dict[int, int] = {}
        for r, s in sampled:
            if s.proposed and r.status is not RequestStatus.FINISHED_FAILED:
                kept[r.id] = len(new[r.id]) - 1
                r.computed += kept[r.id]
                if self.blocks.caching:
                    self._register(r, s.start)
            if r.params.speculation and self.speculation.max_tokens:
                r.speculate, r.speculation_misses = adapt(r.speculate, s.proposed, max(0, len(new[r.id]) - 1),
                                                          self.speculation.max_tokens, r.speculation_misses)
        return kept

    def _register(self, r: Request, before: int) -> None:
        """Key the blocks this step filled, now that their KV exists (blocks of generated tokens get their
        keys here, as they fill)."""
        size = self.blocks.block_size
        end = r.computed if self.reuse_answers else min(r.computed, len(r.prompt_ids))
        for k in range(before // size, end // size):
            if k == len(r.block_keys):
                r.block_keys.append(chain(r.block_keys[-1] if k else ROOT, r.tokens(k * size, (k + 1) * size)))
            self.blocks.register(r.blocks[k], r.block_keys[k])

    def _tail(self, r: Request) -> tuple[int, bytes, list[int]] | None:
        """The block a prompt's KV ends inside: (block, its parent's key, the tokens it holds), for reuse (not
        after a failed step: a copy into it may have failed)."""
        k, m = divmod(r.computed, self.blocks.block_size)
        if not self.blocks.caching or not m or r.status is RequestStatus.FINISHED_FAILED \
                or (r.computed > len(r.prompt_ids) and not self.reuse_answers):
            return None
        return r.blocks[k], r.block_keys[k - 1] if k else ROOT, r.tokens(k * self.blocks.block_size, r.computed)

    def _finish(self, requests: list[Request], status: RequestStatus | None) -> None:
        """Retire prompts (setting `status`, unless None: already set) and free their blocks."""
        if not requests:
            return
        for r in requests:
            if status is not None:
                r.status = status
            self.blocks.release(r.blocks, r.promised, self._tail(r))
            r.promised = 0
        self._running = [r for r in self._running if not r.status.finished]
