"""Engine errors become gRPC statuses here, in one place."""
from __future__ import annotations

import logging

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError

from server.engine.errors import EngineError, GenerationFailed, NotReady, QueueFull, ValidationError

log = logging.getLogger(__name__)

STATUS = {
    ValidationError: grpc.StatusCode.INVALID_ARGUMENT,
    QueueFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    NotReady: grpc.StatusCode.UNAVAILABLE,
    GenerationFailed: grpc.StatusCode.INTERNAL,
}


def status_for(error: EngineError) -> grpc.StatusCode:
    return next((code for kind, code in STATUS.items() if isinstance(error, kind)), grpc.StatusCode.INTERNAL)


async def _abort(context, error: Exception):
    if isinstance(error, EngineError):
        await context.abort(status_for(error), str(error))
    log.exception("unexpected error in a call", exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}")


class Undecodable:
    """Stands in for a request whose bytes are not a valid message (the handler refuses it)."""

    def __init__(self, detail: str):
        self.detail = detail


def _lenient(deserialize, descriptor):
    """A deserializer that hands back Undecodable instead of raising (grpc would answer UNKNOWN)."""

    def run(data: bytes):
        try:
            return deserialize(data)
        except DecodeError as error:
            field = bad_utf8_field(data, descriptor)
            return Undecodable(f"{field}: not valid UTF-8" if field
                               else f"request: not a valid {descriptor.full_name} message ({error})")

    return run


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos
        if shift > 63:
            raise ValueError("varint too long")


def bad_utf8_field(data: bytes, descriptor, path: str = "") -> str | None:
    """The path of the first string field holding invalid UTF-8 (e.g. `conversations[0].messages[1].content`)."""
    seen: dict[int, int] = {}
    pos = 0
    try:
        while pos < len(data):
            key, pos = _varint(data, pos)
            number, wire = key >> 3, key & 7
            if wire == 0:
                _, pos = _varint(data, pos)
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
            elif wire == 2:
                size, pos = _varint(data, pos)
                chunk, pos = data[pos:pos + size], pos + size
                field = descriptor.fields_by_number.get(number)
                if field is None:
                    continue
                seen[number] = index = seen.get(number, -1) + 1
                name = path + field.name + (f"[{index}]" if field.is_repeated else "")
                if field.type == FieldDescriptor.TYPE_STRING:
                    try:
                        chunk.decode("utf-8")
                    except UnicodeDecodeError:
                        return name
                elif field.type == FieldDescriptor.TYPE_MESSAGE:
                    found = bad_utf8_field(chunk, field.message_type, name + ".")
                    if found:
                        return found
            else:
                return None
    except (IndexError, ValueError):
        return None
    return None


async def _refuse_undecodable(request, context) -> None:
    if isinstance(request, Undecodable):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.detail)


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
            deserializer = _lenient(deserializer, descriptor)
        if handler.unary_unary:
            inner = handler.unary_unary

            async def unary(request, context):
                await _refuse_undecodable(request, context)
                try:
                    return await inner(request, context)
                except Exception as error:  # noqa: BLE001 - every error becomes a status
                    await _abort(context, error)

            return grpc.unary_unary_rpc_method_handler(unary, deserializer, handler.response_serializer)
        if handler.unary_stream:
            inner_stream = handler.unary_stream

            async def stream(request, context):
                await _refuse_undecodable(request, context)
                try:
                    async for response in inner_stream(request, context):
                        yield response
                except Exception as error:  # noqa: BLE001
                    await _abort(context, error)

            return grpc.unary_stream_rpc_method_handler(stream, deserializer, handler.response_serializer)
        return handler
