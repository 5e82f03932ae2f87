"""The generate engine's scheduler: whole batches through transformers' generate, on N workers."""
import pytest

from server.engine.engine import Engine
from server.engine.model import LoadedModel
from server.engine.params import Limits, SchedulerConfig
from server.engine.types import GenerationRequest, SamplingParams, TextDelta
from tests.server.harness import wait_until

PROMPTS = ("What is the theory of relativity?", "What is the capital of Japan?")


@pytest.fixture(scope="module")
def model(fp32_model_dir):
    return LoadedModel.load(fp32_model_dir, "CPU", {"PERFORMANCE_HINT": "LATENCY"}, engine="generate",
                            batch_invariant=True)


def ask(prompt, **params) -> GenerationRequest:
    return GenerationRequest(prompts=(prompt,), params=SamplingParams(**params))


def test_two_workers_keep_their_own_kv_cache(model):
    """Two infer requests run at once on the shared compiled model; neither disturbs the other."""
    engine = Engine(model, limits=Limits(max_batch=1), scheduler=SchedulerConfig(workers=2))
    try:
        solo = [engine.generate(ask(p, max_new_tokens=48, min_new_tokens=48), timeout=60)[0].text for p in PROMPTS]
        handles = [engine.submit(ask(p, max_new_tokens=48, min_new_tokens=48)) for p in PROMPTS]
        assert wait_until(lambda: engine.counts() == (2, 0), timeout=30)  # both running, one per worker
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
