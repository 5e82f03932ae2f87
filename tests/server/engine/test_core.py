"""EngineCore.step() on a fake model: each step returns what happened, and the cache is accounted for.

These run in milliseconds: no OpenVINO, no tokenizer, no thread (the tests call step() themselves).
"""
import random

import pytest

from server.engine.core import ALL, EngineCore
from server.engine.scheduler import RECOMPUTED
from server.engine.errors import QueueFull
from server.engine.kv_cache import block_keys
from server.engine.params import GenerationParams, Limits, SpeculationConfig
from server.engine.request import Request, RequestStatus
from server.engine.speculation import RETRY_AFTER, adapt
from server.engine.types import FinishReason
from server.engine.types import Constraint
from tests.server.engine.fake import EOS, FakeModel, fake_grammars

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


def _added(c: EngineCore, call) -> EngineCore:
    c.add(call)
    return c


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


def test_the_queue_limit_counts_calls_however_many_prompts_they_have():
    c = core(max_batch=2, max_waiting=2)
    c.add(requests([1], [2], [3]))  # one call: two of its prompts start, the third waits
    c.add(requests([4], [5]))
    with pytest.raises(QueueFull):
        c.add(requests([6]))
    c.step()
    assert c.counts() == (1, 2)  # the first call runs and waits; the second waits
    with pytest.raises(QueueFull):
        c.add(requests([6]))
    run(c)
    assert_cache_empty(c)


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


# --- prefix caching: on the context-dependent fake, a wrong block changes the answer --------------------------

def answers(prompts, caching=True, together=False, model=None, max_step_tokens=64, **params):
    """Each prompt's tokens and cached_tokens (from its first output), one call after another (or as one
    call when `together`), on a fresh core; the core is checked after every step and idle at the end."""
    model = model or FakeModel(context=True)
    c = EngineCore(model, [EOS], Limits(max_batch=8), max_step_tokens, prefix_caching=caching)
    calls = [requests(*prompts, **params)] if together else [requests(p, **params) for p in prompts]
    steps = []
    for call in calls:
        c.add(call)
        while out := c.step():
            if not out.outputs and not out.scheduled:
                break
            c.check()
            steps.append(out)
    assert_idle(c)
    rs = [r for call in calls for r in call]
    cached = {o.request_id: o.cached_tokens for s in steps for o in s.outputs if o.cached_tokens is not None}
    got = tokens_by_request(steps)
    return [got[r.id] for r in rs], [cached[r.id] for r in rs], c


def assert_idle(c):
    c.check()
    assert_cache_empty(c)
    assert c.blocks.used() + c.blocks.cached() <= c.blocks.num_blocks


def test_a_prompt_sharing_whole_blocks_starts_after_them_on_the_same_blocks():
    model = FakeModel(context=True)
    first, second = list(range(1, 11)), [*range(1, 9), 40, 41, 42]  # share 8 tokens: two blocks of 4
    got, cached, _ = answers([first, second], model=model)
    assert cached == [0, 8]
    assert got == answers([first, second], caching=False)[0]
    later = next(s for s in model.steps[1:] if s.past_lens[0] == 8)  # its first step starts at position 8
    assert later.block_indices[:2].tolist() == model.steps[0].block_indices[:2].tolist()
    assert got[0] != got[1]


def test_a_whole_cached_prompt_still_computes_its_last_token():
    ragged, aligned = list(range(1, 11)), list(range(1, 9))
    assert answers([ragged, ragged])[1] == [0, 8]  # 2 tokens computed
    assert answers([aligned, aligned])[1] == [0, 4]  # its last block recomputed, into a private block
    assert answers([aligned, aligned])[0] == answers([aligned, aligned], caching=False)[0]


def test_blocks_of_generated_tokens_are_cached_with_the_keys_a_prompt_of_them_has():
    model = FakeModel(context=True)
    c = EngineCore(model, [EOS], Limits(max_batch=8), 64)
    (r,) = requests(list(range(1, 7)), max_new_tokens=7)  # 13 tokens, 12 computed: three full blocks
    c.add([r])
    run(c)
    assert r.block_keys == block_keys(r.prompt_ids + r.output_ids, 4)[:3]
    turn2 = [*r.prompt_ids, *r.output_ids[:-1], 5, 6]
    got, cached, _ = answers([r.prompt_ids, turn2], max_new_tokens=7)
    assert cached == [0, 12] and got == answers([r.prompt_ids, turn2], caching=False, max_new_tokens=7)[0]


