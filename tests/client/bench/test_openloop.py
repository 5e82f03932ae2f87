"""The open loop's arrival times and the summary's target figures, without a server."""
from __future__ import annotations

import pytest

from client.bench.load import LevelResult, RequestTiming
from client.bench.openloop import arrival_offsets, parse_rates
from client.bench.targets import Targets, compute


def test_arrivals_are_seeded_poisson():
    offsets = arrival_offsets(2.0, 2000, seed=7)
    assert offsets == arrival_offsets(2.0, 2000, seed=7) != arrival_offsets(2.0, 2000, seed=8)
    assert offsets[0] == 0 and offsets == sorted(offsets)
    gaps = [b - a for a, b in zip(offsets, offsets[1:])]
    assert sum(gaps) / len(gaps) == pytest.approx(0.5, rel=0.1)  # mean gap 1/rate


def test_parse_rates():
    assert parse_rates("0.5, 1,2") == [0.5, 1.0, 2.0]
    for bad in ("", "x", "0", "-1", "nan", "inf"):
        with pytest.raises(ValueError):
            parse_rates(bad)


def _level(concurrency: int, wall_s: float, ttfts: list[float], tpot: float = 10.0) -> LevelResult:
    timings = [RequestTiming(i, t, t + tpot * 9, 10, tpot) for i, t in enumerate(ttfts)]
    return LevelResult.of(concurrency, wall_s, timings)


def test_targets_from_the_runs():
    server = [_level(1, 2.0, [40.0] * 4), _level(8, 1.0, [100.0] * 9 + [300.0]), _level(16, 1.0, [90.0] * 13)]
    genai = [_level(1, 4.0, [40.0] * 4), _level(8, 1.25, [80.0] * 10), _level(16, 2.0, [100.0] * 13)]
    t = compute(server, genai, raw_step_ms=8.0, open_loop=None, rss_peak_mb={1: 700.0, 8: 750.0})
    assert t.vs_genai_1 == pytest.approx(2.0) and t.vs_genai_8 == pytest.approx(1.25)
    assert t.vs_genai_16 == pytest.approx(2.0) and t.tok_s_16_over_8 == pytest.approx(1.3)
    assert t.ttft_p50_vs_genai_8 == pytest.approx(1.25)
    assert t.ttft_p90_over_p50_8 == pytest.approx(1.2)  # p90 of nine 100s and one 300: 120
    assert t.tpot_vs_raw_step_1 == pytest.approx(1.25) and t.rss_peak_mb_8 == 750.0
    assert t.open_ttft_p99_ms_1 is None
    assert t.line() == ("vs_genai_1=2.00 vs_genai_8=1.25 vs_genai_16=2.00 tok_s_16_over_8=1.30 "
                        "ttft_p50_vs_genai_8=1.25 ttft_p90_over_p50_8=1.20 tpot_vs_raw_step_1=1.250 "
                        "open_ttft_p99_ms_1=n/a rss_peak_mb_8=750")


def test_targets_not_measured_are_na():
    assert Targets().line() == ("vs_genai_1=n/a vs_genai_8=n/a vs_genai_16=n/a tok_s_16_over_8=n/a "
                                "ttft_p50_vs_genai_8=n/a ttft_p90_over_p50_8=n/a tpot_vs_raw_step_1=n/a "
                                "open_ttft_p99_ms_1=n/a rss_peak_mb_8=n/a")
