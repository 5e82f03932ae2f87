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
from server.engine.types import FinishReason, GenerationRequest, Logprob, Message, SamplingParams, Usage

# Our generation parameters by OpenAI's names, where those differ (chat also takes max_completion_tokens, the
# newer max_tokens); do_sample has none: OpenAI samples unless temperature is 0.
OPENAI_NAMES = {"max_new_tokens": "max_tokens", "min_new_tokens": "min_tokens", "do_sample": None}
# OpenAI's name -> ours, for every parameter an OpenAI body may set.
OPENAI_PARAMS = {OPENAI_NAMES.get(ours, ours): ours for ours in PARAMETERS if OPENAI_NAMES.get(ours, ours)}
# Lower bounds checked here, so that the error names the field as the client wrote it (max_tokens may be 0 with
# echo and logprobs; the engine says so otherwise).
LOWEST = {"max_tokens": 0, "max_completion_tokens": 1, "min_tokens": 0, "top_k": -1, "seed": 0, "top_logprobs": 0,
          "logprobs": 0}

# What a body may hold, in one place (README, "HTTP API", lists the same). Beyond OpenAI's own fields we take the
# extensions evaluation and benchmark clients send (vLLM's names): the generation parameters OpenAI lacks (min_tokens,
# top_k, repetition_penalty, ignore_eos; OPENAI_PARAMS) and stream_options.continuous_usage_stats.
COMMON = {"model", "stream", "stream_options", "n", *OPENAI_PARAMS}
FIELDS = {"chat": COMMON | {"messages", "max_completion_tokens", "logprobs", "top_logprobs"},
          "completion": COMMON | {"prompt", "echo", "logprobs"}}
STREAM_OPTIONS = {"include_usage", "continuous_usage_stats"}
# Documented by OpenAI, accepted and ignored: none changes what is generated.
IGNORED = {"user", "metadata", "store", "service_tier", "parallel_tool_calls", "prediction", "cache_prompt"}
# Fields we do not implement, accepted only at the value that changes nothing (null is always "not set"); any other
# value is refused with 400 naming the field, as is every field not listed here.
NEUTRAL = {"frequency_penalty": 0, "presence_penalty": 0, "best_of": 1, "tool_choice": "none", "logit_bias": {}}
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
    continuous_usage: bool = False  # usage on every streamed chunk
    logprobs: bool = False  # each choice carries its tokens' logprobs
    echo: bool = False  # completions: the prompt before the completion (its logprobs too, when asked)
    prompt_ids: tuple[tuple[int, ...], ...] = ()  # the prompts, when sent as token ids

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
        if value is None or name in FIELDS[kind] or name in IGNORED:
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


def _token_ids(ids: list, where: str) -> tuple[int, ...]:
    for j, t in enumerate(ids):
        if not _is_int(t):
            raise ValidationError(f"{where}[{j}]", f"expected a token id (an integer), got {_kind(t)}")
    return tuple(ids)


