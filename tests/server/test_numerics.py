"""The precisions the server runs at, served for real: the INT8 model answers right with the shipped profile on any
CPU, every KV cache precision the CPU takes serves, and one it refuses stops the start with one line."""
import subprocess
import sys

import httpx
import pytest

from tests.server.harness import ROOT, request, start_server

QUESTION = "What is the capital of France?"


def test_int8_answers_right_with_the_shipped_profile_through_grpc_and_http(int8_model_dir, tmp_path):
    """On CPUs with bf16, OpenVINO's default there gave INT8 weights garbage ("L'Étoile, la Marseillaise…")."""
    s = start_server(int8_model_dir, tmp_path, http=True)
    try:
        (c,) = s.stub.Generate(request(QUESTION, max_new_tokens=16), timeout=60).completions
        assert "Paris" in c.text, c.text
        chat = httpx.post(f"{s.http_url}/v1/chat/completions", timeout=60, json={
            "model": int8_model_dir.name, "max_tokens": 16, "temperature": 0,
            "messages": [{"role": "user", "content": QUESTION}]})
        assert "Paris" in chat.json()["choices"][0]["message"]["content"]
    finally:
        s.stop()
    # The compiled model's own report, not what was asked: f32, dynamic quantization on (the fast default).
    assert "numerics: inference_precision=f32 kv_cache=" in s.log()
    assert "dynamic_quantization=on" in s.log() and "batch-invariant" not in s.log()


@pytest.mark.parametrize("kv", ["u8", "u4", "f32"])
def test_each_kv_cache_precision_serves(int8_model_dir, tmp_path, kv):
    """A quantized cache keeps its scales inside each block (u8 compiles to [blocks, heads, 40, 64] keys for 32
    tokens): the engine reads the real block size, and answers stay right."""
    s = start_server(int8_model_dir, tmp_path, config={"ov_config": {"KV_CACHE_PRECISION": kv}})
    try:
        prompts = [QUESTION, "What is the capital of Japan?"]
        answers = s.stub.Generate(request(*prompts, max_new_tokens=16), timeout=60).completions
        assert "Paris" in answers[0].text and "Tokyo" in answers[1].text, answers
    finally:
        s.stop()
    assert f"kv_cache={kv}" in s.log() and f"blocks x 32 tokens, {kv}" in s.log()


def test_a_precision_the_device_refuses_stops_the_start_with_one_line(int8_model_dir, tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"ov_config": {"KV_CACHE_PRECISION": "u2"}}')
    result = subprocess.run([sys.executable, "-m", "server", "--config_path", str(config), "--model", str(int8_model_dir),
                             "--port", "0", "--http-port", "0"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot load the model") and "KV_CACHE_PRECISION" in last and "u2" in last, last
    assert "Traceback" not in result.stderr
