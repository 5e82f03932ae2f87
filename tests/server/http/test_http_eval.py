"""What evaluation and benchmark clients send, through the official `openai` client on the real server
(batch-invariant): logprobs, echo with prompt logprobs, token-id prompts, /tokenize and /detokenize, the
extension fields of guidellm and vLLM's benchmark."""
from __future__ import annotations

import math

import httpx
import openai
import pytest

from tests.server.harness import request

MODEL = "smollm2-135m-instruct"
TEXT = "The capital of France is Paris. The capital of Italy is"


def tokenize(server, **body) -> dict:
    r = httpx.post(f"{server.http_url}/tokenize", json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_chat_logprobs_streamed_and_not_agree(client):
    kwargs = dict(model=MODEL, messages=user("Name a colour."), max_tokens=6, temperature=0, logprobs=True,
                  top_logprobs=3, extra_body={"ignore_eos": True})
    client.chat.completions.create(**kwargs)  # so both calls below find the prompt in the prefix cache alike
    whole = client.chat.completions.create(**kwargs)
    content = whole.choices[0].logprobs.content
    assert len(content) == 6 == whole.usage.completion_tokens
    for entry in content:
        tops = [t.logprob for t in entry.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True) and all(v <= 0 for v in tops)
        assert entry.token == entry.top_logprobs[0].token and entry.logprob == tops[0]  # greedy: the best one
        assert bytes(entry.bytes).decode("utf-8", "replace") == entry.token
    streamed = [e for chunk in client.chat.completions.create(**kwargs, stream=True)
                if chunk.choices and chunk.choices[0].logprobs for e in chunk.choices[0].logprobs.content]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in content]


