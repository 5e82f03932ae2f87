"""OpenAI's structured output and tool calling <-> the engine's Constraint, Tool and ToolCall.

`response_format` becomes a grammar constraint; `tools` go into the prompt (server/engine/tools.py writes them);
`tool_choice` "required" or a named function constrains the answer to one call whose arguments match that
function's parameters; "none" leaves the tools out of the prompt. The answer's calls are read back, in the model
family's format (server/engine/tool_parsers.py), into `message.tool_calls` (`answer`), or, streamed, as deltas
(`CallReader`). The bodies' shapes are checked by schema.py's models; what comes here is already typed.
"""
from __future__ import annotations

import json

from server.engine.errors import ValidationError
from server.engine.tool_parsers import Call, ToolParser
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


def forced(offered: tuple[Tool, ...], choice: str | None, parser: ToolParser) -> Constraint | None:
    """The grammar of a call in the model's format the choice forces ("required": any tool's; a name: that
    function's), else None."""
    if choice in (None, "auto"):
        return None
    return Constraint(grammar=parser.grammar(offered, None if choice == "required" else choice))


def message_calls(items) -> tuple[ToolCall, ...]:
    """An assistant message's `tool_calls` (ToolCallItems) as the engine's."""
    return tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in items or ())


def answer(text: str, parser: ToolParser) -> tuple[str | None, list[dict]]:
    """A whole answer's content (None when it is only calls) and its calls in OpenAI's shape."""
    content, calls = parser.parse(text)
    return (content.strip() or None) if calls else text, [_call(parser.call_id(), c.name, c.arguments) for c in calls]


def _call(id_: str, name: str, arguments: str) -> dict:
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}


class CallReader:
    """One streamed choice: the text generated so far is read again at every piece (`parser.parse`), and what grew
    goes out: content until a call starts (text that may open one is held back), then each call as OpenAI streams
    it, as vLLM does: its id and name once the name is written, then its arguments as they are written."""

    def __init__(self, parser: ToolParser):
        self.parser = parser
        self.text = ""
        self.content_sent = 0
        self.calls_sent: list[int] = []  # per call: how much of its arguments went out

    @property
    def called(self) -> bool:
        return bool(self.calls_sent)

    def feed(self, text: str) -> tuple[str, list[dict]]:
        """(the content that may go out now, OpenAI's tool_calls deltas)."""
        self.text += text
        return self._grown(*self.parser.parse(self.text, final=False))

    def finish(self, text: str = "") -> tuple[str, list[dict]]:
        """The rest, once the answer is whole."""
        self.text += text
        return self._grown(*self.parser.parse(self.text))

    def _grown(self, content: str, calls: list[Call]) -> tuple[str, list[dict]]:
        out, self.content_sent = content[self.content_sent:], max(self.content_sent, len(content))
        deltas = []
        for k, call in enumerate(calls):
            if call.name is None:
                break
            delta = {"index": k}
            if k == len(self.calls_sent):
                self.calls_sent.append(0)
                delta.update(_call(self.parser.call_id(), call.name, ""))
            grown = call.arguments[self.calls_sent[k]:]
            if grown:
                delta.setdefault("function", {})["arguments"] = grown
                self.calls_sent[k] = len(call.arguments)
            if len(delta) > 1:
                deltas.append(delta)
        return out, deltas
