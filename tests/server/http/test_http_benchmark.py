"""The serving benchmark (`python -m client.bench`) --protocol openai: the same load over HTTP streaming, beside gRPC on one server."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.server.harness import ROOT


def test_benchmark_compares_openai_with_grpc_on_its_own_server(fp32_model_dir, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "client.bench", "--serve", str(fp32_model_dir), "--server-log", str(tmp_path / "s.log"),
         "--protocol", "grpc", "--protocol", "openai", "--levels", "1,2", "--requests", "2", "--max-new-tokens", "6",
         "--warmup", "1", "--json", str(tmp_path / "b.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-2].startswith("openai_vs_grpc_tpot_at_1=") and "openai_vs_grpc_tpot_at_2=" in lines[-2]
    assert "streamed /v1/chat/completions" in out.stdout
    report = json.loads((tmp_path / "b.json").read_text())
    for protocol in ("grpc", "openai"):
        levels = report["protocols"][protocol]
        assert [r["concurrency"] for r in levels] == [1, 2] and all(r["errors"] == 0 for r in levels)
        assert all(t["tokens"] == 6 for r in levels for t in r["timings"])
    # greedy: the same text over both protocols, prompt by prompt
    texts = {p: {t["prompt_index"]: t["text"] for t in report["protocols"][p][0]["timings"]} for p in ("grpc", "openai")}
    assert texts["grpc"] == texts["openai"]
    assert report["openai_vs_grpc"]["1"]["tpot_ratio"] > 0
