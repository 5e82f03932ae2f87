"""`python -m client.bench.speculation`: the servable with prompt-lookup speculation against without, in turns."""
from __future__ import annotations

import json
import re

from modelcheck import REPO


def test_a_tiny_run_reports_each_workloads_speedup_and_the_ratio_to_the_peer(fp32_model_dir, run_script, tmp_path,
                                                                            stand_in_peer):
    peer = stand_in_peer
    out = run_script("client.bench.speculation", "--serve", fp32_model_dir, "--servable",
                     REPO / "servable_stream" / "config.json", "--rounds", "1", "--max-new-tokens", "6",
                     "--llamacpp", peer.root, "--json", tmp_path / "s.json", timeout=900)
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"spec_speedup_grounded_1=\d+\.\d{3} spec_speedup_chat_1=\d+\.\d{3} spec_speedup_8=\d+\.\d{3} "
                        r"vs_llamacpp_1=\d+\.\d{3}", last), out.stdout
    report = json.loads((tmp_path / "s.json").read_text())
    assert "speculation off" in report["engines"]["off"] and "speculation up to 4 tokens" in report["engines"]["on"]
    for workload in ("grounded_1", "chat_1", "8"):
        assert all(report["figures"][workload][name]["tokens_per_s"] > 0 for name in ("off", "on"))
    (got,) = report["llamacpp"]["rounds"]
    assert got["server-http"] > 0 and got["llama.cpp"] > 0
    assert report["llamacpp"]["vs_llamacpp"] == got["server-http"] / got["llama.cpp"]


def test_without_the_peer_its_ratio_is_na(fp32_model_dir, run_script, tmp_path):
    out = run_script("client.bench.speculation", "--serve", fp32_model_dir, "--servable",
                     REPO / "servable_stream" / "config.json", "--rounds", "1", "--max-new-tokens", "2",
                     "--llamacpp", tmp_path / "none", timeout=900)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1].endswith(" vs_llamacpp_1=n/a") and "not built" in out.stderr


def test_bad_arguments_are_one_line(run_script, tmp_path):
    out = run_script("client.bench.speculation", "--serve", tmp_path, "--rounds", "0")
    assert out.returncode == 1 and out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
