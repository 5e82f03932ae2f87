"""The llama.cpp peer without llama.cpp: where it is looked for, its command line, a server that dies at start, the
comparison's ratios; the same-client path (token ids on /v1/completions) against our own server; the build's steps
skipped when done and one line when one fails."""
from __future__ import annotations

import json
import re

import pytest

from client.bench import load, peers
from client.bench.llamacpp import (LLAMACPP, SERVER_HTTP, LlamaCpp, LlamaCppServer, has_amx, render, server_command,
                                   vs_llamacpp)
from client.bench.load import LevelResult, RequestTiming
from client.launcher import ServerFailed
from modelcheck import REPO
from tests.client.bench.peer import fake_peer
from tests.server.harness import start_server


@pytest.fixture(scope="module")
def live_http_server(fp32_model_dir, tmp_path_factory):
    s = start_server(fp32_model_dir, tmp_path_factory.mktemp("peer-http"), http=True)
    yield s
    s.stop()


def test_the_peer_is_built_only_with_its_server_and_model(tmp_path):
    assert not LlamaCpp(tmp_path / "none").built()
    peer = fake_peer(tmp_path / "p")
    assert peer.built()
    peer.gguf.unlink()
    assert not peer.built()


def test_the_command_line_serves_loopback_with_a_slot_per_stream_and_room_for_each_answer(tmp_path):
    peer = LlamaCpp(tmp_path)
    cmd = server_command(peer, 4321, slots=16, prompt_tokens=60, new_tokens=128)
    assert cmd[0] == str(peer.server)
    flags = dict(zip(cmd[1::2], cmd[2::2]))
    assert flags["-m"] == str(peer.gguf) and flags["--host"] == "127.0.0.1" and flags["--port"] == "4321"
    assert flags["-t"] == "2" and flags["-np"] == "16" and flags["-c"] == str(16 * (60 + 128))
    assert "--no-repack" not in cmd
    assert server_command(peer, 4321, 1, 60, 128, no_repack=True)[-1] == "--no-repack"


