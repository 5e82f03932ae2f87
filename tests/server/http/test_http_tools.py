"""Structured output and tool calls through the official `openai` client, against the real default model:
response_format, tools with auto / required / a named function, streamed tool-call deltas, a tool result fed back."""
from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from server.engine.tool_parsers import Hermes
from server.http.tools import CallReader
from tests.server.http.test_http_api import MODEL, user

ORDER = {"type": "object", "additionalProperties": False, "required": ["customer", "items", "priority"],
         "properties": {"customer": {"type": "object", "additionalProperties": False, "required": ["name", "city"],
                                     "properties": {"name": {"type": "string", "maxLength": 16},
                                                    "city": {"enum": ["Paris", "Rome", "Tokyo"]}}},
                        "items": {"type": "array", "minItems": 1, "maxItems": 2,
                                  "items": {"type": "string", "maxLength": 12}},
                        "priority": {"enum": ["low", "high"]}}}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["city", "unit"],
                   "properties": {"city": {"type": "string", "maxLength": 20},
                                  "unit": {"enum": ["celsius", "fahrenheit"]}}}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 10}},
                                       "required": ["zone"], "additionalProperties": False}}}
ASK = user("What is the weather like in Paris?")
# max_tokens with room for the longest answer ORDER or a forced call allows (each bounded string at one token per
# character, as sampling on another CPU's numerics may write it): a cut answer would fail as unparsable, not wrong.
ROOM = 100


def schema_format(schema):
    return {"type": "json_schema", "json_schema": {"name": "order", "schema": schema, "strict": True}}


def test_json_schema_strict_nested_enums_arrays_on_chat_and_completions(client):
    chat = client.chat.completions.create(model=MODEL, messages=user("An order as JSON, please."), max_tokens=ROOM,
                                          temperature=1.0, seed=5, n=2, response_format=schema_format(ORDER))
    done = client.completions.create(model=MODEL, prompt="Order: ", max_tokens=ROOM, temperature=1.0, seed=5,
                                     extra_body={"response_format": schema_format(ORDER)})
    texts = [c.message.content for c in chat.choices] + [done.choices[0].text]
    for text, reason in zip(texts, [c.finish_reason for c in chat.choices] + [done.choices[0].finish_reason]):
        assert reason == "stop", text
        jsonschema.validate(json.loads(text), ORDER)


def test_json_object_is_a_json_object(client):
    r = client.chat.completions.create(model=MODEL, messages=user("Describe Paris as JSON."), max_tokens=40,
                                       temperature=0, response_format={"type": "json_object"}, stop=["}"])
    text = r.choices[0].message.content
    assert text.startswith("{") and isinstance(json.loads(text + "}"), dict)  # the object up to its first close


@pytest.mark.parametrize("response_format, param, words", [
    (schema_format({"type": "nonsense"}), "response_format.json_schema.schema", "nonsense"),
    ({"type": "json_schema", "json_schema": {"schema": {}}}, "response_format.json_schema.name", "required"),
    ({"type": "yaml"}, "response_format.type", "'text', 'json_object' or 'json_schema'"),
])
def test_a_bad_response_format_is_400_naming_it(client, response_format, param, words):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4, response_format=response_format)
    assert caught.value.param == param and words in str(caught.value)


def valid_call(call, name=None) -> None:
    """A call as OpenAI returns one, of function `name` (None: any offered), whose arguments match its parameters."""
    assert call.type == "function" and call.id.startswith("call_") and (name is None or call.function.name == name)
    tool = {t["function"]["name"]: t for t in (WEATHER, TIME)}[call.function.name]
    jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])


def test_required_forces_a_call_that_matches_its_function(client):
    r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=ROOM, tools=[WEATHER, TIME],
                                       tool_choice="required", temperature=1.0, seed=3)
    (c,) = r.choices
    assert c.finish_reason == "tool_calls" and not c.message.content
    (call,) = c.message.tool_calls
    valid_call(call)


def test_a_named_function_is_called_and_its_streamed_deltas_reassemble_to_the_whole_call(client):
    kwargs = dict(model=MODEL, messages=ASK, max_tokens=60, temperature=0, tools=[WEATHER, TIME],
                  tool_choice={"type": "function", "function": {"name": "get_time"}})
    whole = client.chat.completions.create(**kwargs).choices[0]
    assert whole.finish_reason == "tool_calls" and not whole.message.content
    (expected,) = whole.message.tool_calls
    valid_call(expected, "get_time")
    calls, reasons, content = {}, [], ""
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        for choice in chunk.choices:
            content += choice.delta.content or ""
            reasons += [choice.finish_reason] if choice.finish_reason else []
            for d in choice.delta.tool_calls or ():
                c = calls.setdefault(d.index, {"id": d.id, "name": "", "arguments": ""})
                c["name"] += d.function.name or ""
                c["arguments"] += d.function.arguments or ""
    assert reasons == ["tool_calls"] and content == ""
    assert [(c["name"], c["arguments"]) for c in calls.values()] == [(expected.function.name,
                                                                      expected.function.arguments)]


def test_auto_offers_the_tools_in_the_prompt_and_none_leaves_them_out(client):
    offered = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=1, tools=[WEATHER])
    withheld = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=1, tools=[WEATHER],
                                              tool_choice="none")
    plain = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=1)
    assert offered.usage.prompt_tokens > withheld.usage.prompt_tokens == plain.usage.prompt_tokens


def test_a_tool_result_fed_back_is_answered(client):
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}
    messages = [*ASK, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 22, "sky": "sunny"}'}]
    with_result = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, temperature=0,
                                                 tools=[WEATHER])
    assert with_result.choices[0].message.content and with_result.usage.prompt_tokens > \
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=1, tools=[WEATHER]).usage.prompt_tokens + 30
    bad = [*messages[:1], {"role": "assistant", "tool_calls": [{**call, "function": {**call["function"],
                                                                                       "arguments": "{oops"}}]}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=bad, max_tokens=2, tools=[WEATHER])
    assert caught.value.param == "messages[1].tool_calls[0].function.arguments"


def test_a_call_reader_streams_the_content_then_the_call_and_its_arguments_as_they_are_written():
    reader = CallReader(Hermes())
    pieces = ["Let me check.", " <tool", '_call>\n{"name": "f", ', '"arguments": {"a": ', '1}}\n</tool_call>']
    out = [reader.feed(p) for p in pieces] + [reader.finish()]
    assert [content for content, _ in out] == ["Let me check.", " ", "", "", "", ""]
    deltas = [d for _, ds in out for d in ds]
    assert deltas[0]["id"].startswith("call_") and deltas[0]["function"] == {"name": "f", "arguments": ""}
    assert [d["function"]["arguments"] for d in deltas[1:]] == ['{"a": ', "1}"] and reader.called
    plain = CallReader(Hermes())
    assert plain.feed("a <tool") == ("a ", []) and plain.finish() == ("<tool", []) and not plain.called
