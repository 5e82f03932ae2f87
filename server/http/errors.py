"""Errors in OpenAI's shape, in one place: {"error": {"message", "type", "param", "code"}} and the status."""
from __future__ import annotations

import json

from server.engine.errors import EngineError, GenerationFailed, NotReady, QueueFull, ValidationError
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


# Engine error -> (HTTP status, OpenAI type, OpenAI code, the gRPC status name).
ENGINE = {
    ValidationError: (400, "invalid_request_error", None, "INVALID_ARGUMENT"),
    QueueFull: (429, "rate_limit_error", "queue_full", "RESOURCE_EXHAUSTED"),
    NotReady: (503, "service_unavailable_error", "unavailable", "UNAVAILABLE"),
    GenerationFailed: (500, "server_error", "internal_error", "INTERNAL"),
}


def from_engine(error: EngineError, request: OpenAIRequest | None = None) -> HttpError:
    status, type_, code, log_code = next((v for kind, v in ENGINE.items() if isinstance(error, kind)),
                                         (500, "server_error", "internal_error", "INTERNAL"))
    if isinstance(error, ValidationError):
        param, message = openai_error(error, request)
        return HttpError(status, message, type_, param, code, log_code)
    return HttpError(status, str(error), type_, None, code, log_code)


def internal(error: Exception) -> HttpError:
    return HttpError(500, f"internal error: {type(error).__name__}", "server_error", None, "internal_error", "INTERNAL")


def unauthorized() -> HttpError:
    return HttpError(401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                     "authentication_error", None, "invalid_api_key", "UNAUTHENTICATED")


def model_not_found(name: str, served: str) -> HttpError:
    return HttpError(404, f"model: {name[:100]!r} is not served here; this server serves {served!r}",
                     "invalid_request_error", "model", "model_not_found", "NOT_FOUND")


def for_status(status: int, detail: str = "") -> HttpError:
    """Routing failures (unknown path, wrong method, ...) in the same shape."""
    codes = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
    return HttpError(status, detail or f"HTTP {status}", "invalid_request_error", None,
                     codes.get(status, f"http_{status}"), "NOT_FOUND" if status == 404 else "INVALID_ARGUMENT")