def test_a_request_fits_because_its_hit_blocks_are_in_use():
    for caching, counts in ((True, (2, 0)), (False, (1, 1))):
        c = EngineCore(FakeModel(num_blocks=7, context=True), [EOS], Limits(max_batch=8), 64, prefix_caching=caching)
        prompt = list(range(1, 15))  # 14 tokens + 3 new: 5 blocks each; 3 of them cached after a step
        c.add(requests(prompt, max_new_tokens=3))
        c.step()
        c.add(requests(prompt, max_new_tokens=3))
        c.step()
        c.check()
        assert c.counts() == counts and c.blocks.reserved() == (7 if caching else 5)
        run(c)
        assert_idle(c)


def test_prompts_admitted_together_top_up_from_blocks_the_first_one_computed():
    model = FakeModel(context=True)
    prompt = list(range(1, 19))  # 18 tokens in chunks of 8: the second copy waits, then takes 4 blocks
    got, cached, _ = answers([prompt, prompt], together=True, model=model, max_step_tokens=8)
    assert cached == [0, 16] and got[0] == got[1] == answers([prompt], caching=False)[0][0]
    prompt_tokens = sum(int(s.subsequence_begins[-1]) for s in model.steps) - sum(len(g) - 1 for g in got)
    assert prompt_tokens == 18 + RECOMPUTED


def test_a_failed_step_caches_nothing_and_an_abort_gives_its_blocks_back():
    model = FakeModel(context=True, fail=True)
    c = EngineCore(model, [EOS], Limits(max_batch=8), 64)
    c.add(requests(list(range(1, 10))))
    run(c)
    assert c.blocks.cached() == 0
    model.fail = False
    (r,) = requests(list(range(1, 10)), max_new_tokens=50)
    c.add([r])
    c.step()
    c.step()
    c.abort([r.id])
    (out,) = c.step().outputs
    assert out.finish_reason is FinishReason.CANCELLED and out.cached_tokens == 0
    assert_idle(c)
    assert c.blocks.cached() == 3  # its computed full blocks stay for reuse, and its partly filled last one


def first_turn():
    """The context fake after one prompt ran on a core: its KV ends inside its second block (7 tokens computed)."""
    model = FakeModel(context=True)
    c = EngineCore(model, [EOS], Limits(max_batch=8), 64)
    (r,) = requests([1, 2, 3, 4, 5, 6], max_new_tokens=2)
    c.add([r])
    run(c)
    return model, c, r


def test_a_partly_filled_last_block_is_reused_and_written_on_after_its_tokens():
    model, _, r = first_turn()
    history = [*r.prompt_ids, *r.output_ids[:-1]]
    turn2, diverging = [*history, 40, 41], [*history[:5], 50, 51, 52]
    for prompt, hit in ((turn2, 7), (diverging, 5)):  # 5: one token of the partial block matches
        got, cached, _ = answers([r.prompt_ids, prompt], model=model, max_new_tokens=2)
        assert cached == [0, hit] and got == answers([r.prompt_ids, prompt], caching=False, max_new_tokens=2)[0]
    first = next(s for s in model.steps if s.past_lens[0] == 0 and len(s.input_ids) == 6)
    later = next(s for s in model.steps if s.past_lens[0] == 7)  # turn 2 starts inside its second block
    assert later.block_indices[:2].tolist() == first.block_indices[:2].tolist()


def test_a_partial_block_is_taken_by_one_prompt_of_a_call_and_never_shared_for_writing():
    model, c, r = first_turn()
    prompts = [[*r.prompt_ids, r.output_ids[0], 9, 9, 9], [*r.prompt_ids, r.output_ids[0], 8, 8],
               [*r.prompt_ids[:5], 7, 7]]
    call = requests(*prompts, max_new_tokens=3)
    c.add(call)
    c.step()
    c.check()
    # The first takes the partial block (7 tokens cached) and writes on in it; the others, admitted after it,
    # find its first full block only and compute the rest in their own blocks.
    assert [q.cached_tokens for q in call] == [7, 4, 4]
    assert call[0].blocks[0] == call[1].blocks[0] == call[2].blocks[0]
    assert len({call[0].blocks[1], call[1].blocks[1], call[2].blocks[1]}) == 3
    (late,) = requests(prompts[0], max_new_tokens=3)  # while the first holds the block, nobody else finds it
    c.add([late])
    c.step()
    c.check()
    assert late.cached_tokens == 8 and late.blocks[1] == call[0].blocks[1]  # its full block now, read only
    steps = run(c)
    assert_idle(c)
    got = tokens_by_request(steps)
    want = answers(prompts + [prompts[0]], caching=False, max_new_tokens=3)[0]
    assert [r.output_ids for r in [*call, late]] == want and all(got.values())


