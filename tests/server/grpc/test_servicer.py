"""LLMService over real gRPC against the real default model: answers, batches, finish reasons, sampling."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor


from proto import llm_pb2
from tests.reference import greedy_text
from tests.server.harness import request, stream_texts

QUESTION = "What is the theory of relativity?"
CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Germany": "Berlin", "Russia": "Moscow",
            "Egypt": "Cairo", "the United Kingdom": "London", "Italy": "Rome", "Spain": "Madrid"}
F = llm_pb2.FinishReason


def test_generate_one_prompt(stub):
    response = stub.Generate(request(QUESTION, max_new_tokens=16), timeout=60)
    (c,) = response.completions
    assert c.index == 0 and c.text.startswith("The theory of relativity is")
    assert c.finish_reason == F.LENGTH and c.completion_tokens == 16 and c.prompt_tokens > 10
    assert 0 < c.ttft_ms <= c.total_ms


def test_generate_three_prompts_in_request_order(stub):
    prompts = [f"What is the capital of {c}?" for c in ("France", "Japan", "Germany")]
    response = stub.Generate(request(*prompts, max_new_tokens=24), timeout=60)
    assert [c.index for c in response.completions] == [0, 1, 2]
    for c, city in zip(response.completions, ("Paris", "Tokyo", "Berlin")):
        assert city in c.text, c.text


def test_stream_three_prompts_each_ends_once(stub):
    prompts = [f"What is the capital of {c}?" for c in ("France", "Japan", "Germany")]
    texts, finals = stream_texts(stub.GenerateStream(request(*prompts, max_new_tokens=24), timeout=60))
    assert sorted(finals) == [0, 1, 2]
    for i, city in enumerate(("Paris", "Tokyo", "Berlin")):
        assert city in texts[i]
        assert finals[i].completion_tokens > 0 and finals[i].ttft_ms <= finals[i].total_ms


def test_stream_equals_unary_equals_in_process(stub, fp32_model_dir):
    n = 48
    unary = stub.Generate(request(QUESTION, max_new_tokens=n), timeout=60).completions[0].text
    texts, finals = stream_texts(stub.GenerateStream(request(QUESTION, max_new_tokens=n), timeout=60))
    assert texts[0] == unary
    assert finals[0].completion_tokens == n
    assert unary == greedy_text(fp32_model_dir, QUESTION, n)


def test_stream_sends_pieces_as_they_decode(stub):
    responses = list(stub.GenerateStream(request(QUESTION, max_new_tokens=24), timeout=60))
    pieces = [r.text for r in responses if r.text]
    assert len(pieces) >= 12  # roughly one message per token, not one lump
    assert all("\ufffd" not in p for p in pieces)


def test_eight_concurrent_clients_get_their_own_answers(stub):
    prompts = [f"What is the capital of {c}?" for c in CAPITALS]
    solo = [stub.Generate(request(p, max_new_tokens=24), timeout=60).completions[0].text for p in prompts]

    def ask(i: int) -> str:
        if i % 2:
            return stub.Generate(request(prompts[i], max_new_tokens=24), timeout=120).completions[0].text
        texts, _ = stream_texts(stub.GenerateStream(request(prompts[i], max_new_tokens=24), timeout=120))
        return texts[0]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))
    assert answers == solo


def test_finish_reason_stop_on_end_of_sequence(stub):
    (c,) = stub.Generate(request("What is the capital of France?", max_new_tokens=64), timeout=60).completions
    assert c.finish_reason == F.STOP and c.text == "The capital of France is Paris."


def test_finish_reason_stop_sequence_cuts_the_text(stub):
    (c,) = stub.Generate(request("What is the capital of France?", max_new_tokens=64, stop=[" is"]), timeout=60).completions
    assert c.finish_reason == F.STOP_SEQUENCE and c.text == "The capital of France"
    texts, finals = stream_texts(stub.GenerateStream(request("What is the capital of France?", stop=[" is"]), timeout=60))
    assert texts[0] == "The capital of France" and finals[0].finish_reason == F.STOP_SEQUENCE


def test_a_prompt_that_finished_stops_while_the_batch_goes_on(stub):
    texts, finals = stream_texts(stub.GenerateStream(
        request("What is the capital of France?", QUESTION, max_new_tokens=40), timeout=60))
    assert finals[0].finish_reason == F.STOP and finals[1].finish_reason == F.LENGTH
    assert finals[0].completion_tokens < finals[1].completion_tokens == 40


def test_min_new_tokens_holds_off_end_of_sequence(stub):
    (c,) = stub.Generate(request("What is the capital of France?", max_new_tokens=20, min_new_tokens=20), timeout=60).completions
    assert c.completion_tokens == 20 and c.finish_reason == F.LENGTH
    assert c.text.startswith("The capital of France is Paris.")


def test_same_seed_same_text(stub):
    def sample(seed: int) -> str:
        r = request("Write a short poem about the sea.", max_new_tokens=24, temperature=1.0, top_p=0.95, top_k=50, seed=seed)
        return stub.Generate(r, timeout=60).completions[0].text

    first = sample(1234)
    assert sample(1234) == first
    texts, _ = stream_texts(stub.GenerateStream(
        request("Write a short poem about the sea.", max_new_tokens=24, temperature=1.0, top_p=0.95, top_k=50, seed=1234), timeout=60))
    assert texts[0] == first
    assert len({sample(s) for s in (1, 2, 3)} | {first}) > 1  # different seeds explore


def test_sampling_parameters_change_the_answer(stub):
    greedy = stub.Generate(request(QUESTION, max_new_tokens=24), timeout=60).completions[0].text
    hot = [stub.Generate(request(QUESTION, max_new_tokens=24, temperature=1.5, seed=s), timeout=60).completions[0].text
           for s in range(3)]
    assert any(h != greedy for h in hot)
    cold = stub.Generate(request(QUESTION, max_new_tokens=24, temperature=0.0, seed=7), timeout=60).completions[0].text
    assert cold == greedy  # temperature 0 is greedy


def test_repetition_penalty_changes_a_repetitive_answer(stub):
    prompt = "Write a haiku about cats."
    plain = stub.Generate(request(prompt, max_new_tokens=32), timeout=60).completions[0].text
    penalized = stub.Generate(request(prompt, max_new_tokens=32, repetition_penalty=1.5), timeout=60).completions[0].text
    assert penalized != plain


def test_conversation_and_system_prompt(stub):
    conversation = llm_pb2.Conversation(messages=[
        llm_pb2.Message(role="system", content="You answer in one short sentence."),
        llm_pb2.Message(role="user", content="What is the capital of Japan?"),
    ])
    (c,) = stub.Generate(llm_pb2.GenerateRequest(conversations=[conversation], max_new_tokens=32), timeout=60).completions
    assert "Tokyo" in c.text
    (s,) = stub.Generate(request("What is the capital of Japan?", system_prompt="You answer in one short sentence.",
                                 max_new_tokens=32), timeout=60).completions
    assert s.text == c.text and s.prompt_tokens == c.prompt_tokens


def test_raw_prompt_skips_the_template(stub):
    (templated,) = stub.Generate(request("Paris is", max_new_tokens=4), timeout=60).completions
    (raw,) = stub.Generate(request("Paris is", raw=True, max_new_tokens=4), timeout=60).completions
    assert raw.prompt_tokens < templated.prompt_tokens and raw.prompt_tokens <= 3


def test_the_servable_key_batch_invariant_is_in_force(server):
    """What the parity tests above rely on, as the compiled model reports it."""
    numerics = next(line for line in server.log().splitlines() if "numerics: " in line)
    assert "inference_precision=f32 " in numerics and "dynamic_quantization=off" in numerics
    assert "batch-invariant mode" in server.log()


def test_json_schema_answers_parse_and_validate_unary_and_streamed(stub):
    import json

    import jsonschema

    trip = {"type": "object", "additionalProperties": False, "required": ["city", "year"],
            "properties": {"city": {"enum": ["Paris", "Rome"]}, "year": {"type": "integer", "minimum": 1900,
                                                                          "maximum": 2100}}}
    fields = dict(json_schema=json.dumps(trip), max_new_tokens=24, temperature=1.0, seed=11)
    unary = stub.Generate(request(QUESTION, **fields), timeout=120)
    texts, finals = stream_texts(stub.GenerateStream(request(QUESTION, **fields), timeout=120))
    (answer,) = unary.completions
    assert answer.text == texts[0] and answer.finish_reason == finals[0].finish_reason == F.STOP  # the same draws
    jsonschema.validate(json.loads(answer.text), trip)


def test_a_bad_json_schema_or_regex_is_invalid_argument_naming_it(stub):
    import grpc
    import pytest

    for fields, field in [({"json_schema": '{"type": "nope"}'}, "json_schema"), ({"regex": "(a"}, "regex"),
                          ({"json_schema": "{}", "regex": "a"}, "json_schema")]:
        with pytest.raises(grpc.RpcError) as caught:
            stub.Generate(request(QUESTION, **fields), timeout=60)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details().startswith(f"{field}: "), caught.value.details()
