"""OpenAI JSON <-> engine requests and events: plain functions over plain data, no HTTP in here.

A body is checked by its pydantic model (strict JSON types, the declared fields and no others) and becomes one
`GenerationRequest` holding every prompt and `n`; the engine answers each prompt n times and numbers the answers
as OpenAI numbers choices, `index` = prompt * n + copy. With a `seed`, copy c samples with seed + c, so the copies
differ and the same request gives the same answers again. The bounds that depend on the servable (max_tokens' cap,
top_logprobs' maximum, token ids in the vocabulary, prompt lengths) are the engine's to check; errors.py names its
fields as the client wrote them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal, Union

import pydantic
from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator
from pydantic_core import PydanticCustomError

from server.engine.errors import ValidationError
from server.engine.params import PARAMETERS
from server.engine.types import GenerationRequest, GivenParams, Message
from server.engine.validation import is_int
from server.engine.tool_parsers import Hermes, ToolParser
from server.http import tools
from server.http.answers import AnswerFormat
from server.http.errors import OPENAI_NAMES, refusal

# OpenAI's name -> ours, for every parameter an OpenAI body may set.
OPENAI_PARAMS = {OPENAI_NAMES.get(ours, ours): ours for ours in PARAMETERS if OPENAI_NAMES.get(ours, ours)}

# What a body may hold is listed in one place (docs/apis.md lists the same): the request models' fields
# below (FIELDS, STREAM_OPTIONS), and these two tables. Documented by OpenAI, accepted and ignored: none changes
# what is generated.
IGNORED = {"user", "metadata", "store", "service_tier", "parallel_tool_calls", "prediction", "cache_prompt"}
# Fields we do not implement, accepted only at the value that changes nothing (null is always "not set"); any other
# value is refused with 400 naming the field, as is every field not declared.
NEUTRAL = {"best_of": 1}
# OpenAI's "developer" role is its newer name for "system".
ROLE_ALIASES = {"developer": "system"}


# ---------------------------------------------------------------- the bodies

class Body(BaseModel):
    """A JSON body or one of its objects: strict JSON types (no "1" for an integer, no true for a number, no NaN),
    null means not set, and a field not declared is refused."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, data):
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


def _shapes(expected: str, which: Callable[[Any], str | None], **shapes) -> Any:
    """A value that may take several JSON shapes (OpenAI's `prompt`, `stop`, `content`): `which` names the shape it
    has and only that one is checked, so an error speaks of what the client meant (None: "expected {expected}").
    pydantic puts the shape's name, in angle brackets, in the error's path; `refusal` leaves it out."""
    return Annotated[Union[tuple(Annotated[kind, Tag(f"<{name}>")] for name, kind in shapes.items())],
                     Discriminator(lambda v: (name := which(v)) and f"<{name}>", custom_error_type="shape",
                                   custom_error_message=f"expected {expected}")]


def _json_type(value) -> str | None:
    return {str: "string", list: "array"}.get(type(value))


def _prompt_shape(value) -> str | None:
    if not isinstance(value, list):
        return _json_type(value)
    if all(isinstance(p, str) for p in value):
        return "strings"  # [] too: refused as no prompt
    if all(is_int(t) for t in value):
        return "ids"
    return "id_arrays" if all(isinstance(p, list) for p in value) else None


def rule(name: str, ok: Callable[[Any, dict], bool], message: str):
    """A check of field `name` against the fields declared before it: refused with `message` unless
    ok(value, those fields' values)."""
    def check(cls, value, info):
        if not ok(value, info.data):
            raise PydanticCustomError("rule", message)
        return value
    return field_validator(name)(check)


def _at_least_one(what: str) -> AfterValidator:
    def check(items):
        if items == []:
            raise PydanticCustomError("empty", f"at least one {what} is required")
        return items
    return AfterValidator(check)


class TextPart(Body):
    type: Literal["text"]
    text: str

    @model_validator(mode="before")
    @classmethod
    def _text_only(cls, data):
        """Parts of any other type (images, audio, files) are refused naming the type, as the part's error."""
        if isinstance(data, dict) and data.get("type") != "text":
            raise PydanticCustomError("part", "only text parts are supported, got {type}",
                                      {"type": repr(str(data.get("type"))[:32])})
        return data


Content = _shapes("a string or an array of text parts", _json_type, string=str, array=list[TextPart])
Stop = _shapes("a string or an array of strings", _json_type, string=str, array=list[str])
Prompt = Annotated[_shapes("a string, an array of strings, an array of token ids or an array of such arrays",
                           _prompt_shape, string=str, strings=list[str], ids=list[int], id_arrays=list[list[int]]),
                   _at_least_one("prompt")]


class FunctionCall(Body):
    name: str
    arguments: str  # JSON text; the engine checks it is an object


