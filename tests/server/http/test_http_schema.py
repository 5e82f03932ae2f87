"""OpenAI bodies -> engine requests, and engine field names -> OpenAI's, as plain functions (no server)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from server.engine.errors import ValidationError
from server.engine.types import FinishReason, Logprob, Message, Usage
from server.http import errors, responses, schema, tokens


def chat(**fields):
    return schema.parse({"messages": [{"role": "user", "content": "hi"}], **fields}, "chat", max_choices=8)


def test_chat_becomes_one_conversation_with_our_parameter_names():
    r = chat(max_tokens=5, min_tokens=2, temperature=0.5, top_p=0.9, top_k=-1, repetition_penalty=1.1, stop="x")
    g = r.request
    assert g.conversations == ((Message("user", "hi"),),) and not g.prompts
    assert g.params.given == {"max_new_tokens": 5, "min_new_tokens": 2, "temperature": 0.5, "top_p": 0.9, "top_k": 0,
                              "repetition_penalty": 1.1, "stop": ("x",)}
    assert r.rpc == "chat.completions" and not r.stream


def test_developer_role_and_text_parts():
    r = schema.parse({"messages": [{"role": "developer", "content": [{"type": "text", "text": "be "},
                                                                     {"type": "text", "text": "brief"}]},
                                   {"role": "user", "content": "hi"}]}, "chat", 8)
    assert r.request.conversations[0][0] == Message("system", "be brief")


def test_completions_are_raw_and_n_goes_to_the_engine_in_one_request():
    r = schema.parse({"prompt": ["a", "b"], "n": 3, "seed": 10, "stream": True,
                      "stream_options": {"include_usage": True}}, "completion", 8)
    g = r.request  # the engine answers each prompt n times, copy c with seed + c
    assert g.n == r.n == 3 and g.params.given["seed"] == 10 and g.prompts == ("a", "b") and g.raw
    assert r.include_usage and r.rpc == "completions.stream"


def test_null_means_unset_and_neutral_values_pass():
    r = chat(logprobs=False, tools=None, max_tokens=None, best_of=1)
    assert r.request.params.given == {}


@pytest.mark.parametrize("fields, name", [
    ({"top_logprobs": 2}, "top_logprobs"), ({"tools": []}, "tools"), ({"logit_bias": {"x": 1}}, "logit_bias"),
    ({"logit_bias": [1]}, "logit_bias"), ({"stop_token_ids": ["1"]}, "stop_token_ids[0]"), ({"min_p": "0"}, "min_p"),
    ({"stream_options": {"continuous_usage_stats": True}}, "stream_options"), ({"max_tokens": True}, "max_tokens"),
    ({"max_tokens": 1.5}, "max_tokens"), ({"stop": 3}, "stop"), ({"stop": ["a", 1]}, "stop[1]"),
    ({"stream_options": {"x": 1}, "stream": True}, "stream_options.x"), ({"n": 5, "top_p": "1"}, "top_p"),
    ({"messages": [{"role": "user", "content": "hi", "name": "bob"}]}, "messages[0].name"),
    ({"messages": "hi"}, "messages"), ({"model": 3}, "model"),
])
def test_refusals_name_the_openai_field(fields, name):
    with pytest.raises(ValidationError) as caught:
        chat(**fields)
    assert caught.value.field == name


def test_engine_field_names_become_openai_names():
    r = chat(max_completion_tokens=4)
    assert errors.openai_error(ValidationError("max_new_tokens", "must be at least 1"), r) == \
        ("max_completion_tokens", "max_completion_tokens: must be at least 1")
    assert errors.openai_error(ValidationError("min_new_tokens", "9 is above max_new_tokens (4)"), r)[1] == \
        "min_tokens: 9 is above max_completion_tokens (4)"
    assert errors.openai_error(ValidationError("conversations[0].messages[1].role", "unknown role"), r)[0] == \
        "messages[1].role"
    assert errors.openai_error(ValidationError("conversations[0]", "too long"), r)[0] == "messages"
    listed = schema.parse({"prompt": ["a", " "]}, "completion", 8)
    assert errors.openai_error(ValidationError("prompts[1]", "must not be empty"), listed)[0] == "prompt[1]"
    single = schema.parse({"prompt": " "}, "completion", 8)
    assert errors.openai_error(ValidationError("prompts[0]", "must not be empty"), single)[0] == "prompt"


def test_usage_counts_a_prompt_once_however_many_copies():
    choices = [responses.Choice(i, "x", "stop", Usage(10, 3, 1.0, 2.0, cached_tokens=4)) for i in range(4)]  # 2 prompts x 2
    assert responses.total_usage(choices, n=2) == {"prompt_tokens": 20, "completion_tokens": 12, "total_tokens": 32,
                                                "prompt_tokens_details": {"cached_tokens": 8}}
    assert responses.FINISH[FinishReason.STOP_SEQUENCE] == "stop" and responses.FINISH[FinishReason.LENGTH] == "length"


def test_extension_fields_clients_send_are_accepted():
    """guidellm's and vLLM's benchmark's defaults, and the documented fields that change nothing."""
    r = chat(ignore_eos=True, stop=None, stream=True, stream_options={"include_usage": True, "continuous_usage_stats": True},
             user="u", metadata={"k": "v"}, store=False, service_tier="auto", parallel_tool_calls=True)
    assert r.request.params.given == {"ignore_eos": True} and r.continuous_usage and r.include_usage
    assert chat(speculation=False).request.params.given == {"speculation": False}  # ours: no proposals for it