def _prompts(body: dict) -> tuple[tuple, bool, bool]:
    """(prompts, given as a list, as token ids): text prompts, or token-id prompts (an array of integers, or an
    array of such arrays)."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return (prompt,), False, False
    if prompt is None or prompt == []:
        raise ValidationError("prompt", "at least one prompt is required")
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        return tuple(prompt), True, False
    if isinstance(prompt, list) and all(_is_int(t) for t in prompt):
        return (tuple(prompt),), False, True
    if isinstance(prompt, list) and all(isinstance(p, list) for p in prompt):
        return tuple(_token_ids(p, f"prompt[{i}]") for i, p in enumerate(prompt)), True, True
    raise ValidationError("prompt", "expected a string, an array of strings, an array of token ids or an array of "
                                    f"such arrays, got {_kind(prompt)}")


def _logprobs(body: dict, kind: str) -> int | None:
    """How many alternatives per token (None: no logprobs): chat's logprobs + top_logprobs, completions' logprobs."""
    if kind == "completion":
        return _int(body, "logprobs", LOWEST["logprobs"])
    wanted = _bool(body, "logprobs")
    top = _int(body, "top_logprobs", LOWEST["top_logprobs"])
    if top is not None and not wanted:
        raise ValidationError("top_logprobs", "needs logprobs: true")
    return (top or 0) if wanted else None


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
    include_usage = continuous = False
    if options is not None:
        if not isinstance(options, dict):
            raise ValidationError("stream_options", f"expected an object, got {_kind(options)}")
        for name in options:
            if name not in STREAM_OPTIONS:
                raise ValidationError(f"stream_options.{name}", "not supported by this server")
        if not stream:
            raise ValidationError("stream_options", "only allowed with stream: true")
        include_usage = bool(_bool(options, "include_usage"))
        continuous = bool(_bool(options, "continuous_usage_stats"))
    n = _int(body, "n", low=1) or 1
    params, max_field = _params(body, kind)
    logprobs = _logprobs(body, kind)
    echo = bool(_bool(body, "echo"))

    ids: tuple = ()
    if kind == "chat":
        messages = _messages(body)
        base = GenerationRequest(conversations=(messages,), params=params, logprobs=logprobs)
        texts, count, is_list = ("\n".join(m.content for m in messages),), 1, False
    else:
        prompts, is_list, as_ids = _prompts(body)
        # echo's prompt logprobs (and its text, for token-id prompts) come from one pass over the whole prompt.
        prompt_logprobs = (logprobs or 0) if echo else None
        if as_ids:
            ids, texts = prompts, tuple(f"<{len(p)} token ids>" for p in prompts)
            base = GenerationRequest(prompt_ids=prompts, params=params, logprobs=logprobs,
                                     prompt_logprobs=prompt_logprobs)
        else:
            base = GenerationRequest(prompts=prompts, raw=True, params=params, logprobs=logprobs,
                                     prompt_logprobs=prompt_logprobs)
            texts = prompts
        count = len(prompts)
    if count * n > max_choices:
        where = "n" if n > 1 else "prompt"
        raise ValidationError(where, f"{count} prompt(s) x n={n} = {count * n} choices, at most {max_choices} per request")
    seed = params.given.get("seed")
    copies = tuple(
        base if seed is None else replace(base, params=SamplingParams(**{**params.given, "seed": seed + c}))
        for c in range(n))
    return OpenAIRequest(kind, model, stream, include_usage, n, count, is_list, max_field, copies, tuple(texts),
                         continuous, logprobs is not None, echo, ids)


TOKENIZE_FIELDS = {"model", "prompt", "messages", "add_special_tokens", "add_generation_prompt", "return_token_strs"}


def parse_tokenize(body) -> tuple[str | None, GenerationRequest, bool | None, bool]:
    """vLLM's /tokenize body (`prompt`: raw text, or `messages`: a chat, rendered with its template): the model
    named, the request whose prompt is tokenized, add_special_tokens (None: as a generation would), and whether
    the tokens' texts are wanted."""
    if not isinstance(body, dict):
        raise ValidationError("body", f"expected a JSON object, got {_kind(body)}")
    for name, value in body.items():
        if value is not None and name not in TOKENIZE_FIELDS:
            raise ValidationError(name, "not supported by this server")
    if body.get("add_generation_prompt") is False:
        raise ValidationError("add_generation_prompt", "only true is supported")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ValidationError("model", f"expected a string, got {_kind(model)}")
    strs = bool(_bool(body, "return_token_strs"))
    special = _bool(body, "add_special_tokens")
    if body.get("messages") is not None:
        return model, GenerationRequest(conversations=(_messages(body),)), special, strs
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise ValidationError("prompt", f"expected a string, got {_kind(prompt)}")
    return model, GenerationRequest(prompts=(prompt,), raw=True), special, strs


def parse_detokenize(body) -> tuple[str | None, list[int]]:
    """vLLM's /detokenize body: the model named and `tokens`, an array of token ids."""
    if not isinstance(body, dict):
        raise ValidationError("body", f"expected a JSON object, got {_kind(body)}")
    for name, value in body.items():
        if value is not None and name not in ("model", "tokens"):
            raise ValidationError(name, "not supported by this server")
    tokens = body.get("tokens")
    if not isinstance(tokens, list):
        raise ValidationError("tokens", f"expected an array of token ids, got {_kind(tokens)}")
    return body.get("model"), list(_token_ids(tokens, "tokens"))


