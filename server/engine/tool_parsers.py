"""Tool calls as each model family writes them, read back from its answer; chosen from the chat template.

One interface (`ToolParser`), one class per format, as vLLM's `--tool-call-parser` names them:
- `hermes`: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (Qwen2.5, Qwen3, Hermes, SmolLM3, and the
  default format server/engine/tools.py writes for templates that know no tools);
- `llama3_json`: an answer that is `{"name": ..., "parameters": {...}}` (several separated by `;`), after an
  optional `<|python_tag|>` (Llama 3.1 / 3.2 / 3.3);
- `mistral`: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`, or `[TOOL_CALLS]name[ARGS]{...}` (newer
  Mistral tokenizers);
- `granite`: `<|tool_call|>[{"name": ..., "arguments": {...}}, ...]` (Granite 3.x);
- `phi4_mini_json`: `functools[{"name": ..., "arguments": {...}}, ...]` (Phi-4-mini, firefunction).
Where the format's marker is a special token the detokenizer drops (`<|python_tag|>`, `[TOOL_CALLS]`,
`<|tool_call|>`), an answer that opens with the bare call list is read as calls too, as vLLM's parsers do.

`parse(text, final)` reads the text generated so far; streamed, it is called again on the longer text and the
caller sends what grew (server/http/tools.py), so arguments stream as the model writes them. A call's arguments
are the JSON text the model wrote, so streamed deltas add up to exactly the whole answer's arguments.
"""
from __future__ import annotations

import json
import re
import secrets
import string
import uuid
from dataclasses import dataclass

from server.engine.grammar import JSON_OPTIONS
from server.engine.tools import CLOSE, OPEN, openai_tool, takes_tools, template_messages
from server.engine.types import Message, Tool

DECODER = json.JSONDecoder()
SPACE = re.compile(r"\s*")


@dataclass(frozen=True)
class Call:
    """A call read from an answer: `name` None until it is written; `arguments` the JSON text written so far
    (whole once `done`)."""

    name: str | None
    arguments: str
    done: bool


class ToolParser:
    name = ""
    markers: tuple[str, ...] = ()  # where the calls start; the text before is content
    bare = ""  # the first character of a call list that may open the answer without its marker
    between = re.compile(r"[\s,;\[\]]*")  # what may stand between and around the calls
    arguments_key = "arguments"  # the key a forced call writes its arguments under
    wrap = ("", "")  # what a forced call is written between

    def parse(self, text: str, final: bool = True) -> tuple[str, list[Call]]:
        """(content, calls) of an answer. Final: every call whole, else none (the answer is then plain text); the
        content is the text around the calls, unstripped (it continues what was streamed).
        Not final (streaming): the content that can go out now (not text that may still open a call) and the calls
        so far, the last one possibly partial."""
        start = self._start(text)
        if start is None:
            return (text, []) if final else (text[:len(text) - self._held(text)], [])
        content, pos = text[:start[0]], start[1]
        calls: list[Call] = []
        while True:
            pos = self.between.match(text, pos).end()
            read = self._call(text, pos) if pos < len(text) else None
            if read is None:
                break
            call, pos = read
            calls.append(call)
            if pos is None:
                break
        if not calls and pos < len(text):  # what follows the marker is no call: plain text
            return (text, []) if final else (text[:len(text) - self._held(text)], [])
        if not final:
            return content, calls
        if not calls or not all(call.done and self._valid(call) for call in calls):
            return text, []
        return content + text[pos:], calls

    def _start(self, text: str) -> tuple[int, int] | None:
        """(end of the content, where the calls begin), or None when no call has begun."""
        found = [(at, at + len(m)) for m in self.markers if (at := text.find(m)) >= 0]
        if found:
            return min(found)
        if self.bare and text.lstrip().startswith(self.bare):
            at = len(text) - len(text.lstrip())
            return at, at
        return None

    def _held(self, text: str) -> int:
        """How much of the end of a text without calls may still open one (held back from streamed content)."""
        if self.bare and not text.strip():
            return len(text)
        return max((n for m in self.markers for n in range(1, min(len(m), len(text) + 1))
                    if text.endswith(m[:n])), default=0)

    def _call(self, text: str, pos: int) -> tuple[Call, int | None] | None:
        """The call written at `pos` and where it ends (None: not yet), or None when no call is there."""
        if text[pos] != "{":
            return None
        fields, end = _object(text, pos)
        name = fields.get("name", ("", False))
        name = json.loads(name[0]) if name[1] else None
        arguments = fields.get("arguments", fields.get("parameters"))
        written = arguments[0] if arguments is not None else ("{}" if end is not None else "")
        return Call(name if isinstance(name, str) else None, written, end is not None), end

    @staticmethod
    def _valid(call: Call) -> bool:
        try:
            return isinstance(call.name, str) and isinstance(json.loads(call.arguments), dict)
        except ValueError:
            return False

    def call_id(self) -> str:
        return "call_" + uuid.uuid4().hex[:24]

    def template_inputs(self, messages: list[Message], tools: tuple[Tool, ...]) -> tuple[list[dict], dict]:
        """(messages, the template's other inputs) for a chat template that takes tools."""
        return template_messages(messages, self.history_id), {"tools": [openai_tool(t) for t in tools]} if tools else {}

    @staticmethod
    def history_id(id_: str) -> str:
        """A call id of the conversation as the template takes it."""
        return id_

    def grammar(self, tools: tuple[Tool, ...], name: str | None = None) -> str:
        """A Lark grammar for one call in this format, of function `name` (None: any of `tools`), whose arguments
        follow that function's parameters."""
        chosen = [t for t in tools if name is None or t.name == name]
        key = self.arguments_key
        schema = {"anyOf": [{"type": "object", "additionalProperties": False, "required": ["name", key],
                             "properties": {"name": {"const": t.name}, key: json.loads(t.parameters)}}
                            for t in chosen], "x-guidance": JSON_OPTIONS}  # as other JSON is written
        before, after = (json.dumps(w) if w else "" for w in self.wrap)
        return f"start: {' '.join(filter(None, (before, 'call', after)))}\ncall: %json {json.dumps(schema)}"


