"""Load: 100 mixed calls at concurrency 16 with room in the queue (no failures, every answer its own), and a
burst into a small queue (the overflow is RESOURCE_EXHAUSTED, every accepted call completes)."""
from __future__ import annotations

import random
import threading
import time

import grpc
import pytest

from proto import llm_pb2
from tests.robustness.common import (CAPITAL_PROMPTS, Code, call, gauges, metric, record, run_all, solo_answers,
                                     start_metered, wait_until)
from tests.server.harness import request, start_server

F = llm_pb2.FinishReason
REQUESTS, CONCURRENCY, NEW_TOKENS = 100, 16, 12
# Capitals end on end-of-sequence after about 8 tokens; the others run to max_new_tokens.
OPEN_PROMPTS = ("Tell me a story about a dragon.", "What is the theory of relativity?")


@pytest.fixture(scope="module")
def load_server(fp32_model_dir, tmp_path_factory):
    s = start_metered(fp32_model_dir, tmp_path_factory.mktemp("load"),
                      config={"limits": {"max_batch": 8, "max_waiting": 256}})
    yield s
    s.stop()


def test_100_mixed_calls_at_concurrency_16_all_answered_right(load_server):
    stub = load_server.stub
    solo = solo_answers(stub, CAPITAL_PROMPTS + OPEN_PROMPTS, max_new_tokens=NEW_TOKENS)
    for prompt in CAPITAL_PROMPTS[:6]:
        assert prompt.split()[-1].rstrip("?") in solo[prompt] or "United Kingdom" in prompt, solo[prompt]

    rng = random.Random(6)
    pool = CAPITAL_PROMPTS * 3 + OPEN_PROMPTS  # mostly prompts with a known short answer
    calls = [(("Generate", "GenerateStream")[i % 2], rng.choices(pool, k=rng.randint(1, 4))) for i in range(REQUESTS)]

    def job(rpc, prompts):
        return lambda: call(stub, rpc, request(*prompts, max_new_tokens=NEW_TOKENS), timeout=180)

    batches_before = metric(load_server, "llm_batch_size_count")
    started = time.monotonic()
    results = run_all([job(*c) for c in calls], CONCURRENCY, budget=300)
    duration = time.monotonic() - started

    failures = [(c, r) for c, r in zip(calls, results) if isinstance(r, Exception)]
    wrong, checked = [], 0
    for (rpc, prompts), result in zip(calls, results):
        if isinstance(result, Exception):
            continue
        assert len(result) == len(prompts)
        for prompt, (text, reason) in zip(prompts, result):
            assert reason in (F.STOP, F.LENGTH), (prompt, reason)
            if prompt in CAPITAL_PROMPTS:  # the sample with answers that do not depend on the batch
                checked += 1
                if text != solo[prompt]:
                    wrong.append((rpc, prompt, text, solo[prompt]))
            else:  # long answers may drift late in a padded batch, but start the same and run to the limit
                assert reason == F.LENGTH and text[:20] == solo[prompt][:20], (prompt, text, solo[prompt])
    prompts = sum(len(p) for _, p in calls)
    batches = metric(load_server, "llm_batch_size_count") - batches_before
    record("load", requests=REQUESTS, prompts=prompts, concurrency=CONCURRENCY, max_new_tokens=NEW_TOKENS,
           failures=len(failures), wrong_answers=len(wrong), answers_checked=checked,
           duration_s=f"{duration:.1f}", requests_per_s=f"{REQUESTS / duration:.1f}",
           mean_prompts_per_batch=f"{prompts / max(batches, 1):.1f}")
    assert not failures, failures[:3]
    assert not wrong, wrong[:3]
    assert wait_until(lambda: gauges(load_server) == (0, 0), timeout=10), gauges(load_server)


@pytest.fixture(scope="module")
def small_queue_server(fp32_model_dir, tmp_path_factory):
    s = start_server(fp32_model_dir, tmp_path_factory.mktemp("small-queue"),
                     config={"limits": {"max_batch": 2, "max_waiting": 4}})
    yield s
    s.stop()


def test_burst_into_a_small_queue_overflow_refused_accepted_complete(small_queue_server):
    stub = small_queue_server.stub
    burst = 24
    prompts = [CAPITAL_PROMPTS[i % len(CAPITAL_PROMPTS)] for i in range(burst)]
    solo = solo_answers(stub, set(prompts), max_new_tokens=NEW_TOKENS)
    gate = threading.Barrier(burst, timeout=30)

    def job(i):
        def run():
            gate.wait()  # all at once
            return call(stub, ("Generate", "GenerateStream")[i % 2],
                        request(prompts[i], max_new_tokens=NEW_TOKENS), timeout=120)
        return run

    started = time.monotonic()
    results = run_all([job(i) for i in range(burst)], burst, budget=180)
    duration = time.monotonic() - started
    refused = [i for i, r in enumerate(results) if isinstance(r, grpc.RpcError) and r.code() == Code.RESOURCE_EXHAUSTED]
    other_errors = [r for r in results if isinstance(r, Exception) and not (
        isinstance(r, grpc.RpcError) and r.code() == Code.RESOURCE_EXHAUSTED)]
    accepted = [i for i, r in enumerate(results) if not isinstance(r, Exception)]
    record("small queue burst", burst=burst, max_batch=2, max_waiting=4, accepted=len(accepted),
           resource_exhausted=len(refused), other_errors=len(other_errors), duration_s=f"{duration:.1f}")
    assert not other_errors, other_errors[:3]
    assert refused and accepted
    for i in accepted:
        ((text, reason),) = results[i]
        assert text == solo[prompts[i]] and reason in (F.STOP, F.LENGTH)
    assert all("queue" in results[i].details() for i in refused)
    # Refused calls are only told to retry later: retried at a pace the queue holds, they all succeed.
    retried = run_all([lambda i=i: call(stub, "Generate", request(prompts[i], max_new_tokens=NEW_TOKENS), 120)
                       for i in refused], 2, budget=120)
    assert [r[0][0] for r in retried] == [solo[prompts[i]] for i in refused]
