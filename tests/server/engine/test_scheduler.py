"""The Scheduler alone on a fake model: `schedule()` is a value the test runs itself, `update()` returns what it
did, and `stats()` is what the gauges show. No core, no thread, no OpenVINO."""
import ast
from pathlib import Path

from server.engine import scheduler as scheduler_module
from server.engine.kv_cache import BlockManager, block_keys
from server.engine.params import GenerationParams, Limits
from server.engine.request import Request, RequestStatus
from server.engine.scheduler import Scheduler
from server.engine.step import ScheduledStep
from server.engine.types import FinishReason
from tests.server.engine.fake import EOS, FakeModel

_ids = iter(range(1, 10**6))


def call(*prompts, **params):
    c = next(_ids)
    p = GenerationParams(**{"max_new_tokens": 3, **params})
    return [Request(next(_ids), c, list(prompt), p) for prompt in prompts]


def add(s: Scheduler, call) -> None:
    for r in call:
        s.add(r)


def scheduler(model, max_step_tokens=64, **limits) -> Scheduler:
    return Scheduler(BlockManager(model.num_blocks, model.block_size, caching=False), [EOS],
                     Limits(**{"max_batch": 8, **limits}), max_step_tokens)


def run_step(s: Scheduler, model: FakeModel):
    step = s.schedule()
    return step, s.update(step, model.forward(step.inputs())) if step.seqs else []


def test_schedule_is_a_value_and_update_says_what_the_step_did():
    model = FakeModel()
    s = scheduler(model, max_step_tokens=4)
    assert s.schedule() == ScheduledStep([]) and not s.has_work()
    (a,) = call([1, 2, 3, 4, 5, 6])
    s.add(a)
    step = s.schedule()  # a prompt of 6 tokens in chunks of 4: nothing sampled yet
    assert [(q.request_id, q.token_ids, q.start, q.sampled) for q in step.seqs] == [(a.id, [1, 2, 3, 4], 0, False)]
    assert s.update(step, model.forward(step.inputs())) == [] and a.computed == 4
    step, outputs = run_step(s, model)
    assert step.seqs[0].token_ids == [5, 6] and step.seqs[0].sampled
    assert [(o.request_id, o.new_token_ids, o.finish_reason) for o in outputs] == [(a.id, (7,), None)]
    assert outputs[0].admitted is not None  # the first output says when it was admitted
    outputs = run_step(s, model)[1] + run_step(s, model)[1]
    assert [o.new_token_ids for o in outputs] == [(8,), (9,)] and outputs[-1].finish_reason is FinishReason.LENGTH
    assert a.status is RequestStatus.FINISHED_LENGTH and not s.has_work()
    s.check()


def test_stats_count_calls_and_blocks_after_each_step():
    model = FakeModel(num_blocks=4)  # each prompt below needs ceil((4 + 3) / 4) = 2 blocks
    s = scheduler(model)
    first, second, third = call([1, 2, 3, 4], [5, 6, 7, 8]), call([9, 9, 9, 9]), call([1, 1, 1, 1])
    for c in (first, second, third):
        add(s, c)
    assert s.stats().waiting == 3 and s.stats().running == 0 and s.stats().blocks_reserved == 0
    run_step(s, model)
    stats = s.stats()
    assert (stats.running, stats.waiting, stats.blocks_total, stats.blocks_reserved) == (1, 2, 4, 4)
    assert stats.blocks_used == 2  # a block per prompt holds its 4 tokens; the second, promised, is not taken yet
    while s.has_work():
        run_step(s, model)
    stats = s.stats()
    assert (stats.running, stats.waiting, stats.blocks_used, stats.blocks_reserved) == (0, 0, 0, 0)
    s.check()


