"""Which default a field left out takes, through the official `openai` client and gRPC on real servers: on the
OpenAI API the model's generation_config.json, else the servable's generation, sampling unless temperature is 0
(vLLM's --generation-config auto); on gRPC the servable's, greedy as its do_sample says."""
from __future__ import annotations

import json

import httpx
import pytest

from client.launcher import ServerFailed
from tests.server.harness import openai_client, request, start_server

MODEL = "smollm2-135m-instruct"
POEM = [{"role": "user", "content": "Write a short poem about the sea."}]
TOKENS = 16
# Each makes sampling pick the most likely token (temperature 0: greedy; top_p 1e-9: the best token's share is more;
# top_k 1): a request that leaves out all but one of them shows that one is applied.
AUTHOR = {"temperature": 0.0, "top_p": 1e-9, "top_k": 1}


def choices(client, **fields) -> list[str]:
    r = client.chat.completions.create(model=MODEL, messages=POEM, max_tokens=TOKENS, n=3, **fields)
    assert [c.finish_reason for c in r.choices] == ["length"] * 3
    return [c.message.content for c in r.choices]


def grpc_answers(server, **fields) -> list[str]:
    from proto import llm_pb2

    conversation = llm_pb2.Conversation(messages=[llm_pb2.Message(**m) for m in POEM])
    answer = server.stub.Generate(llm_pb2.GenerateRequest(conversations=[conversation] * 3, max_new_tokens=TOKENS,
                                                          **fields), timeout=60)
    return [c.text for c in answer.completions]


def test_n_3_without_temperature_samples_on_the_shipped_servable_and_grpc_stays_greedy(client, http_server):
    """The shared server runs servable_stream, whose generation says do_sample: false; the model's file sets no
    sampling field. OpenAI's default (temperature 1) applies over HTTP; gRPC keeps the servable's greedy default."""
    assert len(set(choices(client))) > 1
    greedy = choices(client, temperature=0)
    assert len(set(greedy)) == 1
    assert grpc_answers(http_server) == greedy
    assert "generation_config.json sets none of temperature, top_p, top_k, min_p, repetition_penalty, " \
        "max_new_tokens); sampling unless temperature is 0" in http_server.log()


def model_copy(fp32_model_dir, parent, generation: dict):
    """The default model's files, its generation_config.json with `generation` added."""
    model = parent / MODEL
    model.mkdir()
    for f in fp32_model_dir.iterdir():
        if f.name != "generation_config.json":
            (model / f.name).symlink_to(f)
    written = json.loads((fp32_model_dir / "generation_config.json").read_text())
    (model / "generation_config.json").write_text(json.dumps({**written, **generation}))
    return model


@pytest.fixture(scope="module")
def author_model(fp32_model_dir, tmp_path_factory):
    return model_copy(fp32_model_dir, tmp_path_factory.mktemp("author-model"), AUTHOR)


@pytest.fixture(scope="module")
def author_server(author_model, tmp_path_factory):
    """The shipped servable_stream profile on a model whose author recommends AUTHOR."""
    s = start_server(author_model, tmp_path_factory.mktemp("author-server"), http=True, args=("--batch-invariant",))
    yield s
    s.stop()


def test_the_model_file_defaults_apply_on_http_one_by_one_and_the_request_wins(author_server, author_model):
    with openai_client(author_server) as client:
        greedy = choices(client, temperature=0)
        assert len(set(greedy)) == 1
        assert choices(client) == greedy  # all three of the author's
        assert choices(client, top_p=1.0, extra_body={"top_k": 0}) == greedy  # the author's temperature 0
        assert choices(client, temperature=1.0, extra_body={"top_k": 0}) == greedy  # the author's top_p
        assert choices(client, temperature=1.0, top_p=1.0) == greedy  # the author's top_k
        assert len(set(choices(client, temperature=1.0, top_p=1.0, extra_body={"top_k": 0}))) > 1  # the request's
    assert (f"OpenAI API defaults: temperature 0.0, top_p 1e-09, top_k 1 from {author_model / 'generation_config.json'}"
            ", else the servable's generation; sampling unless temperature is 0") in author_server.log()


def test_the_model_file_defaults_do_not_apply_on_grpc_or_kserve(author_server):
    """gRPC and KServe: greedy unless asked (the servable's do_sample: false); asked to sample, the servable's top_p and
    top_k (1 and none), not the author's."""
    greedy = grpc_answers(author_server, temperature=0)
    assert len(set(greedy)) == 1 and grpc_answers(author_server) == greedy
    assert len(set(grpc_answers(author_server, temperature=1.0))) > 1

    def kserve(**parameters) -> list[str]:
        prompts = [POEM[0]["content"]] * 3
        inputs = [{"name": "pre_prompt", "shape": [3], "datatype": "BYTES", "data": prompts}]
        reply = httpx.post(f"{author_server.http_url}/v2/models/python_model/infer", timeout=120,
                           json={"inputs": inputs, "parameters": {"max_new_tokens": TOKENS, **parameters}})
        assert reply.status_code == 200, reply.text
        return reply.json()["outputs"][0]["data"]

    (prompted,) = {c.text for c in author_server.stub.Generate(request(POEM[0]["content"], max_new_tokens=TOKENS),
                                                               timeout=60).completions}
    assert kserve() == [prompted] * 3
    assert len(set(kserve(temperature=1.0))) > 1


def test_generation_config_servable_leaves_the_model_file_out(author_model, tmp_path):
    s = start_server(author_model, tmp_path, http=True, args=("--batch-invariant", "--generation-config", "servable"))
    try:
        with openai_client(s) as client:
            assert len(set(choices(client))) > 1  # OpenAI's temperature 1, no top_p or top_k
        assert "OpenAI API defaults: the servable's generation (generation_config servable: the model's file is " \
            "not read)" in s.log()
    finally:
        s.stop()


def test_a_model_file_value_no_request_could_send_stops_the_start_in_one_line(fp32_model_dir, tmp_path):
    model = model_copy(fp32_model_dir, tmp_path, {"top_p": 0})
    with pytest.raises(ServerFailed) as caught:
        start_server(model, tmp_path / "server")
    assert caught.value.last_line == (f"error: {model / 'generation_config.json'}: top_p: must be in (0, 1]; set "
                                      "generation_config to servable not to apply the file")
    assert "Traceback" not in caught.value.tail
