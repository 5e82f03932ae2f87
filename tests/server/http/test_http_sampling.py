"""OpenAI's sampling fields through the official `openai` client on the real server (batch-invariant, prompt-lookup
speculation on), the same over gRPC: penalties, logit_bias, min_p, stop_token_ids, include_stop_str_in_output, and
logprobs whose tokens spell the answer."""
from __future__ import annotations

import math

import httpx
import pytest

from tests.server.harness import request

MODEL = "smollm2-135m-instruct"
QUESTION = "What is the capital of France?"
REPETITIVE = "hello hello hello hello hello"


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def token_ids(server, text: str) -> list[int]:
    r = httpx.post(f"{server.http_url}/tokenize", json={"prompt": text}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["tokens"]


def repeats(tokens: list[str]) -> int:
    return len(tokens) - len(set(tokens))


def test_frequency_penalty_changes_a_repetitive_greedy_answer_and_repeats_less(client, http_server):
    def ask(**fields):
        r = client.completions.create(model=MODEL, prompt=REPETITIVE, max_tokens=30, temperature=0, logprobs=0,
                                      **fields)
        return r.choices[0].text, r.choices[0].logprobs.tokens

    plain, plain_tokens = ask()
    penalised, penalised_tokens = ask(frequency_penalty=1.5)
    assert penalised != plain and repeats(penalised_tokens) < repeats(plain_tokens)
    assert ask(frequency_penalty=1.5) == (penalised, penalised_tokens)  # still greedy: the same answer again
    (grpc_answer,) = http_server.stub.Generate(request(REPETITIVE, raw=True, max_new_tokens=30, frequency_penalty=1.5),
                                               timeout=60).completions
    assert grpc_answer.text == penalised
    presence, _ = ask(presence_penalty=2)
    assert presence != plain


def test_logit_bias_minus_100_keeps_a_token_out_of_the_answer(client, http_server):
    (paris,) = token_ids(http_server, " Paris")[:1]

    def ask(**fields):
        r = client.chat.completions.create(model=MODEL, messages=user(QUESTION), max_tokens=20, temperature=0,
                                           logprobs=True, **fields)
        return r.choices[0].message.content, [t.token for t in r.choices[0].logprobs.content]

    text, tokens = ask()
    assert " Paris" in tokens and "Paris" in text
    text, tokens = ask(logit_bias={str(paris): -100})
    assert " Paris" not in tokens and text.startswith("The capital of France is")
    (grpc_answer,) = http_server.stub.Generate(llm_pb2_request(QUESTION, max_new_tokens=20, logit_bias={paris: -100}),
                                               timeout=60).completions
    assert grpc_answer.text == text


def llm_pb2_request(question: str, **fields):
    from proto import llm_pb2

    return llm_pb2.GenerateRequest(conversations=[llm_pb2.Conversation(messages=[
        llm_pb2.Message(role="user", content=question)])], **fields)


def test_min_p_draws_no_token_below_its_share_of_the_best(client):
    """Temperature 1 (the raw distribution, which logprobs report): with min_p 0.1 every token drawn has at least
    a tenth of the best token's probability; without, some do not."""
    def below(**fields) -> int:
        r = client.chat.completions.create(model=MODEL, messages=user("Write a short poem about the sea."),
                                           max_tokens=30, temperature=1.0, seed=3, n=3, logprobs=True,
                                           top_logprobs=1, **fields)
        return sum(t.logprob < t.top_logprobs[0].logprob + math.log(0.1) - 1e-4
                   for c in r.choices for t in c.logprobs.content)

    assert below() > 0
    assert below(extra_body={"min_p": 0.1}) == 0


def test_stop_token_ids_end_the_answer_without_the_token_unless_asked(client, http_server):
    (dot,) = token_ids(http_server, ".")
    kwargs = dict(model=MODEL, messages=user(QUESTION), max_tokens=30, temperature=0, logprobs=True)
    r = client.chat.completions.create(**kwargs, extra_body={"stop_token_ids": [dot]})
    (choice,) = r.choices
    assert choice.message.content == "The capital of France is Paris" and choice.finish_reason == "stop"
    assert "".join(t.token for t in choice.logprobs.content) == choice.message.content
    r = client.chat.completions.create(**kwargs, extra_body={"stop_token_ids": [dot], "include_stop_str_in_output": True})
    assert r.choices[0].message.content == "The capital of France is Paris."
    assert [t.token for t in r.choices[0].logprobs.content][-1] == "."
    (grpc_answer,) = http_server.stub.Generate(llm_pb2_request(QUESTION, max_new_tokens=30, stop_token_ids=[dot]),
                                               timeout=60).completions
    assert grpc_answer.text == "The capital of France is Paris" and grpc_answer.finish_reason == 1  # STOP


def test_a_stop_string_stays_in_the_text_with_include_stop_str_in_output(client):
    kwargs = dict(model=MODEL, messages=user(QUESTION), max_tokens=30, temperature=0, stop=[" is"])
    assert client.chat.completions.create(**kwargs).choices[0].message.content == "The capital of France"
    kept = client.chat.completions.create(**kwargs, extra_body={"include_stop_str_in_output": True})
    assert kept.choices[0].message.content == "The capital of France is"


@pytest.mark.parametrize("stop", [None, [" Paris"], ["Par"]])
def test_chat_logprob_tokens_spell_the_content_streamed_and_not(client, stop):
    """No end-of-sequence token, nothing of a stop string: the tokens are the content, as OpenAI's are."""
    kwargs = dict(model=MODEL, messages=user(QUESTION), max_tokens=30, temperature=0, logprobs=True, stop=stop)
    (choice,) = client.chat.completions.create(**kwargs).choices
    content = choice.logprobs.content
    assert "".join(t.token for t in content) == choice.message.content and choice.finish_reason == "stop"
    assert all("<|im_end|>" not in t.token for t in content)
    text, tokens = "", []
    for chunk in client.chat.completions.create(**kwargs, stream=True):
        for c in chunk.choices:
            text += c.delta.content or ""
            tokens += [t.token for t in (c.logprobs.content if c.logprobs else ())]
    assert text == choice.message.content and "".join(tokens) == text


@pytest.mark.parametrize("stop", [None, [" Rome"]])
def test_completion_logprob_tokens_spell_the_text_streamed_and_not(client, stop):
    kwargs = dict(model=MODEL, prompt="The capital of France is Paris. The capital of Italy is", max_tokens=12,
                  temperature=0, logprobs=1, stop=stop)
    (choice,) = client.completions.create(**kwargs).choices
    assert "".join(choice.logprobs.tokens) == choice.text and len(choice.logprobs.token_logprobs) == \
        len(choice.logprobs.tokens)
    text, tokens = "", []
    for chunk in client.completions.create(**kwargs, stream=True):
        for c in chunk.choices:
            text += c.text
            tokens += c.logprobs.tokens if c.logprobs else []
    assert text == choice.text and "".join(tokens) == text


@pytest.mark.parametrize("field, value, param, words", [
    ("frequency_penalty", 2.5, "frequency_penalty", "must be in [-2, 2]"),
    ("presence_penalty", -3, "presence_penalty", "must be in [-2, 2]"),
    ("logit_bias", {"10000000": -100}, "logit_bias", "is not a token id"),
    ("logit_bias", {"5": 101}, "logit_bias", "must be in [-100, 100]"),
    ("logit_bias", {"five": 1}, "logit_bias", "is not a token id"),
    ("min_p", 1.5, "min_p", "must be in [0, 1]"),
    ("stop_token_ids", [5, -1], "stop_token_ids[1]", "is not a token id"),
    ("include_stop_str_in_output", 1, "include_stop_str_in_output", "expected true or false"),
    # hostile: huge maps and lists, ids out of the vocabulary
    ("logit_bias", {str(i): 1.0 for i in range(20_000)}, "logit_bias", "20000 tokens given, at most 1024"),
    ("logit_bias", {"4294967295": 1.0}, "logit_bias", "is not a token id"),
    ("stop_token_ids", list(range(20_000)), "stop_token_ids", "20000 given, at most 64"),
    ("stop_token_ids", [2**40], "stop_token_ids[0]", "is not a token id"),
])
def test_sampling_fields_out_of_range_are_refused_naming_them(client, field, value, param, words):
    import openai

    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=user("hi"), max_tokens=2, extra_body={field: value})
    assert caught.value.status_code == 400 and caught.value.param == param
    assert str(caught.value.body["message"]).startswith(f"{param}: ") and words in caught.value.body["message"]


