"""Wire messages <-> engine dataclasses. No logic beyond translation."""
from __future__ import annotations

from dataclasses import asdict

from proto import llm_pb2
from server.engine.params import PARAMETERS
from server.engine.types import (
    Completion,
    Finished,
    GenerationRequest,
    Message,
    SamplingParams,
    TextDelta,
)

def to_request(msg: llm_pb2.GenerateRequest) -> GenerationRequest:
    # The message has a field for each generation parameter, of the same name: `optional` ones, listed when
    # set, and the repeated `stop`, listed when not empty.
    given = {f.name: tuple(v) if f.is_repeated else v for f, v in msg.ListFields() if f.name in PARAMETERS}
    return GenerationRequest(
        prompts=tuple(msg.prompts),
        conversations=tuple(tuple(Message(m.role, m.content) for m in c.messages) for c in msg.conversations),
        system_prompt=msg.system_prompt if msg.HasField("system_prompt") else None,
        raw=msg.raw,
        params=SamplingParams(**given),
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
