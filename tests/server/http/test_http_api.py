"""The OpenAI-compatible API over real HTTP with the official `openai` client, against the real default model,
checked against the gRPC API of the same process."""
from __future__ import annotations

import json
import threading
import time
import uuid

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proto import llm_pb2
from tests.server.harness import request, start_server, stream_texts, wait_until
from tests.server.http.conftest import FAULT


MODEL = "smollm2-135m-instruct"
QUESTION = "What is the capital of France?"
STORY = "Tell me a long story about a dragon."


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def metrics(server) -> dict[tuple[str, tuple], float]:
    text = httpx.get(server.metrics_url, timeout=10).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def sse(lines) -> list[str]:
    """The `data:` payloads of a server-sent event stream."""
    return [line[len("data: "):] for line in lines if line.startswith("data: ")]


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_health_is_200_while_serving(http_server):
    r = httpx.get(f"{http_server.http_url}/health")
    assert r.status_code == 200 and r.json() == {"status": "serving"}


def test_chat_greedy_text_equals_grpc_generate(client, http_server):
    question = "What is the theory of relativity?"
    grpc_text = http_server.stub.Generate(request(question, max_new_tokens=24), timeout=60).completions[0].text
    r = client.chat.completions.create(model=MODEL, messages=user(question), max_tokens=24, temperature=0)
    (choice,) = r.choices
    assert choice.message.role == "assistant" and choice.message.content == grpc_text
    assert choice.finish_reason == "length" and r.usage.completion_tokens == 24 and r.usage.prompt_tokens > 10
    assert r.usage.total_tokens == r.usage.prompt_tokens + 24 and r.object == "chat.completion" and r.model == MODEL


