"""Wire messages <-> engine dataclasses. No logic beyond translation."""
from __future__ import annotations

from dataclasses import asdict

from proto import llm_pb2
from server.engine.types import (
    Completion,
    Finished,
    GenerationRequest,
    Message,
    SamplingParams,
    TextDelta,
)

OPTIONAL_PARAMS = ("max_new_tokens", "min_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty",
                   "do_sample", "seed")


def to_request(msg: llm_pb2.GenerateRequest) -> GenerationRequest:
    params = {name: getattr(msg, name) for name in OPTIONAL_PARAMS if msg.HasField(name)}
    return GenerationRequest(
        prompts=tuple(msg.prompts),
        conversations=tuple(tuple(Message(m.role, m.content) for m in c.messages) for c in msg.conversations),
        system_prompt=msg.system_prompt if msg.HasField("system_prompt") else None,
        raw=msg.raw,
        params=SamplingParams(stop=tuple(msg.stop), **params),
    )


def prompt_texts(msg: llm_pb2.GenerateRequest) -> list[str]:
    """The user's text per prompt, for logs."""
    return list(msg.prompts) or ["\n".join(m.content for m in c.messages) for c in msg.conversations]


def to_response(completions: list[Completion]) -> llm_pb2.GenerateResponse:
    # The proto's Completion and GenerateStreamResponse name the usage fields as Usage does.
    return llm_pb2.GenerateResponse(completions=[
        llm_pb2.Completion(index=c.index, text=c.text, finish_reason=int(c.reason), **asdict(c.usage))
        for c in completions
    ])


def to_stream_message(event: TextDelta | Finished) -> llm_pb2.GenerateStreamResponse:
    if isinstance(event, TextDelta):
        return llm_pb2.GenerateStreamResponse(index=event.index, text=event.text)
    return llm_pb2.GenerateStreamResponse(index=event.index, finish_reason=int(event.reason), **asdict(event.usage))
