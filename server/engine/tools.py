"""Tool calls in the prompt and in the answer: how tools and calls are written for the model, and read back.

A chat template that takes `tools` (it names the variable) gets them, and the conversation's calls and results,
as transformers passes them. Any other template gets the default format below (Hermes' and Qwen's, which many
models were trained on): the tools as JSON lines inside <tools></tools> in the system message, each call as a
JSON object {"name", "arguments"} inside <tool_call></tool_call>, each result inside <tool_response> in a user
message. The answer is read back by the family's parser (server/engine/tool_parsers.py), which for these
templates is Hermes'.
"""
from __future__ import annotations

import json
import re

from server.engine.types import Message, Tool

OPEN, CLOSE = "<tool_call>", "</tool_call>"
SYSTEM = ("You may call one or more functions to assist with the user query. You are provided with function "
          "signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\nFor each function call, return "
          "a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
          '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>')


def takes_tools(template: str | None) -> bool:
    return bool(template) and re.search(r"\btools\b", template) is not None


def openai_tool(tool: Tool) -> dict:
    function = {"name": tool.name, "parameters": json.loads(tool.parameters)}
    if tool.description is not None:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def template_messages(messages: list[Message], call_id=lambda id_: id_) -> list[dict]:
    """Messages as a template that takes tools reads them (the arguments of a call as an object; each call's id as
    `call_id` makes it fit the template)."""
    out = []
    for m in messages:
        d = {"role": m.role, "content": m.content}
        if m.tool_calls:
            d["tool_calls"] = [{"id": call_id(c.id), "type": "function",
                                "function": {"name": c.name, "arguments": json.loads(c.arguments)}}
                               for c in m.tool_calls]
        if m.tool_call_id is not None:
            d["tool_call_id"] = call_id(m.tool_call_id)
        out.append(d)
    return out


def default_messages(messages: list[Message], tools: tuple[Tool, ...]) -> list[dict]:
    """Messages in the default format, for a template that knows only role and content."""
    out = []
    for m in messages:
        if m.role == "tool":
            out.append({"role": "user", "content": f"<tool_response>\n{m.content}\n</tool_response>"})
            continue
        calls = [f"{OPEN}\n{json.dumps({'name': c.name, 'arguments': json.loads(c.arguments)})}\n{CLOSE}"
                 for c in m.tool_calls]
        out.append({"role": m.role, "content": "\n".join(([m.content] if m.content else []) + calls)})
    if tools:
        described = SYSTEM.format(tools="\n".join(json.dumps(openai_tool(t)) for t in tools))
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{described}"}
        else:
            out.insert(0, {"role": "system", "content": described})
    return out