def test_a_failed_step_keeps_no_partial_entry_for_the_partial_block_a_prompt_took():
    model, c, r = first_turn()
    model.fail = True
    call = requests([*r.prompt_ids, r.output_ids[0], 9], [*r.prompt_ids, r.output_ids[0], 8])
    c.add(call)
    out = c.step()
    assert sorted(o.request_id for o in out.outputs if o.error) == sorted(q.id for q in call)
    assert_idle(c)
    assert c.blocks.cached() == 1  # the first full block; the partial block is forgotten


def test_caching_off_reuses_nothing():
    prompt = list(range(1, 11))
    got, cached, c = answers([prompt, prompt], caching=False)
    assert cached == [0, 0] and c.blocks.cached() == 0 and got[0] == got[1]


def random_workload(caching: bool, speculation: SpeculationConfig | None = None, context: bool = True, seed: int = 17):
    """100 random calls, half of them continuing earlier prompts and answers, through a small cache; the
    invariants checked after every step. Returns every prompt's tokens, the cached counts, the number of
    prompts and (proposed, accepted) speculation totals."""
    rng = random.Random(seed)
    prefixes = [[rng.randrange(EOS) for _ in range(rng.randrange(13))] for _ in range(5)]
    c = EngineCore(FakeModel(num_blocks=24, context=context), [EOS], Limits(max_batch=8, max_waiting=10**4), 8,
                   prefix_caching=caching, speculation=speculation)
    calls, got, cached, spec = [], {}, {}, [0, 0]
    turns = []  # earlier prompts and their answers but the last token (never computed): next turns' heads
    while len(calls) < 100 or c.counts() != (0, 0):
        if len(calls) < 100 and rng.random() < 0.5:
            head = rng.choice([*prefixes, *turns[-8:]])  # a call's prompts often share a partial block
            prompts = [[*head[:rng.randint(0, 16)], *(rng.randrange(EOS) for _ in range(rng.randint(1, 8)))]
                       for _ in range(rng.randint(1, 3))]
            calls.append(requests(*prompts, max_new_tokens=rng.randint(1, 8)))
            c.add(calls[-1])
            for tokens in prompts:
                for _ in range(calls[-1][0].params.max_new_tokens - 1):
                    tokens = [*tokens, c.model.next_token(tokens)]
                turns.append(tokens)
        out = c.step()
        c.check()
        spec[0] += out.proposed
        spec[1] += out.accepted
        for o in out.outputs:
            got.setdefault(o.request_id, []).extend(o.new_token_ids)
            if o.cached_tokens is not None:
                cached[o.request_id] = o.cached_tokens
    assert_idle(c)
    rs = [r for call in calls for r in call]
    return [got[r.id] for r in rs], list(cached.values()), len(rs), tuple(spec)


def test_a_random_workload_keeps_the_invariants_and_the_answers_of_caching_off():
    on, hits, n, _ = random_workload(True)
    off, none, _, _ = random_workload(False)
    assert n >= 180 and on == off and sum(none) == 0
    assert sum(h % 4 != 0 for h in hits) >= 10  # partial blocks reused


@pytest.mark.parametrize("context", [False, True], ids=["counting", "context"])
def test_speculation_keeps_the_answers_of_plain_decoding_and_the_invariants(context):
    # Kept proposals are rare on random prompts (none in some workloads): this one has some, with caching and without.
    plain = random_workload(True, context=context, seed=2)[0]
    for caching in (True, False):
        # 1-grams propose often, so that proposals are refused as well as kept
        got, _, _, (proposed, accepted) = random_workload(caching, SpeculationConfig(max_tokens=4, min_ngram=1),
                                                          context, seed=2)
        assert got == plain
        assert proposed > accepted >= (0 if context else 1)  # refused proposals, and (counting) kept ones


