"""Plain data that goes into and comes out of the engine."""
from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field


class FinishReason(enum.IntEnum):
    # Values mirror the proto enum so the transport converts by value.
    UNSPECIFIED = 0
    STOP = 1
    LENGTH = 2
    STOP_SEQUENCE = 3
    CANCELLED = 4


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class SamplingParams:
    """What the client asked for; None means the servable's default."""

    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    do_sample: bool | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerationRequest:
    """One call: several prompts (or conversations) generated together as one batch."""

    prompts: tuple[str, ...] = ()
    conversations: tuple[tuple[Message, ...], ...] = ()
    system_prompt: str | None = None
    raw: bool = False
    params: SamplingParams = field(default_factory=SamplingParams)


@dataclass(frozen=True)
class ResolvedParams:
    """SamplingParams with the servable's defaults applied and validated."""

    max_new_tokens: int
    min_new_tokens: int
    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    do_sample: bool
    seed: int | None
    stop: tuple[str, ...]


@dataclass(frozen=True)
class TextDelta:
    """New text of prompt `index` since its previous delta."""

    index: int
    text: str


@dataclass(frozen=True)
class Usage:
    """What one prompt took: its tokens, and server-side times from the request's arrival."""

    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float  # to the first new token
    total_ms: float  # to the last one


@dataclass(frozen=True)
class Finished:
    """The last event of prompt `index`."""

    index: int
    reason: FinishReason
    usage: Usage


@dataclass(frozen=True)
class Failed:
    """The engine failed this request (and only this one)."""

    message: str


Event = TextDelta | Finished | Failed


@dataclass(frozen=True)
class Completion:
    """A whole answer, gathered from the events of one prompt."""

    index: int
    text: str
    reason: FinishReason
    usage: Usage


def collect(events: Iterable[Event]) -> list[Completion]:
    """Gather a request's events into whole completions, in prompt order."""
    texts: dict[int, list[str]] = {}
    done: dict[int, Finished] = {}
    for event in events:
        if isinstance(event, TextDelta):
            texts.setdefault(event.index, []).append(event.text)
        elif isinstance(event, Finished):
            done[event.index] = event
        elif isinstance(event, Failed):
            raise RuntimeError(event.message)
    return [Completion(i, "".join(texts.get(i, [])), f.reason, f.usage) for i, f in sorted(done.items())]
