"""tool_parsers.py with each family's real chat template (llama.cpp's, tests/chattemplates.py): the template is
detected as its family's format, renders the tools and a call's history, and the model's own way of writing a
call is read back, whole and streamed; the forced call's grammar writes what the parser reads."""
import json

import llguidance
import pytest

from chattemplates import chat_templates
from server.engine import tool_parsers
from server.engine.model import render
from server.engine.tokenizer import Tokenizer
from server.engine.types import Message, Tool, ToolCall
from server.http.tools import CallReader

WEATHER = Tool("get_weather", "The current weather in a city", json.dumps(
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}))
ARGS = {"city": "Paris"}
HISTORY = (Message("user", "Weather in Rome?"),
           Message("assistant", "", (ToolCall("call_0123456789abcdef", "get_weather", '{"city": "Rome"}'),)),
           Message("tool", '{"celsius": 24}', tool_call_id="call_0123456789abcdef"),
           Message("assistant", "It is 24 C in Rome."), Message("user", "And in Paris?"))
HERMES = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
# (llama.cpp's template, the format it is detected as, a call as that family's model writes it)
FAMILIES = [
    ("Qwen-Qwen2.5-7B-Instruct", "hermes", HERMES),
    ("Qwen-Qwen3-0.6B", "hermes", HERMES),
    ("NousResearch-Hermes-3-Llama-3.1-8B-tool_use", "hermes", HERMES),
    ("HuggingFaceTB-SmolLM3-3B", "hermes", HERMES),  # takes no tools: the default (Hermes) format is written
    ("meta-llama-Llama-3.1-8B-Instruct", "llama3_json",
     '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}'),
    ("meta-llama-Llama-3.2-3B-Instruct", "llama3_json", '{"name": "get_weather", "parameters": {"city": "Paris"}}'),
    ("mistralai-Mistral-Nemo-Instruct-2407", "mistral",
     '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]'),
    ("Mistral-Small-3.2-24B-Instruct-2506", "mistral", '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}'),
    ("ibm-granite-granite-3.3-2B-Instruct", "granite",
     '<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris"}}]'),
]


@pytest.fixture(scope="module")
def templates():
    return chat_templates()


@pytest.fixture(scope="module")
def smollm2(fp32_model_dir):
    return Tokenizer.load(fp32_model_dir)


def with_template(base: Tokenizer, template: str) -> Tokenizer:
    return Tokenizer(base.backend, {"bos_token": "<s>", "eos_token": "</s>"}, template)


def streamed(parser, text: str, step: int) -> tuple[str, list[tuple[str, str]]]:
    """The content and calls the stream sends when `text` comes `step` characters at a time."""
    reader, content, calls = CallReader(parser), "", {}
    pieces = [text[i:i + step] for i in range(0, len(text), step)]
    for out, deltas in [reader.feed(p) for p in pieces] + [reader.finish()]:
        content += out
        for d in deltas:
            call = calls.setdefault(d["index"], ["", ""])
            call[0] += d.get("function", {}).get("name", "")
            call[1] += d.get("function", {}).get("arguments", "")
            assert ("id" in d) == ("name" in d.get("function", {}))  # the id comes with the name, once
    return content, [tuple(c) for c in calls.values()]


