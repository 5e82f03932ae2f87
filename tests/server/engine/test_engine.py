"""The engine in-process, without gRPC, on the real default model."""
import time

import pytest
import torch
from optimum.intel import OVModelForCausalLM

from server.engine.engine import Engine
from server.engine.errors import QueueFull
from server.engine.model import LoadedModel
from server.engine.params import Limits, SchedulerConfig
from server.engine.types import (
    Finished,
    FinishReason,
    GenerationRequest,
    SamplingParams,
    TextDelta,
    collect,
)
from tests.server.harness import wait_until

PROMPTS = ("What is the theory of relativity?", "What is the capital of Japan?")


@pytest.fixture(scope="module")
def model(fp32_model_dir):
    return LoadedModel.load(fp32_model_dir, "CPU", {"PERFORMANCE_HINT": "LATENCY"})


def ask(prompt, **params) -> GenerationRequest:
    return GenerationRequest(prompts=(prompt,), params=SamplingParams(**params))


def reference(model, prompt, n):
    text = model.render(prompt, None, False)
    ids = torch.tensor([model.encode(text, False)])
    plain = OVModelForCausalLM.from_pretrained(model.info.path, device="CPU")
    out = plain.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False)
    return model.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_model_info(model):
    assert model.info.precision == "FP32" and model.info.context_length == 8192 and model.info.load_seconds > 0
    assert model.eos_token_ids == (2,)


def test_greedy_equals_optimum_generate(model):
    engine = Engine(model)
    try:
        for prompt in PROMPTS:
            (c,) = engine.generate(ask(prompt, max_new_tokens=32), timeout=60)
            assert c.text == reference(model, prompt, 32)
    finally:
        engine.close()


def test_two_workers_keep_their_own_kv_cache(model):
    """Two infer requests run at once on the shared compiled model; neither disturbs the other."""
    engine = Engine(model, limits=Limits(max_batch=1), scheduler=SchedulerConfig(workers=2))
    try:
        solo = [engine.generate(ask(p, max_new_tokens=24), timeout=60)[0].text for p in PROMPTS]
        handles = [engine.submit(ask(p, max_new_tokens=24)) for p in PROMPTS]
        time.sleep(0.2)
        assert engine.counts()[0] == 2  # both running, one per worker
        texts = ["".join(e.text for e in h.events(60) if isinstance(e, TextDelta)) for h in handles]
        assert texts == solo
    finally:
        engine.close()


def test_requests_arriving_together_start_as_one_batch(model):
    engine = Engine(model, scheduler=SchedulerConfig(first_window_ms=300))
    try:
        handles = [engine.submit(ask(p, max_new_tokens=16)) for p in PROMPTS * 2]
        assert wait_until(lambda: engine.counts() == (4, 0), timeout=5)
        for h in handles:
            assert h.done.wait(60)
    finally:
        engine.close()


def test_requests_queued_behind_a_batch_run_together(model):
    """A lone request starts at once; those that queued behind it start together as one batch."""
    engine = Engine(model, scheduler=SchedulerConfig(batch_window_ms=50))
    try:
        first = engine.submit(ask(PROMPTS[0], max_new_tokens=32, min_new_tokens=32))
        assert wait_until(lambda: engine.counts() == (1, 0))
        rest = [engine.submit(ask(p, max_new_tokens=64, min_new_tokens=64)) for p in PROMPTS * 2]
        assert engine.counts() == (1, 4)
        assert wait_until(lambda: engine.counts() == (4, 0), timeout=30)
        for h in [first, *rest]:
            assert h.done.wait(60)
    finally:
        engine.close()


def test_cancel_stops_within_a_few_steps(model):
    engine = Engine(model)
    try:
        handle = engine.submit(ask(PROMPTS[0], max_new_tokens=500, min_new_tokens=500))
        events = handle.events(60)
        next(events)
        handle.cancel()
        final = [e for e in events if isinstance(e, Finished)][-1]
        assert final.reason == FinishReason.CANCELLED and final.completion_tokens < 10
        assert engine.counts() == (0, 0) or wait_until(lambda: engine.counts() == (0, 0))
    finally:
        engine.close()


def test_full_queue_and_cancelled_waiting_request(model):
    engine = Engine(model, limits=Limits(max_batch=1, max_waiting=1))
    try:
        running = engine.submit(ask(PROMPTS[0], max_new_tokens=200, min_new_tokens=200))
        next(running.events(60))
        waiting = engine.submit(ask(PROMPTS[1], max_new_tokens=8))
        with pytest.raises(QueueFull):
            engine.submit(ask(PROMPTS[1], max_new_tokens=8))
        waiting.cancel()  # leaves the queue at once, freeing its place
        assert [e.reason for e in waiting.events(5) if isinstance(e, Finished)] == [FinishReason.CANCELLED]
        again = engine.submit(ask(PROMPTS[1], max_new_tokens=8))
        running.cancel()
        assert "Tokyo" in "".join(e.text for e in again.events(60) if isinstance(e, TextDelta))
    finally:
        engine.close()


def test_fault_in_one_request_fails_only_that_request(model):
    engine = Engine(model, fault_marker="BOOM", scheduler=SchedulerConfig(batch_window_ms=200))
    try:
        bad = engine.submit(ask("BOOM " + PROMPTS[0], max_new_tokens=16))
        good = engine.submit(ask(PROMPTS[1], max_new_tokens=16))
        with pytest.raises(RuntimeError, match="fault injected"):
            collect(bad.events(60))
        assert "Tokyo" in collect(good.events(60))[0].text
    finally:
        engine.close()
