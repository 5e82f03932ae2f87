"""What a step runs and what it did: plain values from the scheduler to the model and out to the output side
(vLLM v1's SchedulerOutput and EngineCoreOutputs)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from server.engine.paged_model import StepInputs
from server.engine.sampler import TokenLogprob
from server.engine.types import FinishReason


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
    """What one step runs (vLLM's SchedulerOutput): the sequences."""

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
class SchedulerStats:
    """The scheduler's state after a step, for the gauges (vLLM's SchedulerStats): a value handed out with the
    step's output, so metrics never read the scheduler across threads."""

    running: int = 0  # calls
    waiting: int = 0  # calls in the scheduler's queue (the core's inbox holds more between steps)
    blocks_total: int = 0
    blocks_used: int = 0  # held by some sequence
    blocks_reserved: int = 0  # held or promised
    blocks_cached: int = 0  # free, kept for prefix reuse
    prefix_caching: bool = False


@dataclass(frozen=True)
class StepOutput:
    """What one step did (vLLM's EngineCoreOutputs)."""

    outputs: list[SeqOutput] = field(default_factory=list)
    scheduled: int = 0  # sequences the model ran
    time: float = 0.0  # when the tokens were chosen (time.monotonic)
    stats: SchedulerStats | None = None  # the scheduler's state after the step

    @property
    def proposed(self) -> int:
        """Speculation's proposals the step checked."""
        return sum(o.proposed for o in self.outputs)

    @property
    def accepted(self) -> int:
        """Of them, the ones kept."""
        return sum(o.accepted for o in self.outputs)
