"""answers.py: a chat answer read apart into reasoning, content and calls, whole and streamed; through the real
server, with DeepSeek-R1's real chat template and the official `openai` client."""
import json

import httpx
import openai
import pytest

from chattemplates import chat_templates

from server.engine.tool_parsers import Hermes
from server.http.answers import AnswerFormat, Reader, message_fields, whole
from tests.server.harness import openai_client, start_server

THOUGHT_AND_CALL = ('<think>\nThe user wants the weather.\n</think>\n\n<tool_call>\n{"name": "get_weather", '
                    '"arguments": {"city": "Paris"}}\n</tool_call>')


def streamed(form: AnswerFormat, text: str, step: int) -> tuple[str, str, list]:
    reader, thought, content, calls = Reader(form), "", "", {}
    for p in [reader.feed(text[i:i + step]) for i in range(0, len(text), step)] + [reader.finish()]:
        thought, content = thought + p.reasoning, content + p.content
        for d in p.tool_calls:
            call = calls.setdefault(d["index"], ["", ""])
            call[0] += d.get("function", {}).get("name", "")
            call[1] += d.get("function", {}).get("arguments", "")
    return thought, content, [tuple(c) for c in calls.values()]


def test_a_thought_then_a_call_reads_as_reasoning_and_a_call_whole_and_streamed():
    form = AnswerFormat(Hermes(), thinking=False)
    piece = whole(form, THOUGHT_AND_CALL)
    assert piece.reasoning == "The user wants the weather." and piece.content == ""
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in piece.tool_calls] == [
        ("get_weather", '{"city": "Paris"}')]
    assert message_fields(piece, form) == {"reasoning": "The user wants the weather.",
                                           "reasoning_content": "The user wants the weather."}
    for step in (1, 4, 9):
        assert streamed(form, THOUGHT_AND_CALL, step) == ("The user wants the weather.", "",
                                                          [("get_weather", '{"city": "Paris"}')])


@pytest.mark.parametrize("form", [AnswerFormat(), AnswerFormat(Hermes())])
def test_a_model_that_does_not_think_has_no_reasoning_fields_and_think_tags_stay_content(form):
    piece = whole(form, "<think>x</think>y")
    assert (piece.reasoning, piece.content, message_fields(piece, form)) == ("", "<think>x</think>y", {})


# ---------------------------------------------------------------- through the server, with the official client

SERVED = "r1-template"  # the model's name: its directory's
R1 = "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B"  # its generation prompt opens the thought when thinking is on
THINK = {"enable_thinking": True}
# A 135M model does not think on its own: a JSON schema makes it write a thought, `</think>`, then an answer.
SPLIT = "2 and 2 make 4.</think>The answer is 4."
WHOLE = json.dumps({"text": SPLIT})  # as the grammar writes JSON
WRITTEN = {"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": {
    "type": "object", "properties": {"text": {"const": SPLIT}}, "required": ["text"], "additionalProperties": False}}}


