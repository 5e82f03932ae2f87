"""Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}} and the status (server/errors.py's
table says which)."""
from __future__ import annotations

import json

from server.engine.errors import EngineError, ValidationError
from server.errors import INTERNAL, STATUS, ModelNotFound, Status, Unauthenticated, status_of
from server.http.schema import OpenAIRequest, openai_error


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


def _from(status: Status, message: str, param: str | None = None) -> HttpError:
    return HttpError(status.http, message, status.openai_type, param, status.openai_code, status.name)


def from_engine(error: EngineError, request: OpenAIRequest | None = None) -> HttpError:
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
