"""The KServe v2 protocol as the OpenVINO Model Server LLM demo speaks it, without the transport: plain functions
over plain data, shared by the gRPC servicer and the REST routes.

A call holds one BYTES input `pre_prompt` with every prompt of the batch, in one of three forms the demo's
releases sent (length-prefixed elements, or one plain UTF-8 prompt); the answer is a `completion` output (one
element per prompt) and `token_count` (the call's new tokens), and a plain prompt is answered in plain text.
"""
from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from server.engine.errors import EngineError, Path, ValidationError
from server.engine.params import PARAMETERS
from server.engine.types import GenerationRequest, GivenParams
from server.engine.validation import KINDS
from server.errors import ModelNotFound

PROMPT = "pre_prompt"
COMPLETION = "completion"
TOKEN_COUNT = "token_count"
END_SIGNAL = "end_signal"
VERSION = "1"  # the one version of the one model
PLATFORM = "OpenVINO"
KIND_NAMES = {int: "an integer", float: "a number", bool: "a bool", tuple: "a string or a list of strings",
              dict: "a map of token id to number", list: "a list of token ids"}


@dataclass(frozen=True)
class Output:
    """One output tensor: its raw bytes for gRPC, its elements for REST's JSON."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes
    data: tuple = ()


@dataclass(frozen=True)
class Prompts:
    texts: tuple[str, ...]
    plain: bool  # sent as plain UTF-8 text, no length prefix (the 2023.3 and 2024.0 one-prompt clients)


# ---------------------------------------------------------------- requests

def check_model(name: str, version: str, names: Sequence[str]) -> None:
    if name not in names:
        raise ModelNotFound(f"model {name[:100]!r} is not served here; this server serves {' and '.join(map(repr, names))}")
    if version not in ("", VERSION):
        raise ModelNotFound(f"model {name!r} has no version {version[:20]!r}; it has version {VERSION}")


def find_prompt_input(names: Sequence[str]) -> int:
    """The position of `pre_prompt` among the inputs' names."""
    if PROMPT not in names:
        given = ", ".join(repr(n[:40]) for n in names) or "none"
        raise ValidationError("inputs", f"no input named {PROMPT} (given: {given}); send the prompts as one BYTES "
                                        f"input {PROMPT} of shape [N]")
    return names.index(PROMPT)


def check_tensor(datatype: str, shape: Sequence[int]) -> int:
    """The number of elements the input's shape promises."""
    if datatype != "BYTES":
        raise ValidationError(f"{PROMPT}.datatype", f"expected BYTES, got {datatype[:20]!r}")
    if not shape or any(d < 0 for d in shape):
        raise ValidationError(f"{PROMPT}.shape", f"expected a shape such as [N], got {list(shape)}")
    count = math.prod(shape)
    if count == 0:
        raise ValidationError(f"{PROMPT}.shape", f"{list(shape)} holds no prompt")
    return count


def split_elements(buffer: bytes, count: int) -> list[bytes]:
    """`count` BYTES elements, each a 4-byte little-endian length then the bytes, filling `buffer` exactly."""
    items, pos = [], 0
    for i in range(count):
        if pos + 4 > len(buffer):
            raise ValidationError(f"{PROMPT}[{i}]", f"the buffer ends before this element's 4-byte length "
                                                    f"({count} elements in the shape)")
        (size,) = struct.unpack_from("<I", buffer, pos)
        pos += 4
        if pos + size > len(buffer):
            raise ValidationError(f"{PROMPT}[{i}]", f"its length prefix says {size} bytes, but only "
                                                    f"{len(buffer) - pos} remain in the buffer")
        items.append(buffer[pos:pos + size])
        pos += size
    if pos != len(buffer):
        raise ValidationError(PROMPT, f"{len(buffer) - pos} bytes left over after the {count} elements of its shape")
    return items


def raw_prompts(buffer: bytes, count: int) -> Prompts:
    """The prompts in a raw buffer: length-prefixed elements when the buffer parses into exactly `count` of them;
    otherwise, when the shape allows it ([1], or [length of the text] as the 2023.3 client sent), one plain prompt."""
    try:
        elements = split_elements(buffer, count)
    except ValidationError:
        if count not in (1, len(buffer)):
            try:  # the 2023.3 client's shape counts characters
                plain = count == len(buffer.decode("utf-8"))
            except UnicodeDecodeError:
                plain = False
            if not plain:
                raise
        return Prompts((_text(buffer, PROMPT),), True)
    return Prompts(tuple(_text(e, f"{PROMPT}[{i}]") for i, e in enumerate(elements)), False)


def element_prompts(elements: Sequence, count: int) -> Prompts:
    """The prompts given as a list of elements (gRPC `contents.bytes_contents`, REST `data`)."""
    if len(elements) != count:
        raise ValidationError(f"{PROMPT}.shape", f"says {count} elements, but {len(elements)} were given")
    texts = []
    for i, e in enumerate(elements):
        if isinstance(e, bytes):
            e = _text(e, f"{PROMPT}[{i}]")
        elif not isinstance(e, str):
            raise ValidationError(f"{PROMPT}[{i}]", f"expected a string, got {type(e).__name__}")
        texts.append(e)
    return Prompts(tuple(texts), False)


