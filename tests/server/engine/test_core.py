"""EngineCore.step() on a fake model: each step returns what happened, and the cache is accounted for.

These run in milliseconds: no OpenVINO, no tokenizer, no thread (the tests call step() themselves).
"""
import pytest

from server.engine.core import ALL, EngineCore
from server.engine.errors import QueueFull
from server.engine.params import GenerationParams, Limits
from server.engine.request import Request, RequestStatus
from server.engine.types import FinishReason
from tests.server.engine.fake import EOS, FakeModel

_ids = iter(range(1, 10**6))


def requests(*prompts, call=None, **params):
    call = call if call is not None else next(_ids)
    p = GenerationParams(**{"max_new_tokens": 4, **params})
    return [Request(next(_ids), call, list(prompt), p) for prompt in prompts]


def core(model=None, max_step_tokens=64, **limits) -> EngineCore:
    return EngineCore(model or FakeModel(), [EOS], Limits(**{"max_batch": 8, **limits}), max_step_tokens)


def run(c: EngineCore, limit=100):
    """Step until idle; every output, step by step."""
    steps = []
    for _ in range(limit):
        out = c.step()
        if not out.outputs and not out.scheduled:
            return steps
        steps.append(out)
    raise AssertionError("still busy")


def tokens_by_request(steps):
    got = {}
    for out in steps:
        for o in out.outputs:
            got.setdefault(o.request_id, []).extend(o.new_token_ids)
    return got


def reasons(steps):
    return {o.request_id: o.finish_reason for out in steps for o in out.outputs if o.finish_reason is not None}


def assert_cache_empty(c):
    assert c.blocks.used() == 0 and c.blocks.reserved() == 0 and c.counts() == (0, 0)


def test_a_step_returns_each_prompts_new_token_and_the_finish_reason():
    c = core()
    (a,) = requests([1, 2, 3], max_new_tokens=3)
    (b,) = requests([60])  # counts up to EOS (63) on its third token
    c.add([a])
    c.add([b])
    first = c.step()
    assert [(o.request_id, o.new_token_ids, o.finish_reason) for o in first.outputs] == [(a.id, (4,), None), (b.id, (61,), None)]
    steps = [first, *run(c)]
    assert tokens_by_request(steps) == {a.id: [4, 5, 6], b.id: [61, 62, EOS]}
    assert reasons(steps) == {a.id: FinishReason.LENGTH, b.id: FinishReason.STOP}
    assert a.status is RequestStatus.FINISHED_LENGTH and b.status is RequestStatus.FINISHED_STOPPED
    assert_cache_empty(c)


def test_admission_waits_for_cache_blocks_first_come_first_served():
    # 4 blocks of 4 tokens; each call needs ceil((4 + 4) / 4) = 2 blocks per prompt.
    c = core(FakeModel(num_blocks=4))
    first, second, third = requests([1, 2, 3, 4], [5, 6, 7, 8]), requests([9, 9, 9, 9]), requests([1, 1, 1, 1])
    for call in (first, second, third):
        c.add(call)
    out = c.step()
    assert {o.request_id for o in out.outputs} == {r.id for r in first}
    assert c.counts() == (1, 2) and c.blocks.reserved() == 4
    steps = run(c)
    finished_at = {o.request_id: i for i, s in enumerate(steps) for o in s.outputs if o.finish_reason}
    started_at = {}
    for i, s in enumerate(steps):
        for o in s.outputs:
            started_at.setdefault(o.request_id, i)
    assert started_at[second[0].id] > max(finished_at[r.id] for r in first)
    assert started_at[third[0].id] >= started_at[second[0].id]  # both fit once the first left
    assert_cache_empty(c)


def test_max_batch_holds_a_call_back_and_the_queue_has_a_bound():
    c = core(max_batch=2, max_waiting=1)
    c.add(requests([1], [2]))
    c.step()
    c.add(requests([3]))
    with pytest.raises(QueueFull):
        c.add(requests([4]))
    c.step()
    assert c.counts() == (1, 1)  # two prompts run; the next call waits for a place


def test_a_long_prompt_runs_in_chunks_beside_the_decodes():
    model = FakeModel()
    c = core(model, max_step_tokens=4)
    (short,) = requests([1, 2], max_new_tokens=6)
    c.add([short])
    c.step()  # the short prompt is decoding now
    (long,) = requests(list(range(10, 20)), max_new_tokens=2)
    c.add([long])
    steps = run(c)
    # Each step: one decode token of the short prompt, then up to 4 prompt tokens of the long one.
    sizes = [list(map(int, s.subsequence_begins[1:] - s.subsequence_begins[:-1])) for s in model.steps[1:4]]
    assert sizes == [[1, 4], [1, 4], [1, 2]]
    # The long prompt's first token comes from its whole prompt: 19 + 1.
    assert tokens_by_request(steps)[long.id] == [20, 21]
    assert tokens_by_request([*steps])[short.id][:3] == [4, 5, 6]
    assert_cache_empty(c)


def test_an_abort_is_drained_once_at_the_next_step():
    (running,), (waiting,) = requests([1], max_new_tokens=50), requests([2], max_new_tokens=50)
    c = core(max_batch=1)
    c.add([running])
    c.add([waiting])
    c.step()
    c.abort([running.id, waiting.id])
    c.abort([running.id])  # twice: still one cancellation
    out = c.step()
    cancelled = [o.request_id for o in out.outputs if o.finish_reason is FinishReason.CANCELLED]
    assert sorted(cancelled) == sorted([running.id, waiting.id]) and not out.scheduled
    assert c.step().outputs == []
    assert running.status is RequestStatus.FINISHED_ABORTED
    assert_cache_empty(c)


def test_abort_all_cancels_everything_and_wait_for_work_ends_once_closed():
    c = core()
    c.add(requests([1], [2], max_new_tokens=50))
    c.step()
    c.abort(ALL)
    c.close()
    assert c.wait_for_work(timeout=0) is False
    assert len([o for o in c.step().outputs if o.finish_reason is FinishReason.CANCELLED]) == 2
    assert_cache_empty(c)
    with pytest.raises(QueueFull):
        c.add(requests([1]))


def test_a_failed_model_step_fails_its_prompts_and_frees_their_blocks():
    model = FakeModel(fail=True)
    c = core(model)
    (r,) = requests([1, 2, 3])
    c.add([r])
    out = c.step()
    assert [o.request_id for o in out.outputs] == [r.id] and "device is on fire" in out.outputs[0].error
    assert r.status is RequestStatus.FINISHED_FAILED
    assert_cache_empty(c)


def test_sampled_rows_are_only_those_whose_prompt_is_complete():
    model = FakeModel()
    c = core(model, max_step_tokens=3)
    (r,) = requests(list(range(1, 8)), max_new_tokens=1)  # 7 tokens: chunks of 3, 3, 1
    c.add([r])
    outs = run(c)
    assert [len(s.sampled) for s in model.steps] == [0, 0, 1]
    assert tokens_by_request(outs) == {r.id: [8]}
