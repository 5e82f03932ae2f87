"""Metrics and request logs of a real server: counts add up, prompts stay out of logs unless asked."""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from client.launcher import free_port
from tests.server.harness import request, start_server, stream_texts, wait_until


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


# --- /metrics on the HTTP port, under vLLM's names too ------------------------------------------------------------

KEY = "s3cret-api-key"
AUTH = [("authorization", f"Bearer {KEY}")]


@pytest.fixture(scope="module")
def one_at_a_time(fp32_model_dir, tmp_path_factory):
    """HTTP on (/metrics there), an API key, and one sequence at a time: a second request must wait."""
    s = start_server(fp32_model_dir, tmp_path_factory.mktemp("one-at-a-time"), config={"limits": {"max_batch": 1}},
                     args=("--api-key", KEY), http=True)
    yield s
    s.stop()


def get(url: str, key: str | None = None) -> tuple[int, str]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except urllib.error.URLError:  # not listening yet
        return 0, ""


def test_vllm_gauges_on_the_http_port_move_under_load(one_at_a_time, fp32_model_dir):
    """What the Gateway API Inference Extension's endpoint picker and KEDA read: requests waiting and KV-cache use, by
    vLLM's names with a model_name label, on the HTTP port; with an API key set, /metrics still answers without it."""
    server, model = one_at_a_time, {"model_name": fp32_model_dir.name}
    url = server.http_url + "/metrics"
    tokens, calls = 48, 3
    finals: list = []

    def stream():
        _, done = stream_texts(server.stub.GenerateStream(
            request("Tell me a long story.", max_new_tokens=tokens, min_new_tokens=tokens), timeout=120, metadata=AUTH))
        finals.extend(done.values())

    assert get(server.http_url + "/v1/models")[0] == 401  # the key guards the API ...
    seen: list[dict] = []

    def busy() -> bool:
        m = scrape(url)  # ... but not /metrics
        now = {name: value(m, name, **model) for name in
               ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc")}
        seen.append(now)
        return now["vllm:num_requests_running"] == 1 and now["vllm:num_requests_waiting"] >= 1 \
            and now["vllm:kv_cache_usage_perc"] > 0

    workers = [threading.Thread(target=stream) for _ in range(calls)]
    for w in workers:
        w.start()
    try:
        assert wait_until(busy, timeout=60), seen[-5:]
    finally:
        for w in workers:
            w.join(120)
    assert len(finals) == calls and all(f.completion_tokens == tokens for f in finals)

    def idle() -> bool:
        m = scrape(url)
        return value(m, "vllm:num_requests_running", **model) == value(m, "vllm:num_requests_waiting", **model) == 0 \
            and value(m, "vllm:kv_cache_usage_perc", **model) == 0
    assert wait_until(idle, timeout=30)
    m = scrape(url)
    assert value(m, "vllm:gpu_cache_usage_perc", **model) == value(m, "vllm:kv_cache_usage_perc", **model)
    assert value(m, "vllm:request_success_total", finished_reason="length", **model) == calls
    assert value(m, "vllm:generation_tokens_total", **model) == calls * tokens == value(m, "llm_generated_tokens_total")
    assert value(m, "vllm:prompt_tokens_total", **model) == value(m, "llm_prompt_tokens_total") > 0
    for name in ("time_to_first_token_seconds", "e2e_request_latency_seconds", "request_queue_time_seconds",
                 "request_prefill_time_seconds", "request_decode_time_seconds", "request_inference_time_seconds",
                 "request_time_per_output_token_seconds", "request_prompt_tokens", "request_generation_tokens"):
        assert value(m, f"vllm:{name}_count", **model) == calls, name
    # Two of the three waited for the first: their queue time is at least its generation's.
    assert value(m, "vllm:request_queue_time_seconds_sum", **model) > 0
    assert value(m, "vllm:request_generation_tokens_sum", **model) == calls * tokens


def test_metrics_api_key_guards_metrics_when_set(fp32_model_dir, tmp_path):
    s = start_server(fp32_model_dir, tmp_path, args=("--api-key", KEY, "--metrics-api-key", "scraper"), http=True,
                     wait=False)
    try:
        url = s.http_url + "/metrics"
        assert wait_until(lambda: get(url)[0] == 401, timeout=120), s.log()  # no key, while loading too
        assert get(url, KEY)[0] == 401  # the API key is not the metrics key
        status, text = get(url, "scraper")
        assert status == 200 and "vllm:num_requests_waiting" in text
    finally:
        s.stop()
    assert "scraper" not in s.log() and KEY not in s.log()  # secrets never logged
