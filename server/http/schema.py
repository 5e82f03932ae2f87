"""OpenAI JSON <-> engine requests and events: plain functions over plain data, no HTTP in here.

A request body becomes one `GenerationRequest` per copy (`n`), each holding every prompt; choice
`index` = prompt * n + copy, as OpenAI numbers them. With a `seed`, copy c samples with seed + c, so the
copies differ and the same request gives the same answers again.
"""
from __future__ import annotations

import functools
import math
import time
import types
import typing
import uuid
from dataclasses import dataclass, field, replace

from server.engine.errors import ValidationError
from server.engine.params import PARAMETERS, GenerationParams
from server.engine.types import FinishReason, GenerationRequest, Message, SamplingParams, Usage

# Our generation parameters by OpenAI's names, where those differ (chat also takes max_completion_tokens, the
# newer max_tokens); do_sample has none: OpenAI samples unless temperature is 0.
OPENAI_NAMES = {"max_new_tokens": "max_tokens", "min_new_tokens": "min_tokens", "do_sample": None}
# OpenAI's name -> ours, for every parameter an OpenAI body may set.
OPENAI_PARAMS = {OPENAI_NAMES.get(ours, ours): ours for ours in PARAMETERS if OPENAI_NAMES.get(ours, ours)}
# Lower bounds checked here, so that the error names the field as the client wrote it.
LOWEST = {"max_tokens": 1, "max_completion_tokens": 1, "min_tokens": 0, "top_k": -1, "seed": 0}
COMMON = {"model", "stream", "stream_options", "n", "user", *OPENAI_PARAMS}
FIELDS = {"chat": COMMON | {"messages", "max_completion_tokens"}, "completion": COMMON | {"prompt"}}
# Fields we do not implement, accepted only at the value that changes nothing (null is always "not set").
NEUTRAL = {"frequency_penalty": 0, "presence_penalty": 0, "logprobs": False, "echo": False, "best_of": 1}
MESSAGE_FIELDS = {"role", "content"}
# OpenAI's "developer" role is its newer name for "system".
ROLE_ALIASES = {"developer": "system"}
FINISH = {FinishReason.STOP: "stop", FinishReason.STOP_SEQUENCE: "stop", FinishReason.LENGTH: "length",
          FinishReason.CANCELLED: "abort", FinishReason.UNSPECIFIED: "abort"}


@dataclass(frozen=True)
class OpenAIRequest:
    """A parsed /v1/chat/completions or /v1/completions body."""

    kind: str  # "chat" or "completion"
    model: str | None
    stream: bool
    include_usage: bool
    n: int
    prompt_count: int  # distinct prompts (1 for chat)
    prompt_is_list: bool  # completions: `prompt` was a list, so errors name prompt[i]
    max_tokens_field: str  # the name the client used, for error messages
    requests: tuple[GenerationRequest, ...]  # one per copy
    texts: tuple[str, ...] = field(default=(), repr=False)  # the user's text per prompt, for logs

    @property
    def rpc(self) -> str:
        return ("chat.completions" if self.kind == "chat" else "completions") + (".stream" if self.stream else "")

    def choice_index(self, copy: int, prompt: int) -> int:
        return prompt * self.n + copy


# ---------------------------------------------------------------- parsing

def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(body: dict, name: str, low: int | None = None) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if not _is_int(v):
        raise ValidationError(name, f"expected an integer, got {_kind(v)}")
    if low is not None and v < low:
        raise ValidationError(name, f"must be at least {low}")
    return v


def _number(body: dict, name: str) -> float | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValidationError(name, f"expected a number, got {_kind(v)}")
    return float(v)


def _bool(body: dict, name: str) -> bool | None:
    v = body.get(name)
    if v is not None and not isinstance(v, bool):
        raise ValidationError(name, f"expected true or false, got {_kind(v)}")
    return v


def _kind(v) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
             dict: "an object", type(None): "null"}
    return names.get(type(v), type(v).__name__)


def _refuse_unknown(body: dict, kind: str) -> None:
    for name, value in body.items():
        if value is None or name in FIELDS[kind]:
            continue
        neutral = NEUTRAL.get(name)
        if neutral is not None and value == neutral and isinstance(value, bool) == isinstance(neutral, bool):
            continue
        raise ValidationError(name, "not supported by this server")


