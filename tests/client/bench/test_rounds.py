"""Engines in turns and the medians of their rounds, without a model."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from client.bench.load import LevelResult, RequestTiming
from client.bench.rounds import alternate, median, median_fields, pool, series


def level(concurrency: int, tok_s: float, requests: int = 4, tokens: int = 10) -> LevelResult:
    """A level whose output tokens/s is `tok_s`."""
    timings = [RequestTiming(i, 50.0, 150.0, tokens, 100.0 / (tokens - 1)) for i in range(requests)]
    return LevelResult.of(concurrency, requests * tokens / tok_s, timings)


def test_alternate_runs_every_step_in_turn_per_round_and_level():
    calls, lines = [], []

    def step(name):
        def run(lvl, r):
            calls.append((name, lvl, r))
            return {name: level(lvl, 10.0 * lvl)} if name != "raw" else ({name: 8.5} if lvl == 1 else {})
        return run

    results = alternate([1, 4], 2, [step("raw"), step("A"), step("B")], progress=lines.append)
    # A B A B at each level; the raw step before A, where it reports something (level 1)
    assert [(n, lvl, r) for n, lvl, r in calls if n != "raw"] == [
        ("A", 1, 0), ("B", 1, 0), ("A", 1, 1), ("B", 1, 1), ("A", 4, 0), ("B", 4, 0), ("A", 4, 1), ("B", 4, 1)]
    assert [list(got) for got in results[1]] == [["raw", "A", "B"]] * 2
    assert [list(got) for got in results[4]] == [["A", "B"]] * 2
    assert lines == ["level 1 round 1/2: raw 8.50 ms, A 10 tok/s, B 10 tok/s",
                     "level 1 round 2/2: raw 8.50 ms, A 10 tok/s, B 10 tok/s",
                     "level 4 round 1/2: A 40 tok/s, B 40 tok/s",
                     "level 4 round 2/2: A 40 tok/s, B 40 tok/s"]
    assert [[r.concurrency for r in per_round] for per_round in series(results, "A")] == [[1, 4], [1, 4]]
    assert series(results, "raw") == [[8.5], [8.5]]
    assert series(results, "absent") == [[], []]


def test_a_round_line_counts_errors():
    failed = LevelResult.of(1, 1.0, [], ["UNAVAILABLE: gone"])
    lines = []
    alternate([1], 1, [lambda lvl, r: {"server": failed}], progress=lines.append)
    assert lines == ["level 1 round 1/1: server 0 tok/s (1 errors)"]


def test_median_of_what_was_measured():
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([1.0, None, 3.0]) == 2.0  # an even count: the mean of the middle two
    assert median([None, None]) is None and median([]) is None


@dataclass
class Figures:
    ratio: float | None
    spread: float | None
    top: int


def test_median_fields_takes_each_field_on_its_own_and_keeps_the_named_ones():
    rows = [Figures(2.0, None, 16), Figures(0.5, 3.0, 16), Figures(1.2, 1.0, 16)]
    assert median_fields(rows, keep=("top",)) == Figures(1.2, 2.0, 16)
    assert median_fields(rows[:2], keep=("top",)).top == 16  # not 16.0


def test_pool_puts_the_rounds_of_a_level_together():
    a, b = level(2, 100.0, requests=4), level(2, 50.0, requests=4)  # 0.4 s and 0.8 s
    b.errors, b.error_messages = 1, ["DEADLINE_EXCEEDED: late"]
    pooled = pool([a, b])
    assert pooled.concurrency == 2 and pooled.requests == 8 and len(pooled.timings) == 8
    assert pooled.wall_s == pytest.approx(1.2)
    assert pooled.output_tokens_per_s == pytest.approx(80 / 1.2)  # all tokens over all the time
    assert pooled.errors == 1 and pooled.error_messages == ["DEADLINE_EXCEEDED: late"]
    assert pool([a]) is a