def test_logprobs_fields_become_the_engine_request():
    assert chat(logprobs=True, top_logprobs=3).request.logprobs == 3
    assert chat(logprobs=True).request.logprobs == 0 and chat().request.logprobs is None
    r = schema.parse({"prompt": "a", "logprobs": 2, "echo": True, "max_tokens": 0}, "completion", 8)
    g = r.request
    assert (g.logprobs, g.prompt_logprobs, r.echo) == (2, 2, True)
    # the engine's bound, named as the client wrote it
    assert errors.openai_error(ValidationError("logprobs", "must be in [0, 20]"), chat(logprobs=True))[0] == "top_logprobs"
    assert errors.openai_error(ValidationError("prompt_logprobs", "must be in [0, 20]"), r)[0] == "logprobs"


def test_token_id_prompts_and_their_error_names():
    single = schema.parse({"prompt": [1, 2, 3]}, "completion", 8)
    assert single.request.prompt_ids == ((1, 2, 3),) and not single.request.prompts
    assert errors.openai_error(ValidationError("prompt_ids[0][2]", "99 is not a token id"), single)[0] == "prompt[2]"
    listed = schema.parse({"prompt": [[1], [2, 3]]}, "completion", 8)
    assert listed.request.prompt_ids == ((1,), (2, 3))
    assert errors.openai_error(ValidationError("prompt_ids[1][0]", "x"), listed)[0] == "prompt[1][0]"
    for prompt, name in (([[1], ["a"]], "prompt[1][0]"), ([1, "a"], "prompt"), ([[1], 2], "prompt")):
        with pytest.raises(ValidationError) as caught:
            schema.parse({"prompt": prompt}, "completion", 8)
        assert caught.value.field == name


def test_logprob_shapes():
    lps = [Logprob(1, "A", None), Logprob(2, " b", -0.5, (Logprob(3, " c", -0.25), Logprob(2, " b", -0.5)))]
    out = responses.completion_logprobs(lps, 0)
    assert out == {"tokens": ["A", " b"], "token_logprobs": [None, -0.5], "top_logprobs": [None, {" c": -0.25, " b": -0.5}],
                   "text_offset": [0, 1]}
    (entry,) = responses.chat_logprobs(lps[1:])["content"]
    assert entry["bytes"] == [32, 98] and entry["top_logprobs"][0] == {"token": " c", "logprob": -0.25, "bytes": [32, 99]}


@pytest.mark.parametrize("body, name, message", [
    ({"max_tokens": "1"}, "max_tokens", "expected an integer, got a string"),
    ({"n": True}, "n", "expected an integer, got a boolean"),
    ({"seed": 1.0}, "seed", "expected an integer, got a number"),
    ({"temperature": True}, "temperature", "expected a number, got a boolean"),
    ({"temperature": float("nan")}, "temperature", "expected a finite number"),
    ({"stream": "true"}, "stream", "expected true or false, got a string"),
    ({"stream": True, "stream_options": {"include_usage": 1}}, "stream_options.include_usage",
     "expected true or false, got an integer"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": 5}]}, "messages[1].content",
     "expected a string or an array of text parts, got an integer"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]}]},
     "messages[0].content[1]", "only text parts are supported, got 'image_url'"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]}, "messages[0].content[0].text",
     "expected a string, got an integer"),
    ({"messages": [{"role": "user"}]}, "messages[0].content", "required"),
    ({"messages": ["hi"]}, "messages[0]", "expected an object, got a string"),
    ({"messages": []}, "messages", "at least one message is required"),
    ({"top_k": -2}, "top_k", "must be at least -1"),
    ({"max_tokens": 2, "max_completion_tokens": 3}, "max_completion_tokens", "differs from max_tokens"),
    ({"logprobs": False, "top_logprobs": 1}, "top_logprobs", "needs logprobs: true"),
])
def test_strict_types_and_one_line_errors_naming_the_path(body, name, message):
    """No "1" for an integer, no boolean for a number; pydantic's first error as one line, named as the client wrote
    it."""
    with pytest.raises(ValidationError) as caught:
        chat(**body)
    assert caught.value.field == name and str(caught.value).startswith(f"{name}: {message}")