@pytest.mark.parametrize("field, raw, param", [
    ("min_p", "NaN", "min_p"), ("frequency_penalty", "-Infinity", "frequency_penalty"),
    ("logit_bias", '{"5": NaN}', "logit_bias.5"), ("presence_penalty", "1e999", "presence_penalty"),
])
def test_not_a_number_in_a_body_is_refused_naming_the_field(http_server, field, raw, param):
    """Python's JSON reader takes NaN and Infinity (the official client never sends them)."""
    body = f'{{"model": "{MODEL}", "messages": [{{"role": "user", "content": "hi"}}], "max_tokens": 2, ' \
           f'"{field}": {raw}}}'
    r = httpx.post(f"{http_server.http_url}/v1/chat/completions", content=body,
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    assert "finite number" in r.json()["error"]["message"]


def test_echo_keeps_the_logprob_of_an_ending_first_token(client, http_server):
    """lm-evaluation-harness reads token_logprobs[ctxlen:-1]: the token after the prompt must be there even when it is
    the end of sequence (forced here by logit_bias), with no text."""
    text = "The capital of France is Paris."
    ids = token_ids(http_server, text)
    r = client.completions.create(model=MODEL, prompt=text, echo=True, logprobs=1, max_tokens=1,
                                  logit_bias={"2": 100})  # 2: the end of sequence (<|im_end|>)
    lp = r.choices[0].logprobs
    assert r.choices[0].text == text and r.choices[0].finish_reason == "stop"
    assert len(lp.tokens) == len(ids) + 1 and lp.tokens[-1] == "" and lp.token_logprobs[-1] < 0


STORY_START = "Once upon a time, in a small village by the sea, there lived"


@pytest.mark.parametrize("fields", [
    {"temperature": 0, "presence_penalty": 2.0},
    {"temperature": 0, "frequency_penalty": -1.0, "presence_penalty": 0.5, "repetition_penalty": 1.25},
    {"temperature": 0, "logit_bias": {" wise": -100, " young": 5.5}},  # words: their first token's id
    {"temperature": 0, "stop": [" kind"], "include_stop_str_in_output": True},
    {"temperature": 0, "stop_token_ids": ["."], "include_stop_str_in_output": True, "min_tokens": 3},
    {"temperature": 1.0, "seed": 11, "min_p": 0.25},
    {"temperature": 1.5, "seed": 5, "top_k": 3, "top_p": 0.75, "frequency_penalty": 1.5},
])
def test_every_sampling_field_gives_the_same_answer_on_grpc_and_http(client, http_server, fields):
    """Each changes the greedy answer, and gives the same one on both APIs; values a float32 holds exactly (gRPC's
    floats), sampled ones with a seed. The gRPC call first also computes the prompt, so both compared calls read its
    KV from the prefix cache alike."""
    first = {word: token_ids(http_server, word)[0] for word in (*fields.get("logit_bias", ()),
                                                                 *fields.get("stop_token_ids", ()))}
    if "logit_bias" in fields:
        fields = {**fields, "logit_bias": {str(first[w]): bias for w, bias in fields["logit_bias"].items()}}
    if "stop_token_ids" in fields:
        fields = {**fields, "stop_token_ids": [first[w] for w in fields["stop_token_ids"]]}
    grpc_fields = {{"min_tokens": "min_new_tokens"}.get(k, k): v for k, v in fields.items()}
    if "logit_bias" in fields:
        grpc_fields["logit_bias"] = {int(token): bias for token, bias in fields["logit_bias"].items()}

    def grpc(**more):
        (c,) = http_server.stub.Generate(request(STORY_START, raw=True, max_new_tokens=24, **more),
                                         timeout=60).completions
        return c.text, c.finish_reason

    plain, _ = grpc(temperature=0)
    r = client.completions.create(model=MODEL, prompt=STORY_START, max_tokens=24, extra_body=fields)
    text, reason = grpc(**grpc_fields)
    assert r.choices[0].text == text != plain
    assert r.choices[0].finish_reason == {1: "stop", 2: "length", 3: "stop"}[reason]
