"""The server's life over gRPC: health states, reflection, cancellation, deadlines, draining on SIGTERM."""
from __future__ import annotations

import signal
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from tests.server.harness import STATUS, request, start_server, stream_texts, wait_until

Code = grpc.StatusCode
LONG = dict(max_new_tokens=512, min_new_tokens=512)


def test_reflection_lists_the_services(server):
    services = ProtoReflectionDescriptorDatabase(server.channel).get_services()
    assert "llm.LLMService" in services and "grpc.health.v1.Health" in services


def test_health_serving_for_the_server_and_the_service(server):
    assert server.health() == STATUS.SERVING
    assert server.health("llm.LLMService") == STATUS.SERVING


def test_cancel_after_first_message_frees_the_place(server):
    stub = server.stub
    stub.Generate(request("hi", max_new_tokens=2), timeout=60)  # warm every thread pool
    before = server.threads()
    call = stub.GenerateStream(request("Tell me a long story.", **LONG), timeout=120)
    next(call)
    started = time.monotonic()
    call.cancel()
    (c,) = stub.Generate(request("What is the capital of France?", max_new_tokens=16), timeout=60).completions
    assert "Paris" in c.text
    # The cancelled generation (512 tokens) stopped within a few steps, so the next answer came quickly.
    assert time.monotonic() - started < 10
    assert wait_until(lambda: server.threads() <= before), (before, server.threads())


def test_deadline_ends_the_call_and_frees_the_place(server):
    stub = server.stub
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.GenerateStream(request("Tell me a long story.", **LONG), timeout=1.0))
    assert caught.value.code() == Code.DEADLINE_EXCEEDED
    with pytest.raises(grpc.RpcError) as caught:
        stub.Generate(request("Tell me a long story.", **LONG), timeout=1.0)
    assert caught.value.code() == Code.DEADLINE_EXCEEDED
    started = time.monotonic()
    (c,) = stub.Generate(request("What is the capital of France?", max_new_tokens=16), timeout=60).completions
    assert "Paris" in c.text and time.monotonic() - started < 10
    assert server.log().count("status=DEADLINE_EXCEEDED") >= 2  # counted as what it was, not as a cancel


def test_health_not_serving_while_loading_then_serving(fp32_model_dir, tmp_path):
    s = start_server(fp32_model_dir, tmp_path, wait=False)
    try:
        seen = []

        def watch():
            try:
                for r in s.health_stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=180):
                    seen.append(r.status)
                    if r.status == STATUS.SERVING:
                        return
            except grpc.RpcError:
                pass

        assert wait_until(lambda: _listening(s), timeout=60)
        watcher = threading.Thread(target=watch)
        watcher.start()
        with pytest.raises(grpc.RpcError) as caught:  # calls before the model is ready
            s.stub.Generate(request("hi", max_new_tokens=2), timeout=10)
        assert caught.value.code() == Code.UNAVAILABLE
        watcher.join(180)
        assert seen[0] == STATUS.NOT_SERVING and seen[-1] == STATUS.SERVING
    finally:
        assert s.stop() == 0


def _listening(s) -> bool:
    try:
        s.health()
        return True
    except grpc.RpcError:
        return False


def test_sigterm_drains_a_running_stream_and_exits_zero(fp32_model_dir, tmp_path):
    s = start_server(fp32_model_dir, tmp_path, args=("--grace-seconds", "300"))
    watch = s.health_stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=120)  # must not hold shutdown
    assert next(watch).status == STATUS.SERVING
    call = s.stub.GenerateStream(request("Tell me a story.", max_new_tokens=48, min_new_tokens=48), timeout=120)
    first = next(call)
    signalled = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    assert wait_until(lambda: s.health() == STATUS.NOT_SERVING, timeout=10)
    with pytest.raises(grpc.RpcError) as caught:  # new calls are refused while draining
        s.stub.Generate(request("hi", max_new_tokens=2), timeout=10)
    assert caught.value.code() == Code.UNAVAILABLE
    texts, finals = stream_texts([first, *call])
    assert finals[0].completion_tokens == 48
    assert s.proc.wait(60) == 0
    # Done when the stream is, though a Watch stream was open: far inside the grace (a loaded machine's slack).
    assert time.monotonic() - signalled < 120
    assert "stopped" in s.log()
