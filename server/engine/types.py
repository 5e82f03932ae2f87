"""Plain data that goes into and comes out of the engine."""
from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from server.engine.params import PARAMETERS


class FinishReason(enum.IntEnum):
    # Values mirror the proto enum so the transport converts by value.
    UNSPECIFIED = 0
    STOP = 1
    LENGTH = 2
    STOP_SEQUENCE = 3
    CANCELLED = 4


@dataclass(frozen=True)
class ToolCall:
    """A function call the model made: `arguments` is JSON text (an object)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Tool:
    """A function the model may call: `parameters` is a JSON schema, as JSON text."""

    name: str
    description: str | None = None
    parameters: str = '{"type": "object"}'


@dataclass(frozen=True)
class Message:
    role: str  # system, user, assistant, or tool (a call's result, answering `tool_call_id`)
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant's calls
    tool_call_id: str | None = None


@dataclass(frozen=True, init=False)
class GivenParams:
    """The generation parameters a client set, by name; every other one takes the servable's default (the
    resolved whole is GenerationParams, what vLLM calls SamplingParams).

    GivenParams(temperature=0.7, seed=None).given == {"temperature": 0.7}: None means not set.
    """

    # Only the given values, rather than a copy of GenerationParams with every field optional: the list of
    # parameters stays in GenerationParams, and resolving is `replace(defaults, **given)`.
    given: Mapping[str, Any]  # read-only

    def __init__(self, **values: Any):
        unknown = set(values) - set(PARAMETERS)
        if unknown:
            raise TypeError(f"not a generation parameter: {', '.join(sorted(unknown))}")
        object.__setattr__(self, "given", MappingProxyType({k: v for k, v in values.items() if v is not None}))


@dataclass(frozen=True)
class Constraint:
    """The shape every answer of a request must take: exactly one of a JSON schema (as JSON text), a regular
    expression, a Lark grammar (llguidance's dialect), or any JSON object. Checked and compiled by the engine
    (grammar.py)."""

    json_schema: str | None = None
    regex: str | None = None
    grammar: str | None = None
    json_object: bool = False

    @property
    def texts(self) -> dict[str, str]:
        """The kinds given as text, by name (the name the engine's errors give them)."""
        return {k: v for k, v in (("json_schema", self.json_schema), ("regex", self.regex),
                                  ("grammar", self.grammar)) if v is not None}

    @property
    def field(self) -> str:
        return next(iter(self.texts), "json_object")

    @property
    def value(self) -> str | None:
        return next(iter(self.texts.values()), None)


@dataclass(frozen=True)
class GenerationRequest:
    """One call: one or more prompts (or conversations), each answered `n` times. Every answer is its own request
    in the engine (admitted on its own, sharing its prompt's cached blocks with its siblings); the call's events
    number them `index` = prompt * n + sample, as OpenAI numbers choices."""

    prompts: tuple[str, ...] = ()
    prompt_ids: tuple[tuple[int, ...], ...] = ()  # instead of prompts: prompts as token ids, used as they are
    conversations: tuple[tuple[Message, ...], ...] = ()
    system_prompt: str | None = None
    raw: bool = False
    params: GivenParams = field(default_factory=GivenParams)
    # The parameters left out take the OpenAI API's defaults (validation.openai_defaults: the model's
    # generation_config.json, then the servable's, sampling unless temperature is 0), not the servable's alone.
    openai_defaults: bool = False
    logprobs: int | None = None  # None: no logprobs; N: each token's, with the N most likely alternatives
    # None: none; N: every prompt token's logprob (the first has none) with N alternatives. The whole prompt is
    # computed (no prefix cache), and max_new_tokens may be 0.
    prompt_logprobs: int | None = None
    constraint: Constraint | None = None  # every answer follows this grammar (structured output)
    tools: tuple[Tool, ...] = ()  # functions the model may call, rendered into the prompt (tools.py)
    # Extra variables for the chat template (Qwen3's enable_thinking, Granite's thinking), as the client sent them.
    chat_template_kwargs: dict | None = None
    n: int = 1  # answers per prompt (OpenAI's n); with a seed, sample i samples with seed + i (as vLLM)


@dataclass(frozen=True)
class Logprob:
    """One token's log-probability under the model's raw distribution (log-softmax of its logits, before
    logit_bias, penalties and temperature), with its text, its own bytes, and the most likely alternatives (each a
    Logprob with no alternatives of its own). A generated token's text is the text it added to the answer
    (streamer.py), so an answer's tokens spell it."""

    token_id: int
    token: str
    logprob: float | None  # None: the first prompt token, which nothing predicts
    top: tuple[Logprob, ...] = ()
    # A token may hold part of a multi-byte character, whose text is U+FFFD: these are its true bytes (None: the
    # text's UTF-8).
    token_bytes: bytes | None = None


@dataclass(frozen=True)
class TextDelta:
    """New text of answer `index` (prompt * n + sample) since its previous delta; when the request asked, the
    logprobs of the tokens that made it, and (on the answer's first delta) its prompt's. `prompt_tokens` and
    `completion_tokens` count so far, for usage on every streamed chunk."""

    index: int
    text: str
    logprobs: tuple[Logprob, ...] = ()
    prompt_logprobs: tuple[Logprob, ...] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Usage:
    """What one prompt took: its tokens, and server-side times from the request's arrival in the engine (before
    it waits for a submit thread, is validated, rendered and tokenized)."""

    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float  # to the first new token
    total_ms: float  # to the last one
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache
    queued_ms: float | None = None  # to its place in the core's waiting queue (rendered and tokenized)
    admitted_ms: float | None = None  # to the start of the step that admitted it; None: never admitted
    proposed_tokens: int = 0  # speculation's proposals checked for it
    accepted_tokens: int = 0  # of them, the ones kept (counted in completion_tokens)


@dataclass(frozen=True)
class Finished:
    """The last event of answer `index` (prompt * n + sample)."""

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
    """A whole answer, gathered from the events of one answer `index` (prompt * n + sample)."""

    index: int
    text: str
    reason: FinishReason
    usage: Usage
    logprobs: tuple[Logprob, ...] = ()
    prompt_logprobs: tuple[Logprob, ...] | None = None


def collect(events: Iterable[Event]) -> list[Completion]:
    """Gather a request's events into whole completions, in index order."""
    texts: dict[int, list[str]] = {}
    logprobs: dict[int, list[Logprob]] = {}
    prompt_logprobs: dict[int, tuple[Logprob, ...]] = {}
    done: dict[int, Finished] = {}
    for event in events:
        if isinstance(event, TextDelta):
            texts.setdefault(event.index, []).append(event.text)
            logprobs.setdefault(event.index, []).extend(event.logprobs)
            if event.prompt_logprobs is not None:
                prompt_logprobs[event.index] = event.prompt_logprobs
        elif isinstance(event, Finished):
            done[event.index] = event
        elif isinstance(event, Failed):
            raise RuntimeError(event.message)
    return [Completion(i, "".join(texts.get(i, [])), f.reason, f.usage, tuple(logprobs.get(i, ())),
                       prompt_logprobs.get(i)) for i, f in sorted(done.items())]
