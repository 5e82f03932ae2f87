"""The clients' KServe v2 side (`--api kserve`): the calls the OpenVINO Model Server demo's clients make
(`ModelInfer`, `ModelStreamInfer`; one BYTES input `pre_prompt` of shape [N], length-prefixed), over our own stubs
of the same wire, so the same client and the same figures work against the OVMS demo and against this server.

KServe says less than our API: the whole call's new tokens (`token_count`), not each prompt's, nor why a prompt
ended. With one prompt the count is that prompt's; with several, a stream counts each prompt's text messages.
"""
from __future__ import annotations

import argparse
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from proto import kserve_pb2

DEFAULT_MODEL = "python_model"  # the demo's
DONE = "DONE"  # a prompt's finish reason: the call ended normally (KServe does not say why each prompt stopped)


class KServeError(Exception):
    """The server's error inside a stream (`error_message`)."""


def infer_request(args: argparse.Namespace, parameters: dict) -> kserve_pb2.ModelInferRequest:
    """The demo's request: every prompt in `pre_prompt`, our generation flags as `parameters` (our names)."""
    tensor = kserve_pb2.ModelInferRequest.InferInputTensor(name="pre_prompt", datatype="BYTES",
                                                           shape=[len(args.prompts)])
    request = kserve_pb2.ModelInferRequest(model_name=args.model_name, inputs=[tensor],
                                           raw_input_contents=[encode(args.prompts)])
    for name, value in parameters.items():
        if isinstance(value, bool):
            request.parameters[name].bool_param = value
        elif isinstance(value, int):
            request.parameters[name].int64_param = value
        elif isinstance(value, float):
            request.parameters[name].double_param = value
        else:  # stop strings: one per call over KServe's string parameter
            request.parameters[name].string_param = value
    return request


def encode(texts: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in (t.encode() for t in texts))


def decode(raw: bytes) -> list[str]:
    items, pos = [], 0
    while pos + 4 <= len(raw):
        (size,) = struct.unpack_from("<I", raw, pos)
        items.append(raw[pos + 4:pos + 4 + size].decode("utf-8", errors="replace"))
        pos += 4 + size
    return items


@dataclass
class Reply:
    """One response's outputs, read by name."""

    texts: list[str] | None  # `completion`: per prompt (one plain text for a UINT8 completion)
    token_count: int | None
    end: bool  # `end_signal`


def read(response: kserve_pb2.ModelInferResponse) -> Reply:
    raw = dict(zip((o.name for o in response.outputs), response.raw_output_contents))
    datatypes = {o.name: o.datatype for o in response.outputs}
    texts = None
    if "completion" in raw:
        plain = datatypes["completion"] != "BYTES"  # OVMS's older replies: the text as UINT8 bytes
        texts = [raw["completion"].decode("utf-8", errors="replace")] if plain else decode(raw["completion"])
    count = struct.unpack("<i", raw["token_count"][:4])[0] if "token_count" in raw else None
    return Reply(texts, count, "end_signal" in raw)


def stream(stub, request, timeout: float | None, metadata) -> tuple[object, Iterator[Reply]]:
    """The call (for cancel()) and its replies until `end_signal`; an in-stream error raises KServeError."""
    call = stub.ModelStreamInfer(iter([request]), timeout=timeout, metadata=metadata)

    def replies() -> Iterator[Reply]:
        for message in call:
            if message.error_message:
                raise KServeError(message.error_message)
            reply = read(message.infer_response)
            yield reply
            if reply.end:
                return

    return call, replies()


def parameters(args: argparse.Namespace, fields: list[str]) -> dict:
    """The generation flags the user gave, by our names (KServe parameters take them as they are)."""
    given = {name: getattr(args, name) for name in fields if getattr(args, name, None) is not None}
    stop = getattr(args, "stop", [])
    if len(stop) > 1:
        raise ValueError("--stop: KServe calls carry one stop string")
    if stop:
        given["stop"] = stop[0]
    return given
