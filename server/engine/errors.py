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
