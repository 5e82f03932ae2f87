"""Pacing: the step-cost fit and how many prompts a step prefills; on the core, with the fake model."""
import math

import pytest

from server.engine.core import EngineCore
from server.engine.pacing import StepCost, prompts_per_step
from server.engine.params import Limits
from tests.server.engine.fake import EOS, FakeModel
from tests.server.engine.test_core import assert_idle, requests, run, tokens_by_request


def test_the_fit_finds_a_steps_fixed_cost_in_tokens_worth():
    cost = StepCost()
    assert cost.fixed_tokens() == cost.default  # nothing seen yet
    for tokens in [1, 8, 1, 1, 120, 1, 21, 8, 256, 1] * 5:
        cost.add(tokens, 0.018 + 0.003 * tokens)  # a compute-bound CPU step: 18 ms + 3 ms a token
    assert cost.fixed_tokens() == pytest.approx(6.0)


def test_steps_of_one_size_leave_the_default_and_a_flat_cost_takes_every_prompt():
    same = StepCost()
    for _ in range(20):
        same.add(8, 0.05)
    assert same.fixed_tokens() == same.default
    flat = StepCost()
    for tokens in [1, 64, 256, 8] * 5:
        flat.add(tokens, 0.02)  # a step that costs what it costs whatever it runs (a GPU's small batches)
    assert math.isinf(flat.fixed_tokens())
    assert prompts_per_step(flat.fixed_tokens(), 3, [20] * 9) == 9


@pytest.mark.parametrize("fixed, decoding, remaining, expected", [
    (6, 0, [30] * 8, 1),  # a burst of short prompts on an idle compute-bound CPU: one at a time
    (6, 2, [21] * 6, 2),  # six turns of a chat beside two decoding answers: two per step
    (6, 7, [256], 1),  # one long prompt: it runs, at the whole budget
    (400, 0, [30] * 8, 8),  # the fixed part dominates (the weights' reading): all in one step
    (6, 0, [], 0),
])
def test_prompts_per_step_keeps_the_mean_first_token_time_lowest(fixed, decoding, remaining, expected):
    assert prompts_per_step(fixed, decoding, remaining) == expected


def test_the_optimum_is_that_of_the_cost_model():
    """For k equal prompts the rule's j is within one of the j that minimises the summed first-token times of
    k / j steps, each costing fixed + decoding + j * L tokens' worth."""
    for fixed, decoding, k, length in [(6, 2, 6, 21), (6, 7, 8, 20), (12, 0, 16, 30), (2, 30, 32, 10)]:
        def total(j):
            steps = math.ceil(k / j)
            return sum(min(j, k - s * j) * (s + 1) * (fixed + decoding + j * length) for s in range(steps))
        best = min(range(1, k + 1), key=total)
        assert abs(prompts_per_step(fixed, decoding, [length] * k) - best) <= 1


class FixedCost(StepCost):
    def __init__(self, fixed_tokens):
        super().__init__()
        self.value = fixed_tokens

    def fixed_tokens(self):
        return self.value


def paced_core(fixed_tokens):
    return EngineCore(FakeModel(context=True), [EOS], Limits(max_batch=8), 64,
                      pacing=None if fixed_tokens is None else FixedCost(fixed_tokens))


def test_a_paced_burst_starts_a_few_prompts_per_step_and_gets_the_same_answers():
    prompts = [[1 + i, 2, 3, 4, 5, 6, 7, 8, 9] for i in range(6)]
    answers = {}
    for fixed in (None, 2, math.inf):
        c = paced_core(fixed)
        rs = requests(*prompts, max_new_tokens=5)
        c.add(rs)
        steps = run(c)
        assert_idle(c)
        got = tokens_by_request(steps)
        answers[fixed] = [got[r.id] for r in rs]
        firsts = [sum(1 for o in s.outputs if o.cached_tokens is not None) for s in steps]
        answers[fixed, "firsts"] = [n for n in firsts if n]
    assert answers[None] == answers[2] == answers[math.inf]
    assert answers[None, "firsts"] == answers[math.inf, "firsts"] == [6]  # unpaced or a flat cost: one step
    # sqrt((2 + 0) * 6 / 9) rounds to 1, then the decoders raise it: never all six at once
    assert len(answers[2, "firsts"]) >= 3 and max(answers[2, "firsts"]) < 6
