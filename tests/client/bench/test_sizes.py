"""`make bench-sizes`' pieces: its last line (exactly the keys, n/a where not measured), the serving benchmark's
report read per precision, the peer found or not, and the memory figure on a real server under the mixed load."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict

import pytest

from client.bench import sizes, targets
from client.bench.llamacpp import LlamaCpp
from tests.client.bench.peer import fake_peer
from tests.server.harness import start_server


def test_the_last_line_has_exactly_the_keys_in_order_and_n_a_for_what_was_not_measured():
    line = sizes.key_line({"size_int8_vs_genai_1": 0.944, "rss_overhead_mb_16": 1234.6, "other": 3.0})
    pairs = [item.split("=") for item in line.split(" ")]
    assert [k for k, _ in pairs] == list(sizes.KEYS)
    values = dict(pairs)
    assert values["size_int8_vs_genai_1"] == "0.94" and values["rss_overhead_mb_16"] == "1235"
    assert all(v == "n/a" for k, v in values.items() if k not in ("size_int8_vs_genai_1", "rss_overhead_mb_16"))


def test_a_serving_report_gives_its_precision_s_figures():
    report = json.loads(json.dumps({  # as written: JSON keys are strings
        "targets": asdict(targets.Targets(vs_genai_1=1.1, vs_genai_8=1.2, vs_genai_16=None)),
        "llamacpp": {"vs_llamacpp": {1: 0.9, 8: 2.6, 16: 2.7}}}))
    got = sizes.serving_figures(report, "int4")
    assert got["size_int4_vs_genai_1"] == 1.1 and got["size_int4_vs_genai_8"] == 1.2
    assert got["size_int4_vs_genai_16"] is None
    assert got["size_int4_vs_llamacpp_1"] == 0.9 and got["size_int4_vs_llamacpp_16"] == 2.7
    without_peer = sizes.serving_figures({"targets": report["targets"]}, "int8")
    assert without_peer["size_int8_vs_llamacpp_1"] is None and without_peer["size_int8_vs_genai_1"] == 1.1
    assert sizes.key_line(without_peer).count("n/a") == len(sizes.KEYS) - 2  # int8 at 1 and 8 streams


def test_the_peer_counts_only_with_its_tools_and_its_converter(tmp_path):
    assert not sizes.peer_ready(LlamaCpp(tmp_path / "none"))
    peer = fake_peer(tmp_path / "p")
    assert not sizes.peer_ready(peer)  # no tree to convert with
    tree = sizes.source_tree(peer)
    tree.mkdir(parents=True)
    (tree / "convert_hf_to_gguf.py").write_text("")
    assert sizes.peer_ready(peer)


@pytest.mark.parametrize("flag", ["--rounds", "--mixed-requests"])
def test_a_bad_count_is_one_line(flag, capsys):
    assert sizes.main([flag, "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: {flag}: expected a positive integer, got 0"


def test_the_memory_figure_is_the_peak_under_the_mixed_load_beyond_weights_and_kv_cache(int8_model_dir, tmp_path):
    server = start_server(int8_model_dir, tmp_path, http=True)
    try:
        got = sizes.memory(server, int8_model_dir, argparse.Namespace(mixed_requests=16, mixed_max_tokens=24))
    finally:
        server.stop()
    assert got["errors"] == 0 and got["requests"] == 16 and got["completion_tokens"] >= 16
    # The servable ships a 0.5 GB KV cache; the server logs what it allocated.
    assert 450 <= got["kv_cache_mb"] <= 550
    assert got["weights_mb"] == pytest.approx(sizes.weights_mb(int8_model_dir)) and got["weights_mb"] > 100
    assert got["rss_loaded_mb"] <= got["rss_peak_mb"]
    assert got["rss_low_second_half_mb"] <= got["rss_peak_second_half_mb"] <= got["rss_peak_mb"]
    assert got["overhead_mb"] == pytest.approx(got["rss_peak_mb"] - got["weights_mb"] - got["kv_cache_mb"])
