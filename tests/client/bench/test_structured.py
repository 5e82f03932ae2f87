"""`python -m client.bench.structured`: the same load with and without a JSON schema, in turns."""
from __future__ import annotations

import json
import re


def test_a_tiny_run_reports_the_tpot_ratio_and_checks_every_answer(live_server, run_script, tmp_path):
    out = run_script("client.bench.structured", "--url", live_server.address, "--levels", "1", "--rounds", "1",
                     "--requests", "1", "--max-new-tokens", "6", "--json", tmp_path / "s.json")
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    # Six tokens cut every answer's JSON short.
    assert re.fullmatch(r"json_tpot_ratio_1=\d+\.\d{3} json_tpot_ratio_8=n/a json_valid=0/0 json_cut=[1-9]", last), last
    report = json.loads((tmp_path / "s.json").read_text())
    level = report["levels"]["1"]
    assert level["free_tpot_ms"] > 0 and level["json_tpot_ms"] > 0 and level["json_tokens_mean"] <= 6


def test_an_unreachable_server_is_one_line(run_script):
    from client.launcher import free_port

    out = run_script("client.bench.structured", "--url", f"127.0.0.1:{free_port()}", "--levels", "1")
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1 and "cannot reach" in out.stderr