def _strings(body: dict, name: str) -> tuple[str, ...] | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, str):
        return (v,)
    if not isinstance(v, list):
        raise ValidationError(name, f"expected a string or an array of strings, got {_kind(v)}")
    for i, s in enumerate(v):
        if not isinstance(s, str):
            raise ValidationError(f"{name}[{i}]", f"expected a string, got {_kind(s)}")
    return tuple(v)


@functools.cache
def _type(name: str) -> type:
    """int, float, bool or tuple: the parameter's type in GenerationParams, without `| None` or item types."""
    hint = typing.get_type_hints(GenerationParams)[name]
    if isinstance(hint, types.UnionType):  # seed: int | None
        (hint,) = set(hint.__args__) - {type(None)}
    return typing.get_origin(hint) or hint  # tuple[str, ...] -> tuple


def _read(body: dict, name: str, kind: type):
    """A parameter as the client sent it, checked against its type (None: not set)."""
    if kind is int:
        return _int(body, name, LOWEST.get(name))
    return {float: _number, bool: _bool, tuple: _strings}[kind](body, name)


def _params(body: dict, kind: str) -> tuple[SamplingParams, str]:
    given = {ours: _read(body, theirs, _type(ours)) for theirs, ours in OPENAI_PARAMS.items()}
    max_field = "max_tokens"
    if kind == "chat" and body.get("max_completion_tokens") is not None:
        newer = _int(body, "max_completion_tokens", LOWEST["max_completion_tokens"])
        if given["max_new_tokens"] not in (None, newer):
            raise ValidationError("max_completion_tokens", "differs from max_tokens; give one of the two")
        given["max_new_tokens"], max_field = newer, "max_completion_tokens"
    if given["top_k"] == -1:
        given["top_k"] = 0  # vLLM's -1: no top-k filtering, our 0
    return SamplingParams(**given), max_field


def _content(value, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # content parts: text only
        texts = []
        for j, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else _kind(part)
                raise ValidationError(f"{where}[{j}]", f"only text parts are supported, got {str(kind)[:32]!r}")
            texts.append(part["text"])
        return "".join(texts)
    raise ValidationError(where, f"expected a string or an array of text parts, got {_kind(value)}")


def _messages(body: dict) -> tuple[Message, ...]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValidationError("messages", "at least one message is required" if messages in (None, [])
                              else f"expected an array of messages, got {_kind(messages)}")
    out = []
    for j, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValidationError(f"messages[{j}]", f"expected an object, got {_kind(m)}")
        for name, value in m.items():
            if value is not None and name not in MESSAGE_FIELDS:
                raise ValidationError(f"messages[{j}].{name}", "not supported by this server")
        role = m.get("role")
        if not isinstance(role, str):
            raise ValidationError(f"messages[{j}].role", f"expected a string, got {_kind(role)}")
        out.append(Message(ROLE_ALIASES.get(role, role), _content(m.get("content"), f"messages[{j}].content")))
    return tuple(out)


def _prompts(body: dict) -> tuple[tuple[str, ...], bool]:
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return (prompt,), False
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return tuple(prompt), True
    if prompt is None or prompt == []:
        raise ValidationError("prompt", "at least one prompt is required")
    if isinstance(prompt, list) and all(_is_int(t) or isinstance(t, list) for t in prompt):
        raise ValidationError("prompt", "token ids are not supported; send text")
    raise ValidationError("prompt", f"expected a string or an array of strings, got {_kind(prompt)}")


def parse(body, kind: str, max_choices: int) -> OpenAIRequest:
    """A request body as engine requests; raises ValidationError naming the OpenAI field."""
    if not isinstance(body, dict):
        raise ValidationError("body", f"expected a JSON object, got {_kind(body)}")
    _refuse_unknown(body, kind)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ValidationError("model", f"expected a string, got {_kind(model)}")
    stream = bool(_bool(body, "stream"))
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise ValidationError("stream_options", f"expected an object, got {_kind(options)}")
        for name in options:
            if name != "include_usage":
                raise ValidationError(f"stream_options.{name}", "not supported by this server")
        if not stream:
            raise ValidationError("stream_options", "only allowed with stream: true")
        include_usage = bool(_bool(options, "include_usage"))
    n = _int(body, "n", low=1) or 1
    params, max_field = _params(body, kind)
    if isinstance(body.get("user"), (dict, list)):
        raise ValidationError("user", "expected a string")

    if kind == "chat":
        messages = _messages(body)
        base = GenerationRequest(conversations=(messages,), params=params)
        texts, count, is_list = ("\n".join(m.content for m in messages),), 1, False
    else:
        prompts, is_list = _prompts(body)
        base = GenerationRequest(prompts=prompts, raw=True, params=params)
        texts, count = prompts, len(prompts)
    if count * n > max_choices:
        where = "n" if n > 1 else "prompt"
        raise ValidationError(where, f"{count} prompt(s) x n={n} = {count * n} choices, at most {max_choices} per request")
    seed = params.given.get("seed")
    copies = tuple(
        base if seed is None else replace(base, params=SamplingParams(**{**params.given, "seed": seed + c}))
        for c in range(n))
    return OpenAIRequest(kind, model, stream, include_usage, n, count, is_list, max_field, copies, tuple(texts))


def openai_error(error: ValidationError, request: OpenAIRequest | None) -> tuple[str, str]:
    """(param, message) for an engine ValidationError, naming the OpenAI field instead of ours."""
    field, message = error.field, str(error)[len(error.field) + 2:]
    # The engine names its own fields; say them the way the client wrote them.
    names = {ours: theirs for ours, theirs in OPENAI_NAMES.items() if theirs}
    if request is not None:
        names["max_new_tokens"] = request.max_tokens_field
    head, _, rest = field.partition("[")
    if head in names:
        field = names[head]
    elif head in ("conversations", "prompts") and request is not None:
        if request.kind == "chat":
            # conversations[0].messages[j].role -> messages[j].role; the conversation itself -> messages
            _, _, inner = rest.partition("].")
            field = inner if inner.startswith("messages") else "messages"
        elif rest and request.prompt_is_list:
            field = f"prompt[{rest}"
        else:
            field = "prompt"
    for ours, theirs in names.items():
        message = message.replace(ours, theirs)
    return field, f"{field}: {message}"


# ---------------------------------------------------------------- responses

def new_id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens}}