def test_chat_stream_sends_pieces_then_usage_and_equals_the_whole_answer(client):
    whole = client.chat.completions.create(model=MODEL, messages=user(QUESTION), max_completion_tokens=32,
                                           temperature=0)
    chunks = list(client.chat.completions.create(model=MODEL, messages=user(QUESTION), max_completion_tokens=32,
                                                 temperature=0, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 5  # streamed as it decodes, not in one lump
    assert "".join(pieces) == whole.choices[0].message.content == "The capital of France is Paris."
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["stop"] == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_system_message_goes_through_the_template_like_grpc(client, http_server):
    system = "You answer in one short sentence."
    conversation = llm_pb2.Conversation(messages=[llm_pb2.Message(role="system", content=system),
                                                  llm_pb2.Message(role="user", content="What is the capital of Japan?")])
    (g,) = http_server.stub.Generate(llm_pb2.GenerateRequest(conversations=[conversation], max_new_tokens=24),
                                     timeout=60).completions
    r = client.chat.completions.create(model=MODEL, max_tokens=24, temperature=0, messages=[
        {"role": "system", "content": system}, {"role": "user", "content": "What is the capital of Japan?"}])
    assert r.choices[0].message.content == g.text and "Tokyo" in g.text
    assert r.usage.prompt_tokens == g.prompt_tokens


def test_cached_prompt_tokens_are_reported_on_grpc_and_http(client, http_server):
    """Prefix caching is on by default: a prompt sent again finds its cached KV (never its last token, always
    computed) on every API; a nonce at the start keeps earlier tests' blocks out of it."""
    system = f"{uuid.uuid4().hex} You answer in one short sentence, as a librarian would, without any fuss."
    question = "Where do I find the books about ships and the sea?"
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    ask = llm_pb2.GenerateRequest(conversations=[llm_pb2.Conversation(
        messages=[llm_pb2.Message(**m) for m in messages])], max_new_tokens=4)
    (first,) = http_server.stub.Generate(ask, timeout=60).completions
    (again,) = http_server.stub.Generate(ask, timeout=60).completions
    _, finals = stream_texts(http_server.stub.GenerateStream(ask, timeout=60))
    assert first.cached_tokens == 0 and 0 < again.cached_tokens < again.prompt_tokens
    assert finals[0].cached_tokens == again.cached_tokens
    r = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4)
    assert (r.usage.prompt_tokens, r.usage.prompt_tokens_details.cached_tokens) == (again.prompt_tokens,
                                                                                    again.cached_tokens)
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == again.cached_tokens


def test_speculation_is_reported_on_grpc_http_and_metrics_and_can_be_turned_off(client, http_server):
    """The server speculates (conftest): an answer that copies its prompt keeps proposals; the same request with
    speculation off gets the same text with none."""
    copy = ("Copy the following paragraph exactly: The lighthouse on Gull Point was built in 1871 from granite "
            "quarried on the island itself, and its lamp was electrified in 1934.")
    before = metrics(http_server)
    (on,) = http_server.stub.Generate(request(copy, max_new_tokens=40), timeout=60).completions
    (off,) = http_server.stub.Generate(request(copy, max_new_tokens=40, speculation=False), timeout=60).completions
    assert on.text == off.text and "1871 from granite" in on.text
    assert on.proposed_tokens >= on.accepted_tokens > 0 and off.proposed_tokens == off.accepted_tokens == 0
    _, finals = stream_texts(http_server.stub.GenerateStream(request(copy, max_new_tokens=40), timeout=60))
    assert (finals[0].proposed_tokens, finals[0].accepted_tokens) == (on.proposed_tokens, on.accepted_tokens)
    r = client.chat.completions.create(model=MODEL, messages=user(copy), max_tokens=40, temperature=0)
    details = r.usage.completion_tokens_details
    assert r.choices[0].message.content == on.text
    assert (details.accepted_prediction_tokens, details.rejected_prediction_tokens) == \
           (on.accepted_tokens, on.proposed_tokens - on.accepted_tokens)
    plain = client.chat.completions.create(model=MODEL, messages=user(copy), max_tokens=40, temperature=0,
                                           extra_body={"speculation": False})
    assert plain.choices[0].message.content == on.text and plain.usage.completion_tokens_details is None
    after = metrics(http_server)
    assert value(after, "llm_spec_proposed_tokens_total") - value(before, "llm_spec_proposed_tokens_total") == \
           3 * on.proposed_tokens
    assert value(after, "llm_spec_accepted_tokens_total") - value(before, "llm_spec_accepted_tokens_total") == \
           3 * on.accepted_tokens


def test_completions_are_raw_prompts_and_a_list_is_one_batch(client, http_server):
    prompts = ["The capital of France is", "Once upon a time"]
    g = http_server.stub.Generate(request(*prompts, raw=True, max_new_tokens=8), timeout=60).completions
    r = client.completions.create(model=MODEL, prompt=prompts, max_tokens=8, temperature=0)
    assert [c.index for c in r.choices] == [0, 1]
    assert [c.text for c in r.choices] == [c.text for c in g]
    assert r.usage.prompt_tokens == sum(c.prompt_tokens for c in g) and r.usage.completion_tokens == 16
    streamed: dict[int, str] = {}
    for chunk in client.completions.create(model=MODEL, prompt=prompts, max_tokens=8, temperature=0, stream=True):
        for c in chunk.choices:
            streamed[c.index] = streamed.get(c.index, "") + c.text
    assert streamed == {0: g[0].text, 1: g[1].text}


def test_stop_strings_and_finish_reasons(client):
    r = client.chat.completions.create(model=MODEL, messages=user(QUESTION), max_tokens=64, temperature=0,
                                       stop=[" is"])
    assert r.choices[0].message.content == "The capital of France" and r.choices[0].finish_reason == "stop"
    r = client.completions.create(model=MODEL, prompt="One, two, three,", max_tokens=3, stop="nothing-like-this")
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3


def test_min_tokens_and_top_k_extensions(client):
    r = client.chat.completions.create(model=MODEL, messages=user(QUESTION), max_tokens=12,
                                       extra_body={"min_tokens": 12, "top_k": 1, "repetition_penalty": 1.0})
    assert r.usage.completion_tokens == 12 and r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content.startswith("The capital of France is Paris.")


def test_n_gives_n_choices_that_differ_and_repeat_with_the_seed(client):
    def ask():
        r = client.chat.completions.create(model=MODEL, messages=user("Write a short poem about the sea."), n=3,
                                           max_tokens=12, temperature=1.0, seed=7)
        assert [c.index for c in r.choices] == [0, 1, 2]
        assert r.usage.completion_tokens == 36
        return [c.message.content for c in r.choices]

    # The first call computes the whole prompt; later ones reuse its KV from the prefix cache, whose logits can differ
    # in the last digits (the attention reads cached rows instead of the prefill's own), which may move a sampled
    # token at a near-tie. So the seed's promise is checked between calls that find the same cache.
    ask()
    first = ask()
    assert len(set(first)) > 1  # copy i samples with seed + i
    assert ask() == first  # and the same seed gives the same answers
    # n copies of each prompt: choice index = prompt * n + copy
    r = client.completions.create(model=MODEL, prompt=["Paris is", "Rome is"], n=2, max_tokens=4, temperature=0)
    texts = [c.text for c in r.choices]
    assert [c.index for c in r.choices] == [0, 1, 2, 3] and texts[0] == texts[1] and texts[2] == texts[3]


def test_unsupported_completion_fields_and_unknown_fields_are_refused(client):
    for extra in ({"suffix": "x"}, {"best_of": 3}, {"temprature": 0.5}):
        with pytest.raises(openai.BadRequestError) as caught:
            client.completions.create(model=MODEL, prompt="hi", max_tokens=2, extra_body=extra)
        assert caught.value.param == next(iter(extra))
    # the value that changes nothing is accepted
    client.completions.create(model=MODEL, prompt="hi", max_tokens=2, echo=False, extra_body={"best_of": 1})


@pytest.mark.parametrize("kwargs, param, words", [
    ({"temperature": -1}, "temperature", "must be a finite number >= 0"),
    ({"top_p": 0}, "top_p", "must be in (0, 1]"),
    ({"max_tokens": 0}, "max_tokens", "must be at least 1"),
    ({"max_tokens": 100000}, "max_tokens", "above this server's cap"),
    ({"max_tokens": None, "max_completion_tokens": 0}, "max_completion_tokens", "must be at least 1"),
    ({"max_completion_tokens": 3}, "max_completion_tokens", "differs from max_tokens"),
    ({"max_tokens": 4, "extra_body": {"min_tokens": 8}}, "min_tokens", "above max_tokens (4)"),
    ({"n": 0}, "n", "must be at least 1"),
    ({"n": 33}, "n", "at most 32"),  # servable_stream runs 32 sequences
    ({"seed": -1}, "seed", "must be at least 0"),
    ({"stop": [""]}, "stop[0]", "must not be empty"),
    ({"stop": [str(i) for i in range(9)]}, "stop", "at most 8"),
    ({"extra_body": {"top_k": -2}}, "top_k", "must be at least -1"),
    ({"extra_body": {"repetition_penalty": 0}}, "repetition_penalty", "must be a finite number > 0"),
    ({"extra_body": {"temperature": "hot"}}, "temperature", "expected a number"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role", "unknown role 'robot'"),
    ({"messages": []}, "messages", "at least one message"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content[0]", "only text parts"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "only allowed with stream"),
])
def test_bad_values_are_refused_naming_the_field(client, kwargs, param, words):
    kwargs = {"model": MODEL, "messages": user("hi"), "max_tokens": 2, **kwargs}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**kwargs)
    assert caught.value.param == param
    assert f"{param}: " in str(caught.value) and words in str(caught.value)


@pytest.mark.parametrize("prompt, param", [("", "prompt"), (["ok", "  "], "prompt[1]"), ([1, 10**7], "prompt[1]"),
                                           ([], "prompt")])
def test_bad_prompts_are_refused_naming_them(client, prompt, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt=prompt, max_tokens=2)
    assert caught.value.param == param


def test_prompt_too_long_names_the_messages(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=user("word " * 5000), max_tokens=2)
    assert caught.value.param == "messages" and "tokens" in str(caught.value)


def test_unknown_model_path_method_and_bad_json(client, http_server):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4", messages=user("hi"), max_tokens=2)
    assert caught.value.param == "model" and caught.value.code == "model_not_found"
    base = http_server.http_url
    for method, path, status in (("GET", "/v1/nothing", 404), ("GET", "/v1/chat/completions", 405)):
        r = httpx.request(method, base + path)
        assert r.status_code == status and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.post(base + "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "body"
    r = httpx.post(base + "/v1/chat/completions", json=["a list"])
    assert r.status_code == 400 and "expected a JSON object" in r.json()["error"]["message"]


def test_engine_failure_is_500_for_that_request_only(client):
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model=MODEL, messages=user(f"{FAULT} please"), max_tokens=16)
    assert caught.value.status_code == 500 and "fault injected" in str(caught.value)
    with pytest.raises(openai.APIError):  # streamed: the error arrives as an event after the 200
        list(client.chat.completions.create(model=MODEL, messages=user(f"{FAULT} please"), max_tokens=16, stream=True))
    r = client.chat.completions.create(model=MODEL, messages=user(QUESTION), max_tokens=16, temperature=0)
    assert "Paris" in r.choices[0].message.content


def test_a_client_dropping_a_stream_frees_its_place(http_server):
    body = {"model": MODEL, "messages": user(STORY), "max_tokens": 512, "min_tokens": 512, "stream": True}
    with httpx.Client(timeout=60) as h:
        with h.stream("POST", f"{http_server.http_url}/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            got = 0
            # Kept in a name: a line iterator dropped after `break` is finalized at once, and httpx then
            # closes the connection, which would drop the stream here already.
            lines = r.iter_lines()
            for line in lines:
                got += line.startswith("data: ")
                if got >= 4:
                    break
            assert wait_until(lambda: value(metrics(http_server), "llm_requests_running") == 1, timeout=5), \
                httpx.get(http_server.metrics_url).text
    dropped = time.monotonic()
    assert wait_until(lambda: value(metrics(http_server), "llm_requests_running") == 0, timeout=10)
    assert time.monotonic() - dropped < 5  # stopped within a few steps, not after 512 tokens
    assert wait_until(lambda: "rpc=chat.completions.stream" in http_server.log()
                      and "status=CANCELLED" in http_server.log(), timeout=5)


def test_http_calls_are_counted_and_logged_with_their_protocol(client, http_server):
    client.completions.create(model=MODEL, prompt="Paris is", max_tokens=2)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=user("hi"), temperature=-1)
    samples = metrics(http_server)
    assert value(samples, "llm_requests_total", protocol="http", rpc="completions", code="OK") >= 1
    assert value(samples, "llm_requests_total", protocol="http", rpc="chat.completions", code="INVALID_ARGUMENT") >= 1
    assert "protocol=http rpc=completions prompts=1" in http_server.log()


# ---------------------------------------------------------------- API key and a full queue, on a server of their own

KEY = "http-test-key"


@pytest.fixture(scope="module")
def guarded(fp32_model_dir, tmp_path_factory):
    """An API key, one batch of one prompt and one waiting place: the third concurrent request overflows."""
    s = start_server(fp32_model_dir, tmp_path_factory.mktemp("http-guarded"), http=True, args=("--api-key", KEY),
                     config={"limits": {"max_batch": 1, "max_waiting": 1}})
    yield s
    s.stop()


def test_api_key_is_required_except_for_health_and_the_page(guarded):
    base = f"{guarded.http_url}/v1"
    with openai.OpenAI(base_url=base, api_key="wrong", max_retries=0) as c:
        with pytest.raises(openai.AuthenticationError) as caught:
            c.chat.completions.create(model=MODEL, messages=user("hi"), max_tokens=2)
    assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"
    missing = httpx.post(f"{base}/chat/completions", json={"messages": user("hi")})
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
    assert httpx.get(f"{base}/models").status_code == 401
    assert httpx.get(f"{guarded.http_url}/health").status_code == 200
    assert httpx.get(f"{guarded.http_url}/").status_code == 200
    with openai.OpenAI(base_url=base, api_key=KEY, max_retries=0) as c:
        r = c.chat.completions.create(model=MODEL, messages=user(QUESTION), max_tokens=16, temperature=0)
    assert "Paris" in r.choices[0].message.content
    assert KEY not in guarded.log()


def test_full_queue_is_429_and_accepted_requests_complete(guarded):
    headers = {"authorization": f"Bearer {KEY}"}
    long = {"model": MODEL, "messages": user(STORY), "max_tokens": 48, "min_tokens": 48}
    results = {}

    def waiting():
        results["waiting"] = httpx.post(f"{guarded.http_url}/v1/chat/completions", json=long, headers=headers,
                                        timeout=120)

    with httpx.Client(timeout=120, headers=headers) as h:
        with h.stream("POST", f"{guarded.http_url}/v1/chat/completions", json={**long, "stream": True}) as running:
            lines = running.iter_lines()
            next(line for line in lines if line.startswith("data: "))  # the batch is running
            thread = threading.Thread(target=waiting)
            thread.start()
            time.sleep(0.3)  # let it reach the queue
            with openai.OpenAI(base_url=f"{guarded.http_url}/v1", api_key=KEY, max_retries=0) as c:
                with pytest.raises(openai.RateLimitError) as caught:
                    c.chat.completions.create(model=MODEL, messages=user("hi"), max_tokens=2)
            assert caught.value.status_code == 429 and "queue" in str(caught.value)
            rest = sse(lines)
    assert rest[-1] == "[DONE]" and json.loads(rest[-2])["choices"][0]["finish_reason"] == "length"
    thread.join(120)
    assert results["waiting"].status_code == 200 and results["waiting"].json()["usage"]["completion_tokens"] == 48