@pytest.mark.parametrize("body, name, message", [
    ({"prompt": ["a", "b", 3]}, "prompt", "expected a string, an array of strings, an array of token ids or an array"),
    ({"prompt": [[1], [2], [3, "x"]]}, "prompt[2][1]", "expected an integer, got a string"),
    ({"prompt": []}, "prompt", "at least one prompt is required"),
    ({"prompt": "a", "echo": 1}, "echo", "expected true or false, got an integer"),
    ({"prompt": "a", "logprobs": True}, "logprobs", "expected an integer, got a boolean"),
    ({"prompt": "a", "stop": ["x", None]}, "stop[1]", "expected a string, got null"),
    ({"prompt": "a", "suffix": "x"}, "suffix", "not supported by this server"),
    (["a"], "body", "expected a JSON object, got an array"),
])
def test_completion_errors_name_the_path(body, name, message):
    with pytest.raises(ValidationError) as caught:
        schema.parse(body, "completion", 8)
    assert caught.value.field == name and str(caught.value).startswith(f"{name}: {message}")


def test_tokenize_and_detokenize_bodies():
    model, request, special, strs = tokens.parse_tokenize({"prompt": "hi", "add_special_tokens": False, "model": "m"})
    assert (model, request.prompts, request.raw, special, strs) == ("m", ("hi",), True, False, False)
    _, request, special, strs = tokens.parse_tokenize({"messages": [{"role": "user", "content": "hi"}],
                                                       "return_token_strs": True})
    assert request.conversations == ((Message("user", "hi"),),) and special is None and strs
    assert tokens.parse_detokenize({"tokens": [1, 2]}) == (None, [1, 2])
    for parse, body, name in ((tokens.parse_tokenize, {}, "prompt"), (tokens.parse_tokenize, {"prompt": 3}, "prompt"),
                              (tokens.parse_tokenize, {"prompt": "a", "add_generation_prompt": False},
                               "add_generation_prompt"),
                              (tokens.parse_tokenize, {"prompt": "a", "x": 1}, "x"),
                              (tokens.parse_detokenize, {"tokens": [1, True]}, "tokens[1]"),
                              (tokens.parse_detokenize, {"tokens": "1"}, "tokens")):
        with pytest.raises(ValidationError) as caught:
            parse(body)
        assert caught.value.field == name


def test_every_generation_parameter_has_its_field_and_the_docs_list_every_field():
    """A parameter added to GenerationParams needs its OpenAI field; docs/apis.md's HTTP section names each field."""
    for kind in ("chat", "completion"):
        assert set(schema.OPENAI_PARAMS) <= schema.FIELDS[kind]
    docs = (Path(__file__).parents[3] / "docs" / "apis.md").read_text(encoding="utf-8")
    http = docs[docs.index("| endpoint | |"):docs.index("Errors have OpenAI's shape")]
    listed = [*schema.FIELDS["chat"], *schema.FIELDS["completion"], *schema.IGNORED, *schema.NEUTRAL]
    named = set(re.findall(r"`([a-z_]+)[`.]", http))  # `field` or `field.sub`, not a longer name's start
    assert [name for name in listed if name not in named] == []
    assert [name for name in schema.STREAM_OPTIONS if f"`stream_options.{name}`" not in http] == []


def test_logprob_bytes_are_the_tokens_own():
    """Half of a multi-byte character: its text is U+FFFD, its bytes are its own (as OpenAI gives them)."""
    half = Logprob(18310, "\ufffd", -0.1, (Logprob(18310, "\ufffd", -0.1, token_bytes=b"\xe5\xae"),),
                   token_bytes=b"\xe5\xae")
    (entry,) = responses.chat_logprobs([half])["content"]
    assert entry["bytes"] == [0xE5, 0xAE] and entry["top_logprobs"][0]["bytes"] == [0xE5, 0xAE]


def test_sampling_fields_keep_their_names_and_logit_bias_keys_become_token_ids():
    r = chat(presence_penalty=0.5, frequency_penalty=0, logit_bias={"12": -100, "7": 3.5}, min_p=0.1,
             stop_token_ids=[3], include_stop_str_in_output=True)
    assert r.request.params.given == {"presence_penalty": 0.5, "frequency_penalty": 0,
                                          "logit_bias": {12: -100, 7: 3.5}, "min_p": 0.1, "stop_token_ids": (3,),
                                          "include_stop_str_in_output": True}
