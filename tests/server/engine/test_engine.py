"""The engine's front door in-process, without gRPC, on the real default model, with both engines."""

import pytest

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
from tests.faults import injected
from tests.reference import greedy_text
from tests.server.harness import wait_until

PROMPTS = ("What is the theory of relativity?", "What is the capital of Japan?")


@pytest.fixture(scope="module", params=["paged", "generate"])
def model(request, fp32_model_dir):
    return LoadedModel.load(fp32_model_dir, "CPU", {"PERFORMANCE_HINT": "LATENCY"}, engine=request.param,
                            batch_invariant=True)


def ask(prompt, **params) -> GenerationRequest:
    return GenerationRequest(prompts=(prompt,), params=SamplingParams(**params))


def test_model_info(model):
    assert model.info.precision == "FP32" and model.info.context_length == 8192 and model.info.load_seconds > 0
    assert model.eos_token_ids == (2,)


def test_greedy_equals_optimum_generate(model):
    engine = Engine(model)
    assert engine.kind == ("paged" if model.paged is not None else "generate")
    try:
        for prompt in PROMPTS:
            (c,) = engine.generate(ask(prompt, max_new_tokens=32), timeout=60)
            assert c.text == greedy_text(model.info.path, prompt, 32)
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
        assert final.reason == FinishReason.CANCELLED and final.usage.completion_tokens < 10
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
    engine = Engine(model, scheduler=SchedulerConfig(batch_window_ms=200))  # one batch on the generate engine
    try:
        with injected("BOOM"):
            bad = engine.submit(ask("BOOM " + PROMPTS[0], max_new_tokens=16))
            good = engine.submit(ask(PROMPTS[1], max_new_tokens=16))
            with pytest.raises(RuntimeError, match="fault injected"):
                collect(bad.events(60))
            assert "Tokyo" in collect(good.events(60))[0].text
    finally:
        engine.close()


def test_manifest_stop_strings_are_servable_defaults(fp32_model_dir, tmp_path):
    """A model directory whose manifest names a stop string (as dolly's '### End'): every answer stops there."""
    import json

    local = tmp_path / "local-model"
    local.mkdir()
    for f in fp32_model_dir.iterdir():
        if f.name != "modelprep.json":
            (local / f.name).symlink_to(f)
    manifest = json.loads((fp32_model_dir / "modelprep.json").read_text())
    # A special token among them (smollm2's own end marker) is left to its token id: it never shows as text.
    (local / "modelprep.json").write_text(json.dumps({**manifest, "stop": ["Paris", "<|im_end|>"]}))
    model = LoadedModel.load(local, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
    assert model.info.stop == ("Paris",)
    engine = Engine(model)
    try:
        (c,) = engine.generate(ask("What is the capital of France?", max_new_tokens=32), timeout=60)
        assert c.reason == FinishReason.STOP_SEQUENCE and "Paris" not in c.text
        (c,) = engine.generate(ask("What is the capital of Japan?", max_new_tokens=24, stop=["Tokyo"]), timeout=60)
        assert c.reason == FinishReason.STOP_SEQUENCE and "Tokyo" not in c.text  # the request's own stop too
    finally:
        engine.close()
