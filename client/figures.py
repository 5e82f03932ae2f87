"""Per-prompt figures as the client saw them, and the latency arithmetic over them.

Timings come from `time.perf_counter()` on the client (a monotonic clock); token counts from the
server's usage fields.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from proto import llm_pb2

FINISH = {v.number: v.name for v in llm_pb2.FinishReason.DESCRIPTOR.values}


@dataclass
class PromptResult:
    """One prompt of the call, as the client saw it. Times in ms from sending the call."""

    index: int
    prompt: str
    text: str = ""
    finish_reason: str | None = None  # None: the call ended before this prompt's final message
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    server_ttft_ms: float | None = None
    server_total_ms: float | None = None
    first_response_ms: float | None = None  # stream only: first message carrying text
    total_ms: float | None = None  # the prompt's last message
    arrivals_ms: list[float] = field(default_factory=list)  # stream only: every message's arrival
    text_responses: int = 0  # stream only: messages carrying text (each holds at least one token)

    @property
    def tokens(self) -> int | None:
        """The server's count; for a prompt cut off before its final message, its text responses (a lower bound)."""
        if self.completion_tokens is not None:
            return self.completion_tokens
        return self.text_responses or None

    def finish(self, msg, at_ms: float) -> None:
        """Take the usage fields of a Completion or of a final stream message."""
        self.finish_reason = FINISH.get(msg.finish_reason, str(msg.finish_reason))
        self.prompt_tokens = msg.prompt_tokens
        self.completion_tokens = msg.completion_tokens
        self.server_ttft_ms = msg.ttft_ms
        self.server_total_ms = msg.total_ms
        self.total_ms = at_ms


@dataclass
class Figures:
    """What the report prints for one prompt, or for the whole call."""

    tokens: int | None
    tokens_estimated: bool  # counted from text responses: the call ended before the server's count
    total_ms: float | None
    tokens_per_second: float | None
    time_per_token_ms: float | None
    responses: int | None = None
    first_response_ms: float | None = None
    average_response_ms: float | None = None


def prompt_figures(r: PromptResult, streamed: bool) -> Figures:
    """Per-token latency is the decode time over the tokens after the first: (total - first) / (tokens - 1).

    The first token's time is the client's first response for a stream, and the server's ttft_ms for a
    unary call (a unary client never sees the first token arrive). A unary KServe reply has no ttft: the whole
    time over the tokens, as the OpenVINO Model Server demo's client counts.
    """
    first = r.first_response_ms if streamed else r.server_ttft_ms
    tpot = None
    if r.tokens and r.tokens > 1 and r.total_ms is not None and first is not None:
        tpot = max(r.total_ms - first, 0.0) / (r.tokens - 1)
    elif r.tokens and r.total_ms and first is None and not streamed:
        tpot = r.total_ms / r.tokens
    fig = Figures(tokens=r.tokens, tokens_estimated=r.completion_tokens is None and r.tokens is not None,
                  total_ms=r.total_ms, time_per_token_ms=tpot,
                  tokens_per_second=1000.0 / tpot if tpot else None)
    if streamed:
        gaps = [b - a for a, b in zip(r.arrivals_ms, r.arrivals_ms[1:])]
        fig.responses = len(r.arrivals_ms)
        fig.first_response_ms = r.first_response_ms
        fig.average_response_ms = sum(gaps) / len(gaps) if gaps else None
    return fig


def aggregate_figures(results: list[PromptResult], wall_ms: float, streamed: bool, tokens: int | None = None) -> Figures:
    """The whole call: all tokens (`tokens`: the server's count for the call, where it gives only that) over the
    call's wall time; per-token latency is the prompts' mean."""
    per_prompt = [prompt_figures(r, streamed) for r in results]
    estimated = tokens is None and any(f.tokens_estimated for f in per_prompt)
    tokens = sum(r.tokens or 0 for r in results) if tokens is None else tokens
    tpots = [f.time_per_token_ms for f in per_prompt if f.time_per_token_ms is not None]
    fig = Figures(tokens=tokens, tokens_estimated=estimated, total_ms=wall_ms, tokens_per_second=tokens / wall_ms * 1000 if wall_ms > 0 else None,
                  time_per_token_ms=sum(tpots) / len(tpots) if tpots else None)
    if streamed:
        firsts = [r.first_response_ms for r in results if r.first_response_ms is not None]
        gaps = [f.average_response_ms for f in per_prompt if f.average_response_ms is not None]
        fig.responses = sum(f.responses or 0 for f in per_prompt)
        fig.first_response_ms = min(firsts) if firsts else None
        fig.average_response_ms = sum(gaps) / len(gaps) if gaps else None
    return fig
