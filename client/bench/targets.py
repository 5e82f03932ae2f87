"""The figures the continuous-batching targets are read from, appended to the benchmark's summary line.

Fixed keys (levels 1, 8 and 16, open-loop rate 1/s) so runs compare at a glance; a figure the run did not
measure prints n/a.
"""
from __future__ import annotations

from dataclasses import dataclass

from client.bench.load import LevelResult


@dataclass
class Targets:
    vs_genai_1: float | None = None  # server output tok/s / genai-cb's, one stream
    vs_genai_8: float | None = None  # the same at 8 streams
    vs_genai_16: float | None = None  # the same at 16 streams
    tok_s_16_over_8: float | None = None  # server output tok/s at 16 streams / at 8
    ttft_p50_vs_genai_8: float | None = None  # server TTFT p50 at 8 streams / genai-cb's
    ttft_p90_over_p50_8: float | None = None  # server, 8 streams
    tpot_vs_raw_step_1: float | None = None  # server TPOT p50 at one stream / one raw infer step
    open_ttft_p99_ms_1: float | None = None  # server, open loop at 1 request/s
    rss_peak_mb_8: float | None = None  # server process, sampled during the 8-stream level
    raw_step_ms: float | None = None  # in the JSON only

    def line(self) -> str:
        def f(v, digits):
            return "n/a" if v is None else f"{v:.{digits}f}"

        return (f"vs_genai_1={f(self.vs_genai_1, 2)} vs_genai_8={f(self.vs_genai_8, 2)} "
                f"vs_genai_16={f(self.vs_genai_16, 2)} tok_s_16_over_8={f(self.tok_s_16_over_8, 2)} "
                f"ttft_p50_vs_genai_8={f(self.ttft_p50_vs_genai_8, 2)} "
                f"ttft_p90_over_p50_8={f(self.ttft_p90_over_p50_8, 2)} "
                f"tpot_vs_raw_step_1={f(self.tpot_vs_raw_step_1, 3)} "
                f"open_ttft_p99_ms_1={f(self.open_ttft_p99_ms_1, 0)} rss_peak_mb_8={f(self.rss_peak_mb_8, 0)}")


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def compute(server: list[LevelResult], genai_cb: list[LevelResult] | None, raw_step_ms: float | None,
            open_loop: list | None, rss_peak_mb: dict[int, float | None]) -> Targets:
    mine = {r.concurrency: r for r in server}
    theirs = {r.concurrency: r for r in genai_cb or []}

    def tok_s(by_level, level):
        r = by_level.get(level)
        return r.output_tokens_per_s if r and r.requests else None

    eight, one = mine.get(8), mine.get(1)
    at_1 = next((r for r in open_loop or [] if r.rate == 1), None)
    return Targets(
        vs_genai_1=_ratio(tok_s(mine, 1), tok_s(theirs, 1)),
        vs_genai_8=_ratio(tok_s(mine, 8), tok_s(theirs, 8)),
        vs_genai_16=_ratio(tok_s(mine, 16), tok_s(theirs, 16)),
        tok_s_16_over_8=_ratio(tok_s(mine, 16), tok_s(mine, 8)),
        ttft_p50_vs_genai_8=_ratio(eight and eight.ttft_ms.p50, theirs.get(8) and theirs[8].ttft_ms.p50),
        ttft_p90_over_p50_8=_ratio(eight and eight.ttft_ms.p90, eight and eight.ttft_ms.p50),
        tpot_vs_raw_step_1=_ratio(one and one.tpot_ms.p50, raw_step_ms),
        open_ttft_p99_ms_1=at_1.level.ttft_ms.p99 if at_1 else None,
        rss_peak_mb_8=rss_peak_mb.get(8),
        raw_step_ms=raw_step_ms,
    )
