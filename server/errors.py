"""The one table from errors to what each front door says: the gRPC status, the HTTP status, OpenAI's error type
and code. The engine raises its errors (server/engine/errors.py); the front doors add the two they find themselves."""
from __future__ import annotations

from dataclasses import dataclass

import grpc

from server.engine.errors import EngineError, GenerationFailed, NotReady, QueueFull, ValidationError


class ModelNotFound(EngineError):
    """A call names a model this server does not serve."""


class Unauthenticated(EngineError):
    """An API key is configured and the call's is missing or wrong."""


@dataclass(frozen=True)
class Status:
    grpc: grpc.StatusCode
    http: int
    openai_type: str
    openai_code: str | None

    @property
    def name(self) -> str:
        """The gRPC status's name: what logs and the llm_requests_total{code} label say, for every protocol."""
        return self.grpc.name


INTERNAL = Status(grpc.StatusCode.INTERNAL, 500, "server_error", "internal_error")

STATUS: dict[type[EngineError], Status] = {
    ValidationError: Status(grpc.StatusCode.INVALID_ARGUMENT, 400, "invalid_request_error", None),
    ModelNotFound: Status(grpc.StatusCode.NOT_FOUND, 404, "invalid_request_error", "model_not_found"),
    Unauthenticated: Status(grpc.StatusCode.UNAUTHENTICATED, 401, "authentication_error", "invalid_api_key"),
    QueueFull: Status(grpc.StatusCode.RESOURCE_EXHAUSTED, 429, "rate_limit_error", "queue_full"),
    NotReady: Status(grpc.StatusCode.UNAVAILABLE, 503, "service_unavailable_error", "unavailable"),
    GenerationFailed: INTERNAL,
}


def status_of(error: BaseException) -> Status:
    """The row for `error` (its class or nearest base in the table); anything else is INTERNAL."""
    return next((status for kind, status in STATUS.items() if isinstance(error, kind)), INTERNAL)
