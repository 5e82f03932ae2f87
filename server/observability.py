"""Per-call accounting: Prometheus metrics (our llm_* names, and vLLM's vllm:* names with a model_name label for the
routers and autoscalers that read those) and one structured log line per request."""
from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

from server.engine.types import Event, Finished, FinishReason, Usage

log = logging.getLogger("server.requests")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TOKEN_BUCKETS = (0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
COUNT_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000)  # vLLM's 1-2-5 series
# vLLM's finished_reason label values.
FINISHED_REASONS = {FinishReason.STOP: "stop", FinishReason.STOP_SEQUENCE: "stop", FinishReason.LENGTH: "length",
                    FinishReason.CANCELLED: "abort"}


class Metrics:
    """The server's Prometheus metrics, in a registry of its own (one per server, none global)."""

    def __init__(self, model_name: str = "model"):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("llm_requests", "Finished calls by protocol, RPC and status code",
                                ["protocol", "rpc", "code"], registry=r)
        self.running = Gauge("llm_requests_running", "Requests generating", registry=r)
        self.waiting = Gauge("llm_requests_waiting", "Requests waiting to start", registry=r)
        self.batch_size = Histogram("llm_batch_size", "Sequences per engine step", buckets=BATCH_BUCKETS, registry=r)
        self.ttft = Histogram("llm_time_to_first_token_seconds", "Per prompt, arrival to first token",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("llm_time_per_output_token_seconds", "Per prompt, (total - ttft) / (tokens - 1)",
                              buckets=TOKEN_BUCKETS, registry=r)
        self.e2e = Histogram("llm_request_duration_seconds", "Per call, arrival to last message",
                             buckets=LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("llm_prompt_tokens", "Prompt tokens of finished prompts", registry=r)
        self.generated_tokens = Counter("llm_generated_tokens", "Tokens generated", registry=r)
        # In tokens, as vLLM's prefix_cache_queries / prefix_cache_hits; counted only while caching is on.
        self.prefix_queries = Counter("llm_prefix_cache_queries", "Prompt tokens looked up in the prefix cache",
                                      registry=r)
        self.prefix_hits = Counter("llm_prefix_cache_hits", "Prompt tokens found in the prefix cache", registry=r)
        # As vLLM's spec_decode_num_draft_tokens / spec_decode_num_accepted_tokens.
        self.spec_proposed = Counter("llm_spec_proposed_tokens", "Tokens prompt-lookup speculation proposed",
                                     registry=r)
        self.spec_accepted = Counter("llm_spec_accepted_tokens", "Proposed tokens kept", registry=r)
        self.prefix_caching = False
        self.load_seconds = Gauge("llm_model_load_seconds", "Time to load and compile the model", registry=r)
        self.kv_blocks_used = Gauge("llm_kv_cache_blocks_used", "KV-cache blocks holding tokens",
                                    registry=r)
        self.kv_blocks_reserved = Gauge("llm_kv_cache_blocks_reserved",
                                        "KV-cache blocks set aside for running sequences", registry=r)
        self.kv_blocks_total = Gauge("llm_kv_cache_blocks_total", "KV-cache blocks in all", registry=r)
        self.kv_usage = Gauge("llm_kv_cache_usage_ratio", "Used KV-cache blocks / all blocks",
                              registry=r)
        self.kv_blocks_cached = Gauge("llm_kv_cache_blocks_cached", "Free KV-cache blocks kept for prefix reuse",
                                      registry=r)
        self.vllm = VllmMetrics(self, model_name)

    def watch_engine(self, engine) -> None:
        self.running.set_function(lambda: engine.counts()[0])
        self.waiting.set_function(lambda: engine.counts()[1])
        stats = engine.stats  # the scheduler's state after the last step, a value the step hands out
        self.kv_blocks_total.set(stats().blocks_total)
        self.kv_blocks_used.set_function(lambda: stats().blocks_used)
        self.kv_blocks_reserved.set_function(lambda: stats().blocks_reserved)
        self.kv_usage.set_function(lambda: stats().blocks_used / stats().blocks_total)
        self.kv_blocks_cached.set_function(lambda: stats().blocks_cached)
        self.prefix_caching = stats().prefix_caching

    def serve(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)


def _current(gauge: Gauge) -> float:
    """A gauge's value now (its function's, when it has one)."""
    return gauge.collect()[0].samples[0].value


class VllmMetrics:
    """The same figures under vLLM's names, with its `model_name` label: the Gateway API Inference Extension's endpoint
    picker, KEDA and vLLM's dashboards read these unchanged. The gauges mirror ours (whatever feeds those); a vLLM
    request is one prompt, so the per-request series count prompts, not calls."""

    def __init__(self, ours: Metrics, model_name: str):
        r, label = ours.registry, ["model_name"]

        def gauge(name: str, doc: str, source: Gauge) -> None:
            Gauge(name, doc, label, registry=r).labels(model_name).set_function(lambda: _current(source))

        def counter(name: str, doc: str):
            return Counter(name, doc, label, registry=r).labels(model_name)

        def histogram(name: str, doc: str, buckets):
            return Histogram(name, doc, label, buckets=buckets, registry=r).labels(model_name)

        gauge("vllm:num_requests_running", "Requests generating (llm_requests_running)", ours.running)
        gauge("vllm:num_requests_waiting", "Requests waiting to start (llm_requests_waiting)", ours.waiting)
        gauge("vllm:kv_cache_usage_perc", "KV-cache use, 0 to 1 (llm_kv_cache_usage_ratio)", ours.kv_usage)
        gauge("vllm:gpu_cache_usage_perc", "KV-cache use, 0 to 1: vLLM's older name", ours.kv_usage)
        self.prompt_tokens = counter("vllm:prompt_tokens", "Prompt tokens of finished prompts")
        self.generation_tokens = counter("vllm:generation_tokens", "Tokens generated")
        self.success = Counter("vllm:request_success", "Finished prompts by finish reason",
                               ["model_name", "finished_reason"], registry=r)
        self.model_name = model_name
        self.prefix_queries = counter("vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache")
        self.prefix_hits = counter("vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache")
        self.draft_tokens = counter("vllm:spec_decode_num_draft_tokens", "Tokens prompt-lookup speculation proposed")
        self.accepted_tokens = counter("vllm:spec_decode_num_accepted_tokens", "Proposed tokens kept")
        self.request_prompt_tokens = histogram("vllm:request_prompt_tokens", "Prompt tokens per prompt", COUNT_BUCKETS)
        self.request_generation_tokens = histogram("vllm:request_generation_tokens", "Tokens generated per prompt",
                                                   COUNT_BUCKETS)
        self.ttft = histogram("vllm:time_to_first_token_seconds", "Arrival to first token", LATENCY_BUCKETS)
        self.tpot = histogram("vllm:request_time_per_output_token_seconds",
                              "Per prompt, (total - ttft) / (tokens - 1)", TOKEN_BUCKETS)
        self.e2e = histogram("vllm:e2e_request_latency_seconds", "Arrival to last token", LATENCY_BUCKETS)
        self.queue = histogram("vllm:request_queue_time_seconds", "Waiting in the queue, to admission", LATENCY_BUCKETS)
        self.inference = histogram("vllm:request_inference_time_seconds", "Admission to last token", LATENCY_BUCKETS)
        self.prefill = histogram("vllm:request_prefill_time_seconds", "Admission to first token", LATENCY_BUCKETS)
        self.decode = histogram("vllm:request_decode_time_seconds", "First token to last token", LATENCY_BUCKETS)

    def finished(self, u: Usage, reason: FinishReason, prefix_caching: bool) -> None:
        """One prompt's figures, once it finished."""
        self.success.labels(self.model_name, FINISHED_REASONS.get(reason, "stop")).inc()
        self.prompt_tokens.inc(u.prompt_tokens)
        self.generation_tokens.inc(u.completion_tokens)
        self.request_prompt_tokens.observe(u.prompt_tokens)
        self.request_generation_tokens.observe(u.completion_tokens)
        if prefix_caching:
            self.prefix_queries.inc(u.prompt_tokens)
            self.prefix_hits.inc(u.cached_tokens)
        self.draft_tokens.inc(u.proposed_tokens)
        self.accepted_tokens.inc(u.accepted_tokens)
        self.ttft.observe(u.ttft_ms / 1000)
        self.e2e.observe(u.total_ms / 1000)
        self.decode.observe(max(0.0, u.total_ms - u.ttft_ms) / 1000)
        if u.completion_tokens > 1:
            self.tpot.observe((u.total_ms - u.ttft_ms) / 1000 / (u.completion_tokens - 1))
        if u.admitted_ms is not None:
            if u.queued_ms is not None:
                self.queue.observe(max(0.0, u.admitted_ms - u.queued_ms) / 1000)
            self.prefill.observe(max(0.0, u.ttft_ms - u.admitted_ms) / 1000)
            self.inference.observe(max(0.0, u.total_ms - u.admitted_ms) / 1000)


@dataclass
class CallRecord:
    """What one call did, gathered as its events pass, reported once when it ends."""

    observer: "Observer"
    id: int
    rpc: str
    protocol: str
    prompts: int
    prompt_text: list[str] | None
    started: float = field(default_factory=time.monotonic)
    usages: list[Usage] = field(default_factory=list)  # one per finished prompt
    reasons: list[FinishReason] = field(default_factory=list)  # beside usages

    def on_event(self, event: Event) -> None:
        if isinstance(event, Finished):
            self.usages.append(event.usage)
            self.reasons.append(event.reason)

    def finish(self, code: str, detail: str = "") -> None:
        self.observer.report(self, code, detail)


def _first(times: list[float | None]) -> float | None:
    """The earliest of the answers' times (a call's answers are queued together, then each admitted as it fits),
    rounded."""
    present = [t for t in times if t is not None]
    return round(min(present), 1) if present else None


class Observer:
    def __init__(self, metrics: Metrics | None, log_prompts: bool):
        self.metrics = metrics
        self.log_prompts = log_prompts
        self._ids = itertools.count(1)

    def start(self, rpc: str, prompts: list[str], protocol: str = "grpc") -> CallRecord:
        return CallRecord(self, next(self._ids), rpc, protocol, len(prompts), list(prompts) if self.log_prompts else None)

    def report(self, call: CallRecord, code: str, detail: str) -> None:
        total_s = time.monotonic() - call.started
        tokens_in = sum(u.prompt_tokens for u in call.usages)
        tokens_out = sum(u.completion_tokens for u in call.usages)
        tokens_cached = sum(u.cached_tokens for u in call.usages)
        # Stages, in ms from the call's arrival in the engine: in the core's queue (rendered), admitted (the
        # start of its first step), first token; total_ms is the whole call, from the front door.
        stages = {name: _first([getattr(u, name) for u in call.usages]) for name in ("queued_ms", "admitted_ms", "ttft_ms")}
        fields = {"request_id": call.id, "protocol": call.protocol, "rpc": call.rpc, "prompts": call.prompts,
                  "tokens_in": tokens_in, "tokens_cached": tokens_cached, "tokens_out": tokens_out, **stages,
                  "total_ms": round(total_s * 1000, 1), "status": code}
        if proposed := sum(u.proposed_tokens for u in call.usages):  # speculation ran for it
            fields["tokens_proposed"], fields["tokens_accepted"] = proposed, sum(u.accepted_tokens for u in call.usages)
        if detail:
            fields["detail"] = detail
        if call.prompt_text is not None:
            fields["prompt_text"] = call.prompt_text
        log.info(" ".join(f"{k}={v}" for k, v in fields.items() if k != "prompt_text")
                 + (f" prompt_text={call.prompt_text!r}" if call.prompt_text is not None else ""), extra=fields)
        m = self.metrics
        if m is None:
            return
        m.requests.labels(call.protocol, call.rpc, code).inc()
        m.e2e.observe(total_s)
        for u in call.usages:
            m.ttft.observe(u.ttft_ms / 1000)
            if u.completion_tokens > 1:
                m.tpot.observe((u.total_ms - u.ttft_ms) / 1000 / (u.completion_tokens - 1))
            m.prompt_tokens.inc(u.prompt_tokens)
            m.generated_tokens.inc(u.completion_tokens)
            if m.prefix_caching:
                m.prefix_queries.inc(u.prompt_tokens)
                m.prefix_hits.inc(u.cached_tokens)
            m.spec_proposed.inc(u.proposed_tokens)
            m.spec_accepted.inc(u.accepted_tokens)
        for u, reason in zip(call.usages, call.reasons):
            m.vllm.finished(u, reason, m.prefix_caching)
