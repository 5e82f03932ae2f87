"""`python -m client.bench.chat`: multi-turn conversations with prefix caching on and off (and openvino-genai's)."""
from __future__ import annotations

import json
import re

from transformers import AutoTokenizer

import pytest

from client.bench.chat import SYSTEM_PROMPT_FILE, ChatTurn, Round, figures, history, user_turns
from modelcheck import REPO


def test_the_shared_system_prompt_is_about_300_tokens(fp32_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(fp32_model_dir)
    assert 280 <= len(tokenizer(SYSTEM_PROMPT_FILE.read_text().strip(), add_special_tokens=False)["input_ids"]) <= 320


def test_conversations_differ_from_their_first_turn_and_carry_their_answers():
    questions = user_turns([f"q{i}" for i in range(16)], 3, 2)
    assert questions == [["q0", "q5"], ["q1", "q6"], ["q2", "q7"]]
    assert history(["a", "b"], ["A"]) == (("user", "a"), ("assistant", "A"), ("user", "b"))


def test_a_tiny_run_reports_the_cache_on_against_off(fp32_model_dir, run_script, tmp_path):
    out = run_script("client.bench.chat", "--serve", fp32_model_dir, "--servable",
                     REPO / "servable_stream" / "config.json", "--no-genai", "--conversations", "2", "--turns", "2",
                     "--tokens", "4", "--rounds", "1", "--json", tmp_path / "chat.json", timeout=600)
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"prefix_ttft_ratio=\d+\.\d{3} prefix_hit_rate=\d+\.\d{3} vs_genai_prefix=n/a "
                        r"vs_genai_prefix_server=n/a", out.stdout.strip().splitlines()[-1]), out.stdout
    report = json.loads((tmp_path / "chat.json").read_text())
    figures = report["figures"]
    # Turn 2 holds turn 1's prompt and answer: most of it is found; caching off finds nothing.
    assert figures["prefix_hit_rate"] > 0.5 and figures["prefix_hit_of_reachable"] > 0.5
    (turns,) = report["rounds"]
    assert all(t["cached_tokens"] == 0 for t in turns["off"]) and len(turns["on"]) == len(turns["off"]) == 4
    # The server's own clock runs inside the client's.
    assert all(0 < t["server_ttft_ms"] <= t["ttft_ms"] for t in turns["on"] + turns["off"])
    assert set(figures["p50_server_ttft_ms_per_turn"]) == {"on", "off"}


def _turns(client_ms: list[float], server_ms: list[float] | None = None) -> list[ChatTurn]:
    """Turn 1 (left out of the figures) then turns 2.. with these first-token times."""
    server_ms = server_ms or [None] * len(client_ms)
    return [ChatTurn(0, 1, 1e6, 100, 0, "", 1e6 if server_ms[0] is not None else None),
            *(ChatTurn(i, 2, c, 200, 150, "", s) for i, (c, s) in enumerate(zip(client_ms, server_ms)))]


def test_vs_genai_is_the_median_of_per_round_ratios_by_the_client_and_the_server_clocks():
    rounds = [Round("s", {"on": _turns([100, 300], [50, 150]), "off": _turns([400, 400], [300, 300]),
                          "genai": _turns([100, 100])}),  # p50s: on 200 (server 100), genai 100
              Round("s", {"on": _turns([100], [80]), "off": _turns([200], [150]), "genai": _turns([300])}),
              Round("s", {"on": _turns([400], [100]), "off": _turns([800], [700]), "genai": _turns([200])})]
    got = figures(rounds)
    assert got["vs_genai_prefix"] == pytest.approx(0.5)  # median of 0.5, 3.0, 0.5
    assert got["vs_genai_prefix_server"] == pytest.approx(2.0)  # median of 1.0, 3.75, 2.0
    assert got["prefix_ttft_ratio"] == pytest.approx(0.5)  # median of 0.5, 0.5, 0.5
    assert set(got["p50_server_ttft_ms_per_turn"]) == {"on", "off"}  # genai has no server clock
    without = figures([Round("s", {"on": _turns([100]), "off": _turns([200])})])
    assert without["vs_genai_prefix"] is None and without["vs_genai_prefix_server"] is None


def test_too_few_turns_is_one_line(run_script, tmp_path):
    out = run_script("client.bench.chat", "--serve", tmp_path, "--turns", "1")
    assert out.returncode == 1 and out.stderr.strip() == "error: --turns: at least 2 (the figures are over turns >= 2)"