class Hermes(ToolParser):
    name = "hermes"
    markers = (OPEN,)
    between = re.compile(r"(?:\s|" + re.escape(OPEN) + "|" + re.escape(CLOSE) + ")*")
    wrap = (OPEN + "\n", "\n" + CLOSE)


class Llama3Json(ToolParser):
    name = "llama3_json"
    markers = ("<|python_tag|>",)
    bare = "{"
    arguments_key = "parameters"


class Mistral(ToolParser):
    name = "mistral"
    markers = ("[TOOL_CALLS]",)
    bare = "["
    between = re.compile(r"(?:\[TOOL_CALLS\]|[\s,\[\]])*")
    wrap = ("[", "]")
    NAME = re.compile(r"[A-Za-z0-9_.-]+")
    NAMED = re.compile(r"([A-Za-z0-9_.-]+)\[ARGS\]")  # newer tokenizers: name[ARGS]{arguments}

    def _call(self, text: str, pos: int):
        named = self.NAMED.match(text, pos)
        if named is None:
            written = self.NAME.match(text, pos)
            if written and "[ARGS]".startswith(text[written.end():]):  # name[ARGS] still being written
                return Call(None, "", False), None
            return super()._call(text, pos)
        at = named.end()
        if at == len(text) or text[at] != "{":
            return (Call(named[1], "", False), None) if at == len(text) else None
        try:
            _, end = DECODER.raw_decode(text, at)
        except ValueError:
            return Call(named[1], text[at:], False), None
        return Call(named[1], text[at:end], True), end

    def call_id(self) -> str:
        # Mistral's templates refuse any id but 9 letters and digits.
        return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(9))

    @staticmethod
    def history_id(id_: str) -> str:
        return id_[-9:]  # ids from elsewhere (another model's, a client's) cut to 9 characters, as vLLM does


class Granite(ToolParser):
    name = "granite"
    markers = ("<|tool_call|>",)
    bare = "["
    wrap = ("[", "]")


class Phi4MiniJson(ToolParser):
    name = "phi4_mini_json"
    markers = ("functools[",)
    wrap = ("functools[", "]")

    def template_inputs(self, messages, tools):
        # Phi-4-mini's template reads the functions as JSON text in the system message's `tools`.
        out, extra = super().template_inputs(messages, tools)
        if tools:
            listed = json.dumps([openai_tool(t)["function"] for t in tools], ensure_ascii=False)
            if not (out and out[0]["role"] == "system"):
                out.insert(0, {"role": "system", "content": ""})
            out[0] = {**out[0], "tools": listed}
        return out, extra


PARSERS = {p.name: p for p in (Hermes, Llama3Json, Mistral, Granite, Phi4MiniJson)}


def detect(template: str | None) -> str:
    """The tool-call format a chat template teaches, by the markers it writes (as llama.cpp's server and OVMS
    tell them apart); `hermes` for a template that knows no tools, which gets the default format."""
    t = template or ""
    if not takes_tools(t) or OPEN in t:
        return "hermes"
    if "[TOOL_CALLS]" in t:
        return "mistral"
    if "<|tool_call|>" in t and "<|start_of_role|>" in t:
        return "granite"
    if "functools" in t or "<|tool|>" in t:
        return "phi4_mini_json"
    if "<|start_header_id|>" in t and ("ipython" in t or "<|python_tag|>" in t):
        return "llama3_json"
    return "hermes"


def for_template(template: str | None, name: str | None = None) -> ToolParser:
    """The parser named (a servable or flag may name one), else the one the template teaches."""
    return PARSERS[name or detect(template)]()


def _object(text: str, pos: int) -> tuple[dict[str, tuple[str, bool]], int | None]:
    """The top-level fields of the JSON object at `pos` as far as written: key -> (its value's text, whole), and
    where the object ends (None: not yet, or not valid JSON)."""
    fields: dict[str, tuple[str, bool]] = {}
    pos += 1
    while True:
        pos = SPACE.match(text, pos).end()
        if pos >= len(text):
            return fields, None
        if text[pos] == "}":
            return fields, pos + 1
        if text[pos] == ",":
            pos += 1
            continue
        try:
            key, pos = DECODER.raw_decode(text, pos)
        except ValueError:
            return fields, None
        pos = SPACE.match(text, pos).end()
        if pos >= len(text) or text[pos] != ":" or not isinstance(key, str):
            return fields, None
        pos = SPACE.match(text, pos + 1).end()
        try:
            _, end = DECODER.raw_decode(text, pos)
        except ValueError:
            fields[key] = (text[pos:], False)
            return fields, None
        fields[key] = (text[pos:end], True)
        pos = end
