"""Reasoning read apart from the answer: the `<think>…</think>` part a reasoning model writes before its answer.

Qwen3, QwQ, DeepSeek-R1 distills, SmolLM3 and Granite 3.2+ think between `<think>` and `</think>`; a template
whose generation prompt already opens the thinking (DeepSeek-R1's, Qwen3-Thinking's) leaves `<think>` out of the
answer, so whether the prompt ends inside a thought (`opened`) decides how an answer without `<think>` reads:
inside one, everything before `</think>` is reasoning (all of it when `</think>` never comes, as vLLM's
deepseek_r1 parser reads a thought cut short); outside one (Qwen3 with `enable_thinking: false`), it is all
content, as vLLM's qwen3 parser reads it. Granite 3.3 wraps its answer in `<response>…</response>`: the tags go.

`parse(text, opened, final)` reads the text generated so far; streamed, it is called again on the longer text and
the caller sends what grew, so reasoning and content stream as they are written.
"""
from __future__ import annotations

START, END = "<think>", "</think>"
RESPONSE = ("<response>", "</response>")
# vLLM's names for what this module reads (one reader serves them all), and "none": leave the thought in the content.
PARSERS = ("deepseek_r1", "qwen3", "granite", "none")


def detect(template: str | None, name: str | None = None) -> bool:
    """Whether answers are read apart: as parser `name` says (a servable or flag may name one), else whether the
    chat template's model thinks in `<think>` tags."""
    if name is not None:
        return name != "none"
    return bool(template) and END in template


def opened(prompt: str) -> bool:
    """Whether a rendered prompt ends inside a thought (its generation prompt opened `<think>`)."""
    return prompt.rfind(START) > prompt.rfind(END)


def parse(text: str, opened: bool, final: bool = True) -> tuple[str, str]:
    """(reasoning, content) of an answer. Not final (streaming): only what can go out now; the parts only grow
    as the text does (text that may still turn out to be a tag is held back)."""
    body = text.lstrip()
    if not opened and not body.startswith(START):
        if not final and START.startswith(body):  # maybe `<think>` still being written
            return "", ""
        return "", _content(text, final)
    if body.startswith(START):
        body = body[len(START):]
    thought, closed, after = body.partition(END)
    if not closed:
        if final:
            return thought.strip(), ""
        return _before_tag(thought, END).strip(), ""
    return thought.strip(), _content(after.lstrip(), final)


def _content(text: str, final: bool) -> str:
    """The answer, without Granite's `<response>` tags when it opens with one."""
    opening, closing = RESPONSE
    head = text.lstrip()
    if not head.startswith(opening):
        return "" if not final and head and opening.startswith(head) else text
    inside, closed, _ = head[len(opening):].partition(closing)
    return inside if closed or final else _before_tag(inside, closing)


def _before_tag(text: str, tag: str) -> str:
    """`text` without an end that may be the start of `tag`, nor the whitespace before it."""
    held = max((n for n in range(1, min(len(tag), len(text)) + 1) if text.endswith(tag[:n])), default=0)
    return text[:len(text) - held].rstrip()
