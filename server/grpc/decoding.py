"""Request bytes that are not a valid message: refused with INVALID_ARGUMENT naming the field, not UNKNOWN."""
from __future__ import annotations

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError


class Undecodable:
    """Stands in for a request whose bytes are not a valid message (the handler refuses it)."""

    def __init__(self, detail: str):
        self.detail = detail


def lenient_deserializer(deserialize, descriptor):
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


async def refuse_undecodable(request, context) -> None:
    if isinstance(request, Undecodable):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.detail)
