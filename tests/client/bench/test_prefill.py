"""The prefill figure: every prompt unique from its first token, and two servers taking turns on them (our own server
standing in for llama.cpp's)."""
from __future__ import annotations

import argparse
import contextlib
import itertools

import pytest

from client.bench import prefill, sizes
from client.bench.llamacpp import LLAMACPP, SERVER_HTTP
from tests.server.harness import start_server


def test_prompts_never_share_a_first_token_across_calls():
    indices = itertools.count()
    first = prefill.unique_prompts(indices, 5, 40, 1000)
    second = prefill.unique_prompts(indices, 5, 40, 1000)
    prompts = first + second
    assert all(len(p) == 40 and all(prefill.FIRST_ID <= t < 1000 for t in p) for p in prompts)
    assert len({p[0] for p in prompts}) == 10
    with pytest.raises(ValueError, match="unique prompts"):
        prefill.unique_prompts(itertools.count(899), 2, 4, 1000)


@pytest.fixture
def http_server(fp32_model_dir, tmp_path):
    s = start_server(fp32_model_dir, tmp_path / "ours", http=True)
    yield s
    s.stop()


def test_prefill_in_turns_gives_prompt_tokens_per_second_and_ratios_per_level(http_server, stand_in_peer, capsys):
    args = argparse.Namespace(llamacpp=str(stand_in_peer.root), prefill_tokens=300, prefill_requests=2, rounds=2)
    with contextlib.ExitStack() as stack:
        got = sizes.prefill_turns(http_server, stand_in_peer.gguf, args, stack)
    assert set(got["vs_llamacpp"]) == set(sizes.PREFILL_LEVELS) and all(r > 0 for r in got["vs_llamacpp"].values())
    for name in (SERVER_HTTP, LLAMACPP):
        assert all(len(rates) == 2 and all(r > 0 for r in rates)
                   for rates in got["prompt_tokens_per_s"][name].values())
    flags = dict(zip(got["llamacpp_command"][1::2], got["llamacpp_command"][2::2]))
    assert flags["-np"] == "4" and int(flags["-c"]) >= 4 * 301  # a slot per stream, room for a prompt each
    out = capsys.readouterr().out
    assert "prefill, unique 300-token prompts" in out and "4 streams: server" in out
