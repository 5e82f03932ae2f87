"""Metrics and request logs of a real server: counts add up, prompts stay out of logs unless asked."""
from __future__ import annotations

import json
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from client.launcher import free_port
from tests.server.harness import request, start_server, stream_texts


@pytest.fixture(scope="module")
def observed(fp32_model_dir, tmp_path_factory):
    port = free_port()
    s = start_server(fp32_model_dir, tmp_path_factory.mktemp("observed"),
                     args=("--metrics-port", str(port), "--log-format", "json"))
    s.metrics_url = f"http://127.0.0.1:{port}/metrics"
    yield s
    s.stop()


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def request_logs(server) -> list[dict]:
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    return [entry for entry in lines if entry.get("logger") == "server.requests"]


def test_metrics_count_what_happened(observed):
    stub = observed.stub
    secret = "What is the capital of France?"
    stub.Generate(request(secret, "What is the capital of Japan?", max_new_tokens=8, min_new_tokens=8), timeout=60)
    _, finals = stream_texts(stub.GenerateStream(request(secret, max_new_tokens=5, min_new_tokens=5), timeout=60))
    with pytest.raises(grpc.RpcError):
        stub.Generate(request("hi", temperature=-1.0), timeout=30)

    m = scrape(observed.metrics_url)
    assert value(m, "llm_requests_total", protocol="grpc", rpc="Generate", code="OK") == 1
    assert value(m, "llm_requests_total", protocol="grpc", rpc="GenerateStream", code="OK") == 1
    assert value(m, "llm_requests_total", protocol="grpc", rpc="Generate", code="INVALID_ARGUMENT") == 1
    assert value(m, "llm_generated_tokens_total") == 8 + 8 + 5
    assert value(m, "llm_prompt_tokens_total") == sum(e["tokens_in"] for e in request_logs(observed))
    # Prefix caching is on by default: the stream repeats the first prompt, whose full blocks are cached
    # (the engine tests check the exact count; the block size is the compiled model's).
    assert value(m, "llm_prefix_cache_queries_total") == value(m, "llm_prompt_tokens_total")
    assert value(m, "llm_prefix_cache_hits_total") == sum(e["tokens_cached"] for e in request_logs(observed)) > 0
    assert value(m, "llm_kv_cache_blocks_cached") > 0
    assert value(m, "llm_time_to_first_token_seconds_count") == 3  # one per prompt
    assert value(m, "llm_time_per_output_token_seconds_count") == 3
    assert value(m, "llm_request_duration_seconds_count") == 3  # one per call
    # Paged engine: one observation per step, of the sequences in it: 8 tokens of each of 2 prompts, then 5 of 1, in
    # 8 + 5 steps, or 9 + 5 when pacing starts the call's two prompts a step apart.
    assert value(m, "llm_batch_size_sum") == 2 * 8 + 5 and value(m, "llm_batch_size_count") in (8 + 5, 9 + 5)
    assert value(m, "llm_kv_cache_blocks_total") > 0
    assert value(m, "llm_kv_cache_blocks_used") == 0 and value(m, "llm_kv_cache_blocks_reserved") == 0
    assert value(m, "llm_requests_running") == 0 and value(m, "llm_requests_waiting") == 0
    assert value(m, "llm_model_load_seconds") > 0

    logs = request_logs(observed)
    assert [(e["rpc"], e["status"], e["prompts"]) for e in logs] == [
        ("Generate", "OK", 2), ("GenerateStream", "OK", 1), ("Generate", "INVALID_ARGUMENT", 1)]
    assert logs[0]["tokens_out"] == 16 and logs[1]["tokens_out"] == 5 and logs[0]["ttft_ms"] <= logs[0]["total_ms"]
    assert logs[0]["tokens_cached"] == 0 and 0 < logs[1]["tokens_cached"] < logs[1]["tokens_in"]
    for e in logs[:2]:  # the stages, from the call's arrival in the engine
        assert 0 <= e["queued_ms"] <= e["admitted_ms"] <= e["ttft_ms"] <= e["total_ms"]
    assert logs[2]["queued_ms"] is logs[2]["admitted_ms"] is logs[2]["ttft_ms"] is None  # refused before the queue
    assert len({e["request_id"] for e in logs}) == 3
    assert "temperature" in logs[2]["detail"]
    assert secret not in observed.log()  # no prompt text without --log-prompts


def test_prompts_logged_only_when_asked(fp32_model_dir, tmp_path):
    s = start_server(fp32_model_dir, tmp_path, args=("--log-prompts",))
    try:
        s.stub.Generate(request("What is the capital of Italy?", max_new_tokens=2), timeout=60)
    finally:
        assert s.stop() == 0
    assert "What is the capital of Italy?" in s.log()
    assert "rpc=Generate" in s.log() and "status=OK" in s.log()