def test_completion_logprobs_in_the_legacy_shape(client):
    r = client.completions.create(model=MODEL, prompt=TEXT, max_tokens=4, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 4
    assert "".join(lp.tokens).startswith(r.choices[0].text) or r.choices[0].text == "".join(lp.tokens)
    assert lp.text_offset[0] == 0 and lp.text_offset[1] == len(lp.tokens[0])
    for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert top[token] == value and max(top.values()) == value and 2 <= len(top) <= 3


def test_echo_gives_every_prompt_token_a_logprob_from_one_pass(client, http_server):
    ids = tokenize(http_server, prompt=TEXT)["tokens"]
    r = client.completions.create(model=MODEL, prompt=ids, echo=True, logprobs=1, max_tokens=1, temperature=0)
    lp = r.choices[0].logprobs
    assert r.choices[0].text.startswith(TEXT) and len(lp.tokens) == len(ids) + 1
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(v is not None and v <= 0 for v in lp.token_logprobs[1:])
    assert lp.tokens[-1] == " Rome" and r.usage.prompt_tokens == len(ids) and r.usage.completion_tokens == 1
    # max_tokens 0: the prompt alone, the same figures (nothing cached was read for them)
    zero = client.completions.create(model=MODEL, prompt=TEXT, echo=True, logprobs=1, max_tokens=0)
    assert zero.choices[0].text == TEXT and zero.usage.completion_tokens == 0
    assert zero.choices[0].logprobs.token_logprobs == lp.token_logprobs[:-1]
    assert zero.usage.prompt_tokens_details.cached_tokens == 0
    # streamed: the prompt (and its logprobs) open the choice
    chunks = list(client.completions.create(model=MODEL, prompt=ids, echo=True, logprobs=1, max_tokens=1,
                                            temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == r.choices[0].text
    assert [v for c in chunks if c.choices and c.choices[0].logprobs
            for v in c.choices[0].logprobs.token_logprobs] == lp.token_logprobs
    # echo without logprobs: the text only
    plain = client.completions.create(model=MODEL, prompt=TEXT, echo=True, max_tokens=1, temperature=0)
    assert plain.choices[0].text == TEXT + " Rome" and plain.choices[0].logprobs is None


def test_token_id_prompts_answer_as_their_text(client, http_server):
    ids = tokenize(http_server, prompt=TEXT)["tokens"]
    by_text = client.completions.create(model=MODEL, prompt=TEXT, max_tokens=5, temperature=0)
    by_ids = client.completions.create(model=MODEL, prompt=[ids, ids[:4]], max_tokens=5, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text and len(by_ids.choices) == 2
    assert by_ids.usage.prompt_tokens == len(ids) + 4


def test_tokenize_and_detokenize_in_vllms_shapes(client, http_server):
    out = tokenize(http_server, prompt=TEXT, return_token_strs=True)
    assert out["count"] == len(out["tokens"]) and out["max_model_len"] >= 2048 and "".join(out["token_strs"]) == TEXT
    back = httpx.post(f"{http_server.http_url}/detokenize", json={"tokens": out["tokens"]}, timeout=30).json()
    assert back == {"prompt": TEXT}
    chat = tokenize(http_server, messages=user("hi"))
    answer = client.chat.completions.create(model=MODEL, messages=user("hi"), max_tokens=1)
    assert chat["count"] == answer.usage.prompt_tokens
    bad = httpx.post(f"{http_server.http_url}/detokenize", json={"tokens": [1, 10**7]}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens[1]"


@pytest.mark.parametrize("call, param", [
    (lambda c: c.chat.completions.create(model=MODEL, messages=user("hi"), logprobs=True, top_logprobs=21),
     "top_logprobs"),
    (lambda c: c.completions.create(model=MODEL, prompt="hi", logprobs=21), "logprobs"),
    (lambda c: c.completions.create(model=MODEL, prompt=[5, 10**7]), "prompt[1]"),
    (lambda c: c.completions.create(model=MODEL, prompt=[[5], [6, 7, -1]]), "prompt[1][2]"),
    (lambda c: c.completions.create(model=MODEL, prompt="hi", max_tokens=0), "max_tokens"),
    (lambda c: c.chat.completions.create(model=MODEL, messages=user("hi"), presence_penalty=3), "presence_penalty"),
])
def test_bad_values_are_refused_naming_the_field(client, call, param):
    with pytest.raises(openai.BadRequestError) as caught:
        call(client)
    assert caught.value.status_code == 400 and caught.value.param == param
    assert str(caught.value.body["message"]).startswith(f"{param}: ")


def test_a_guidellm_style_request_runs_to_max_tokens_with_usage_on_every_chunk(client):
    chunks = list(client.completions.create(
        model=MODEL, prompt="Hello", max_tokens=24, stream=True, stop=None, user="bench",
        stream_options={"include_usage": True, "continuous_usage_stats": True}, extra_body={"ignore_eos": True}))
    with_choice = [c for c in chunks if c.choices]
    assert all(c.usage is not None for c in with_choice)
    counts = [c.usage.completion_tokens for c in with_choice]
    assert counts == sorted(counts) and counts[-1] == 24 and chunks[-1].usage.completion_tokens == 24
    assert with_choice[-1].choices[0].finish_reason == "length"
    # chat: the role chunk that opens the choice carries usage too (the prompt's tokens, none generated), as vLLM's
    chat = list(client.chat.completions.create(
        model=MODEL, messages=user("Hello"), max_tokens=2, stream=True,
        stream_options={"include_usage": True, "continuous_usage_stats": True}))
    assert chat[0].choices[0].delta.role == "assistant" and all(c.usage is not None for c in chat)
    assert chat[0].usage.completion_tokens == 0 and chat[0].usage.prompt_tokens == chat[-1].usage.prompt_tokens > 0


def test_grpc_top_logprobs_match_the_http_ones(client, http_server):
    (c,) = http_server.stub.Generate(request(TEXT, raw=True, max_new_tokens=3, temperature=0, top_logprobs=2),
                                      timeout=60).completions
    r = client.completions.create(model=MODEL, prompt=TEXT, max_tokens=3, temperature=0, logprobs=2)
    assert [lp.token for lp in c.logprobs] == r.choices[0].logprobs.tokens
    assert all(math.isclose(lp.logprob, v, abs_tol=1e-5) for lp, v in zip(c.logprobs, r.choices[0].logprobs.token_logprobs))
    assert [len(lp.top_logprobs) for lp in c.logprobs] == [2, 2, 2]
