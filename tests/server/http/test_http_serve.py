"""The HTTP server's life inside the gRPC server's: 503 while loading, draining on SIGTERM like gRPC streams."""
from __future__ import annotations

import json
import signal
import time

import grpc
import httpx
import pytest

from tests.server.harness import STATUS, request, start_server, wait_until


def _health(server) -> int:
    try:
        return httpx.get(f"{server.http_url}/health", timeout=5).status_code
    except httpx.TransportError:
        return 0


def test_loading_then_serving_then_sigterm_drains_an_http_stream(fp32_model_dir, tmp_path):
    s = start_server(fp32_model_dir, tmp_path, http=True, wait=False, args=("--grace-seconds", "300"))
    try:
        assert wait_until(lambda: _health(s) != 0, timeout=60)
        seen = {_health(s)}
        refused = httpx.post(f"{s.http_url}/v1/completions", json={"prompt": "hi", "max_tokens": 2})
        s.wait_serving()
        seen.add(_health(s))
        # The port opens before the model loads: 503 then 200 (a warm cache can make loading too quick to see).
        assert 200 in seen and seen <= {503, 200}
        if refused.status_code == 503:
            assert refused.json()["error"]["code"] == "unavailable"

        body = {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 48, "min_tokens": 48,
                "stream": True, "stream_options": {"include_usage": True}}
        with httpx.Client(timeout=60) as h, h.stream("POST", f"{s.http_url}/v1/chat/completions", json=body) as r:
            lines = r.iter_lines()
            data = [next(line for line in lines if line.startswith("data: "))]
            signalled = time.monotonic()
            s.proc.send_signal(signal.SIGTERM)
            assert wait_until(lambda: _health(s) == 503, timeout=10)
            assert s.health() == STATUS.NOT_SERVING  # one drain for both protocols
            late = httpx.post(f"{s.http_url}/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=10)
            assert late.status_code == 503 and "shutting down" in late.json()["error"]["message"]
            with pytest.raises(grpc.RpcError) as caught:
                s.stub.Generate(request("hi", max_new_tokens=2), timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            data += [line for line in lines if line.startswith("data: ")]
        assert data[-1] == "data: [DONE]"
        chunks = [json.loads(line[len("data: "):]) for line in data[:-1]]
        assert chunks[-1]["usage"]["completion_tokens"] == 48  # every token, then usage, then [DONE]
        assert chunks[-2]["choices"][0]["finish_reason"] == "length"
        assert s.proc.wait(60) == 0
        assert time.monotonic() - signalled < 120  # done when the stream is, far inside the grace
        assert "stopped" in s.log()
    finally:
        if s.proc.poll() is None:
            s.stop()


def test_http_port_from_flag_environment_or_servable_file(tmp_path, monkeypatch):
    from server.config import ConfigError, load
    from server.http.serve import model_name

    monkeypatch.delenv("HTTP_PORT", raising=False)
    monkeypatch.delenv("PORT", raising=False)
    servable = tmp_path / "config.json"
    servable.write_text(json.dumps({"http_port": 8123, "served_model_name": "tiny"}))
    s = load({"config_path": str(servable)})
    assert (s.http_port, model_name(s)) == (8123, "tiny")
    assert load({}).http_port == 8000  # on by default, as the peers'
    assert load({"http_port": 0}).http_port == 0  # --http-port 0 turns it off
    monkeypatch.setenv("HTTP_PORT", "8124")
    assert load({"config_path": str(servable)}).http_port == 8124
    assert load({"config_path": str(servable), "http_port": 8125}).http_port == 8125
    assert model_name(load({"model": "models/smollm2-135m-instruct/"})) == "smollm2-135m-instruct"
    with pytest.raises(ConfigError, match="http_port"):
        load({"http_port": 9000, "port": 9000})


def test_http_port_taken_is_one_line_at_start(fp32_model_dir, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        s = start_server(fp32_model_dir, tmp_path, args=("--http-port", str(port)), wait=False)
        assert s.proc.wait(60) == 1
    assert f"error: cannot listen on 127.0.0.1:{port} for HTTP" in s.log()
