"""Errors end gRPC calls with their status (server/errors.py's table), here, in one place."""
from __future__ import annotations

import logging

import grpc
from google.protobuf import descriptor_pool

from server.engine.errors import EngineError
from server.errors import status_of
from server.grpc.convert import error_message
from server.grpc.decoding import lenient_deserializer, refuse_undecodable

log = logging.getLogger(__name__)


def status_for(error: EngineError) -> grpc.StatusCode:
    return status_of(error).grpc


async def _abort(context, error: Exception):
    if isinstance(error, EngineError):
        await context.abort(status_for(error), error_message(error))
    log.exception("unexpected error in a call", exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}")


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Wraps unary and server-streaming handlers so an exception ends the call with the right status."""

    def __init__(self, service: str):
        self.prefix = f"/{service}/"  # health and reflection keep their own handling
        # method name -> request descriptor, to name the field when a request cannot be decoded
        self.request_types = {m.name: m.input_type for m in descriptor_pool.Default().FindServiceByName(service).methods}

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or handler.request_streaming or not details.method.startswith(self.prefix):
            return handler
        deserializer = handler.request_deserializer
        descriptor = self.request_types.get(details.method[len(self.prefix):])
        if deserializer is not None and descriptor is not None:
            deserializer = lenient_deserializer(deserializer, descriptor)
        if handler.unary_unary:
            inner = handler.unary_unary

            async def unary(request, context):
                await refuse_undecodable(request, context)
                try:
                    return await inner(request, context)
                except Exception as error:  # noqa: BLE001 - every error becomes a status
                    await _abort(context, error)

            return grpc.unary_unary_rpc_method_handler(unary, deserializer, handler.response_serializer)
        if handler.unary_stream:
            inner_stream = handler.unary_stream

            async def stream(request, context):
                await refuse_undecodable(request, context)
                try:
                    async for response in inner_stream(request, context):
                        yield response
                except Exception as error:  # noqa: BLE001
                    await _abort(context, error)

            return grpc.unary_stream_rpc_method_handler(stream, deserializer, handler.response_serializer)
        return handler
