"""Errors the engine raises; the transport maps each to one status code."""


class EngineError(Exception):
    """Base class for errors that reach a client."""


class ValidationError(EngineError):
    """A request field is invalid. `field` names it, so the client knows what to fix."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


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