@dataclass
class Choice:
    index: int
    text: str
    finish_reason: str
    usage: Usage


def _object(kind: str, chunk: bool) -> str:
    if kind == "chat":
        return "chat.completion.chunk" if chunk else "chat.completion"
    return "text_completion"


def whole(kind: str, id_: str, created: int, model: str, choices: list[Choice], n: int) -> dict:
    """The non-streamed body: every choice in index order, with usage."""
    out = []
    for c in sorted(choices, key=lambda c: c.index):
        if kind == "chat":
            out.append({"index": c.index, "message": {"role": "assistant", "content": c.text},
                        "logprobs": None, "finish_reason": c.finish_reason})
        else:
            out.append({"index": c.index, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason})
    return {"id": id_, "object": _object(kind, False), "created": created, "model": model, "choices": out,
            "usage": total_usage(choices, n)}


def total_usage(choices: list[Choice], n: int) -> dict:
    # A prompt counts once however many copies were generated from it (as OpenAI counts).
    firsts = [c.usage for c in choices if c.index % n == 0]
    return usage(sum(u.prompt_tokens for u in firsts), sum(c.usage.completion_tokens for c in choices),
                 sum(u.cached_tokens for u in firsts))


def chunk(kind: str, id_: str, created: int, model: str, index: int, text: str | None = None,
          finish_reason: str | None = None, role: bool = False, with_usage: bool = False) -> dict:
    """One streamed chunk for one choice."""
    if kind == "chat":
        delta = {"role": "assistant", "content": ""} if role else ({} if text is None else {"content": text})
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    else:
        choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
    body = {"id": id_, "object": _object(kind, True), "created": created, "model": model, "choices": [choice]}
    if with_usage:
        body["usage"] = None  # as OpenAI: null on every chunk but the last when usage was asked for
    return body


def usage_chunk(kind: str, id_: str, created: int, model: str, choices: list[Choice], n: int) -> dict:
    return {"id": id_, "object": _object(kind, True), "created": created, "model": model, "choices": [],
            "usage": total_usage(choices, n)}
