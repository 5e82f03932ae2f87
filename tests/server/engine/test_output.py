"""The output side on a fake model and tokenizer: text per prompt in order, a stop string goes back to the core
as an abort, slow readers get merged deltas, readers are woken once per step."""
from server.engine.core import EngineCore
from server.engine.output import Collector, OutputProcessor, Submission, ThreadWaker
from server.engine.params import GenerationParams, Limits
from server.engine.request import Request
from server.engine.streamer import TokenStreamer
from server.engine.types import Failed, Finished, FinishReason, TextDelta, collect
from tests.server.engine.fake import EOS, FakeModel, FakeTokenizer

_ids = iter(range(1, 10**6))


class CountingWaker(ThreadWaker):
    def __init__(self):
        self.wakes = []

    def wake(self, collectors):
        self.wakes.append(len(collectors))
        super().wake(collectors)


def wired(waker=None, **limits):
    """A core and an output processor wired as the engine wires them; the test steps by hand."""
    core = EngineCore(FakeModel(), [EOS], Limits(**{"max_batch": 8, **limits}), 64)
    output = OutputProcessor(core.abort)
    waker = waker or ThreadWaker()

    def submit(*prompts, stop=(), **params):
        call = Submission(next(_ids), 0.0, waker, core.abort)
        p = GenerationParams(**{"max_new_tokens": 8, **params, "stop": tuple(stop)})
        requests = [Request(next(_ids), call.id, list(prompt), p) for prompt in prompts]
        for i, r in enumerate(requests):
            call.streamers[r.id] = TokenStreamer(FakeTokenizer(), i, r.prompt_ids, p.stop, (EOS,), call.collector, 0.0)
        output.add(call)
        core.add(requests)
        return call

    def step_all(limit=100):
        for _ in range(limit):
            out = core.step()
            if not out.outputs and not out.scheduled:
                return
            output.process(out)
        raise AssertionError("still busy")

    return core, output, submit, step_all


def test_each_prompt_gets_its_text_in_order_then_one_finished():
    core, output, submit, step_all = wired()
    call = submit([0], [60], max_new_tokens=3)  # 1, 2, 3: "bcd"; 61, 62, then EOS: "jk"
    step_all()
    events = list(call.events(timeout=0))
    for index, text, reason, tokens in ((0, "bcd", FinishReason.LENGTH, 3), (1, "jk", FinishReason.STOP, 3)):
        mine = [e for e in events if e.index == index]
        assert isinstance(mine[-1], Finished) and [e for e in mine if isinstance(e, Finished)] == mine[-1:]
        assert "".join(e.text for e in mine[:-1]) == text
        assert mine[-1].reason == reason and mine[-1].usage.completion_tokens == tokens
    assert call.done.is_set()
    output.put(None)


def test_a_stop_string_aborts_the_prompt_in_the_core_and_is_never_sent():
    core, output, submit, step_all = wired()
    call = submit([0], [0], stop=["de"], max_new_tokens=20)
    call.streamers[list(call.streamers)[1]].stop = ()  # the second prompt has no stop string
    step_all()
    (first, second) = collect(call.events(timeout=0))
    assert (first.text, first.reason) == ("bc", FinishReason.STOP_SEQUENCE)
    assert (second.text, second.reason) == ("bcdefghijklmnopqrstu", FinishReason.LENGTH)
    assert first.usage.completion_tokens == 4  # the token that completed "de" counts; later ones never reach it
    assert core.blocks.used() == 0 and core.counts() == (0, 0)
    output.put(None)


def test_cached_prompt_tokens_reach_the_usage_whatever_ends_the_prompt():
    core, output, submit, step_all = wired()
    prompt = list(range(1, 11))  # its two full blocks of 4 stay cached
    first = submit(prompt)
    step_all()
    call = submit(prompt, [*prompt, 20], stop=["m"])  # 11 then 12 ("m"): a stop string ends the first
    step_all()
    (a, b) = collect(call.events(timeout=0))
    assert (a.reason, b.reason) == (FinishReason.STOP_SEQUENCE, FinishReason.LENGTH)
    assert (a.usage.cached_tokens, b.usage.cached_tokens) == (8, 8)
    assert collect(first.events(timeout=0))[0].usage.cached_tokens == 0
    output.put(None)


def test_a_slow_reader_gets_merged_deltas_and_readers_wake_once_per_step():
    waker = CountingWaker()
    core, output, submit, step_all = wired(waker)
    a, b = submit([0], max_new_tokens=6), submit([10], max_new_tokens=6)
    step_all()  # nobody read while six steps ran
    assert waker.wakes == [2] * 6  # one wake per step, for both calls at once
    events = list(a.events(timeout=0))
    assert [type(e) for e in events] == [TextDelta, Finished] and events[0].text == "bcdefg"
    assert "".join(e.text for e in b.events(timeout=0) if isinstance(e, TextDelta)) == "lmnopq"
    output.put(None)


def test_collector_merges_per_prompt_and_keeps_each_prompts_order():
    c = Collector(ThreadWaker())
    for e in (TextDelta(0, "a"), TextDelta(1, "x"), TextDelta(0, "b"), Finished(0, FinishReason.STOP, None),
              TextDelta(1, "y")):
        c.put(e)
    assert c.take() == [TextDelta(0, "ab"), TextDelta(1, "xy"), Finished(0, FinishReason.STOP, None)]
    assert c.take() == []


def test_cancel_ends_every_prompt_of_the_call_as_cancelled():
    core, output, submit, step_all = wired()
    call = submit([0], [5], max_new_tokens=50)
    output.process(core.step())
    call.cancel()
    step_all()
    finals = [e for e in call.events(timeout=0) if isinstance(e, Finished)]
    assert [f.reason for f in finals] == [FinishReason.CANCELLED] * 2
    assert core.blocks.used() == 0
    output.put(None)


def test_a_failure_on_the_output_side_fails_its_call_only():
    core, output, submit, step_all = wired()
    bad, good = submit([0], [1], max_new_tokens=5), submit([2], max_new_tokens=5)

    def boom(*args, **kwargs):
        raise ValueError("cannot decode")

    next(iter(bad.streamers.values())).put = boom
    step_all()
    events = list(bad.events(timeout=0))
    assert isinstance(events[-1], Failed) and "cannot decode" in events[-1].message
    assert collect(good.events(timeout=0))[0].text == "defgh"
    assert core.blocks.used() == 0 and core.counts() == (0, 0)  # its other prompt was aborted in the core
    output.put(None)
