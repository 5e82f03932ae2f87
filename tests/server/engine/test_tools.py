"""tools.py: the default tool format written into the prompt and read back from an answer (Hermes' parser); the
forced call's grammar."""
import json

import llguidance

from server.engine.model import render
from server.engine.tokenizer import Tokenizer
from server.engine.tool_parsers import Hermes
from server.engine.tools import takes_tools
from server.engine.types import Message, Tool, ToolCall

WEATHER = Tool("get_weather", "The weather in a city", json.dumps(
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}))


def test_a_template_without_tools_gets_them_in_the_system_message_and_calls_and_results_as_text(fp32_model_dir):
    tokenizer = Tokenizer.load(fp32_model_dir)
    assert not takes_tools(tokenizer.chat_template)  # SmolLM2's: role and content only
    call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    text = render(tokenizer, (Message("system", "Be brief."), Message("user", "Weather in Paris?"),
                              Message("assistant", "", (call,)), Message("tool", "22 C", tool_call_id="call_1")),
                  tools=(WEATHER,))
    assert text.startswith("<|im_start|>system\nBe brief.\n\nYou may call one or more functions")
    assert json.dumps({"type": "function", "function": {"name": "get_weather", "parameters": json.loads(
        WEATHER.parameters), "description": "The weather in a city"}}) in text
    assert ('<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
            "</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n22 C\n</tool_response><|im_end|>") in text
    # Without tools or calls, a conversation renders as it always did.
    plain = (Message("user", "Hi"),)
    assert render(tokenizer, plain) == tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}])


def test_a_template_that_takes_tools_gets_them_and_the_calls_as_transformers_passes_them():
    class Recorder:
        chat_template = "{% for t in tools %}{{ t }}{% endfor %}"

        def apply_chat_template(self, messages, **kwargs):
            self.seen = messages, kwargs
            return "rendered"

    tokenizer = Recorder()
    call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    assert render(tokenizer, (Message("assistant", "", (call,)),), tools=(WEATHER,)) == "rendered"
    messages, kwargs = tokenizer.seen
    assert messages[0]["tool_calls"] == [{"id": "call_1", "type": "function",
                                          "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
    assert kwargs["tools"][0]["function"]["name"] == "get_weather"


def parse_calls(text):
    content, calls = Hermes().parse(text)
    return content.strip() if calls else content, [(c.name, c.arguments) for c in calls]


def forced_grammar(tools, name=None):
    return Hermes().grammar(tools, name)


def test_calls_are_read_back_and_anything_else_is_text():
    assert parse_calls('Sure.\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>\n'
                       '<tool_call>{"name": "g", "arguments": {}}</tool_call>') == ("Sure.", [("f", '{"a": 1}'),
                                                                                           ("g", "{}")])
    assert parse_calls('<tool_call>\n{"name": "f", "arguments": {"a": 1}}') == ("", [("f", '{"a": 1}')])  # cut short
    for text in ("No call here.", "<tool_call>{not json}</tool_call>", '<tool_call>{"name": 3}</tool_call>'):
        assert parse_calls(text) == (text, [])


def test_the_forced_grammar_admits_exactly_a_call_whose_arguments_match(fp32_model_dir):
    other = Tool("add", None, json.dumps({"type": "object", "properties": {"x": {"type": "integer"}},
                                          "required": ["x"], "additionalProperties": False}))
    tokenizer = Tokenizer.load(fp32_model_dir)
    lltok = llguidance.LLTokenizer(tokenizer.backend.to_str(), eos_token=[2])

    def admits(grammar, text):
        m = llguidance.LLMatcher(lltok, grammar, log_level=0)
        return m.consume_tokens(tokenizer.encode(text, add_special_tokens=False)) and m.is_accepting()

    call = '<tool_call>\n{"name": "add", "arguments": {"x": 2}}\n</tool_call>'
    assert admits(forced_grammar((WEATHER, other)), call) and admits(forced_grammar((WEATHER, other), "add"), call)
    assert not admits(forced_grammar((WEATHER, other), "get_weather"), call)
    assert not admits(forced_grammar((other,)), call.replace("2", '"two"'))
