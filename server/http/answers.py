"""A chat answer's text as OpenAI's message fields: reasoning, content and tool calls, whole or streamed.

Reasoning (the `<think>` part, server/engine/reasoning.py) goes in `reasoning`, as vLLM names it, and in
`reasoning_content`, as DeepSeek's API and older clients read it; the calls in the rest are read in the model
family's format (server/http/tools.py). A model whose template does not think, asked without tools, has its text
as content, as before.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from server.engine import reasoning
from server.engine.tool_parsers import ToolParser
from server.http import tools


@dataclass(frozen=True)
class AnswerFormat:
    """How a call's answers read: `tools` the parser of its calls (None: no tools offered); `thinking` None when
    the model does not think in tags, else whether the prompt already opened a thought."""

    tools: ToolParser | None = None
    thinking: bool | None = None

    @property
    def plain(self) -> bool:
        return self.tools is None and self.thinking is None


@dataclass
class Piece:
    """What an answer adds: content, reasoning and OpenAI's tool_calls (deltas when streamed)."""

    content: str = ""
    reasoning: str = ""
    tool_calls: list[dict] = field(default_factory=list)


def whole(form: AnswerFormat, text: str) -> Piece:
    """A whole answer's parts (content stripped around calls)."""
    thought, content = reasoning.parse(text, form.thinking) if form.thinking is not None else ("", text)
    if form.tools is None:
        return Piece(content, thought)
    content, calls = tools.answer(content, form.tools)
    return Piece(content or "", thought, calls)


def message_fields(piece: Piece, form: AnswerFormat) -> dict:
    """A message's reasoning fields (none for a model that does not think)."""
    if form.thinking is None:
        return {}
    return {"reasoning": piece.reasoning or None, "reasoning_content": piece.reasoning or None}


def delta_fields(text: str) -> dict:
    """A stream delta's reasoning fields."""
    return {"reasoning": text, "reasoning_content": text} if text else {}


class Reader:
    """One streamed choice: the text so far is read again at every piece and what grew goes out."""

    def __init__(self, form: AnswerFormat):
        self.form = form
        self.text = ""
        self.sent = [0, 0]  # reasoning and content gone out
        self.calls = tools.CallReader(form.tools) if form.tools is not None else None

    @property
    def called(self) -> bool:
        return self.calls is not None and self.calls.called

    def feed(self, text: str) -> Piece:
        self.text += text
        return self._grown(final=False)

    def finish(self) -> Piece:
        return self._grown(final=True)

    def _grown(self, final: bool) -> Piece:
        if self.form.thinking is None:
            thought, content = "", self.text
        else:
            thought, content = reasoning.parse(self.text, self.form.thinking, final)
        grown = [thought[self.sent[0]:], content[self.sent[1]:]]
        self.sent = [max(self.sent[0], len(thought)), max(self.sent[1], len(content))]
        if self.calls is None:
            return Piece(grown[1], grown[0])
        content, calls = self.calls.finish(grown[1]) if final else self.calls.feed(grown[1])
        return Piece(content, grown[0], calls)
