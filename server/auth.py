"""Optional API key: `authorization: Bearer KEY` on every call but health checks (gRPC and HTTP, KServe's too)."""
from __future__ import annotations

import hmac

import grpc

HEALTH_PREFIX = "/grpc.health.v1.Health/"
# KServe's liveness and readiness, which probes and load balancers call without credentials.
OPEN_METHODS = ("/inference.GRPCInferenceService/ServerLive", "/inference.GRPCInferenceService/ServerReady")
MESSAGE = "missing or wrong API key: send metadata 'authorization: Bearer <key>'"


def bearer_matches(value, key: str) -> bool:
    """An `authorization` value (gRPC metadata or HTTP header) against the key; shared by both protocols."""
    if not isinstance(value, str) or not value.startswith("Bearer "):
        return False
    # Constant time: the comparison must not tell how much of a guess was right.
    return hmac.compare_digest(value[len("Bearer "):].encode(), key.encode())


def authorized(metadata, key: str) -> bool:
    return any(name == "authorization" and bearer_matches(value, key) for name, value in metadata or ())


async def _deny_unary(request, context):
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, MESSAGE)


async def _deny_stream(request, context):
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, MESSAGE)
    yield  # makes this an async generator, as server-streaming handlers are


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, key: str):
        self._key = key

    async def intercept_service(self, continuation, details):
        if details.method.startswith(HEALTH_PREFIX) or details.method in OPEN_METHODS \
                or authorized(details.invocation_metadata, self._key):
            return await continuation(details)
        handler = await continuation(details)
        if handler is None:
            return None
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _deny_stream, handler.request_deserializer, handler.response_serializer)
        if handler.stream_stream:  # reflection
            async def deny_bidi(request_iterator, context):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, MESSAGE)
                yield
            return grpc.stream_stream_rpc_method_handler(
                deny_bidi, handler.request_deserializer, handler.response_serializer)
        return grpc.unary_unary_rpc_method_handler(_deny_unary, handler.request_deserializer, handler.response_serializer)