def _text(data: bytes, field: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(field, f"not valid UTF-8 (byte {exc.start})") from None


def sampling(parameters: Mapping[str, object]) -> GivenParams:
    """The request's `parameters`, by our generation parameters' names, checked for their kinds (the engine
    checks their values)."""
    unknown = sorted(set(parameters) - set(PARAMETERS))
    if unknown:
        raise ValidationError(f"parameters.{unknown[0][:40]}",
                              f"not a generation parameter; expected one of {', '.join(PARAMETERS)}")
    given = {}
    for name, value in parameters.items():
        kind = KINDS[name]
        if kind is tuple:  # stop: one string, or a list of them
            value = (value,) if isinstance(value, str) else value
            if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) for s in value):
                raise ValidationError(f"parameters.{name}", f"expected {KIND_NAMES[kind]}")
            value = tuple(value)
        elif kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValidationError(f"parameters.{name}", f"expected {KIND_NAMES[kind]}, got {type(value).__name__} {value!r}")
        given[name] = value
    return GivenParams(**given)


def generation_request(prompts: Prompts, parameters: Mapping[str, object]) -> GenerationRequest:
    return GenerationRequest(prompts=prompts.texts, params=sampling(parameters))


# The engine's name of a path's first step -> KServe's: a prompt is an element of the pre_prompt input, a
# generation parameter a request parameter.
PATHS = {"prompts": (PROMPT,), **{name: ("parameters", name) for name in PARAMETERS}}


def kserve_path(path: Path) -> Path:
    return (*PATHS.get(path[0], path[:1]), *path[1:]) if path else path


def kserve_message(error: EngineError) -> str:
    """The error's message, with the engine's field names said as a KServe client wrote them."""
    return str(renamed(error))


def renamed(error: EngineError) -> EngineError:
    """The same error, its path in KServe's names (the status stays the error's class's)."""
    if isinstance(error, ValidationError):
        return ValidationError(kserve_path(error.path), error.message)
    return error


# ---------------------------------------------------------------- replies

def encode_elements(texts: Sequence[str]) -> bytes:
    """BYTES elements, each a 4-byte little-endian length then the UTF-8 bytes."""
    return b"".join(struct.pack("<I", len(b)) + b for b in (t.encode("utf-8") for t in texts))


def completion(texts: Sequence[str], plain: bool) -> Output:
    """The `completion` output: BYTES [N]; for a plain-text prompt, its text as UINT8 [length], as OVMS sent it."""
    if plain:
        raw = "".join(texts).encode("utf-8")
        return Output(COMPLETION, "UINT8", (len(raw),), raw, tuple(raw))
    return Output(COMPLETION, "BYTES", (len(texts),), encode_elements(texts), tuple(texts))


def token_count(tokens: int) -> Output:
    return Output(TOKEN_COUNT, "INT32", (1,), struct.pack("<i", tokens), (tokens,))


def end_signal() -> Output:
    return Output(END_SIGNAL, "UINT8", (0,), b"", ())


def whole_reply(texts: Sequence[str], tokens: int, plain: bool) -> list[Output]:
    """A unary answer: `completion` first (the 2024.0 client reads the first raw output), then `token_count`;
    a plain-text prompt gets its completion alone, as the clients that send one expect."""
    return [completion(texts, True)] if plain else [completion(texts, False), token_count(tokens)]


def delta_reply(count: int, index: int, text: str, plain: bool) -> list[Output]:
    """A stream message: prompt `index`'s new text, every other prompt's element empty."""
    return [completion([text if i == index else "" for i in range(count)], plain)]


def final_replies(count: int, tokens: int, plain: bool) -> list[list[Output]]:
    """The stream's last messages. The token count rides with empty completions (every 2024.x client takes that;
    alone it breaks the 2024.0 multi-prompt client), then `end_signal` ends the clients' wait. The plain-text
    clients know only `completion` and `end_signal`."""
    last = [[end_signal()]]
    return last if plain else [[completion([""] * count, False), token_count(tokens)], *last]


def model_metadata(name: str) -> dict:
    tensor = lambda n, datatype, shape: {"name": n, "datatype": datatype, "shape": shape}  # noqa: E731
    return {"name": name, "versions": [VERSION], "platform": PLATFORM,
            "inputs": [tensor(PROMPT, "BYTES", [-1])],
            "outputs": [tensor(COMPLETION, "BYTES", [-1]), tensor(TOKEN_COUNT, "INT32", [1])]}


def server_metadata() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("llm-grpc-server")
    except PackageNotFoundError:  # run from a checkout that was not installed
        ours = "unknown"
    return {"name": "llm-grpc-server", "version": ours, "extensions": []}
