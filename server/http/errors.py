"""Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}} and the status (server/errors.py's
table says which); the engine's field paths in OpenAI's names (`PATHS`); pydantic's refusals in our words."""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Protocol

import pydantic

from server.engine.errors import EngineError, Path, ValidationError, format_path
from server.errors import INTERNAL, STATUS, ModelNotFound, Status, Unauthenticated, status_of
from server.http.tools import ENGINE_FIELDS


class ParsedBody(Protocol):
    """What naming a field needs of a parsed body (schema.OpenAIRequest), so this module needs no schema."""

    kind: str  # "chat" or "completion"
    prompt_is_list: bool
    max_tokens_field: str


# Our generation parameters by OpenAI's names, where those differ (chat also takes max_completion_tokens, the
# newer max_tokens); do_sample has none: OpenAI samples unless temperature is 0.
OPENAI_NAMES = {"max_new_tokens": "max_tokens", "min_new_tokens": "min_tokens", "do_sample": None}


class HttpError(Exception):
    """A refused request: the HTTP status, OpenAI's error fields, and the code name logs and metrics use."""

    def __init__(self, status: int, message: str, type_: str, param: str | None = None, code: str | None = None,
                 log_code: str = "INVALID_ARGUMENT"):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.log_code = log_code  # the gRPC status name, so both protocols count alike

    def body(self) -> bytes:
        return json.dumps({"error": {"message": self.message, "type": self.type, "param": self.param,
                                     "code": self.code}}).encode()


# ---------------------------------------------------------------- the engine's paths in OpenAI's names

def _prompt(path: Path, r: ParsedBody) -> Path:
    """prompts[i] / prompt_ids[i][j] -> prompt[i][j]; for a single prompt, prompt[j]."""
    return ("prompt", *(path[1:] if r.prompt_is_list else path[2:]))


def _messages(path: Path, r: ParsedBody) -> Path:
    """conversations[0].messages[j].tool_calls[k].arguments -> messages[j].tool_calls[k].function.arguments;
    the conversation itself -> messages."""
    if r.kind != "chat":
        return _prompt(path, r)
    inner = path[2:] if path[2:3] == ("messages",) else ("messages",)
    return tuple(p for step in inner for p in (("function", step) if step == "arguments" else (step,)))


def _tool(path: Path, r: ParsedBody | None) -> Path:
    """tools[i].name -> tools[i].function.name (pydantic's own paths, already OpenAI's, stay)."""
    return (*path[:2], "function", *path[2:]) if len(path) == 3 else path


# The engine's name of a path's first step -> its OpenAI path (a path, or a function of the whole path and the
# parsed body; those that need the body apply only when there is one).
PATHS: dict[str, Path | Callable[[Path, ParsedBody], Path]] = {
    **{ours: (theirs,) for ours, theirs in OPENAI_NAMES.items() if theirs},
    "max_new_tokens": lambda path, r: (r.max_tokens_field if r else "max_tokens",),  # or max_completion_tokens
    "logprobs": lambda path, r: ("top_logprobs" if r.kind == "chat" else "logprobs",),
    "prompt_logprobs": lambda path, r: ("top_logprobs" if r.kind == "chat" else "logprobs",),
    **{ours: tuple(theirs.split(".")) for ours, theirs in ENGINE_FIELDS.items()},  # structured output, tool choice
    "tools": _tool,
    "prompt_ids": _prompt,
    "prompts": _prompt,
    "conversations": _messages,
}
NEEDS_BODY = {"logprobs", "prompt_logprobs", "prompt_ids", "prompts", "conversations"}


def openai_path(path: Path, request: ParsedBody | None) -> Path:
    row = PATHS.get(path[0]) if path else None
    if row is None or (request is None and path[0] in NEEDS_BODY):
        return path
    return row(path, request) if callable(row) else row


def openai_error(error: ValidationError, request: ParsedBody | None) -> tuple[str, str]:
    """(param, message) for an engine ValidationError, naming the OpenAI fields instead of ours (in the message
    too: "min_new_tokens: 9 is above max_new_tokens (4)" -> "min_tokens: 9 is above max_tokens (4)")."""
    param = format_path(openai_path(error.path, request))
    message = error.message
    for ours in ("max_new_tokens", "min_new_tokens"):
        message = message.replace(ours, format_path(openai_path((ours,), request)))
    return param, f"{param}: {message}"


# ---------------------------------------------------------------- pydantic's errors as ours

# A type error in words: what the field expected.
EXPECTED = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
            "string_type": "a string", "list_type": "an array", "model_type": "an object",
            "model_attributes_type": "an object", "dict_type": "an object"}
# pydantic's other errors in our words ({...}: from the error's context); our own (PydanticCustomError) say theirs.
SAID = {"extra_forbidden": "not supported by this server", "missing": "required",
        "greater_than_equal": "must be at least {ge}", "finite_number": "expected a finite number"}


def refusal(exc: pydantic.ValidationError) -> ValidationError:
    """pydantic's first error naming the field as the client wrote it, e.g. `messages[1].content: ...`,
    `prompt[2]: ...`, `stream_options.include_usage: ...`."""
    error = exc.errors(include_url=False)[0]
    kind, value, ctx = error["type"], error["input"], error.get("ctx", {})
    path = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("<")))  # the shapes' names
    if kind in EXPECTED:
        message = f"expected {EXPECTED[kind] if path else 'a JSON object'}, got {_kind(value)}"
    elif kind == "shape":
        message = f"{error['msg']}, got {_kind(value)}"
    elif kind in SAID:
        message = SAID[kind].format(**ctx)
    else:
        message = error["msg"]
    return ValidationError(path or ("body",), message)


def _kind(v) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
             dict: "an object", type(None): "null"}
    return names.get(type(v), type(v).__name__)


# ---------------------------------------------------------------- errors -> HttpError

def _from(status: Status, message: str, param: str | None = None) -> HttpError:
    return HttpError(status.http, message, status.openai_type, param, status.openai_code, status.name)


def from_engine(error: EngineError, request: ParsedBody | None = None) -> HttpError:
    if isinstance(error, ValidationError):
        param, message = openai_error(error, request)
        return _from(status_of(error), message, param)
    return _from(status_of(error), str(error), "model" if isinstance(error, ModelNotFound) else None)


def internal(error: Exception) -> HttpError:
    return _from(INTERNAL, f"internal error: {type(error).__name__}")


def unauthorized() -> HttpError:
    return _from(STATUS[Unauthenticated], "missing or wrong API key: send the header 'Authorization: Bearer <key>'")


def model_not_found(name: str, served: str) -> HttpError:
    return from_engine(ModelNotFound(f"model: {name[:100]!r} is not served here; this server serves {served!r}"))


def for_status(status: int, detail: str = "") -> HttpError:
    """Routing failures (unknown path, wrong method, ...) in the same shape."""
    codes = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
    return HttpError(status, detail or f"HTTP {status}", "invalid_request_error", None,
                     codes.get(status, f"http_{status}"), "NOT_FOUND" if status == 404 else "INVALID_ARGUMENT")
