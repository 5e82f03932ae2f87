"""Bad requests, a full queue and a failing generation end with the right gRPC status, and the server goes on."""
from __future__ import annotations

import math
import threading
import time

import grpc
import pytest

from proto import llm_pb2
from tests.server.harness import request, start_server, stream_texts

Code = grpc.StatusCode
C = llm_pb2.Conversation
M = llm_pb2.Message

BAD = {
    "nothing": (llm_pb2.GenerateRequest(), "prompts"),
    "both": (llm_pb2.GenerateRequest(prompts=["hi"], conversations=[C(messages=[M(role="user", content="hi")])]), "prompts"),
    "empty prompt": (request("hi", "  "), "prompts[1]"),
    "too many prompts": (request(*["hi"] * 9), "prompts"),
    "negative temperature": (request("hi", temperature=-0.5), "temperature"),
    "NaN temperature": (request("hi", temperature=math.nan), "temperature"),
    "top_p zero": (request("hi", top_p=0.0), "top_p"),
    "top_p above one": (request("hi", top_p=1.5), "top_p"),
    "repetition_penalty zero": (request("hi", repetition_penalty=0.0), "repetition_penalty"),
    "max_new_tokens zero": (request("hi", max_new_tokens=0), "max_new_tokens"),
    "max_new_tokens above cap": (request("hi", max_new_tokens=100_000), "max_new_tokens"),
    "min above max": (request("hi", max_new_tokens=10, min_new_tokens=20), "min_new_tokens"),
    # The shared server allows 6000 prompt tokens and 4096 new ones; the model's context is 8192.
    "prompt above max prompt tokens": (request("word " * 7000), "prompts[0]"),
    "prompt + max_new_tokens above context": (request("word " * 5000, max_new_tokens=4000), "prompts[0]"),
    "too many stop strings": (request("hi", stop=[str(i) for i in range(9)]), "stop"),
    "too long stop string": (request("hi", stop=["x" * 65]), "stop[0]"),
    "empty stop string": (request("hi", stop=[""]), "stop[0]"),
    "unknown role": (llm_pb2.GenerateRequest(conversations=[C(messages=[M(role="wizard", content="hi")])]),
                     "conversations[0].messages[0].role"),
    "empty conversation": (llm_pb2.GenerateRequest(conversations=[C()]), "conversations[0].messages"),
}


@pytest.mark.parametrize("name", list(BAD))
@pytest.mark.parametrize("rpc", ["Generate", "GenerateStream"])
def test_bad_request_is_invalid_argument_naming_the_field(stub, name, rpc):
    message, field = BAD[name]
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        result = getattr(stub, rpc)(message, timeout=30)
        list(result) if rpc == "GenerateStream" else result
    assert caught.value.code() == Code.INVALID_ARGUMENT
    assert caught.value.details().startswith(field + ":"), caught.value.details()
    assert time.monotonic() - started < 5  # refused before any work


def test_server_still_answers_after_bad_requests(stub):
    (c,) = stub.Generate(request("What is the capital of France?", max_new_tokens=8), timeout=60).completions
    assert "Paris" in c.text


@pytest.fixture(scope="module")
def tiny_queue_server(fp32_model_dir, tmp_path_factory):
    """One batch of one prompt at a time and one waiting place: the third concurrent request overflows."""
    s = start_server(fp32_model_dir, tmp_path_factory.mktemp("tiny-queue"),
                     config={"limits": {"max_batch": 1, "max_waiting": 1}})
    yield s
    s.stop()


def test_full_queue_is_resource_exhausted_and_accepted_requests_complete(tiny_queue_server):
    stub = tiny_queue_server.stub
    long = request("Tell me a long story.", max_new_tokens=64, min_new_tokens=64)
    running = stub.GenerateStream(long, timeout=120)
    first = next(running)  # the batch is running
    waiting = stub.Generate.future(long, timeout=120)
    time.sleep(0.3)  # let it reach the queue
    with pytest.raises(grpc.RpcError) as caught:
        stub.Generate(request("hi", max_new_tokens=4), timeout=30)
    assert caught.value.code() == Code.RESOURCE_EXHAUSTED
    assert "queue" in caught.value.details()
    texts, finals = stream_texts([first, *running])
    assert finals[0].completion_tokens == 64
    assert waiting.result().completions[0].completion_tokens == 64


@pytest.fixture(scope="module")
def faulty_server(fp32_model_dir, tmp_path_factory):
    s = start_server(fp32_model_dir, tmp_path_factory.mktemp("faulty"), fault_marker="FAIL-HERE")
    yield s
    s.stop()


def test_failure_inside_one_generation_is_internal_and_others_go_on(faulty_server):
    stub = faulty_server.stub
    healthy = stub.GenerateStream.__call__(request("What is the capital of France?", max_new_tokens=24,
                                                   min_new_tokens=24), timeout=120)
    results = {}
    thread = threading.Thread(target=lambda: results.update(ok=stream_texts(healthy)))
    thread.start()
    with pytest.raises(grpc.RpcError) as caught:
        stub.Generate(request("FAIL-HERE please", max_new_tokens=24), timeout=60)
    assert caught.value.code() == Code.INTERNAL
    assert "fault injected" in caught.value.details()
    thread.join(120)
    texts, finals = results["ok"]
    assert finals[0].completion_tokens == 24 and "Paris" in texts[0]
    (c,) = stub.Generate(request("What is the capital of Japan?", max_new_tokens=16), timeout=60).completions
    assert "Tokyo" in c.text
