"""OpenAI's structured output and tool calling <-> the engine's Constraint, Tool and ToolCall.

`response_format` becomes a grammar constraint; `tools` go into the prompt (server/engine/tools.py writes them);
`tool_choice` "required" or a named function constrains the answer to one call whose arguments match that
function's parameters; "none" leaves the tools out of the prompt. The answer's calls are read back into
`message.tool_calls` (`answer`), or, streamed, held back from the content as they start (`CallReader`). The
bodies' shapes are checked by schema.py's models; what comes here is already typed.
"""
from __future__ import annotations

import json
import uuid

from server.engine.errors import ValidationError
from server.engine.tools import OPEN, forced_grammar, parse_calls
from server.engine.types import Constraint, Tool, ToolCall

# The engine's names for what these fields become -> the OpenAI field (errors.PATHS completes the paths).
ENGINE_FIELDS = {"json_schema": "response_format.json_schema.schema", "json_object": "response_format",
                 "grammar": "tool_choice"}
EMPTY_PARAMETERS = '{"type": "object", "properties": {}}'


def response_format(value) -> Constraint | None:
    """A ResponseFormat: text (none), any JSON object, or JSON that follows `json_schema.schema`."""
    if value is None or value.type == "text":
        return None
    if value.type == "json_object":
        return Constraint(json_object=True)
    return Constraint(json_schema=json.dumps(value.json_schema.schema_))


def tools(specs, choice) -> tuple[tuple[Tool, ...], str | None]:
    """(the tools offered, the choice: None for no tools or "none", "auto", "required", or the function a call must
    name) from `tools` (ToolSpecs) and `tool_choice`."""
    if specs is None:
        if choice not in (None, "none"):
            raise ValidationError("tool_choice", "needs tools")
        return (), None
    offered = tuple(Tool(t.function.name, t.function.description,
                         json.dumps(t.function.parameters) if t.function.parameters is not None else EMPTY_PARAMETERS)
                    for t in specs)
    if choice == "none":
        return (), None
    if choice is None or isinstance(choice, str):
        return offered, choice or "auto"
    if choice.function.name not in {t.name for t in offered}:
        raise ValidationError("tool_choice.function.name", f"{choice.function.name[:64]!r} is not one of the tools")
    return offered, choice.function.name


def forced(offered: tuple[Tool, ...], choice: str | None) -> Constraint | None:
    """The grammar of a call the choice forces ("required": any tool's; a name: that function's), else None."""
    if choice in (None, "auto"):
        return None
    return Constraint(grammar=forced_grammar(offered, None if choice == "required" else choice))


def message_calls(items) -> tuple[ToolCall, ...]:
    """An assistant message's `tool_calls` (ToolCallItems) as the engine's."""
    return tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in items or ())


def answer(text: str) -> tuple[str | None, list[dict]]:
    """A whole answer's content (None when it is only calls) and its calls in OpenAI's shape."""
    content, calls = parse_calls(text)
    return (content or None) if calls else text, [_call(name, arguments) for name, arguments in calls]


def _call(name: str, arguments: str, index: int | None = None) -> dict:
    call = {"id": "call_" + uuid.uuid4().hex[:24], "type": "function", "function": {"name": name, "arguments": arguments}}
    return call if index is None else {"index": index, **call}


class CallReader:
    """One streamed choice: content goes out as it comes until a call starts (text that may be the start of one is
    held back); from there everything is held, and read as calls at the end."""

    def __init__(self):
        self.held = ""
        self.calling = False

    def feed(self, text: str) -> str:
        """The text that may go out now."""
        self.held += text
        if not self.calling:
            at = self.held.find(OPEN)
            if at >= 0:
                self.calling = True
                out, self.held = self.held[:at], self.held[at:]
                return out
            keep = next((n for n in range(min(len(OPEN) - 1, len(self.held)), 0, -1)
                         if OPEN.startswith(self.held[-n:])), 0)
            out, self.held = self.held[:len(self.held) - keep], self.held[len(self.held) - keep:]
            return out
        return ""

    def finish(self) -> tuple[str, list[dict]]:
        """(the content still held, the calls as OpenAI's streamed tool_calls deltas)."""
        content, calls = parse_calls(self.held) if self.calling else (self.held, [])
        return content, [_call(name, arguments, k) for k, (name, arguments) in enumerate(calls)]