def steps_until_it_proposes(k, misses):
    n = 0
    while k <= 0:
        k, misses = adapt(k, 0, 0, 4, misses)
        n += 1
    return n, k, misses


def test_the_length_grows_with_kept_runs_up_to_the_limit_and_halves_on_refused_ones():
    k, misses = 1, 0
    for _ in range(5):
        k, misses = adapt(k, k, k, 4, misses)
    assert (k, misses) == (4, 0)
    assert adapt(4, 4, 2, 4, 0) == (4, 0)  # partly kept: as it was
    assert adapt(4, 4, 0, 4, 0) == (2, 0)
    assert adapt(2, 2, 0, 4, 0) == (1, 0)
    assert adapt(3, 0, 0, 4, 0) == (3, 0)  # nothing proposed (no match): as it was


def test_each_refused_single_token_doubles_the_wait_and_a_kept_one_resets_it():
    waits = []
    k, misses = 1, 0
    for _ in range(5):
        k, misses = adapt(k, 1, 0, 4, misses)  # its one token refused
        n, k, misses = steps_until_it_proposes(k, misses)
        waits.append(n)
        assert k == 1
    assert waits == [RETRY_AFTER + 1, 2 * RETRY_AFTER + 1, 4 * RETRY_AFTER + 1, 8 * RETRY_AFTER + 1,
                     8 * RETRY_AFTER + 1]
    assert adapt(1, 1, 1, 4, misses) == (2, 0)


def test_a_prompt_that_repeats_itself_gets_its_answer_in_fewer_steps_and_never_past_max_new_tokens():
    prompt = [*range(10, 30), 5, 10, 11]  # "10 11" came before, followed by 12, 13, ...: what the fake says next
    plain = run(_added(core(), requests(prompt, max_new_tokens=10)))
    c = EngineCore(FakeModel(), [EOS], Limits(max_batch=8), 64, speculation=SpeculationConfig(max_tokens=4))
    (r,) = requests(prompt, max_new_tokens=10)
    c.add([r])
    fast = run(c)
    assert tokens_by_request(fast)[r.id] == list(tokens_by_request(plain).values())[0] == list(range(12, 22))
    assert len(fast) < len(plain) // 2 and sum(s.accepted for s in fast) == sum(s.proposed for s in fast) >= 6
    assert max(len(st.input_ids) for st in c.model.steps[1:]) <= 5  # its token and at most 4 proposals
    assert_cache_empty(c)


def test_sampling_prompts_speculate_too_and_leave_the_cache_idle():
    c = EngineCore(FakeModel(), [EOS], Limits(max_batch=8), 64, speculation=SpeculationConfig(max_tokens=4))
    rs = requests(*([*range(10, 30), 5, 10, 11] for _ in range(6)), max_new_tokens=12, do_sample=True, seed=3)
    c.add(rs)
    steps = run(c)
    assert all(len(t) == 12 for t in tokens_by_request(steps).values())
    assert 0 < sum(s.accepted for s in steps) < sum(s.proposed for s in steps)  # p(next) is 0.7 in the fake
    assert_idle(c)


def test_cancelling_a_speculating_prompt_frees_its_blocks():
    c = EngineCore(FakeModel(), [EOS], Limits(max_batch=8), 64, speculation=SpeculationConfig(max_tokens=4))
    (r,) = requests([*range(10, 30), 5, 10, 11], max_new_tokens=40)
    c.add([r])
    c.step()
    c.step()
    assert c.model.steps[-1].input_ids.size > 1  # it proposed
    c.abort([r.id])
    assert reasons(run(c)) == {r.id: FinishReason.CANCELLED}
    assert_cache_empty(c)


