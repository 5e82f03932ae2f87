"""Same request, same answer, on the shipped profile with prefix caching on: what ran before (the same prompt, fully
or partly cached) does not change a greedy answer, through gRPC and the OpenAI API."""
import httpx
import pytest

from server.engine.scheduler import RECOMPUTED
from tests.server.harness import request, start_server, stream_texts

CITY = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"], "additionalProperties": False}
PROMPTS = ("Give the capital of France and its population as JSON.", "What is the theory of relativity?",
           "Write a short poem about the sea.", "What is the capital of Japan?")


@pytest.fixture(scope="module")
def server(int8_model_dir, tmp_path_factory):
    s = start_server(int8_model_dir, tmp_path_factory.mktemp("same-answer"), http=True)
    yield s
    s.stop()


def test_generate_then_generate_stream_of_one_prompt_give_one_text(server):
    question = request("Who is Albert Einstein?", max_new_tokens=12)  # its KV ends in its prompt's last block
    (whole,) = server.stub.Generate(question, timeout=120).completions
    texts, finals = stream_texts(server.stub.GenerateStream(question, timeout=120))
    assert finals[0].cached_tokens == whole.prompt_tokens - RECOMPUTED  # the second read its prompt from the cache
    assert texts[0] == whole.text


def test_each_prompt_sent_six_times_in_a_row_gets_one_answer(server, int8_model_dir):
    """Short answers (their KV ends in the prompt's last block) make the repeats read all but the prompt's last
    tokens from the cache; the logprobs must agree to the last bit, not only the text."""
    for prompt in PROMPTS:
        body = {"model": int8_model_dir.name, "messages": [{"role": "user", "content": prompt}], "max_tokens": 24,
                "temperature": 0, "logprobs": True}
        if "JSON" in prompt:
            body |= {"max_tokens": 80, "response_format": {"type": "json_schema", "json_schema": {
                "name": "city", "schema": CITY, "strict": True}}}
        got = [httpx.post(f"{server.http_url}/v1/chat/completions", json=body, timeout=120).json() for _ in range(6)]
        answers = {(g["choices"][0]["message"]["content"],
                    tuple(t["logprob"] for t in g["choices"][0]["logprobs"]["content"])) for g in got}
        assert len(answers) == 1, [g["choices"][0]["message"]["content"] for g in got]
        cached = [g["usage"].get("prompt_tokens_details", {}).get("cached_tokens", 0) for g in got]
        assert cached[0] < max(cached[1:]), cached