def test_amx_is_read_from_the_cpu_flags(tmp_path):
    (tmp_path / "amx").write_text("flags\t\t: fpu avx512f amx_bf16 amx_int8 amx_tile\n")
    (tmp_path / "avx").write_text("flags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert has_amx(tmp_path / "amx") and not has_amx(tmp_path / "avx") and not has_amx(tmp_path / "none")


def test_a_peer_server_that_exits_at_start_is_one_line_naming_its_log(tmp_path):
    peer = fake_peer(tmp_path / "p", "#!/bin/sh\necho 'error: unknown argument' >&2\nexit 3\n")
    log = tmp_path / "llama.log"
    with pytest.raises(ServerFailed) as failed:
        with LlamaCppServer(peer, log, slots=2, prompt_tokens=10, new_tokens=4, ready_timeout=30):
            pass
    assert failed.value.summary == f"llama.cpp's server exited with code 3: error: unknown argument (log: {log})"


def _level(level: int, tok_s: float) -> LevelResult:
    return LevelResult.of(level, 10 * level / tok_s, [RequestTiming(i, 1.0, 2.0, 10, 0.1) for i in range(level)])


def test_vs_llamacpp_is_the_median_of_per_round_ratios_per_level():
    # Per round at 8 streams: 2.0, 0.5, 1.2 -> 1.2 (the median tok/s of each, 200/250, would say 0.8).
    results = {1: [{"server": _level(1, 5), SERVER_HTTP: _level(1, 90), LLAMACPP: _level(1, 100)}],
               8: [{SERVER_HTTP: _level(8, 100), LLAMACPP: _level(8, 50)},
                   {SERVER_HTTP: _level(8, 200), LLAMACPP: _level(8, 400)},
                   {SERVER_HTTP: _level(8, 300), LLAMACPP: _level(8, 250)}]}
    assert vs_llamacpp(results) == {1: pytest.approx(0.9), 8: pytest.approx(1.2)}
    assert vs_llamacpp({1: [{"server": _level(1, 5)}]}) == {}  # not measured: no figure


def test_token_ids_on_v1_completions_give_exactly_the_asked_tokens(live_http_server):
    """Our half of the comparison: the prompts rendered by /tokenize, sent back as ids, EOS ignored."""
    prompts = ["Say yes.", "What is 2 + 2?"]
    ids = render(live_http_server.http_url, prompts, ())
    assert len(ids) == 2 and all(isinstance(t, int) for t in ids[0]) and len(ids[0]) > 5  # the template's tokens
    cfg = load.LoadConfig(url="", prompts=[], tokens=24, levels=[2], requests=4, warmup=1, timeout=120,
                          protocol="completions", http_url=live_http_server.http_url, prompt_ids=ids)
    ((result,),) = load.run_protocols([cfg], progress=lambda line: None)
    assert result.requests == 4 and result.errors == 0
    assert all(t.tokens == 24 and t.text and 0 < t.ttft_ms <= t.e2e_ms for t in result.timings)
    assert result.output_tokens_per_s > 0 and result.tpot_ms.p50 > 0


def test_a_build_with_every_output_there_does_nothing(tmp_path, monkeypatch):
    peer = fake_peer(tmp_path / "p")
    monkeypatch.setattr(peers.subprocess, "run", lambda *a, **k: pytest.fail(f"ran {a}"))
    assert peers.build(peer) == []
    assert peers.main(["--dir", str(peer.root)]) == 0


def test_a_failing_step_is_one_line_naming_it_and_the_log(tmp_path, capsys):
    peer = LlamaCpp(tmp_path / "p")
    peer.root.mkdir()
    with pytest.raises(peers.BuildFailed) as failed:
        peers._run(peer, "cmake build", ["sh", "-c", "echo compiler says no; exit 2"])
    assert str(failed.value) == f"cmake build failed (exit 2; see {peer.log})"
    assert "compiler says no" in peer.log.read_text()
    (tmp_path / "file").write_text("")
    assert peers.main(["--dir", str(tmp_path / "file" / "p")]) == 1  # cannot even make its directory
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: make peers: ")


def test_the_benchmark_measures_a_built_peer_in_turns_and_adds_vs_llamacpp(fp32_model_dir, run_script, tmp_path,
                                                                          monkeypatch, stand_in_peer):
    """The stand-in for llama-server takes llama.cpp's turns, so the whole path runs without building llama.cpp."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the servers' logs
    servable = REPO / "servable_stream" / "config.json"
    peer = stand_in_peer
    out = run_script("client.bench", "--serve", fp32_model_dir, "--servable", servable, "--levels", "1,2",
                     "--requests", "2", "--max-new-tokens", "4", "--warmup", "1", "--rounds", "2",
                     "--llamacpp", peer.root, "--json", tmp_path / "b.json", timeout=600)
    assert out.returncode == 0, out.stderr
    assert "not built" not in out.stdout and "Baseline llama.cpp's server" in out.stdout
    assert re.search(r" vs_llamacpp_1=\d+\.\d\d vs_llamacpp_2=\d+\.\d\d$", out.stdout.strip().splitlines()[-1])
    rounds = [line for line in out.stderr.splitlines() if line.startswith("level ")]
    assert len(rounds) == 4 and all(re.search(r": server \d+ tok/s, server-http \d+ tok/s, llama.cpp \d+ tok/s$", line)
                                    for line in rounds), rounds

    report = json.loads((tmp_path / "b.json").read_text())["llamacpp"]
    flags = dict(zip(report["command"][1::2], report["command"][2::2]))
    assert flags["-np"] == "2" and int(flags["-c"]) > 2 * 4  # two slots, each with room for a prompt and 4 tokens
    for side in ("server_http", "llamacpp"):
        assert [r["concurrency"] for r in report[side]] == [1, 2]
        assert [r["requests"] for r in report[side]] == [4, 4] and all(r["errors"] == 0 for r in report[side])
        assert all(t["tokens"] == 4 for r in report[side] for t in r["timings"])
    assert set(report["vs_llamacpp"]) == {"1", "2"} and all(v > 0 for v in report["vs_llamacpp"].values())
