"""Faults: client processes killed mid-stream, deadlines under load, SIGTERM during load, an exception
injected inside one generation while others run. After each, the running/waiting gauges return to zero
and the next call is answered at once."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2

from tests.robustness.common import (CAPITAL_PROMPTS, ROOT, Code, call, gauges, metric, record, run_all, solo_answers,
                                     start_metered, wait_until)
from tests.server.harness import STATUS, request

LONG = dict(max_new_tokens=512, min_new_tokens=512)
MARKER = "FAIL-HERE"

# A real client, in a process of its own: streams a long batch and says so on its first message.
CLIENT = """
import sys, grpc
from proto import llm_pb2, llm_pb2_grpc
address, prompts = sys.argv[1], int(sys.argv[2])
stub = llm_pb2_grpc.LLMServiceStub(grpc.insecure_channel(address))
req = llm_pb2.GenerateRequest(prompts=["Tell me a long story."] * prompts, max_new_tokens=512, min_new_tokens=512)
for i, _ in enumerate(stub.GenerateStream(req, timeout=120)):
    if i == 0:
        print("streaming", flush=True)
"""


@pytest.fixture(scope="module")
def faults_server(fp32_model_dir, tmp_path_factory):
    s = start_metered(fp32_model_dir, tmp_path_factory.mktemp("faults"), fault_marker=MARKER)
    yield s
    assert s.stop() == 0


def answered_at_once(server, within: float = 10.0) -> float:
    """The next call is answered right, and soon: nothing left holds the engine."""
    started = time.monotonic()
    (c,) = server.stub.Generate(request(CAPITAL_PROMPTS[0], max_new_tokens=16), timeout=60).completions
    took = time.monotonic() - started
    assert c.text == "The capital of France is Paris." and took < within, (c.text, took)
    return took


def statuses(server, status: str) -> int:
    return server.log().count(f"status={status}")


def test_killed_client_processes_free_their_places(faults_server):
    server = faults_server
    cancelled_before = statuses(server, "CANCELLED")
    # 3 clients x 4 prompts with batches of 8: some run, one at least waits in the queue.
    clients = [subprocess.Popen([sys.executable, "-c", CLIENT, server.address, "4"], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
               for _ in range(3)]
    try:
        assert wait_until(lambda: sum(gauges(server)) == 3, timeout=30), gauges(server)
        ready, _, _ = select.select([c.stdout for c in clients], [], [], 30)
        streaming = [c for c in clients if c.stdout in ready and c.stdout.readline().strip() == b"streaming"]
        running, waiting = gauges(server)
        assert streaming and running >= 1
        for c in clients:
            c.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        assert [c.wait(10) for c in clients] == [-signal.SIGKILL] * 3
    finally:
        for c in clients:
            if c.poll() is None:
                c.kill()
            c.wait(10)
    assert wait_until(lambda: gauges(server) == (0, 0), timeout=10), gauges(server)
    freed = time.monotonic() - killed_at
    assert metric(server, "llm_kv_cache_blocks_used") == 0 and metric(server, "llm_kv_cache_blocks_reserved") == 0
    took = answered_at_once(server)
    assert wait_until(lambda: statuses(server, "CANCELLED") - cancelled_before == 3, timeout=10)
    record("killed clients", processes=3, streaming_when_killed=len(streaming), running=running, waiting=waiting,
           gauges_zero_after_s=f"{freed:.2f}", next_call_s=f"{took:.2f}")


def test_deadlines_under_load_end_and_free_their_places(faults_server):
    server = faults_server
    solo = solo_answers(server.stub, CAPITAL_PROMPTS[:4], max_new_tokens=16)
    jobs = [lambda i=i: call(server.stub, ("Generate", "GenerateStream")[i % 2], request("Tell me a long story.", **LONG),
                             timeout=1.5) for i in range(6)]
    jobs += [lambda p=p: call(server.stub, "GenerateStream", request(p, max_new_tokens=16), timeout=120)
             for p in CAPITAL_PROMPTS[:4]]
    started = time.monotonic()
    results = run_all(jobs, len(jobs), budget=120)
    duration = time.monotonic() - started
    expired = [r for r in results[:6] if isinstance(r, grpc.RpcError) and r.code() == Code.DEADLINE_EXCEEDED]
    assert len(expired) == 6, results[:6]
    assert [r[0][0] if not isinstance(r, Exception) else r for r in results[6:]] == [solo[p] for p in CAPITAL_PROMPTS[:4]]
    assert wait_until(lambda: gauges(server) == (0, 0), timeout=10), gauges(server)
    answered_at_once(server)
    record("deadlines under load", expired=len(expired), completed_alongside=4, duration_s=f"{duration:.1f}")


def test_fault_in_one_generation_fails_that_call_only(faults_server):
    server = faults_server
    solo = solo_answers(server.stub, CAPITAL_PROMPTS, max_new_tokens=16)
    calls = []
    for i in range(24):
        first, second = CAPITAL_PROMPTS[i % 8], CAPITAL_PROMPTS[(i + 3) % 8]
        prompts = [f"{MARKER} {first}", second] if i % 4 == 0 else [first, second]
        calls.append((("Generate", "GenerateStream")[i % 2], prompts))
    results = run_all([lambda rpc=rpc, p=p: call(server.stub, rpc, request(*p, max_new_tokens=16), timeout=120)
                       for rpc, p in calls], 8, budget=180)
    failed = ok = 0
    for (rpc, prompts), result in zip(calls, results):
        if MARKER in prompts[0]:
            assert isinstance(result, grpc.RpcError) and result.code() == Code.INTERNAL, result
            assert "fault injected" in result.details()
            failed += 1
        else:
            assert not isinstance(result, Exception), result
            assert [text for text, _ in result] == [solo[p] for p in prompts]
            ok += 1
    assert wait_until(lambda: gauges(server) == (0, 0), timeout=10), gauges(server)
    answered_at_once(server)
    record("injected faults", calls=len(calls), internal=failed, ok_and_right=ok)


def _watch_health(server, seen: list):
    """Health.Watch in a thread, appending (time, status); returns the call (cancel it when done: an open
    Watch stream is a running call, and would hold the server for the whole grace period)."""
    watch = server.health_stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=120)

    def follow():
        try:
            for r in watch:
                seen.append((time.monotonic(), r.status))
        except grpc.RpcError:
            pass
    threading.Thread(target=follow, daemon=True).start()
    assert wait_until(lambda: seen and seen[-1][1] == STATUS.SERVING, timeout=10)
    return watch


def _gone(server) -> None:
    """A test that failed half-way leaves no server behind."""
    if server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait(10)


def test_sigterm_during_load_drains_and_exits_zero(fp32_model_dir, tmp_path):
    server = start_metered(fp32_model_dir, tmp_path, config={"grace_seconds": 30.0})
    try:
        seen: list = []
        watch = _watch_health(server, seen)
        n, tokens = 12, 32
        solo = solo_answers(server.stub, CAPITAL_PROMPTS, max_new_tokens=8)
        results: list = [None] * n

        def client(i):
            p = [CAPITAL_PROMPTS[i % 8]] * (1 + i % 2)
            try:
                results[i] = call(server.stub, ("Generate", "GenerateStream")[i % 2],
                                  request(*p, max_new_tokens=tokens, min_new_tokens=tokens), timeout=120)
            except grpc.RpcError as error:
                results[i] = error

        threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        assert wait_until(lambda: sum(gauges(server)) == n, timeout=30), gauges(server)
        in_flight = gauges(server)
        server.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert wait_until(lambda: seen[-1][1] == STATUS.NOT_SERVING, timeout=5), seen
        not_serving_after = seen[-1][0] - signalled
        watch.cancel()
        with pytest.raises(grpc.RpcError) as refused:
            server.stub.Generate(request("hi", max_new_tokens=2), timeout=10)
        assert refused.value.code() == Code.UNAVAILABLE
        for t in threads:
            t.join(60)
        code = server.proc.wait(60)
        exited_after = time.monotonic() - signalled
    finally:
        _gone(server)
    errors = [r for r in results if isinstance(r, Exception) or r is None]
    assert not errors, errors
    assert all(len(r) == 1 + i % 2 for i, r in enumerate(results))
    for i, r in enumerate(results):
        assert all(text.startswith(solo[CAPITAL_PROMPTS[i % 8]]) for text, _ in r), (r, solo)
    assert code == 0 and exited_after < 30 and "stopped" in server.log()
    record("SIGTERM during load", calls=n, running=in_flight[0], waiting=in_flight[1], completed=n - len(errors),
           not_serving_after_s=f"{not_serving_after:.2f}", exit_code=code, exited_after_s=f"{exited_after:.1f}")


def test_sigterm_with_a_short_grace_cuts_long_calls_and_exits_zero(fp32_model_dir, tmp_path):
    server = start_metered(fp32_model_dir, tmp_path, config={"grace_seconds": 2.0})
    try:
        stream = server.stub.GenerateStream(request("Tell me a long story.", **LONG), timeout=120)
        next(stream)
        server.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        with pytest.raises(grpc.RpcError) as cut:
            list(stream)
        code = server.proc.wait(30)
        exited_after = time.monotonic() - signalled
    finally:
        _gone(server)
    assert cut.value.code() in (Code.CANCELLED, Code.UNAVAILABLE), cut.value
    assert code == 0 and exited_after < 2.0 + 8, exited_after
    record("SIGTERM, grace 2 s, 512-token stream", client_status=cut.value.code().name, exit_code=code,
           exited_after_s=f"{exited_after:.1f}")