def test_a_calls_prompts_start_each_as_it_fits_and_the_call_counts_once_running_and_once_waiting():
    model = FakeModel(num_blocks=5)  # each prompt below needs ceil((4 + 3) / 4) = 2 blocks: two fit, then one more
    s = scheduler(model)
    prompts = call([1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12])
    add(s, prompts)
    step, _ = run_step(s, model)
    assert [q.request_id for q in step.seqs] == [prompts[0].id, prompts[1].id]
    assert (s.stats().running, s.stats().waiting) == (1, 1) and prompts[2].status is RequestStatus.WAITING
    (later,) = call([13, 14, 15, 16])
    s.add(later)  # first come, first served: it waits behind the call's last prompt
    assert s.stats().waiting == 2
    while prompts[2].status is RequestStatus.WAITING:
        assert later.status is RequestStatus.WAITING
        run_step(s, model)
    assert later.status is RequestStatus.RUNNING  # the first two finished: both fit now
    assert s.abort({r.id for r in prompts}) and (s.stats().running, s.stats().waiting) == (1, 0)
    while s.has_work():
        run_step(s, model)
    assert later.status is RequestStatus.FINISHED_LENGTH and s.stats().blocks_reserved == 0
    s.check()


def test_abort_cancels_running_and_waiting_prompts_and_frees_their_blocks():
    model = FakeModel(num_blocks=2)
    s = scheduler(model)
    running, waiting = call([1, 2, 3, 4]), call([5, 6, 7, 8])
    add(s, running)
    add(s, waiting)
    run_step(s, model)
    assert s.stats().running == 1 and s.stats().waiting == 1
    outputs = s.abort({running[0].id, waiting[0].id})
    assert {(o.request_id, o.finish_reason) for o in outputs} == \
        {(running[0].id, FinishReason.CANCELLED), (waiting[0].id, FinishReason.CANCELLED)}
    assert s.stats().blocks_reserved == 0 and not s.has_work()
    assert s.abort(set()) == []
    s.check()


def test_a_failed_step_fails_its_own_prompts_only():
    model = FakeModel()
    s = scheduler(model, max_step_tokens=4)
    (decoding,) = call([1, 2])
    s.add(decoding)
    run_step(s, model)
    (prefilling,) = call([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    s.add(prefilling)
    step = s.schedule()  # one decode token and 3 of the new prompt's: pretend the model failed on it
    outputs = s.fail(step, "generation failed: the device is on fire")
    assert {o.request_id for o in outputs} == {decoding.id, prefilling.id}
    assert all(o.error for o in outputs) and decoding.status is RequestStatus.FINISHED_FAILED
    assert s.stats().blocks_reserved == 0
    s.check()


def test_the_scheduler_imports_no_threading():
    tree = ast.parse(Path(scheduler_module.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"threading", "queue", "asyncio", "concurrent"}


def test_no_prompt_chunk_is_one_token_and_a_cache_hit_leaves_the_last_two():
    """A sequence's single new token runs on other kernels than several (RECOMPUTED): a prompt of 9 tokens in chunks
    of 4 runs 4, 3, 2 (not 4, 4, 1), and a prompt found whole in the cache still computes its last two tokens."""
    model = FakeModel()
    s = scheduler(model, max_step_tokens=4)
    (a,) = call(list(range(1, 10)))
    s.add(a)
    chunks = [len(run_step(s, model)[0].seqs[0].token_ids) for _ in range(3)]
    assert chunks == [4, 3, 2] and a.computed == 9
    cached = Scheduler(BlockManager(model.num_blocks, model.block_size, caching=True), [EOS], Limits(max_batch=8), 64)
    for _ in range(2):
        (b,) = call(list(range(1, 14)), max_new_tokens=1)  # 13 tokens: 3 whole blocks, one more token
        b.block_keys = block_keys(b.prompt_ids, model.block_size)  # the core hashes them on the caller's thread
        cached.add(b)
        step = run_step(cached, model)[0]
    assert step.seqs[0].start == b.cached_tokens == 8 == (13 - scheduler_module.RECOMPUTED) // 4 * 4