@pytest.mark.parametrize("name, format_, answer", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_each_family_renders_its_tools_and_its_calls_are_read_back_whole_and_streamed(templates, smollm2, name,
                                                                                       format_, answer):
    template = templates[name]
    assert tool_parsers.detect(template) == format_
    parser = tool_parsers.for_template(template)
    prompt = render(with_template(smollm2, template), HISTORY, tools=(WEATHER,))
    assert WEATHER.description in prompt and "Rome" in prompt and "And in Paris?" in prompt
    content, calls = parser.parse(answer)
    assert content.strip() == "" and [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", ARGS)]
    whole = [(c.name, c.arguments) for c in calls]
    for step in (1, 3, 7):
        assert streamed(parser, answer, step) == ("", whole)
    # Text before the call is content, streamed as it comes; an answer without a call is all content.
    if parser.markers and not parser.bare:
        assert parser.parse("Let me look.\n" + answer)[0].strip() == "Let me look."
        assert streamed(parser, "Let me look.\n" + answer, 2) == ("Let me look.\n", whole)
    assert parser.parse("Paris is sunny.") == ("Paris is sunny.", [])
    assert streamed(parser, "Paris is sunny.", 2) == ("Paris is sunny.", [])


def test_mistral_history_ids_fit_its_template_and_its_own_ids_are_nine_letters(templates, smollm2):
    prompt = render(with_template(smollm2, templates["mistralai-Mistral-Nemo-Instruct-2407"]), HISTORY,
                    tools=(WEATHER,))
    assert '"id": "789abcdef"' in prompt and '"call_id": "789abcdef"' in prompt
    id_ = tool_parsers.Mistral().call_id()
    assert len(id_) == 9 and id_.isalnum()


def test_llama_3_1_calls_several_functions_separated_by_semicolons():
    content, calls = tool_parsers.Llama3Json().parse(
        '<|python_tag|>{"name": "a", "parameters": {"x": 1}}; {"name": "b", "parameters": {}}')
    assert [(c.name, c.arguments) for c in calls] == [("a", '{"x": 1}'), ("b", "{}")]


def test_phi_4_mini_writes_functools_and_reads_the_tools_from_its_system_message():
    # llama.cpp's tree carries no Phi-4-mini template: the format is tested on the model's text, and the tools
    # go where its template (Microsoft's) reads them, the system message's `tools`.
    parser = tool_parsers.Phi4MiniJson()
    content, calls = parser.parse('functools[{"name": "get_weather", "arguments": {"city": "Paris"}}]')
    assert content == "" and [(c.name, c.arguments) for c in calls] == [("get_weather", '{"city": "Paris"}')]
    assert streamed(parser, 'Sure. functools[{"name": "get_weather", "arguments": {"city": "Paris"}}]', 4) == (
        "Sure. ", [("get_weather", '{"city": "Paris"}')])
    messages, extra = parser.template_inputs([Message("user", "Weather?")], (WEATHER,))
    assert messages[0]["role"] == "system" and json.loads(messages[0]["tools"])[0]["name"] == "get_weather"
    assert tool_parsers.detect("{{ message['tools'] }}<|tool|>") == "phi4_mini_json"


@pytest.mark.parametrize("format_", sorted(tool_parsers.PARSERS))
def test_the_forced_grammar_writes_a_call_the_format_reads(smollm2, format_):
    parser = tool_parsers.PARSERS[format_]()
    lltok = llguidance.LLTokenizer(smollm2.backend.to_str(), eos_token=[2])
    text = parser.wrap[0] + json.dumps({"name": "get_weather", parser.arguments_key: ARGS}) + parser.wrap[1]
    matcher = llguidance.LLMatcher(lltok, parser.grammar((WEATHER,), "get_weather"), log_level=0)
    assert matcher.consume_tokens(smollm2.encode(text, add_special_tokens=False)) and matcher.is_accepting()
    content, calls = parser.parse(text)
    assert content == "" and [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", ARGS)]


def test_broken_or_cut_calls_are_plain_text():
    for parser, text in [(tool_parsers.Hermes(), '<tool_call>{"name": "f", "arguments": {"a": </tool_call>'),
                         (tool_parsers.Mistral(), '[TOOL_CALLS][{"name": "f", "arguments": {"a": 1'),
                         (tool_parsers.Mistral(), "[1] The first point."),
                         (tool_parsers.Llama3Json(), '{"answer": 42}'),
                         (tool_parsers.Granite(), '[{"name": 7, "arguments": {}}]')]:
        assert parser.parse(text) == (text, [])