def test_prompt_logprobs_come_from_every_prompt_row_in_chunks_without_reading_the_cache():
    """The fake predicts t + 1 after t: a prompt token that follows its predecessor gets the best logprob."""
    c = EngineCore(FakeModel(), [EOS], Limits(max_batch=8), max_step_tokens=3)
    prompt = [1, 2, 3, 4, 9, 10, 11, 12, 20]
    c.add(requests(prompt))  # caches the prompt's blocks
    run(c)
    r = Request(next(_ids), next(_ids), prompt, GenerationParams(max_new_tokens=0), prompt_logprobs=1)
    assert not r.reads_cache
    c.add([r])
    steps = run(c)
    (first,) = [o for s in steps for o in s.outputs]
    assert first.cached_tokens == 0 and first.new_token_ids == () and first.finish_reason == FinishReason.LENGTH
    lps = first.prompt_logprobs
    assert [lp.token_id for lp in lps] == prompt[1:]
    assert [lp.top[0][0] for lp in lps] == [t + 1 for t in prompt[:-1]]
    best = lps[0].logprob
    assert [lp.logprob == best for lp in lps] == [t == p + 1 for p, t in zip(prompt, prompt[1:])]
    assert max(len(st.input_ids) for st in c.model.steps) <= 3  # in chunks
    assert_cache_empty(c)


def test_prompt_logprobs_beside_ordinary_requests_leave_their_answers_alone():
    alone = tokens_by_request(run(_added(core(), requests([5, 6, 7], [30, 31]))))
    c = core(max_step_tokens=4)
    r = Request(next(_ids), next(_ids), [1, 2, 3, 4, 5, 6], GenerationParams(max_new_tokens=2), prompt_logprobs=0)
    others = requests([5, 6, 7], [30, 31])
    c.add([r])
    c.add(others)
    got = tokens_by_request(run(c))
    assert [got[o.id] for o in others] == list(alone.values()) and got[r.id] == [7, 8]


def test_a_constrained_and_an_unconstrained_prompt_in_one_step_each_follow_their_own_rules():
    grammars = fake_grammars()
    c = EngineCore(FakeModel(), [EOS], Limits(max_batch=8), 64, grammars=grammars)
    free, bound = requests([0], [0], max_new_tokens=6)
    bound.matcher = grammars.matcher(Constraint(regex="bc?z"))  # letters: b=1, c=2, z=25
    c.add([free, bound])
    steps = run(c)
    assert all(len(s.outputs) == 2 for s in steps[:3])  # both ran in every step until the grammar ended
    got = tokens_by_request(steps)
    # The fake model counts up (b, c, d, ...); the grammar lets it write "bc", then only "z", then only the end.
    assert got == {free.id: [1, 2, 3, 4, 5, 6], bound.id: [1, 2, 25, EOS]}
    assert reasons(steps) == {free.id: FinishReason.LENGTH, bound.id: FinishReason.STOP}
    assert_cache_empty(c)


def test_a_grammar_that_may_only_end_ends_the_answer_before_min_new_tokens():
    grammars = fake_grammars()
    c = EngineCore(FakeModel(), [EOS], Limits(max_batch=8), 64, grammars=grammars)
    (r,) = requests([0], max_new_tokens=6, min_new_tokens=6)
    r.matcher = grammars.matcher(Constraint(regex="b+"))
    c.add([r])
    assert tokens_by_request(run(c)) == {r.id: [1, 1, 1, 1, 1, 1]}  # "b" again and again: EOS held back
    (r,) = requests([0], max_new_tokens=6, min_new_tokens=6)
    r.matcher = grammars.matcher(Constraint(regex="bc"))
    c.add([r])
    assert tokens_by_request(run(c)) == {r.id: [1, 2, EOS]}


def test_a_matcher_that_fails_fails_its_own_prompt_only():
    grammars = fake_grammars()
    c = EngineCore(FakeModel(), [EOS], Limits(max_batch=8), 64, grammars=grammars)
    ok, broken, free = requests([0], [0], [0], max_new_tokens=4)
    ok.matcher, broken.matcher = (grammars.matcher(Constraint(regex="[b-e]+")) for _ in range(2))
    c.add([ok, broken, free])
    c.step()
    assert not broken.matcher.consume_token(25)  # "z", as a matcher bug would: it is in an error state now
    steps = run(c)
    errors = {o.request_id: o.error for s in steps for o in s.outputs if o.error}
    assert list(errors) == [broken.id] and "grammar" in errors[broken.id]
    assert broken.status is RequestStatus.FINISHED_FAILED
    assert tokens_by_request(steps)[ok.id] == tokens_by_request(steps)[free.id] == [2, 3, 4]
    assert_cache_empty(c)
