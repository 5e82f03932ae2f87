"""client/launcher.py: the real server on the default model, started on free ports, SERVING, stopped by SIGTERM."""
from __future__ import annotations

import socket

import httpx
import pytest

from client.launcher import SERVING, LaunchedServer, ServerFailed, free_port
from modelcheck import OV_CACHE, REPO

CACHE = ("--cache-dir", OV_CACHE)


def test_free_port_can_be_bound():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_starts_waits_for_serving_and_stops_with_sigterm(fp32_model_dir, tmp_path):
    log = tmp_path / "server.log"
    servable = REPO / "servable_stream" / "config.json"
    with LaunchedServer(["--config_path", servable, "--model", fp32_model_dir, *CACHE], log, http=True) as server:
        assert server.port != server.http_port
        assert server.health() == SERVING
        assert httpx.get(f"{server.http_url}/health", timeout=10).status_code == 200
        assert server.stop() == 0  # drained and exited on SIGTERM
    assert server.proc.returncode == 0
    text = log.read_text()  # the log stays
    assert f"listening on {server.address}" in text and "stopped" in text


def test_a_server_that_exits_raises_with_its_last_line(tmp_path):
    server = LaunchedServer(["--model", tmp_path / "nowhere"], tmp_path / "server.log")
    with pytest.raises(ServerFailed) as caught:
        with server:
            pass
    assert caught.value.reason == "exited with code 2"
    assert "nowhere does not exist" in caught.value.last_line
    assert caught.value.summary.endswith(f"(log: {tmp_path / 'server.log'})")
    assert caught.value.last_line in str(caught.value).splitlines()[-1]  # the log's tail follows the summary


def test_not_serving_in_time_raises_and_stops_the_server(fp32_model_dir, tmp_path):
    server = LaunchedServer(["--model", fp32_model_dir, *CACHE], tmp_path / "server.log", ready_timeout=0.1)
    with pytest.raises(ServerFailed, match=r"^the server was not SERVING after 0.1 s"):
        with server:
            pass
    assert server.proc.returncode is not None  # stopped, not left behind
