"""The serving benchmark (`python -m client.bench`) on a tiny configuration against a live server, and with a server of its own."""
from __future__ import annotations

import json
import re

import pytest

from modelcheck import REPO
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
    text = log.read_text()
    assert "serving llm.LLMService" in text and "stopped" in text  # it drained and exited


def test_benchmark_unreachable_server_is_one_line(run_script):
    url = f"127.0.0.1:{free_port()}"
    out = run_script("client.bench", "--url", url, "--levels", "1")
    assert out.returncode == 1
    assert out.stderr.strip() == f"error: cannot reach the server at {url} (connection failed)"


def test_tiny_benchmark_with_genai_cb_raw_step_open_loop_and_rss(fp32_model_dir, run_script, tmp_path):
    out = run_script("client.bench", "--serve", fp32_model_dir, *SERVABLE, "--levels", "1,8", "--requests", "8",
                     "--max-new-tokens", "4", "--warmup", "1", "--baseline", "genai-cb", "--raw-step",
                     "--rates", "8,1", "--open-requests", "2", "--json", tmp_path / "b.json", timeout=600)
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    for key in TARGETS:  # levels 1 and 8 measured; the 16-stream figures are not
        value = "n/a" if "16" in key else r"\d+(\.\d+)?"
        assert re.search(rf" {key}={value}( |$)", last), last
    assert "Open loop on the server" in out.stdout and "Baseline genai-cb" in out.stdout

    report = json.loads((tmp_path / "b.json").read_text())
    cb = report["baselines"]["genai-cb"]
    assert [r["concurrency"] for r in cb] == [1, 8]
    for level in cb:
        assert level["requests"] == 8 and level["errors"] == 0 and level["output_tokens_per_s"] > 0
        for t in level["timings"]:
            assert t["tokens"] == 4 and 0 < t["ttft_ms"] <= t["e2e_ms"] and t["text"]
    assert cb[0]["itl_ms"]["p50"] > 0  # one stream: one token per step, each its own arrival
    assert report["greedy_text_matches_genai_cb_at_1"]["compared"] == 8
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
