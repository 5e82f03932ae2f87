"""The serving benchmark (`python -m client.bench`) on a tiny configuration against a live server, and with a server of its own."""
from __future__ import annotations

import json
import re

import pytest

from modelcheck import REPO
from client.bench.load import LevelResult, RequestTiming
from client.bench.llamacpp import NOT_BUILT
from client.bench.serving import figures
from client.launcher import free_port

# The default, servable_stream/config.json, is relative to the current directory; these run elsewhere.
SERVABLE = ("--servable", REPO / "servable_stream" / "config.json")

SUMMARY = re.compile(r"^tpot_ratio_vs_inprocess=([\d.]+) ttft_overhead_ms=(-?[\d.]+) speedup_2_vs_1=([\d.]+) ")
TARGETS = ("vs_genai_1", "vs_genai_8", "vs_genai_16", "tok_s_16_over_8", "ttft_p50_vs_genai_8", "ttft_p90_over_p50_8", "tpot_vs_raw_step_1", "open_ttft_p99_ms_1",
           "rss_peak_mb_8")
NOT_MEASURED = " ".join(f"{key}=n/a" for key in TARGETS)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_tiny_benchmark_with_inprocess_baseline_writes_json_and_png(live_server, fp32_model_dir, run_script,
                                                                     tmp_path):
    out = run_script("client.bench", "--url", live_server.address, "--levels", "1,2", "--requests", "2",
                     "--max-new-tokens", "6", "--warmup", "1", "--baseline", "inprocess", "--model", fp32_model_dir,
                     *SERVABLE, "--json", tmp_path / "b.json", "--plot", tmp_path / "b.png", timeout=600)
    assert out.returncode == 0, out.stderr
    assert SUMMARY.match(out.stdout.strip().splitlines()[-1]), out.stdout
    assert "TTFT ms p50/p90/p99" in out.stdout and "server/baseline" in out.stdout

    report = json.loads((tmp_path / "b.json").read_text())
    assert [r["concurrency"] for r in report["server"]] == [1, 2]
    for level in report["server"]:
        assert level["requests"] == 2 and level["errors"] == 0
        assert level["output_tokens_per_s"] > 0 and level["requests_per_s"] > 0
        assert level["ttft_ms"]["p50"] <= level["ttft_ms"]["p90"] <= level["ttft_ms"]["p99"]
        assert level["tpot_ms"]["p50"] > 0 and level["itl_ms"]["p50"] > 0
        for t in level["timings"]:
            assert t["tokens"] == 6 and 0 < t["ttft_ms"] <= t["e2e_ms"]
    inproc = report["baselines"]["inprocess"]
    assert [r["concurrency"] for r in inproc] == [1, 2] and inproc[1]["requests"] == 2
    assert all(t["tokens"] == 6 for r in inproc for t in r["timings"])
    assert report["greedy_text_matches_inprocess_at_1"] == {"identical": 2, "compared": 2}
    assert report["summary"]["top_level"] == 2 and report["summary"]["tpot_ratio_vs_inprocess"] > 0

    png = (tmp_path / "b.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000


def test_benchmark_can_start_and_stop_its_own_server(fp32_model_dir, run_script, tmp_path):
    log = tmp_path / "server.log"
    out = run_script("client.bench", "--serve", fp32_model_dir, *SERVABLE, "--server-log", log, "--levels", "1",
                     "--requests", "1", "--max-new-tokens", "4", "--warmup", "0", timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == \
        f"tpot_ratio_vs_inprocess=n/a ttft_overhead_ms=n/a speedup_1_vs_1=1.00 {NOT_MEASURED}"
    assert out.stdout.count(NOT_BUILT) == 1  # no peers/ here: the llama.cpp peer is skipped with one line
    text = log.read_text()
    assert "serving llm.LLMService" in text and "stopped" in text  # it drained and exited


def test_benchmark_unreachable_server_is_one_line(run_script):
    url = f"127.0.0.1:{free_port()}"
    out = run_script("client.bench", "--url", url, "--levels", "1")
    assert out.returncode == 1
    assert out.stderr.strip() == f"error: cannot reach the server at {url} (connection failed)"


def test_tiny_benchmark_with_genai_cb_raw_step_open_loop_and_rss_in_rounds(fp32_model_dir, run_script, tmp_path):
    out = run_script("client.bench", "--serve", fp32_model_dir, *SERVABLE, "--levels", "1,8", "--requests", "2",
                     "--max-new-tokens", "4", "--warmup", "1", "--baseline", "genai-cb", "--raw-step", "--rounds", "2",
                     "--rates", "8,1", "--open-requests", "2", "--json", tmp_path / "b.json", timeout=600)
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    for key in TARGETS:  # levels 1 and 8 measured; the 16-stream figures are not
        value = "n/a" if "16" in key else r"\d+(\.\d+)?"
        assert re.search(rf" {key}={value}( |$)", last), last
    assert "Open loop on the server" in out.stdout and "Baseline genai-cb" in out.stdout
    # One line per round, the raw step before the server's one-stream level, genai-cb after the server.
    rounds = [line for line in out.stderr.splitlines() if line.startswith("level ")]
    assert [line.split(":")[0] for line in rounds] == [f"level {n} round {r}/2" for n in (1, 8) for r in (1, 2)]
    assert all(re.fullmatch(r"level 1 round \d/2: raw_step [\d.]+ ms, server \d+ tok/s, genai-cb \d+ tok/s", line)
               for line in rounds[:2]), rounds

    report = json.loads((tmp_path / "b.json").read_text())
    cb = report["baselines"]["genai-cb"]
    assert [r["concurrency"] for r in cb] == [1, 8]
    for level, pooled in zip(cb, (4, 16)):  # both rounds pooled; 2 requests per round, 8 at 8 streams
        assert level["requests"] == pooled and level["errors"] == 0 and level["output_tokens_per_s"] > 0
        for t in level["timings"]:
            assert t["tokens"] == 4 and 0 < t["ttft_ms"] <= t["e2e_ms"] and t["text"]
    assert cb[0]["itl_ms"]["p50"] > 0  # one stream: one token per step, each its own arrival
    assert [r["requests"] for r in report["server"]] == [4, 16]
    assert report["greedy_text_matches_genai_cb_at_1"]["compared"] == 4
    assert len(report["rounds"]) == 2
    for r in report["rounds"]:
        assert [x["concurrency"] for x in r["server"]] == [1, 8] == [x["concurrency"] for x in r["genai-cb"]]
        assert [x["requests"] for x in r["server"]] == [2, 8] == [x["requests"] for x in r["genai-cb"]]
        assert all("timings" not in x for x in r["server"] + r["genai-cb"])
        assert len(r["raw_step"]) == 1 and r["raw_step"][0] == r["targets"]["raw_step_ms"] > 0
    for key in ("vs_genai_1", "vs_genai_8", "ttft_p50_vs_genai_8", "tpot_vs_raw_step_1", "tok_s_16_over_8",
                "ttft_p90_over_p50_8", "raw_step_ms"):  # two rounds: the median is their mean
        per_round = [r["targets"][key] for r in report["rounds"]]
        assert report["targets"][key] == (None if None in per_round else pytest.approx(sum(per_round) / 2)), key
    rates = report["open_loop"]["rates"]
    assert [r["rate"] for r in rates] == [8.0, 1.0]
    for r in rates:
        level = r["level"]
        assert level["requests"] == 2 and level["errors"] == 0 and r["peak_in_flight"] >= 1
        assert level["ttft_ms"]["p50"] <= level["ttft_ms"]["p90"] <= level["ttft_ms"]["p99"]
        assert all(t["tokens"] == 4 for t in level["timings"])
    assert set(report["server_rss_peak_mb"]) == {"1", "8"}
    assert all(mb > 100 for mb in report["server_rss_peak_mb"].values())
    assert report["raw_step_ms"] > 0
    assert all((report["targets"][key] is None) == ("16" in key) for key in TARGETS)


@pytest.mark.parametrize("rates", ["1,fast", "0", "-2", ""])
def test_benchmark_bad_rates_is_one_line(run_script, rates):
    out = run_script("client.bench", "--url", f"127.0.0.1:{free_port()}", "--rates", rates)
    assert out.returncode == 1
    assert out.stderr.strip() == \
        f"error: --rates: expected positive numbers of requests/s separated by commas, got {rates!r}"


@pytest.mark.parametrize("rounds", ["0", "-1"])
def test_benchmark_bad_rounds_is_one_line(run_script, rounds):
    out = run_script("client.bench", "--url", f"127.0.0.1:{free_port()}", "--rounds", rounds)
    assert out.returncode == 1
    assert out.stderr.strip() == f"error: --rounds: expected a positive integer, got {rounds}"


def _level(concurrency: int, tok_s: float, ttft_ms: float = 100.0, tpot_ms: float = 10.0) -> LevelResult:
    """Ten requests of 10 tokens at `tok_s` output tokens/s; two of them slow to start (TTFT p90 = 3 x p50)."""
    ttfts = [ttft_ms] * 8 + [3 * ttft_ms] * 2
    timings = [RequestTiming(i, t, t + tpot_ms * 9, 10, tpot_ms) for i, t in enumerate(ttfts)]
    return LevelResult.of(concurrency, 100 / tok_s, timings)


def test_the_last_lines_ratios_are_medians_of_per_round_ratios():
    # Three rounds that drift: per round the server against genai-cb at 8 streams is 2.0, 0.5 and 1.2, so the median
    # of per-round ratios is 1.2, while the median tok/s of each (200 / 250) would say 0.8.
    server = [[_level(1, 90, tpot_ms=10.0), _level(8, 100, ttft_ms=400), _level(16, 150)],
              [_level(1, 60, tpot_ms=16.0), _level(8, 200, ttft_ms=300), _level(16, 260)],
              [_level(1, 80, tpot_ms=12.0), _level(8, 300, ttft_ms=500), _level(16, 320)]]
    genai_cb = [[_level(1, 100), _level(8, 50, ttft_ms=100)],
                [_level(1, 50), _level(8, 400, ttft_ms=300)],
                [_level(1, 100), _level(8, 250, ttft_ms=250)]]
    raw_steps = [8.0, 20.0, 10.0]
    inprocess = [_level(1, 70, ttft_ms=90.0, tpot_ms=8.0)]
    open_loop = []
    summary, goals, per_round = figures(server, genai_cb, raw_steps, inprocess, open_loop, {1: 700.0, 8: 750.0})

    assert [t.vs_genai_8 for _, t in per_round] == pytest.approx([2.0, 0.5, 1.2])
    assert goals.vs_genai_8 == pytest.approx(1.2)
    assert goals.vs_genai_1 == pytest.approx(0.9)  # 0.9, 1.2, 0.8
    assert goals.vs_genai_16 is None  # genai-cb did not run 16 streams
    assert goals.ttft_p50_vs_genai_8 == pytest.approx(2.0)  # 4.0, 1.0, 2.0
    assert goals.tpot_vs_raw_step_1 == pytest.approx(1.2)  # 1.25, 0.8, 1.2
    assert goals.raw_step_ms == 10.0
    assert goals.tok_s_16_over_8 == pytest.approx(1.3)  # 1.5, 1.3, 1.07
    assert goals.ttft_p90_over_p50_8 == pytest.approx(3.0)  # server-only, every round 3.0
    assert goals.rss_peak_mb_8 == 750.0 and goals.open_ttft_p99_ms_1 is None  # measured once, not per round
    assert all(t.rss_peak_mb_8 is None for _, t in per_round)

    assert summary.tpot_ratio_vs_inprocess == pytest.approx(1.5)  # 1.25, 2.0, 1.5 against the one in-process run
    assert summary.speedup_vs_1 == pytest.approx(4.0)  # 150/90, 260/60, 320/80
    assert summary.top_level == 16
    assert summary.line() == "tpot_ratio_vs_inprocess=1.500 ttft_overhead_ms=10.0 speedup_16_vs_1=4.00"


def test_one_round_gives_that_rounds_ratios():
    server, genai_cb = [[_level(1, 90), _level(8, 300)]], [[_level(1, 100), _level(8, 250)]]
    summary, goals, per_round = figures(server, genai_cb, [None], None, [], {})
    assert goals == per_round[0][1] and goals.vs_genai_8 == pytest.approx(1.2) and goals.tpot_vs_raw_step_1 is None
    assert summary.tpot_ratio_vs_inprocess is None and summary.speedup_vs_1 == pytest.approx(300 / 90)