@pytest.fixture(scope="module")
def thinking_server(fp32_model_dir, tmp_path_factory):
    """The default model's weights and tokenizer with DeepSeek-R1's real chat template (its markers are plain text
    to SmolLM2's tokenizer); tool calls in Llama 3's format, as the server flag names it."""
    model = tmp_path_factory.mktemp("r1") / SERVED
    model.mkdir()
    for f in fp32_model_dir.iterdir():
        if f.name != "chat_template.jinja":
            (model / f.name).symlink_to(f)
    (model / "chat_template.jinja").write_text(chat_templates()[R1], encoding="utf-8")
    s = start_server(model, tmp_path_factory.mktemp("thinking-server"), http=True,
                     args=("--batch-invariant", "--tool-call-parser", "llama3_json"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def thinker(thinking_server):
    with openai_client(thinking_server) as c:
        yield c


def tokenize(server, **body) -> dict:
    r = httpx.post(f"{server.http_url}/tokenize", json={"messages": ASK, "return_token_strs": True, **body}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


ASK = [{"role": "user", "content": "What is 2 + 2?"}]


def test_chat_template_kwargs_reach_the_template_on_tokenize_and_chat(thinking_server, thinker):
    off, on = tokenize(thinking_server), tokenize(thinking_server, chat_template_kwargs=THINK)
    assert "".join(off["token_strs"]).endswith("<think>\n</think>") and "".join(on["token_strs"]).endswith("<think>\n")
    chat = thinker.chat.completions.create(model=SERVED, messages=ASK, max_tokens=1,
                                           extra_body={"chat_template_kwargs": THINK})
    assert chat.usage.prompt_tokens == on["count"] != off["count"]
    for kwargs, param in [({"messages": []}, "chat_template_kwargs.messages"), ("on", "chat_template_kwargs")]:
        with pytest.raises(openai.BadRequestError) as caught:
            thinker.chat.completions.create(model=SERVED, messages=ASK, max_tokens=1,
                                            extra_body={"chat_template_kwargs": kwargs})
        assert caught.value.param == param


def test_a_think_answer_splits_into_reasoning_and_content_whole_and_streamed(thinker):
    kwargs = dict(model=SERVED, messages=ASK, max_tokens=60, temperature=0, response_format=WRITTEN,
                  extra_body={"chat_template_kwargs": THINK})
    (choice,) = thinker.chat.completions.create(**kwargs).choices
    thought, _, content = WHOLE.partition("</think>")
    assert choice.finish_reason == "stop" and choice.message.content == content
    assert choice.message.reasoning == choice.message.reasoning_content == thought
    got = {"reasoning": "", "reasoning_content": "", "content": ""}
    for chunk in thinker.chat.completions.create(stream=True, **kwargs):
        for c in chunk.choices:
            for name in got:
                got[name] += getattr(c.delta, name, None) or ""
    assert got == {"reasoning": thought, "reasoning_content": thought, "content": content}
    # Thinking off: the template closes the thought in the prompt, and the same text is all content.
    (plain,) = thinker.chat.completions.create(**{**kwargs, "extra_body": {}}).choices
    assert plain.message.content == WHOLE and plain.message.reasoning is None


def streamed_tokens(client, kwargs: dict) -> list[str]:
    return [t.token for chunk in client.chat.completions.create(stream=True, logprobs=True, **kwargs)
            for c in chunk.choices for t in (c.logprobs.content if c.logprobs else ())]


def test_logprob_tokens_spell_the_whole_answer_its_reasoning_and_content_are_read_from(thinker):
    """As vLLM's: every generated token, the thought and its closing tag among them, so they spell the answer the
    message's fields were read from (the prompt opened the thought); streamed, the same tokens."""
    kwargs = dict(model=SERVED, messages=ASK, max_tokens=60, temperature=0, response_format=WRITTEN,
                  extra_body={"chat_template_kwargs": THINK})
    (choice,) = thinker.chat.completions.create(logprobs=True, **kwargs).choices
    tokens = [t.token for t in choice.logprobs.content]
    assert "".join(tokens) == choice.message.reasoning + "</think>" + choice.message.content == WHOLE
    assert streamed_tokens(thinker, kwargs) == tokens


def test_the_flag_names_the_tool_call_format_a_forced_call_is_written_and_read_in(thinker):
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"],
        "additionalProperties": False}}}
    kwargs = dict(model=SERVED, messages=ASK, max_tokens=40, temperature=0, tools=[weather],
                  tool_choice={"type": "function", "function": {"name": "get_weather"}})
    (choice,) = thinker.chat.completions.create(logprobs=True, **kwargs).choices
    written = "".join(t.token for t in choice.logprobs.content)
    assert written.startswith('{"name": "get_weather", "parameters": {"city": "')  # Llama 3's, not Hermes'
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and list(json.loads(call.function.arguments)) == ["city"]
    # The logprobs' tokens are the call as the model wrote it, which the message's call was read from.
    assert json.loads(written) == {"name": "get_weather", "parameters": json.loads(call.function.arguments)}
    assert streamed_tokens(thinker, kwargs) == [t.token for t in choice.logprobs.content]
    calls = {}
    for chunk in thinker.chat.completions.create(stream=True, **kwargs):
        for d in (d for c in chunk.choices for d in c.delta.tool_calls or ()):
            got = calls.setdefault(d.index, ["", ""])
            got[0] += d.function.name or ""
            got[1] += d.function.arguments or ""
    assert list(calls.values()) == [[call.function.name, call.function.arguments]]


def test_a_bad_message_to_a_thinking_model_is_refused_as_to_any_other(thinker):
    # The prompt is rendered before the call to see whether it opens a thought: checked first, as the engine checks.
    with pytest.raises(openai.BadRequestError) as caught:
        thinker.chat.completions.create(model=SERVED, messages=[{"role": "robot", "content": "Hi"}], max_tokens=1)
    assert caught.value.param == "messages[0].role" and "unknown role" in str(caught.value)