def openai_error(error: ValidationError, request: OpenAIRequest | None) -> tuple[str, str]:
    """(param, message) for an engine ValidationError, naming the OpenAI field instead of ours."""
    field, message = error.field, str(error)[len(error.field) + 2:]
    # The engine names its own fields; say them the way the client wrote them.
    names = {ours: theirs for ours, theirs in OPENAI_NAMES.items() if theirs}
    if request is not None:
        names["max_new_tokens"] = request.max_tokens_field
    head, _, rest = field.partition("[")
    if head in ("logprobs", "prompt_logprobs") and request is not None:
        field = "top_logprobs" if request.kind == "chat" else "logprobs"
    elif head in names:
        field = names[head]
    elif head == "prompt_ids" and request is not None:
        # prompt_ids[i][j] -> prompt[i][j], or prompt[j] for a single array of ids
        field = "prompt" + (f"[{rest}" if request.prompt_is_list else rest[rest.index("]") + 1:] if "]" in rest else "")
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
    logprobs: list[Logprob] | None = None  # None: not asked for
    prompt: str = ""  # echo: the prompt's text, before the completion
    prompt_logprobs: tuple[Logprob, ...] = ()  # echo with logprobs


def _object(kind: str, chunk: bool) -> str:
    if kind == "chat":
        return "chat.completion.chunk" if chunk else "chat.completion"
    return "text_completion"


def _bytes(token: str) -> list[int]:
    return list(token.encode("utf-8"))


def chat_logprobs(logprobs: list[Logprob]) -> dict:
    """OpenAI's chat shape: choices[].logprobs.content[]."""
    return {"content": [{"token": lp.token, "logprob": lp.logprob, "bytes": _bytes(lp.token),
                         "top_logprobs": [{"token": t, "logprob": v, "bytes": _bytes(t)} for _, t, v in lp.top]}
                        for lp in logprobs], "refusal": None}


def completion_logprobs(logprobs: list[Logprob], offset: int) -> dict:
    """OpenAI's legacy completions shape; `offset`: where the first token's text starts in the choice's text. As
    vLLM, each token's top_logprobs holds the token itself besides the best alternatives (null for the first
    prompt token, which has no logprob)."""
    out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for lp in logprobs:
        out["tokens"].append(lp.token)
        out["token_logprobs"].append(lp.logprob)
        out["top_logprobs"].append(None if lp.logprob is None else {**{t: v for _, t, v in lp.top}, lp.token: lp.logprob})
        out["text_offset"].append(offset)
        offset += len(lp.token)
    return out


def whole(kind: str, id_: str, created: int, model: str, choices: list[Choice], n: int) -> dict:
    """The non-streamed body: every choice in index order, with usage."""
    out = []
    for c in sorted(choices, key=lambda c: c.index):
        if kind == "chat":
            out.append({"index": c.index, "message": {"role": "assistant", "content": c.text},
                        "logprobs": None if c.logprobs is None else chat_logprobs(c.logprobs),
                        "finish_reason": c.finish_reason})
        else:
            logprobs = None if c.logprobs is None else completion_logprobs([*c.prompt_logprobs, *c.logprobs], 0)
            out.append({"index": c.index, "text": c.prompt + c.text, "logprobs": logprobs,
                        "finish_reason": c.finish_reason})
    return {"id": id_, "object": _object(kind, False), "created": created, "model": model, "choices": out,
            "usage": total_usage(choices, n)}


def total_usage(choices: list[Choice], n: int) -> dict:
    # A prompt counts once however many copies were generated from it (as OpenAI counts).
    firsts = [c.usage for c in choices if c.index % n == 0]
    return usage(sum(u.prompt_tokens for u in firsts), sum(c.usage.completion_tokens for c in choices),
                 sum(u.cached_tokens for u in firsts))


def chunk(kind: str, id_: str, created: int, model: str, index: int, text: str | None = None,
          finish_reason: str | None = None, role: bool = False, with_usage: bool = False, logprobs: dict | None = None,
          usage_now: dict | None = None) -> dict:
    """One streamed chunk for one choice (`logprobs` already in the kind's shape; `usage_now`: continuous usage)."""
    if kind == "chat":
        delta = {"role": "assistant", "content": ""} if role else ({} if text is None else {"content": text})
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
    else:
        choice = {"index": index, "text": text or "", "logprobs": logprobs, "finish_reason": finish_reason}
    body = {"id": id_, "object": _object(kind, True), "created": created, "model": model, "choices": [choice]}
    if with_usage or usage_now is not None:
        body["usage"] = usage_now  # as OpenAI: null on every chunk but the last when usage was asked for
    return body


def usage_chunk(kind: str, id_: str, created: int, model: str, choices: list[Choice], n: int) -> dict:
    return {"id": id_, "object": _object(kind, True), "created": created, "model": model, "choices": [],
            "usage": total_usage(choices, n)}
