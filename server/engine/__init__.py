"""The engine: loads the model, schedules requests into batches and runs them. No gRPC in here."""
from server.engine.engine import Engine, RequestHandle
from server.engine.errors import EngineError, QueueFull, ValidationError
from server.engine.params import GenerationDefaults, Limits, SchedulerConfig
from server.engine.types import (
    Failed,
    FinishReason,
    Finished,
    GenerationRequest,
    Message,
    SamplingParams,
    TextDelta,
)

__all__ = [
    "Engine", "RequestHandle", "EngineError", "QueueFull", "ValidationError", "GenerationDefaults",
    "Limits", "SchedulerConfig", "Failed", "FinishReason", "Finished", "GenerationRequest", "Message",
    "SamplingParams", "TextDelta",
]