class ToolCallItem(Body):
    """A call an assistant made, in the history."""

    id: str = ""
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(Body):
    """A message of a chat; the engine checks the role. An assistant's calls may stand in for its content; a tool's
    message answers the call `tool_call_id`."""

    role: str
    tool_calls: list[ToolCallItem] | None = None
    content: Content | None = Field(None, validate_default=True)
    tool_call_id: str | None = None

    _said = rule("content", lambda content, before: content is not None or before.get("tool_calls"), "required")


Messages = Annotated[list[ChatMessage], _at_least_one("message")]


class JsonSchemaFormat(Body):
    name: str
    description: str | None = None
    schema_: dict | bool = Field({}, alias="schema")  # `schema` would shadow BaseModel's own
    strict: bool | None = None


class ResponseFormat(Body):
    """OpenAI's structured output: none (text), any JSON object, or JSON that follows a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = Field(None, validate_default=True)

    _with_schema = rule("json_schema", lambda spec, before: spec is not None or before.get("type") != "json_schema",
                         "required with type json_schema")


class Function(Body):
    name: str
    description: str | None = None
    parameters: dict | None = None  # a JSON schema; none: no arguments
    strict: bool | None = None


class ToolSpec(Body):
    type: Literal["function"]
    function: Function


class NamedFunction(Body):
    name: str


class NamedToolChoice(Body):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(Body):
    include_usage: bool = False
    continuous_usage_stats: bool = False  # vLLM's: usage on every chunk


class GenerationBody(Body):
    """What chat and completion bodies share: streaming and the generation parameters, by OpenAI's names and vLLM's
    for the extensions clients send (min_tokens, top_k, min_p, repetition_penalty, stop_token_ids,
    include_stop_str_in_output, ignore_eos); OPENAI_PARAMS maps them
    to ours. The engine checks every bound that depends on the servable."""

    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1)
    max_tokens: int | None = Field(None, ge=0)  # 0 only with echo and logprobs: the engine says so otherwise
    min_tokens: int | None = Field(None, ge=0)
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = Field(None, ge=-1)  # vLLM's -1: no top-k filtering, our 0
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None  # token id (as JSON keys are: a string) -> bias
    min_p: float | None = None
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool | None = None
    seed: int | None = Field(None, ge=0)
    stop: Stop | None = None
    ignore_eos: bool | None = None  # every answer runs to max_tokens (benchmarks)
    speculation: bool | None = None  # false: no prompt-lookup speculation for this request
    response_format: ResponseFormat | None = None  # structured output (server/http/tools.py)

    @model_validator(mode="before")
    @classmethod
    def _drop_what_changes_nothing(cls, data):
        if not isinstance(data, dict):
            return data
        return {k: v for k, v in data.items() if k not in IGNORED and not _neutral(k, v)}

    _streamed = rule("stream_options", lambda _, before: before.get("stream"), "only allowed with stream: true")


def _neutral(name: str, value) -> bool:
    neutral = NEUTRAL.get(name)
    return neutral is not None and value == neutral and isinstance(value, bool) == isinstance(neutral, bool)


class ChatRequest(GenerationBody):
    messages: Messages
    max_completion_tokens: int | None = Field(None, ge=1)  # OpenAI's newer max_tokens
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0)  # alternatives per token; at most Limits.max_logprobs (the engine's)
    tools: Annotated[list[ToolSpec], _at_least_one("tool")] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    chat_template_kwargs: dict | None = None  # more variables for the chat template (Qwen3's enable_thinking)

    _one_max = rule("max_completion_tokens", lambda value, before: before.get("max_tokens") in (None, value),
                     "differs from max_tokens; give one of the two")
    _with_logprobs = rule("top_logprobs", lambda _, before: before.get("logprobs"), "needs logprobs: true")


class CompletionRequest(GenerationBody):
    prompt: Prompt
    echo: bool = False  # the prompt before the completion (and its logprobs, with logprobs)
    logprobs: int | None = Field(None, ge=0)  # alternatives per token; at most Limits.max_logprobs (the engine's)


REQUESTS = {"chat": ChatRequest, "completion": CompletionRequest}
FIELDS = {kind: set(model.model_fields) for kind, model in REQUESTS.items()}
STREAM_OPTIONS = set(StreamOptions.model_fields)


def check_body(model: type[Body], body) -> Any:
    try:
        return model.model_validate(body)
    except pydantic.ValidationError as exc:
        raise refusal(exc) from None


# ---------------------------------------------------------------- bodies -> engine requests

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
    request: GenerationRequest  # every prompt, and n
    texts: tuple[str, ...] = field(default=(), repr=False)  # the user's text per prompt, for logs
    continuous_usage: bool = False  # usage on every streamed chunk
    logprobs: bool = False  # each choice carries its tokens' logprobs
    echo: bool = False  # completions: the prompt before the completion (its logprobs too, when asked)
    prompt_ids: tuple[tuple[int, ...], ...] = ()  # the prompts, when sent as token ids
    answer: AnswerFormat = AnswerFormat()  # chat: how the answers' reasoning and calls are read (answers.py)

    @property
    def rpc(self) -> str:
        return ("chat.completions" if self.kind == "chat" else "completions") + (".stream" if self.stream else "")


def _params(body: GenerationBody) -> tuple[GivenParams, str]:
    """The parameters the body set, by our names; and the name the client gave max_tokens."""
    given = {ours: getattr(body, theirs) for theirs, ours in OPENAI_PARAMS.items()}
    if given["stop"] is not None:
        given["stop"] = (given["stop"],) if isinstance(given["stop"], str) else tuple(given["stop"])
    if given["top_k"] == -1:
        given["top_k"] = 0  # vLLM's -1: no top-k filtering, our 0
    if given["logit_bias"] is not None:
        given["logit_bias"] = {_token_id(key): bias for key, bias in given["logit_bias"].items()}
    if given["stop_token_ids"] is not None:
        given["stop_token_ids"] = tuple(given["stop_token_ids"])
    if getattr(body, "max_completion_tokens", None) is not None:
        given["max_new_tokens"] = body.max_completion_tokens
        return GivenParams(**given), "max_completion_tokens"
    return GivenParams(**given), "max_tokens"


def _token_id(key: str) -> int:
    """A logit_bias key: a token id written as a JSON key (a string of digits)."""
    if not (key.isascii() and key.isdigit()) or len(key) > 12:
        raise ValidationError("logit_bias", f"{key[:20]!r} is not a token id")
    return int(key)


def conversation(messages: list[ChatMessage]) -> tuple[Message, ...]:
    return tuple(Message(ROLE_ALIASES.get(m.role, m.role),
                         m.content if isinstance(m.content, str) else "".join(p.text for p in m.content or ()),
                         tools.message_calls(m.tool_calls), m.tool_call_id)
                 for m in messages)


def parse(body, kind: str, max_choices: int, tool_parser: ToolParser | None = None) -> OpenAIRequest:
    """A request body as engine requests; raises ValidationError naming the OpenAI field. `tool_parser`: the
    model's tool-call format (None: the default, Hermes')."""
    b = check_body(REQUESTS[kind], body)
    options = b.stream_options or StreamOptions()
    params, max_field = _params(b)
    constraint = tools.response_format(b.response_format)
    offered, choice = tools.tools(b.tools, b.tool_choice) if kind == "chat" else ((), None)
    tool_parser = tool_parser or Hermes()
    if (call := tools.forced(offered, choice, tool_parser)) is not None:
        if constraint is not None:
            raise ValidationError("response_format", f"cannot be combined with tool_choice {choice!r}")
        constraint = call
    if kind == "chat":
        logprobs = (b.top_logprobs or 0) if b.logprobs else None
        messages = conversation(b.messages)
        base = GenerationRequest(conversations=(messages,), params=params, logprobs=logprobs, constraint=constraint,
                                 tools=offered, chat_template_kwargs=b.chat_template_kwargs)
        texts, count, is_list, ids = ("\n".join(m.content for m in messages),), 1, False, ()
    else:
        logprobs, shape = b.logprobs, _prompt_shape(b.prompt)
        is_list = shape in ("strings", "id_arrays")
        prompts = tuple(b.prompt) if is_list else (b.prompt,)
        # echo's prompt logprobs (and its text, for token-id prompts) come from one pass over the whole prompt.
        prompt_logprobs = (logprobs or 0) if b.echo else None
        if shape in ("ids", "id_arrays"):
            ids = tuple(tuple(p) for p in prompts)
            texts = tuple(f"<{len(p)} token ids>" for p in ids)
            base = GenerationRequest(prompt_ids=ids, params=params, logprobs=logprobs, prompt_logprobs=prompt_logprobs,
                                     constraint=constraint)
        else:
            ids, texts = (), prompts
            base = GenerationRequest(prompts=prompts, raw=True, params=params, logprobs=logprobs,
                                     prompt_logprobs=prompt_logprobs, constraint=constraint)
        count = len(prompts)
    base = replace(base, openai_defaults=True)  # what the body leaves out takes OpenAI's defaults, the model's first
    if count * b.n > max_choices:
        where = "n" if b.n > 1 else "prompt"
        raise ValidationError(where, f"{count} prompt(s) x n={b.n} = {count * b.n} choices, at most {max_choices} "
                                     "per request")
    return OpenAIRequest(kind, b.model, b.stream, options.include_usage, b.n, count, is_list, max_field,
                         replace(base, n=b.n), tuple(texts), options.continuous_usage_stats, logprobs is not None,
                         kind == "completion" and b.echo, ids,
                         AnswerFormat(tool_parser if choice is not None else None))
