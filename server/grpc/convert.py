"""Wire messages <-> engine dataclasses. No logic beyond translation."""
from __future__ import annotations

from dataclasses import asdict

from proto import llm_pb2
from server.engine.errors import EngineError, Path, ValidationError
from server.engine.params import PARAMETERS
from server.engine.types import (
    Completion,
    Constraint,
    Finished,
    GenerationRequest,
    Logprob,
    Message,
    GivenParams,
    TextDelta,
    Usage,
)


def to_request(msg: llm_pb2.GenerateRequest) -> GenerationRequest:
    # The message has a field for each generation parameter, of the same name: `optional` ones, listed when
    # set, and the repeated `stop` and `stop_token_ids` and the map `logit_bias`, listed when not empty.
    given = {f.name: _value(f, v) for f, v in msg.ListFields() if f.name in PARAMETERS}
    return GenerationRequest(
        prompts=tuple(msg.prompts),
        conversations=tuple(tuple(Message(m.role, m.content) for m in c.messages) for c in msg.conversations),
        system_prompt=msg.system_prompt if msg.HasField("system_prompt") else None,
        raw=msg.raw,
        params=GivenParams(**given),
        logprobs=msg.top_logprobs if msg.HasField("top_logprobs") else None,
        constraint=Constraint(json_schema=msg.json_schema if msg.HasField("json_schema") else None,
                              regex=msg.regex if msg.HasField("regex") else None)
        if msg.HasField("json_schema") or msg.HasField("regex") else None,
    )


def _value(field, value):
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return dict(value)
    return tuple(value) if field.is_repeated else value


# The engine's name of a path's first step -> GenerateRequest's, where they differ.
PATHS = {"logprobs": ("top_logprobs",)}


def grpc_path(path: Path) -> Path:
    return (*PATHS.get(path[0], path[:1]), *path[1:]) if path else path


def error_message(error: EngineError) -> str:
    """The error as the call's status details, a field named as GenerateRequest names it."""
    if isinstance(error, ValidationError):
        return str(ValidationError(grpc_path(error.path), error.message))
    return str(error)


def prompt_texts(msg: llm_pb2.GenerateRequest) -> list[str]:
    """The user's text per prompt, for logs."""
    return list(msg.prompts) or ["\n".join(m.content for m in c.messages) for c in msg.conversations]


def to_response(completions: list[Completion]) -> llm_pb2.GenerateResponse:
    return llm_pb2.GenerateResponse(completions=[
        llm_pb2.Completion(index=c.index, text=c.text, finish_reason=int(c.reason), logprobs=_logprobs(c.logprobs),
                           **_usage(c.usage, llm_pb2.Completion))
        for c in completions
    ])


def to_stream_message(event: TextDelta | Finished) -> llm_pb2.GenerateStreamResponse:
    if isinstance(event, TextDelta):
        return llm_pb2.GenerateStreamResponse(index=event.index, text=event.text, logprobs=_logprobs(event.logprobs))
    return llm_pb2.GenerateStreamResponse(index=event.index, finish_reason=int(event.reason),
                                          **_usage(event.usage, llm_pb2.GenerateStreamResponse))


def _usage(usage: Usage, message) -> dict:
    """The Usage fields the message has, which name them as Usage does (the stage times go only to the log)."""
    return {k: v for k, v in asdict(usage).items() if k in message.DESCRIPTOR.fields_by_name}


def _logprobs(logprobs: tuple[Logprob, ...]) -> list[llm_pb2.TokenLogprob]:
    return [llm_pb2.TokenLogprob(token_id=lp.token_id, token=lp.token, logprob=lp.logprob, top_logprobs=[
        llm_pb2.TopLogprob(token_id=t.token_id, token=t.token, logprob=t.logprob) for t in lp.top]) for lp in logprobs]
