"""Errors the engine raises; the transport maps each to one status code."""
from __future__ import annotations

import re

Path = tuple[str | int, ...]  # a field's place in a request: ("conversations", 0, "messages", 1, "role")
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


class EngineError(Exception):
    """Base class for errors that reach a client."""


class ValidationError(EngineError):
    """A request field is invalid: its `path` in the engine's names and what is wrong with it, as data. Each
    front door says the path in its own names (its table of names: server/http/errors.py, kserve/protocol.py,
    grpc/interceptor.py); `str()` is the engine's "field: message"."""

    def __init__(self, path: Path | str, message: str):
        self.path = parse_path(path) if isinstance(path, str) else tuple(path)
        self.message = message
        super().__init__(f"{self.field}: {message}")

    @property
    def field(self) -> str:
        """The path written as a client would: `conversations[0].messages[1].role`."""
        return format_path(self.path)


def parse_path(text: str) -> Path:
    """`a.b[1].c` -> ("a", "b", 1, "c")."""
    return tuple(int(index) if index else name for name, index in _STEP.findall(text))


def format_path(path: Path) -> str:
    """("a", "b", 1, "c") -> `a.b[1].c`."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


class QueueFull(EngineError):
    """The waiting queue holds its maximum; the client should retry later."""


class NotReady(EngineError):
    """The engine is loading or draining."""


class GenerationFailed(EngineError):
    """The engine failed this one request (the server goes on)."""


def one_line(exc: BaseException) -> str:
    """An exception as one line. OpenVINO's messages are a stack of "Exception from <file>:<line>:" and
    "Check '...' failed at <file>" lines around the sentence that says what was wrong: keep that sentence."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    said = [line for line in lines if not line.startswith(("Exception from ", "Check '"))]
    return (said or lines or [type(exc).__name__])[-1]
